/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopy: copy a region of one device to many with libkcopyd, or drive a
 * mounted kcopydfs.  This file holds the option parsing; direct.c and
 * mount.c hold the two modes.
 *
 * Thread model: main thread only (the engine's threads start later, in
 * direct.c, with SIGINT and SIGTERM already blocked).  The signals are
 * blocked only while a signalfd reads them, never while kcopy opens a
 * file or waits on kcopydfs: there they keep their default action.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>

#include "kcopy.h"


static const char usage_text[] =
"Usage: kcopy [OPTION]... SRC[:START[+COUNT]] DST[:START] [DST[:START]]...\n"
"  or:  kcopy [OPTION]... --zero DST[:START[+COUNT]]...\n"
"  or:  kcopy [-q] [-v] [--progress[=SECONDS|fd:N]] --mount MOUNTPOINT\n"
"             copy|zero ARGS...\n"
"\n"
"Copy a region of SRC to every DST with one read, or write zeros.\n"
"START and COUNT are 512-byte sectors, or carry a unit: s (sectors),\n"
"B (bytes), k, K, M, G, T or KiB, MiB, GiB, TiB (powers of 1024 bytes);\n"
"byte values must be multiples of 512.\n"
"Holes in SRC are not read, and zeros are punched, not written.\n"
"COUNT defaults to the rest of SRC (of DST with --zero).\n"
"\n"
"      --pages N          copy buffer of N 4 KiB pages (default 1024)\n"
"  -t, --threads N        I/O threads (default 2)\n"
"      --subjob-size SIZE bytes per sub-job (default 512K)\n"
"      --sparse=SIZE      zero detection in pieces of SIZE bytes\n"
"                         (default 4K; 0: none, every byte written)\n"
"      --allocated        keep every block of the destinations allocated\n"
"      --target-is-zero   the destinations read as zeros already\n"
"  -i, --ignore-errors    go on to the end after I/O errors\n"
"      --write-seq        write each destination in offset order\n"
"      --direct           open every device with O_DIRECT\n"
"      --fsync            flush every destination to stable storage\n"
"                         before the copy counts as done\n"
"      --rate RATE        at most RATE bytes per second, with a unit:\n"
"                         64M, 1G, 512K (powers of 1024; /s may follow)\n"
"      --verify           read every destination back and compare\n"
"      --checksum         print a digest of the source range (XXH3 of\n"
"                         64 KiB blocks) on stdout, as the copy reads it\n"
"      --map FILE         keep a GNU ddrescue map of the copy in FILE;\n"
"                         run again with it to copy only what is left\n"
"      --retry-bad        with --map: retry its failed ranges, block by\n"
"                         block\n"
"      --zero             write zeros to the destinations\n"
"  -m, --mount MOUNTPOINT send the command to a mounted kcopydfs\n"
"  -p, -P, --progress[=SECONDS]  print progress every SECONDS (default\n"
"                         1) even when stderr is not a terminal\n"
"      --progress=fd:N    write the percentage done to descriptor N,\n"
"                         as lines \"N/100\", for scripts\n"
"  -q, --quiet            no progress, no messages but errors\n"
"  -v, --verbose          say what is done\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n"
"\n"
"Exit status: 0 every destination written, 1 bad usage, 2 read error,\n"
"3 write error, 4 both, 5 verify failed, 130 interrupted.  See kcopy(1).\n";

enum {
	OPT_SUBJOB_SIZE = 256,
	OPT_WRITE_SEQ,
	OPT_DIRECT,
	OPT_FSYNC,
	OPT_ZERO,
	OPT_SPARSE,
	OPT_ALLOCATED,
	OPT_TARGET_ZERO,
	OPT_PAGES,
	OPT_RATE,
	OPT_VERIFY,
	OPT_CHECKSUM,
	OPT_MAP,
	OPT_RETRY_BAD,
};

static const struct option long_options[] = {
	{ "pages", required_argument, NULL, OPT_PAGES },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "threads", required_argument, NULL, 't' },
	{ "subjob-size", required_argument, NULL, OPT_SUBJOB_SIZE },
	{ "ignore-errors", no_argument, NULL, 'i' },
	{ "write-seq", no_argument, NULL, OPT_WRITE_SEQ },
	{ "direct", no_argument, NULL, OPT_DIRECT },
	{ "fsync", no_argument, NULL, OPT_FSYNC },
	{ "zero", no_argument, NULL, OPT_ZERO },
	{ "sparse", required_argument, NULL, OPT_SPARSE },
	{ "allocated", no_argument, NULL, OPT_ALLOCATED },
	{ "target-is-zero", no_argument, NULL, OPT_TARGET_ZERO },
	{ "verify", no_argument, NULL, OPT_VERIFY },
	{ "checksum", no_argument, NULL, OPT_CHECKSUM },
	{ "map", required_argument, NULL, OPT_MAP },
	{ "retry-bad", no_argument, NULL, OPT_RETRY_BAD },
	{ "mount", required_argument, NULL, 'm' },
	{ "progress", optional_argument, NULL, 'P' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

void say(const char *fmt, ...)
{
	va_list ap;

	fputs("kcopy: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void print_checksum(const char *hex, const char *src)
{
	if (!hex) {
		say("%s: no checksum: the source range was not read in full",
		    src);
		return;
	}
	printf("xxh3-64-blocks:%s  %s\n", hex, src);
	fflush(stdout);
}

int signals_block(void)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	/* Threads created from now on inherit the mask. */
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		abort();
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd == -1) {
		fd = -errno;
		signals_unblock(-1);
	}
	return fd;
}

void signals_unblock(int fd)
{
	sigset_t set;

	if (fd >= 0)
		close(fd);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (pthread_sigmask(SIG_UNBLOCK, &set, NULL))
		abort();
}

static int parse_uint(const char *opt, const char *s, unsigned int min,
		      unsigned int max, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (!*s || *end || errno || *s == '-' || v < min || v > max) {
		say("%s '%s': expected a whole number from %u to %u", opt, s,
		    min, max);
		return -EINVAL;
	}
	*out = (unsigned int)v;
	return 0;
}

static int parse_subjob_size(const char *s, unsigned int *out)
{
	uint64_t bytes;

	if (size_parse(s, 1, &bytes) || bytes == 0 ||
	    bytes % KCOPYD_PAGE_SIZE || bytes > 16u * 1024 * 1024) {
		say("--subjob-size '%s': expected a multiple of 4K "
		    "from 4K to 16M", s);
		return -EINVAL;
	}
	*out = (unsigned int)bytes;
	return 0;
}

/* The engine takes a divisor or a multiple of 4096 that is whole sectors. */
static int parse_sparse(const char *s, struct options *o)
{
	uint64_t bytes;

	if (size_parse(s, 1, &bytes) ||
	    (bytes && (bytes % KCOPYD_SECTOR_SIZE ||
		       (KCOPYD_PAGE_SIZE % bytes && bytes % KCOPYD_PAGE_SIZE) ||
		       bytes > 16u * 1024 * 1024))) {
		say("--sparse '%s': expected 0, 512, 1K, 2K, or a multiple "
		    "of 4K up to 16M", s);
		return -EINVAL;
	}
	o->sparse_size = (unsigned int)bytes;
	o->no_zero_detect = bytes == 0;
	return 0;
}

/* --rate 64M, 64MiB, 64M/s: bytes per second, at least one sector. */
static int parse_rate(const char *s, uint64_t *out)
{
	size_t len = strlen(s);
	int r;

	if (len > 2 && !strcmp(s + len - 2, "/s"))
		len -= 2;
	r = size_parse_n(s, len, 1, out);
	if (!r && *out < KCOPYD_SECTOR_SIZE)
		r = -ERANGE;
	if (r) {
		say("--rate '%s': expected bytes per second with a unit, "
		    "such as 64M or 1G, at least 512", s);
		return -EINVAL;
	}
	return 0;
}

/* --progress=fd:N: a descriptor open for writing. */
static int parse_progress_fd(const char *s, int *fd)
{
	unsigned int n;
	int fl;

	if (parse_uint("--progress=fd:", s, 0, 1u << 20, &n))
		return -EINVAL;
	fl = fcntl((int)n, F_GETFL);
	if (fl == -1 || (fl & O_ACCMODE) == O_RDONLY) {
		say("--progress=fd:%u: descriptor %u is not open for writing",
		    n, n);
		return -EBADF;
	}
	*fd = (int)n;
	return 0;
}

static int parse_interval(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (!*s || *end || errno || !(v >= 0.1 && v <= 86400)) {
		say("--progress '%s': expected seconds from 0.1 to 86400", s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	int c;

	memset(o, 0, sizeof(*o));
	o->progress_fd = -1;
	while ((c = getopt_long(argc, argv, "t:im:p::P::qvhV", long_options,
				NULL)) != -1) {
		switch (c) {
		case OPT_RATE:
			if (parse_rate(optarg, &o->rate))
				return -EINVAL;
			break;
		case OPT_PAGES:
			if (parse_uint("--pages", optarg, 1, 1u << 22,
				       &o->pages))
				return -EINVAL;
			break;
		case 't':
			if (parse_uint("--threads", optarg, 1, 256,
				       &o->threads))
				return -EINVAL;
			break;
		case OPT_SUBJOB_SIZE:
			if (parse_subjob_size(optarg, &o->subjob_size))
				return -EINVAL;
			break;
		case 'i':
			o->ignore_errors = true;
			break;
		case OPT_WRITE_SEQ:
			o->write_seq = true;
			break;
		case OPT_DIRECT:
			o->direct = true;
			break;
		case OPT_FSYNC:
			o->fsync = true;
			break;
		case OPT_ZERO:
			o->zero = true;
			break;
		case OPT_SPARSE:
			if (parse_sparse(optarg, o))
				return -EINVAL;
			break;
		case OPT_ALLOCATED:
			o->allocated = true;
			break;
		case OPT_TARGET_ZERO:
			o->target_zero = true;
			break;
		case OPT_VERIFY:
			o->verify = true;
			break;
		case OPT_CHECKSUM:
			o->checksum = true;
			break;
		case OPT_MAP:
			o->map = optarg;
			break;
		case OPT_RETRY_BAD:
			o->retry_bad = true;
			break;
		case 'm':
			o->mount = optarg;
			break;
		case 'p':
		case 'P':
			o->progress_interval = 1;
			if (optarg && !strncmp(optarg, "fd:", 3)) {
				if (parse_progress_fd(optarg + 3,
						      &o->progress_fd))
					return -EINVAL;
			} else if (optarg &&
				   parse_interval(optarg,
						  &o->progress_interval)) {
				return -EINVAL;
			}
			break;
		case 'q':
			o->verbose = -1;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(EXIT_SUCCESS);
		case 'V':
			printf("kcopy %s (libkcopyd %s)\n", PACKAGE_VERSION,
			       kcopyd_version());
			exit(EXIT_SUCCESS);
		default:
			return -EINVAL;
		}
	}
	return 0;
}

/* Options that mean nothing in mount mode: the daemon has its own. */
static int check_mount_options(const struct options *o)
{
	if (o->pages || o->threads || o->subjob_size ||
	    o->ignore_errors || o->write_seq || o->direct || o->fsync ||
	    o->rate ||
	    o->zero || o->sparse_size || o->no_zero_detect || o->allocated ||
	    o->target_zero || o->verify || o->checksum || o->map ||
	    o->retry_bad) {
		say("--mount takes only -q, -v and --progress; engine options "
		    "belong to kcopydfs, flags to the command words");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;

	if (parse_options(argc, argv, &o))
		goto usage;
	argc -= optind;
	argv += optind;
	if (o.mount) {
		if (check_mount_options(&o))
			goto usage;
		return mount_main(&o, argc, argv);
	}
	if (o.map && o.zero) {
		say("--map is for copies, not --zero");
		goto usage;
	}
	if (o.checksum && o.zero) {
		say("--checksum digests a source; --zero has none");
		goto usage;
	}
	/* A resumed copy does not read what an earlier run finished. */
	if (o.checksum && o.map) {
		say("--checksum cannot go with --map: a resumed copy reads only "
		    "what is left, so it cannot digest the whole source");
		goto usage;
	}
	if (o.retry_bad && !o.map) {
		say("--retry-bad needs --map: the map says which ranges failed");
		goto usage;
	}
	return direct_main(&o, argc, argv);
usage:
	fputs("Try 'kcopy --help' for more information.\n", stderr);
	return EXIT_USAGE;
}
