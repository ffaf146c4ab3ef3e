/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Mount mode: hand one command to a mounted kcopydfs and wait for its job.
 *
 * The command goes to MOUNTPOINT/control on a descriptor opened
 * read-write; the read that follows returns the job id (or, after a
 * failed write, kcopydfs's message).  Then MOUNTPOINT/results is polled:
 * kcopydfs wakes pollers whenever a job changes state.  On each wake, and
 * each second in case a wake is missed (and to follow `done=`, which
 * moves without a change of state), the polled descriptor is read again
 * from offset 0: kcopydfs renders a fresh snapshot for a read at 0, and
 * marks the changes as seen, so the next poll waits for a new one.
 * A finished job's digest= (the checksum word) is printed as the copy
 * mode's --checksum prints it.
 *
 * Each argument becomes one word of the line: an argument that contains
 * a space, a tab, a newline or any other control character is refused,
 * since kcopydfs would read it as several words or several commands.
 *
 * Thread model: main thread only.  SIGINT and SIGTERM keep their default
 * action until the command is accepted (the write of a `sync` command
 * waits for the whole job, and a signal must end it); then they are
 * blocked and read from a signalfd, and stop the wait, not the job.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "kcopy.h"

/* Re-read results at least this often, in case a wake is missed. */
#define RECHECK_MS	1000
/* Read results at most this often, however often poll says it changed. */
#define MIN_READ_MS	50

struct job_status {
	char state[16];
	uint64_t read_err;
	uint64_t write_err;
	uint64_t sectors;
	uint64_t done;
	uint64_t usec;			/* the job's time so far, or 0 */
	char digest[17];		/* checksum: 16 hex digits, "none",
					   or "" when the line has none */
};

/* The name of a byte that cannot be part of a word of the control file. */
static const char *bad_byte_name(unsigned char ch)
{
	switch (ch) {
	case '\n':
		return "a newline";
	case '\r':
		return "a carriage return";
	case '\t':
		return "a tab";
	case ' ':
		return "a space";
	default:
		return "a control character";
	}
}

/*
 * Refuse an argument that is not exactly one word of a control line:
 * empty, or holding whitespace or a control character.  The message shows
 * the argument with its bytes escaped, as the shell's $'...' quoting does.
 */
static int check_word(const char *word)
{
	const unsigned char *p;
	char shown[256];
	size_t n = 0;

	if (!*word) {
		say("--mount: an empty argument is not a word of a command");
		return -EINVAL;
	}
	for (p = (const unsigned char *)word; *p; p++)
		if (isspace(*p) || iscntrl(*p))
			break;
	if (!*p)
		return 0;
	for (const unsigned char *q = (const unsigned char *)word;
	     *q && n + 5 < sizeof(shown); q++) {
		if (isprint(*q) && *q != '\\' && *q != '\'')
			shown[n++] = (char)*q;
		else if (*q == '\n' || *q == '\t' || *q == '\r')
			n += (size_t)snprintf(shown + n, sizeof(shown) - n,
					      "\\%c", *q == '\n' ? 'n' :
						      *q == '\t' ? 't' : 'r');
		else
			n += (size_t)snprintf(shown + n, sizeof(shown) - n,
					      "\\x%02x", *q);
	}
	shown[n] = '\0';
	say("--mount: argument $'%s' holds %s: each argument must be one word, "
	    "with no whitespace or control characters", shown,
	    bad_byte_name(*p));
	return -EINVAL;
}

/* Join the words into one control line, ending in a newline. */
static char *command_line(int argc, char **argv)
{
	size_t len = 1;
	char *line, *p;

	for (int i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	line = malloc(len);
	if (!line)
		return NULL;
	p = line;
	for (int i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]);

		memcpy(p, argv[i], n);
		p += n;
		*p++ = i + 1 < argc ? ' ' : '\n';
	}
	*p = '\0';
	return line;
}

/* Read what is there, up to len - 1 bytes, as a string without '\n'. */
static ssize_t read_line(int fd, char *buf, size_t len)
{
	ssize_t n = read(fd, buf, len - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return n;
}

/* Write the command; return the job id, or -errno with a message said. */
static int submit(const char *control, const char *line, uint64_t *id)
{
	char buf[1024], *end;
	ssize_t n;
	int fd, err;

	fd = open(control, O_RDWR | O_CLOEXEC);
	if (fd == -1) {
		err = -errno;
		say("%s: %s", control, strerror(errno));
		return err;
	}
	if (write(fd, line, strlen(line)) == -1) {
		err = -errno;
		/* kcopydfs says which token it refused. */
		if (read_line(fd, buf, sizeof(buf)) > 0)
			say("%s", buf);
		else
			say("%s: %s", control, strerror(-err));
		close(fd);
		return err;
	}
	n = read_line(fd, buf, sizeof(buf));
	close(fd);
	if (n < 0) {
		say("%s: reading the job id: %s", control, strerror((int)-n));
		return (int)n;
	}
	errno = 0;
	*id = strtoull(buf, &end, 10);
	if (!buf[0] || *end || errno) {
		say("%s: expected a job id, read '%s'", control, buf);
		return -EPROTO;
	}
	return 0;
}

/* The value of `key=` among the words of a results line, or NULL. */
static const char *field(const char *line, const char *key)
{
	size_t klen = strlen(key);
	const char *p = line;

	while (p && *p) {
		if (!strncmp(p, key, klen) && p[klen] == '=')
			return p + klen + 1;
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	return NULL;
}

static int field_u64(const char *line, const char *key, int base,
		     uint64_t *out)
{
	const char *v = field(line, key);
	char *end;

	if (!v)
		return -EPROTO;
	errno = 0;
	*out = strtoull(v, &end, base);
	if (end == v || (*end && *end != ' ') || errno)
		return -EPROTO;
	return 0;
}

static int parse_status(const char *line, struct job_status *st)
{
	const char *v = field(line, "state");
	size_t n;

	if (!v)
		return -EPROTO;
	n = strcspn(v, " ");
	if (n >= sizeof(st->state))
		return -EPROTO;
	memcpy(st->state, v, n);
	st->state[n] = '\0';
	if (field_u64(line, "read_err", 0, &st->read_err) ||
	    field_u64(line, "write_err", 0, &st->write_err) ||
	    field_u64(line, "sectors", 10, &st->sectors) ||
	    field_u64(line, "done", 10, &st->done))
		return -EPROTO;
	if (field_u64(line, "usec", 10, &st->usec))
		st->usec = 0;
	v = field(line, "digest");
	n = v ? strcspn(v, " ") : 0;
	if (n >= sizeof(st->digest))
		return -EPROTO;
	memcpy(st->digest, v ? v : "", n);
	st->digest[n] = '\0';
	return 0;
}

/*
 * Read the whole of results from offset 0, which makes kcopydfs render a
 * fresh snapshot for this descriptor (and counts as having seen the
 * changes its poll reports).  Returns a malloc'd string or NULL, errno set.
 */
static char *read_all(int fd)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap), *n;
	ssize_t r;

	while (buf) {
		if (len + 1 == cap) {
			n = realloc(buf, cap * 2);
			if (!n)
				break;
			buf = n;
			cap *= 2;
		}
		r = pread(fd, buf + len, cap - len - 1, (off_t)len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		if (r == 0) {
			buf[len] = '\0';
			return buf;
		}
		len += (size_t)r;
	}
	free(buf);
	return NULL;
}

/*
 * Find job `id` in a fresh read of results.  Returns 0, -ENOENT if the
 * job is not listed, -EPROTO for a line that does not parse, or -errno.
 */
static int read_status(int fd, uint64_t id, struct job_status *st)
{
	char want[32], *text, *line, *save = NULL;
	int r = -ENOENT;

	text = read_all(fd);
	if (!text)
		return -errno;
	snprintf(want, sizeof(want), "id=%" PRIu64 " ", id);
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, want, strlen(want))) {
			r = parse_status(line, st);
			break;
		}
	}
	free(text);
	return r;
}

static bool finished(const struct job_status *st)
{
	return !strcmp(st->state, "done") || !strcmp(st->state, "failed") ||
	       !strcmp(st->state, "cancelled");
}

/* Is this word of a command a region, NAME:START[+COUNT]? */
static bool is_region(const char *word)
{
	return strchr(word, ':') && strncmp(word, "tag=", 4);
}

/* One line per failed device, named by its word of the command. */
static int job_exit_status(uint64_t id, int argc, char **argv,
			   const struct job_status *st)
{
	bool copy = !strcmp(argv[0], "copy");
	unsigned int bit = 0;
	int status = EXIT_SUCCESS;

	if (st->read_err) {
		say("job %" PRIu64 ": read error on the source %s", id,
		    argv[1]);
		status = EXIT_READ_ERR;
	}
	for (int i = copy ? 2 : 1; i < argc; i++) {
		if (!is_region(argv[i]))
			continue;
		if (bit < 64 && (st->write_err & (1ull << bit))) {
			say("job %" PRIu64 ": write error on destination %s",
			    id, argv[i]);
			status = status ? EXIT_BOTH_ERR : EXIT_WRITE_ERR;
		}
		bit++;
	}
	/* Bits past the regions named: say them as they are. */
	if (bit < 64 && st->write_err >> bit) {
		say("job %" PRIu64 ": write error on destinations 0x%" PRIx64,
		    id, st->write_err);
		status = status == EXIT_READ_ERR ? EXIT_BOTH_ERR :
						   EXIT_WRITE_ERR;
	}
	if (status == EXIT_SUCCESS && !strcmp(st->state, "cancelled")) {
		say("job %" PRIu64 ": cancelled", id);
		status = EXIT_INTERRUPTED;
	} else if (status == EXIT_SUCCESS && strcmp(st->state, "done")) {
		say("job %" PRIu64 ": %s", id, st->state);
		status = EXIT_WRITE_ERR;
	}
	return status;
}

/*
 * The checksum word: the source's digest on stdout, as the copy mode's
 * --checksum prints it, or why there is none.
 */
static void print_digest(const struct job_status *st, const char *src)
{
	if (!st->digest[0])
		return;
	print_checksum(strcmp(st->digest, "none") ? st->digest : NULL, src);
}

static int poll_timeout(const struct progress *p)
{
	int t = progress_timeout(p);

	return t < 0 || t > RECHECK_MS ? RECHECK_MS : t;
}

/* Wait for job `id` to finish; returns kcopy's exit status. */
static int wait_job(const struct options *o, const char *mnt,
		    const char *results, uint64_t id, int sigfd, int argc,
		    char **argv)
{
	struct job_status st = { .state = "" };
	struct progress prog;
	struct pollfd pfd[2] = {
		{ .fd = sigfd, .events = POLLIN },
		{ .fd = -1, .events = POLLIN | POLLPRI },
	};
	bool started = false;
	int r;

	pfd[1].fd = open(results, O_RDONLY | O_CLOEXEC);
	if (pfd[1].fd == -1) {
		say("%s: %s", results, strerror(errno));
		return EXIT_USAGE;
	}
	for (;;) {
		r = read_status(pfd[1].fd, id, &st);
		if (r) {
			say("%s: job %" PRIu64 ": %s", results, id,
			    r == -ENOENT ? "not listed" :
			    r == -EPROTO ? "a line kcopy cannot parse" :
					   strerror(-r));
			r = EXIT_USAGE;
			break;
		}
		if (!started) {
			progress_init(&prog, o, st.sectors
						<< KCOPYD_SECTOR_SHIFT);
			started = true;
		}
		atomic_store(&prog.done, st.done << KCOPYD_SECTOR_SHIFT);
		if (st.usec)
			progress_set_elapsed(&prog, (double)st.usec / 1e6);
		if (finished(&st)) {
			progress_finish(&prog);
			r = job_exit_status(id, argc, argv, &st);
			print_digest(&st, argv[1]);
			break;
		}
		progress_tick(&prog);
		if (poll(pfd, 2, poll_timeout(&prog)) == -1 && errno != EINTR)
			abort();
		if (pfd[0].revents & POLLIN) {
			progress_clear(&prog);
			say("interrupted after %" PRIu64 " bytes (%.0f%%): "
			    "job %" PRIu64 " goes on in %s",
			    st.done << KCOPYD_SECTOR_SHIFT,
			    st.sectors ? 100.0 * (double)st.done /
						 (double)st.sectors : 0.0,
			    id, mnt);
			r = EXIT_INTERRUPTED;
			break;
		}
		/* Bound the re-reads if results reports ready all the time. */
		if (pfd[1].revents)
			poll(NULL, 0, MIN_READ_MS);
	}
	close(pfd[1].fd);
	if (r == EXIT_SUCCESS && o->verbose > 0)
		say("job %" PRIu64 " done: %" PRIu64 " sectors", id,
		    st.sectors);
	return r;
}

int mount_main(const struct options *o, int argc, char **argv)
{
	char *control = NULL, *results = NULL, *line = NULL;
	uint64_t id;
	int sigfd, status = EXIT_USAGE;

	if (argc < 2 || (strcmp(argv[0], "copy") && strcmp(argv[0], "zero"))) {
		say(argc ? "--mount: '%s': expected copy or zero and its "
			   "arguments" : "--mount: expected copy or zero and "
					 "its arguments%s",
		    argc ? argv[0] : "");
		fputs("Try 'kcopy --help' for more information.\n", stderr);
		return EXIT_USAGE;
	}
	for (int i = 1; i < argc; i++)
		if (check_word(argv[i]))
			return EXIT_USAGE;
	if (asprintf(&control, "%s/control", o->mount) == -1 ||
	    asprintf(&results, "%s/results", o->mount) == -1 ||
	    !(line = command_line(argc, argv))) {
		say("%s", strerror(ENOMEM));
		goto out;
	}
	if (submit(control, line, &id))
		goto out;
	if (o->verbose > 0)
		say("job %" PRIu64 " queued on %s", id, o->mount);
	sigfd = signals_block();
	if (sigfd < 0) {
		say("signalfd: %s", strerror(-sigfd));
		goto out;
	}
	status = wait_job(o, o->mount, results, id, sigfd, argc, argv);
	signals_unblock(sigfd);
out:
	free(line);
	free(results);
	free(control);
	return status;
}
