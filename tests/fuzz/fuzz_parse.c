/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the kcopydfs control parser (fuse/parse.h).  Every input
 * goes to kfs_parse_write() and kfs_parse_line() as it is, and, cut at
 * its first NUL, to kfs_parse_fault() and kfs_parse_size().
 *
 * Checked, beyond not crashing:
 *   - each function returns 0 or one of its documented errnos, and on
 *     error leaves a non-empty, NUL-terminated message; for the control
 *     file, one printable line;
 *   - a write is accepted only if every byte is printable or a blank, and
 *     every accepted command is valid: known devices, regions inside
 *     them, 1 to 32 destinations with the source's count, flags and tag
 *     as documented;
 *   - the engine agrees: each accepted command, run by libkcopyd on
 *     sparse images of the devices' sizes, is accepted too and completes
 *     without error, and each accepted --fault rule is one
 *     kcopyd_bdev_add_fault() takes.
 * A breach aborts, which the fuzzer reports as a crash.
 *
 * Thread model: LLVMFuzzerTestOneInput runs on one thread; the client's
 * callback thread runs notify(), which only counts under `lock`.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_NAME "fuzz_parse"
#include "fuzz.h"
#include "kcopyd.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CMDS	16

/*
 * The devices the lookup knows.  "huge" exists only for the parser (its
 * size tests overflow); the others are sparse images for the engine.
 */
static const struct {
	const char *name;
	uint64_t sectors;
} devs[] = {
	{ "a", 2048 }, { "b", 64 }, { "c.1_x-y", 1 }, { "huge", UINT64_MAX },
};
#define NR_DEVS		(sizeof(devs) / sizeof(devs[0]))
#define NR_REAL		3

static struct {
	bool ready;
	struct block_device *bdev[NR_REAL];
	struct kcopyd_client *kc;
} fz;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int calls, failures;

static int find(const struct kfs_devlookup *dl, const char *name, size_t len,
		uint64_t *sectors)
{
	for (size_t i = 0; i < NR_DEVS; i++)
		if (strlen(devs[i].name) == len &&
		    !memcmp(devs[i].name, name, len)) {
			*sectors = devs[i].sectors;
			return (int)i;
		}
	return -ENOENT;
}

static int engine_check(const struct kfs_devlookup *l,
			const struct kfs_cmd *c, int *culprit);

/* The engine's own check, as kcopydfs asks it, for real devices. */
static const struct kfs_devlookup dl = {
	.find = find, .check = engine_check,
};

static void notify(int read_err, unsigned int write_err, void *context)
{
	pthread_mutex_lock(&lock);
	calls++;
	if (read_err || write_err)
		failures++;
	pthread_mutex_unlock(&lock);
}

static void setup(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	char dir[64], path[96];

	snprintf(dir, sizeof(dir), "%s/kcopyd-fuzz.XXXXXX", base);
	check(mkdtemp(dir), "mkdtemp %s", dir);
	for (unsigned int i = 0; i < NR_REAL; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%s", dir, devs[i].name);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		check(fd >= 0, "open %s", path);
		check(ftruncate(fd, (off_t)(devs[i].sectors << 9)) == 0,
		      "ftruncate");
		/* Gone from the name space at once: nothing left behind. */
		unlink(path);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		check(kcopyd_bdev_open(path, O_RDWR, &fz.bdev[i]) == 0,
		      "bdev_open");
		close(fd);
	}
	rmdir(dir);
	check(kcopyd_client_create(16, &fz.kc) == 0, "client");
	fz.ready = true;
}

/* --- The oracle ---------------------------------------------------------- */

static bool one_printable_line(const char *msg, size_t len)
{
	size_t n = strnlen(msg, len);

	if (n == 0 || n == len)
		return false;
	for (size_t i = 0; i < n; i++)
		if (msg[i] < 0x20 || msg[i] > 0x7e)
			return false;
	return true;
}

static bool region_ok(const struct kfs_region *r)
{
	return r->dev >= 0 && (size_t)r->dev < NR_DEVS &&
	       r->sector <= devs[r->dev].sectors &&
	       r->count <= devs[r->dev].sectors - r->sector;
}

static void check_cmd(const struct kfs_cmd *c)
{
	unsigned int allowed = KFS_SYNC;

	check(c->op == KFS_OP_COPY || c->op == KFS_OP_ZERO, "op %d", c->op);
	check(c->num_dests >= 1 && c->num_dests <= KFS_MAX_DESTS,
	      "%u destinations", c->num_dests);
	if (c->op == KFS_OP_COPY) {
		allowed |= KFS_IGNORE_ERRORS | KFS_WRITE_SEQ;
		check(region_ok(&c->src), "source outside its device");
	}
	check(!(c->flags & ~allowed), "flags %#x for op %d", c->flags, c->op);
	for (unsigned int i = 0; i < c->num_dests; i++) {
		check(region_ok(&c->dests[i]), "destination %u outside", i);
		if (c->op == KFS_OP_COPY)
			check(c->dests[i].count == c->src.count,
			      "destination %u count differs", i);
	}
	check(c->tag[0] == '\0' ||
	      kfs_valid_name(c->tag, strnlen(c->tag, sizeof(c->tag))),
	      "bad tag accepted");
}

static bool on_real_devices(const struct kfs_cmd *c)
{
	if (c->op == KFS_OP_COPY && c->src.dev >= NR_REAL)
		return false;
	for (unsigned int i = 0; i < c->num_dests; i++)
		if (c->dests[i].dev >= NR_REAL)
			return false;
	return true;
}

static struct io_region to_region(const struct kfs_region *r)
{
	return (struct io_region){ fz.bdev[r->dev], r->sector, r->count };
}

static unsigned int cmd_regions(const struct kfs_cmd *c,
				struct io_region *from, struct io_region *to)
{
	unsigned int flags = 0;

	for (unsigned int i = 0; i < c->num_dests; i++)
		to[i] = to_region(&c->dests[i]);
	if (c->op == KFS_OP_COPY)
		*from = to_region(&c->src);
	if (c->flags & KFS_IGNORE_ERRORS)
		flags |= KCOPYD_IGNORE_ERROR;
	if (c->flags & KFS_WRITE_SEQ)
		flags |= KCOPYD_WRITE_SEQ;
	return flags;
}

static int engine_check(const struct kfs_devlookup *l,
			const struct kfs_cmd *c, int *culprit)
{
	struct io_region from, to[KFS_MAX_DESTS];
	unsigned int flags;

	if (!on_real_devices(c))
		return 0;
	flags = cmd_regions(c, &from, to);
	return kcopyd_check_copy(c->op == KFS_OP_COPY ? &from : NULL,
				 c->num_dests, to, flags, culprit);
}

/* What the parser accepted, the engine must accept and complete. */
static void run_cmd(const struct kfs_cmd *c)
{
	struct io_region from, to[KFS_MAX_DESTS];
	unsigned int flags;
	int r;

	if (!on_real_devices(c))
		return;
	flags = cmd_regions(c, &from, to);
	pthread_mutex_lock(&lock);
	calls = failures = 0;
	pthread_mutex_unlock(&lock);
	if (c->op == KFS_OP_COPY) {
		r = kcopyd_copy(fz.kc, &from, c->num_dests, to, flags, notify,
				NULL);
	} else {
		r = kcopyd_zero(fz.kc, c->num_dests, to, flags, notify, NULL);
	}
	check(r == 0, "the engine refused a parsed command: %s",
	      strerror(-r));
	check(kcopyd_client_flush(fz.kc) == 0, "flush");
	pthread_mutex_lock(&lock);
	check(calls == 1 && failures == 0, "%u callbacks, %u failed", calls,
	      failures);
	pthread_mutex_unlock(&lock);
}

static bool bytes_ok(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < size; i++)
		if ((data[i] < 0x20 && data[i] != '\t' && data[i] != '\n') ||
		    data[i] > 0x7e)
			return false;
	return true;
}

static void fuzz_write(const uint8_t *data, size_t size)
{
	static struct kfs_cmd cmds[MAX_CMDS];
	char msg[256];
	unsigned int n = 12345;
	int r;

	memset(msg, 'x', sizeof(msg));
	r = kfs_parse_write((const char *)data, size, &dl, cmds, MAX_CMDS, &n,
			    msg, sizeof(msg));
	check(r == 0 || r == -EINVAL || r == -ENOENT || r == -ERANGE ||
	      r == -E2BIG || r == -EFBIG, "parse_write returned %d", r);
	if (r) {
		check(one_printable_line(msg, sizeof(msg)),
		      "parse_write: bad message for %d", r);
		return;
	}
	check(size <= KFS_MAX_BATCH, "accepted %zu bytes", size);
	check(bytes_ok(data, size), "accepted a binary byte");
	check(n <= MAX_CMDS, "%u commands", n);
	for (unsigned int i = 0; i < n; i++)
		check_cmd(&cmds[i]);
	for (unsigned int i = 0; i < n; i++)
		run_cmd(&cmds[i]);
}

static void fuzz_line(const uint8_t *data, size_t size)
{
	static struct kfs_cmd cmd;
	char msg[256];
	int r;

	memset(msg, 'x', sizeof(msg));
	r = kfs_parse_line((const char *)data, size, &dl, &cmd, msg,
			   sizeof(msg));
	check(r == 0 || r == -EINVAL || r == -ENOENT || r == -ERANGE ||
	      r == -E2BIG || r == -EFBIG, "parse_line returned %d", r);
	if (r) {
		check(one_printable_line(msg, sizeof(msg)),
		      "parse_line: bad message for %d", r);
		return;
	}
	if (cmd.op == KFS_OP_NONE)
		return;
	check(size <= KFS_MAX_LINE, "accepted a line of %zu bytes", size);
	check(bytes_ok(data, size), "accepted a binary byte");
	check_cmd(&cmd);
}

static void fuzz_fault(const char *spec)
{
	struct kcopyd_fault f;
	char name[KFS_MAX_NAME + 1], msg[256];
	int r;

	memset(msg, 'x', sizeof(msg));
	r = kfs_parse_fault(spec, name, sizeof(name), &f, msg, sizeof(msg));
	check(r == 0 || r == -EINVAL, "parse_fault returned %d", r);
	if (r) {
		check(strnlen(msg, sizeof(msg)) > 0 &&
		      strnlen(msg, sizeof(msg)) < sizeof(msg),
		      "parse_fault: bad message");
		return;
	}
	check(kfs_valid_name(name, strlen(name)), "bad fault device name");
	r = kcopyd_bdev_add_fault(fz.bdev[0], &f);
	check(r == 0, "kcopyd_bdev_add_fault refused a parsed fault: %s",
	      strerror(-r));
	kcopyd_bdev_clear_faults(fz.bdev[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;
	uint64_t bytes;
	int r;

	if (!fz.ready)
		setup();
	fuzz_write(data, size);
	fuzz_line(data, size);

	s = malloc(size + 1);
	check(s, "malloc");
	memcpy(s, data, size);
	s[size] = '\0';
	fuzz_fault(s);
	r = kfs_parse_size(s, &bytes);
	check(r == 0 || r == -EINVAL, "parse_size returned %d", r);
	free(s);
	return 0;
}
