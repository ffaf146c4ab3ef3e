/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of jobs a caller steers (lib/kcopyd.c): kcopyd_submit and its
 * completion (errno and sector of each failure, the done ranges), the
 * bad-range function, kcopyd_cancel from another thread, from a callback
 * and racing completion, KCOPYD_FLUSH, the throttle and the bounded queue.
 *
 * Thread model: tests run on Check's thread (plus, where said, one thread
 * of their own); completions, progress and bad-range functions run on the
 * client's threads and report through struct result's mutex or atomics.
 * No assertion depends on a duration except as a lower bound that only
 * the throttle can produce, or a ceiling minutes away.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"


/* What a completion said, copied out for the test thread. */
struct result {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int calls;
	struct kcopyd_completion c;
	struct kcopyd_dest_result dests[KCOPYD_MAX_DESTS];
	struct kcopyd_range done[80];
	atomic_uint_fast64_t progress;	/* sectors */
};

static void result_init(struct result *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
}

static void record(const struct kcopyd_completion *c, void *context)
{
	struct result *r = context;

	ck_assert_uint_eq(c->size, sizeof(*c));
	ck_assert_uint_le(c->nr_done, 80);
	pthread_mutex_lock(&r->lock);
	r->calls++;
	r->c = *c;
	memcpy(r->dests, c->dests, c->num_dests * sizeof(c->dests[0]));
	memcpy(r->done, c->done, c->nr_done * sizeof(c->done[0]));
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void count_progress(sector_t sectors, void *context)
{
	struct result *r = context;

	atomic_fetch_add(&r->progress, sectors);
}

static void result_wait(struct result *r)
{
	wait_calls(&r->lock, &r->cond, &r->calls, 1, 120);
}

static struct kcopyd_job_desc copy_desc(struct io_region *from,
					unsigned int n, struct io_region *to,
					unsigned int flags, struct result *r)
{
	return (struct kcopyd_job_desc){
		.size = sizeof(struct kcopyd_job_desc),
		.op = from ? KCOPYD_OP_COPY : KCOPYD_OP_ZERO,
		.flags = flags,
		.from = from,
		.num_dests = n,
		.dests = to,
		.complete = record,
		.progress = count_progress,
		.context = r,
	};
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Is sector s (an offset from the regions' starts) in a done range? */
static bool in_done(const struct result *r, sector_t s)
{
	for (unsigned int i = 0; i < r->c.nr_done; i++)
		if (s >= r->done[i].sector &&
		    s < r->done[i].sector + r->done[i].count)
			return true;
	return false;
}

/*
 * The done ranges are sorted, disjoint, not touching, and add up; each
 * sector of dst in [0, len) equals src's inside them and `outside` (the
 * destination's old byte) outside them, unless it is -1 (a failed write
 * may have left part of its data).
 */
static void check_against_done(const struct result *r, const char *src,
			       const char *dst, size_t len, int outside)
{
	int fs = open(src, O_RDONLY), fd = open(dst, O_RDONLY);
	unsigned char *a = malloc(1 * MiB), *b = malloc(1 * MiB);
	sector_t sum = 0;

	ck_assert(fs >= 0 && fd >= 0 && a && b);
	for (unsigned int i = 0; i < r->c.nr_done; i++) {
		ck_assert_uint_gt(r->done[i].count, 0);
		if (i)
			ck_assert_uint_gt(r->done[i].sector,
					  r->done[i - 1].sector +
						  r->done[i - 1].count);
		sum += r->done[i].count;
	}
	ck_assert_uint_eq(sum, r->c.sectors_done);
	for (size_t off = 0; off < len; off += 1 * MiB) {
		ck_assert_int_eq(pread(fs, a, 1 * MiB, off), (ssize_t)MiB);
		ck_assert_int_eq(pread(fd, b, 1 * MiB, off), (ssize_t)MiB);
		for (size_t s = 0; s < 1 * MiB; s += 512) {
			sector_t sec = (off + s) / 512;

			if (in_done(r, sec))
				ck_assert_msg(!memcmp(a + s, b + s, 512),
					      "sector %llu done but differs",
					      (unsigned long long)sec);
			else if (outside >= 0)
				ck_assert_msg(b[s] == outside &&
					      !memcmp(b + s, b + s + 1, 511),
					      "sector %llu not done but "
					      "written",
					      (unsigned long long)sec);
		}
	}
	close(fs);
	close(fd);
	free(a);
	free(b);
}

/* A file of `bytes`, all holes, with `data` bytes of pattern at its start. */
static char *sparse_image(const char *name, uint64_t bytes, size_t data,
			  unsigned int seed)
{
	char *path = make_image(name, data, seed);

	ck_assert_int_eq(truncate(path, (off_t)bytes), 0);
	return path;
}

/* --- Submission ----------------------------------------------------------- */

START_TEST(test_submit_refusals)
{
	struct kcopyd_client *kc = new_client(64, 1, 0, 0);
	char *a = make_image("a", 1 * MiB, 1), *b = make_image("b", 1 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct io_region from = { sa, 0, 8 }, to = { sb, 0, 8 };
	struct result r;
	struct kcopyd_job_desc d;
	struct {
		struct kcopyd_job_desc d;
		uint64_t newer;
	} big;
	uint64_t id = 0;

	result_init(&r);
	d = copy_desc(&from, 1, &to, 0, &r);
	ck_assert_int_eq(kcopyd_submit(kc, NULL, &id), -EINVAL);
	ck_assert_int_eq(kcopyd_submit(NULL, &d, &id), -EINVAL);
	d.size = offsetof(struct kcopyd_job_desc, context);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), -EINVAL);
	d = copy_desc(&from, 1, &to, 0, &r);
	d.op = 7;
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), -EINVAL);
	d.op = KCOPYD_OP_ZERO;		/* a zero with a source */
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), -EINVAL);
	d = copy_desc(NULL, 1, &to, 0, &r);
	d.op = KCOPYD_OP_COPY;		/* a copy without one */
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), -EINVAL);
	d = copy_desc(&from, 1, &to, 1u << 7, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), -EINVAL);
	to.count = 9;
	d = copy_desc(&from, 1, &to, 0, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), -EINVAL);
	to.count = 8;

	/* A newer caller's struct: accepted if its extra field is unset. */
	memset(&big, 0, sizeof(big));
	big.d = copy_desc(&from, 1, &to, 0, &r);
	big.d.size = sizeof(big);
	big.newer = 1;
	ck_assert_int_eq(kcopyd_submit(kc, &big.d, &id), -E2BIG);
	ck_assert_uint_eq(id, 0);
	big.newer = 0;
	ck_assert_int_eq(kcopyd_submit(kc, &big.d, &id), 0);
	ck_assert_uint_ne(id, 0);
	result_wait(&r);
	ck_assert_uint_eq(r.c.id, id);

	ck_assert_int_eq(kcopyd_cancel(kc, 0), -EINVAL);
	ck_assert_int_eq(kcopyd_cancel(NULL, id), -EINVAL);
	ck_assert_int_eq(kcopyd_cancel(kc, id + 1000), -ENOENT);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(kcopyd_cancel(kc, id), -ENOENT);	/* finished */
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 0, 101), -EINVAL);
	ck_assert_int_eq(kcopyd_client_set_throttle(NULL, 0, 0), -EINVAL);
	ck_assert_int_eq(kcopyd_client_set_max_jobs(NULL, 1), -EINVAL);
	ck_assert_int_eq(kcopyd_client_set_bad_range(NULL, NULL, NULL),
			 -EINVAL);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_completion_success)
{
	struct kcopyd_client *kc = new_client(64, 2, 0, 0);
	char *a = make_image("a", 8 * MiB, 2), *b = make_image("b", 8 * MiB, 0);
	char *z = make_image("z", 1 * MiB, 3);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct block_device *sz = open_bdev(z, O_RDWR);
	struct io_region from = { sa, 0, 16384 }, to = { sb, 0, 16384 };
	struct io_region zr = { sz, 8, 100 };
	struct kcopyd_job_desc d = copy_desc(&from, 1, &to, 0, NULL);
	struct result r, rz;
	uint64_t id, idz;
	size_t len;
	unsigned char *zb;

	result_init(&r);
	result_init(&rz);
	d.context = &r;
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), 0);
	d = copy_desc(NULL, 1, &zr, 0, &rz);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &idz), 0);
	ck_assert_uint_gt(idz, id);
	result_wait(&r);
	result_wait(&rz);
	ck_assert_uint_eq(r.calls, 1);
	ck_assert_uint_eq(r.c.id, id);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_int_eq(r.c.read_error, 0);
	ck_assert_int_eq(r.c.cancelled, 0);
	ck_assert_uint_eq(r.c.num_dests, 1);
	ck_assert_int_eq(r.dests[0].error, 0);
	ck_assert_uint_eq(r.c.nr_done, 1);
	ck_assert_uint_eq(r.done[0].sector, 0);
	ck_assert_uint_eq(r.done[0].count, 16384);
	ck_assert_uint_eq(r.c.sectors_done, 16384);
	ck_assert_uint_eq(atomic_load(&r.progress), 16384);
	check_against_done(&r, a, b, 8 * MiB, 0);

	ck_assert_uint_eq(rz.c.id, idz);
	ck_assert_uint_eq(rz.c.sectors_done, 100);
	zb = read_file(z, &len);
	for (size_t i = 8 * 512; i < 108 * 512; i++)
		ck_assert_uint_eq(zb[i], 0);
	ck_assert_uint_ne(zb[108 * 512], 0);
	free(zb);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	kcopyd_bdev_close(sz);
	free(a);
	free(b);
	free(z);
}
END_TEST

/* --- Errors ---------------------------------------------------------------- */

struct bad_list {
	pthread_mutex_t lock;
	unsigned int n;
	struct {
		uint64_t id;
		struct block_device *bdev;
		sector_t sector, count;
		int write, error;
	} e[64];
};

static void bad_cb(uint64_t id, struct block_device *bdev, sector_t sector,
		   sector_t count, int write, int error, void *context)
{
	struct bad_list *l = context;

	pthread_mutex_lock(&l->lock);
	if (l->n < 64) {
		l->e[l->n].id = id;
		l->e[l->n].bdev = bdev;
		l->e[l->n].sector = sector;
		l->e[l->n].count = count;
		l->e[l->n].write = write;
		l->e[l->n].error = error;
	}
	l->n++;
	pthread_mutex_unlock(&l->lock);
}

/*
 * Under IGNORE_ERROR: a bad read range of the source and a bad write range
 * of the second destination come back exactly, as bad ranges and as the
 * first failing sector with its errno, and the job is done everywhere.
 */
START_TEST(test_ignore_error_ranges)
{
	struct kcopyd_client *kc = new_client(64, 2, 0, 0);
	char *a = make_image("a", 4 * MiB, 4), *b = make_image("b", 4 * MiB, 0);
	char *c = make_image("c", 4 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct block_device *sc = open_bdev(c, O_RDWR);
	struct kcopyd_fault rf = { .ops = KCOPYD_FAULT_READ, .sector = 3000,
				   .count = 8, .error = ENODATA };
	struct kcopyd_fault wf = { .ops = KCOPYD_FAULT_WRITE, .sector = 5100,
				   .count = 5, .error = ENOSPC };
	struct io_region from = { sa, 0, 8192 };
	struct io_region to[2] = { { sb, 0, 8192 }, { sc, 0, 8192 } };
	struct kcopyd_job_desc d;
	struct bad_list bad = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct result r;
	uint64_t id;
	bool seen_read = false, seen_write = false;

	result_init(&r);
	ck_assert_int_eq(kcopyd_bdev_add_fault(sa, &rf), 0);
	ck_assert_int_eq(kcopyd_bdev_add_fault(sc, &wf), 0);
	ck_assert_int_eq(kcopyd_client_set_bad_range(kc, bad_cb, &bad), 0);
	d = copy_desc(&from, 2, to, KCOPYD_IGNORE_ERROR, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id), 0);
	result_wait(&r);

	ck_assert_int_eq(r.c.read_err, 1);
	ck_assert_uint_eq(r.c.write_err, 2);
	ck_assert_int_eq(r.c.read_error, ENODATA);
	ck_assert_uint_eq(r.c.read_error_sector, 3000);
	ck_assert_int_eq(r.dests[0].error, 0);
	ck_assert_int_eq(r.dests[1].error, ENOSPC);
	ck_assert_uint_eq(r.dests[1].error_sector, 5100);
	ck_assert_uint_eq(r.c.sectors_done, 8192);

	ck_assert_uint_eq(bad.n, 2);
	for (unsigned int i = 0; i < bad.n; i++) {
		ck_assert_uint_eq(bad.e[i].id, id);
		if (!bad.e[i].write) {
			ck_assert_ptr_eq(bad.e[i].bdev, sa);
			ck_assert_uint_eq(bad.e[i].sector, 3000);
			ck_assert_uint_eq(bad.e[i].count, 8);
			ck_assert_int_eq(bad.e[i].error, ENODATA);
			seen_read = true;
		} else {
			ck_assert_ptr_eq(bad.e[i].bdev, sc);
			ck_assert_uint_eq(bad.e[i].sector, 5100);
			ck_assert_uint_eq(bad.e[i].count, 5);
			ck_assert_int_eq(bad.e[i].error, ENOSPC);
			seen_write = true;
		}
	}
	ck_assert(seen_read && seen_write);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	kcopyd_bdev_close(sc);
	free(a);
	free(b);
	free(c);
}
END_TEST

/*
 * Without IGNORE_ERROR: the errno of an injected read fault, a sector at or
 * before the fault in the chunk that met it, and exactly the done ranges
 * on the destination (which chunks were in flight is not fixed).
 */
START_TEST(test_error_stops)
{
	struct kcopyd_client *kc = new_client(256, 2, 0, 0);
	char *a = make_image("a", 16 * MiB, 5);
	char *b = make_image("b", 16 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct kcopyd_fault rf = { .ops = KCOPYD_FAULT_READ, .sector = 10000,
				   .count = 1, .error = EBADMSG };
	struct io_region from = { sa, 0, 32768 }, to = { sb, 0, 32768 };
	struct kcopyd_job_desc d = copy_desc(&from, 1, &to, 0, NULL);
	struct result r;

	result_init(&r);
	d.context = &r;
	ck_assert_int_eq(kcopyd_bdev_add_fault(sa, &rf), 0);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_int_eq(r.c.read_err, 1);
	ck_assert_int_eq(r.c.read_error, EBADMSG);
	ck_assert_uint_le(r.c.read_error_sector, 10000);
	ck_assert_uint_gt(r.c.read_error_sector + 1024, 10000);
	ck_assert(!in_done(&r, 10000));
	ck_assert_uint_lt(r.c.sectors_done, 32768);
	check_against_done(&r, a, b, 16 * MiB, 0);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

/*
 * A mount namespace of our own with a small tmpfs at `dir`: as root, or
 * through a user namespace.  False if neither is allowed here.
 */
static bool small_tmpfs(const char *dir, const char *size)
{
	char opt[64];

	if (unshare(CLONE_NEWNS) == -1 &&
	    unshare(CLONE_NEWUSER | CLONE_NEWNS) == -1)
		return false;
	if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == -1)
		return false;
	snprintf(opt, sizeof(opt), "size=%s", size);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	return mount("kcopyd-full", dir, "tmpfs", 0, opt) == 0;
}

/* A real ENOSPC: its errno, a sector inside the device, done ranges true. */
START_TEST(test_real_enospc)
{
	struct kcopyd_client *kc;
	char *a = make_image("a", 4 * MiB, 6), *full, *b;
	struct block_device *sa, *sb;
	struct io_region from, to;
	struct kcopyd_job_desc d;
	struct result r;

	if (asprintf(&full, "%s/full", test_dir()) < 0)
		ck_abort();
	if (!small_tmpfs(full, "1m")) {
		fprintf(stderr, "test_real_enospc: no mount namespace here, "
				"skipped\n");
		free(full);
		free(a);
		return;
	}
	if (asprintf(&b, "%s/b.img", full) < 0)
		ck_abort();
	ck_assert_int_eq(close(open(b, O_CREAT | O_WRONLY, 0644)), 0);
	ck_assert_int_eq(truncate(b, 4 * MiB), 0);	/* sparse: fits */
	kc = new_client(64, 2, 0, 0);
	sa = open_bdev(a, O_RDONLY);
	sb = open_bdev(b, O_RDWR);
	from = (struct io_region){ sa, 0, 8192 };
	to = (struct io_region){ sb, 0, 8192 };
	result_init(&r);
	d = copy_desc(&from, 1, &to, 0, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 1);
	ck_assert_int_eq(r.dests[0].error, ENOSPC);
	/* 1 MiB holds 2048 sectors: the first failure is no later. */
	ck_assert_uint_le(r.dests[0].error_sector, 2048);
	ck_assert(!in_done(&r, r.dests[0].error_sector));
	ck_assert_uint_le(r.c.sectors_done, 2048);
	check_against_done(&r, a, b, 4 * MiB, -1);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	umount2(full, MNT_DETACH);
	free(full);
	free(a);
	free(b);
}
END_TEST

/* --- Cancel ---------------------------------------------------------------- */

struct canceller {
	struct kcopyd_client *kc;
	struct result *r;
	uint64_t id;
	sector_t after;			/* cancel once progress passes it */
	int ret;
};

static void *cancel_thread(void *arg)
{
	struct canceller *c = arg;

	while (atomic_load(&c->r->progress) < c->after)
		usleep(1000);
	c->ret = kcopyd_cancel(c->kc, c->id);
	return NULL;
}

/*
 * A 1 GiB copy, throttled so that it would take 16 s, cancelled from
 * another thread once it has begun: the completion says cancelled, and
 * the destination holds the source exactly on its done ranges and nothing
 * anywhere else (its allocated blocks are no more than the done sectors).
 */
START_TEST(test_cancel_running)
{
	struct kcopyd_client *kc = new_client(256, 2, 0, 0);
	char *a = sparse_image("a", 1024 * MiB, 64 * MiB, 7);
	char *b = sparse_image("b", 1024 * MiB, 0, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct io_region from = { sa, 0, 2 * MiB }, to = { sb, 0, 2 * MiB };
	struct kcopyd_job_desc d;
	struct result r;
	struct canceller c = { .kc = kc, .r = &r, .after = 8192 };
	pthread_t t;
	struct stat st;

	result_init(&r);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 64 * MiB, 0), 0);
	d = copy_desc(&from, 1, &to, _i ? KCOPYD_WRITE_SEQ : 0, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &c.id), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, cancel_thread, &c), 0);
	result_wait(&r);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(c.ret, 0);
	ck_assert_uint_eq(r.calls, 1);
	ck_assert_int_eq(r.c.cancelled, 1);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_gt(r.c.sectors_done, 0);
	ck_assert_uint_lt(r.c.sectors_done, 2 * MiB);
	if (_i) {
		/* WRITE_SEQ: a prefix. */
		ck_assert_uint_eq(r.c.nr_done, 1);
		ck_assert_uint_eq(r.done[0].sector, 0);
	}
	ck_assert_int_eq(kcopyd_cancel(kc, c.id), -ENOENT);
	check_against_done(&r, a, b, 64 * MiB, 0);
	ck_assert_int_eq(stat(b, &st), 0);
	ck_assert_uint_le((uint64_t)st.st_blocks, r.c.sectors_done);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

struct from_callback {
	struct kcopyd_client *kc;
	uint64_t victim;
	int ret, own;
};

static void cancel_cb(const struct kcopyd_completion *c, void *context)
{
	struct from_callback *f = context;

	f->ret = kcopyd_cancel(f->kc, f->victim);
	f->own = kcopyd_cancel(f->kc, c->id);	/* its I/O is over */
}

/* A completion function cancels a running 1 GiB job of its own client. */
START_TEST(test_cancel_from_callback)
{
	struct kcopyd_client *kc = new_client(256, 2, 0, 0);
	char *a = sparse_image("a", 1024 * MiB, 16 * MiB, 8);
	char *b = sparse_image("b", 1024 * MiB, 0, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct io_region from = { sa, 0, 2 * MiB }, to = { sb, 0, 2 * MiB };
	struct io_region zf = { sb, 2 * MiB - 8, 8 };
	struct from_callback f = { .kc = kc };
	struct kcopyd_job_desc d;
	struct result r;

	result_init(&r);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 64 * MiB, 0), 0);
	d = copy_desc(&from, 1, &to, 0, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &f.victim), 0);
	while (atomic_load(&r.progress) < 4096)
		usleep(1000);
	d = copy_desc(NULL, 1, &zf, 0, NULL);
	d.complete = cancel_cb;
	d.context = &f;
	d.progress = NULL;
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(f.ret, 0);
	ck_assert_int_eq(f.own, -ENOENT);
	ck_assert_int_eq(r.c.cancelled, 1);
	ck_assert_uint_lt(r.c.sectors_done, 2 * MiB);
	check_against_done(&r, a, b, 16 * MiB, 0);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

#define RACE_JOBS 10000

struct race {
	atomic_uint calls[RACE_JOBS];
	atomic_int cancelled[RACE_JOBS];
	atomic_uint_fast64_t done[RACE_JOBS];
	uint64_t base;
};

struct race_job {
	struct race *race;
	unsigned int i;
};

static void race_cb(const struct kcopyd_completion *c, void *context)
{
	struct race_job *j = context;

	atomic_fetch_add(&j->race->calls[j->i], 1);
	atomic_store(&j->race->cancelled[j->i], c->cancelled);
	atomic_store(&j->race->done[j->i], c->sectors_done);
}

/*
 * Cancel racing completion: small jobs cancelled as soon as submitted.
 * Each callback runs exactly once; it says cancelled exactly when
 * kcopyd_cancel returned 0, and a job that was not cancelled is done.
 */
START_TEST(test_cancel_race)
{
	struct kcopyd_client *kc = new_client(16, 2, 0, 0);
	char *a = make_image("a", 1 * MiB, 9), *b = make_image("b", 1 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct race *race = calloc(1, sizeof(*race));
	struct race_job *jobs = calloc(RACE_JOBS, sizeof(*jobs));
	int *ret = calloc(RACE_JOBS, sizeof(*ret));
	unsigned int hits = 0;

	ck_assert(race && jobs && ret);
	for (unsigned int i = 0; i < RACE_JOBS; i++) {
		struct io_region from = { sa, (i % 64) * 32, 32 };
		struct io_region to = { sb, (i % 64) * 32, 32 };
		struct kcopyd_job_desc d = copy_desc(&from, 1, &to, 0, NULL);
		uint64_t id;

		jobs[i].race = race;
		jobs[i].i = i;
		d.complete = race_cb;
		d.progress = NULL;
		d.context = &jobs[i];
		ck_assert_int_eq(kcopyd_submit(kc, &d, &id), 0);
		/* Now and then let the job get ahead. */
		if (i % 3 == 1)
			sched_yield();
		ret[i] = kcopyd_cancel(kc, id);
		ck_assert_msg(ret[i] == 0 || ret[i] == -ENOENT,
			      "cancel returned %d", ret[i]);
	}
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	for (unsigned int i = 0; i < RACE_JOBS; i++) {
		ck_assert_uint_eq(atomic_load(&race->calls[i]), 1);
		ck_assert_int_eq(atomic_load(&race->cancelled[i]), ret[i] == 0);
		if (ret[i])
			ck_assert_uint_eq(atomic_load(&race->done[i]), 32);
		else
			hits++;
	}
	fprintf(stderr, "test_cancel_race: %u of %u cancels took effect\n",
		hits, RACE_JOBS);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(race);
	free(jobs);
	free(ret);
	free(a);
	free(b);
}
END_TEST

/* --- Flush, throttle, queue bound ------------------------------------------ */

static uint64_t flushes(struct block_device *b)
{
	struct kcopyd_bdev_stats st;

	ck_assert_int_eq(kcopyd_bdev_get_stats2(b, &st, sizeof(st)), 0);
	return st.flushes;
}

START_TEST(test_flush)
{
	struct kcopyd_client *kc = new_client(64, 2, 0, 0);
	char *a = make_image("a", 1 * MiB, 10), *b = make_image("b", 1 * MiB, 0);
	char *c = make_image("c", 1 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct block_device *sc = open_bdev(c, O_RDWR);
	struct kcopyd_fault ff = { .ops = KCOPYD_FAULT_FLUSH, .count = 1,
				   .error = EIO };
	struct io_region from = { sa, 0, 2048 };
	struct io_region to[2] = { { sb, 0, 2048 }, { sc, 0, 2048 } };
	struct kcopyd_job_desc d;
	struct kcopyd_bdev_stats st;
	struct result r;

	/* Without the flag: no flush. */
	result_init(&r);
	d = copy_desc(&from, 2, to, 0, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_uint_eq(flushes(sb) + flushes(sc), 0);

	/* With it: one per destination, before the callback. */
	result_init(&r);
	d = copy_desc(&from, 2, to, KCOPYD_FLUSH, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_uint_eq(flushes(sb), 1);
	ck_assert_uint_eq(flushes(sc), 1);
	ck_assert_uint_eq(r.c.write_err, 0);

	/* A failed flush is a write error of that destination. */
	ck_assert_int_eq(kcopyd_bdev_add_fault(sc, &ff), 0);
	result_init(&r);
	d = copy_desc(&from, 2, to, KCOPYD_FLUSH, &r);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_uint_eq(r.c.write_err, 2);
	ck_assert_int_eq(r.dests[1].error, EIO);
	ck_assert_int_eq(r.dests[0].error, 0);
	ck_assert_uint_eq(flushes(sb), 2);
	ck_assert_uint_eq(flushes(sc), 1);

	/* The old call fills only the old fields; a short size is refused. */
	memset(&st, 0xff, sizeof(st));
	kcopyd_bdev_get_stats(sb, &st);
	ck_assert_uint_eq(st.bytes_written, 3 * MiB);
	ck_assert_uint_eq(st.zeros, UINT64_MAX);
	ck_assert_uint_eq(st.zeroed_write, UINT64_MAX);
	ck_assert_uint_eq(st.flushes, UINT64_MAX);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(sb, &st,
			 offsetof(struct kcopyd_bdev_stats, zeros)), 0);
	ck_assert_uint_eq(st.zeros, UINT64_MAX);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(sb, &st, 8), -EINVAL);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	kcopyd_bdev_close(sc);
	free(a);
	free(b);
	free(c);
}
END_TEST

/*
 * 32 MiB at 16 MiB/s cannot take less than about 2 s (64 chunks, one
 * every 1/32 s); a loaded machine only makes it longer.
 */
START_TEST(test_throttle_rate)
{
	struct kcopyd_client *kc = new_client(256, 2, 0, 0);
	char *a = make_image("a", 32 * MiB, 11);
	char *b = make_image("b", 32 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct io_region from = { sa, 0, 65536 }, to = { sb, 0, 65536 };
	struct kcopyd_job_desc d;
	struct result r;
	double t0;

	result_init(&r);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 16 * MiB, 0), 0);
	d = copy_desc(&from, 1, &to, 0, &r);
	t0 = now_s();
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_msg(now_s() - t0 >= 1.8, "32 MiB at 16 MiB/s in %.2f s",
		      now_s() - t0);
	ck_assert_uint_eq(r.c.sectors_done, 65536);

	/*
	 * Changed while it runs: at 64 KiB/s it would take 256 s; lifted
	 * once it has begun, it ends long before.
	 */
	result_init(&r);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 64 * 1024, 0), 0);
	d = copy_desc(&from, 1, &to, 0, &r);
	t0 = now_s();
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	while (!atomic_load(&r.progress))
		usleep(1000);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 0, 0), 0);
	result_wait(&r);
	ck_assert_msg(now_s() - t0 < 120, "took %.2f s", now_s() - t0);
	ck_assert_uint_eq(r.c.sectors_done, 65536);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

/*
 * The share-of-time form: 16 chunks whose reads take at least 20 ms each
 * (a delay rule), allowed I/O 10 % of the time, need well over a second.
 */
START_TEST(test_throttle_percent)
{
	struct kcopyd_client *kc = new_client(256, 1, 0, 0);
	char *a = make_image("a", 8 * MiB, 12), *b = make_image("b", 8 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct kcopyd_fault slow = { .ops = KCOPYD_FAULT_READ,
				     .kind = KCOPYD_FAULT_DELAY,
				     .count = 16384, .delay_us = 20000 };
	struct io_region from = { sa, 0, 16384 }, to = { sb, 0, 16384 };
	struct kcopyd_job_desc d;
	struct result r;
	double t0;

	result_init(&r);
	ck_assert_int_eq(kcopyd_bdev_add_fault(sa, &slow), 0);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 0, 10), 0);
	d = copy_desc(&from, 1, &to, 0, &r);
	t0 = now_s();
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	result_wait(&r);
	ck_assert_msg(now_s() - t0 >= 1.0, "10 %% throttle: %.2f s",
		      now_s() - t0);
	ck_assert_uint_eq(r.c.sectors_done, 16384);
	check_against_done(&r, a, b, 8 * MiB, 0);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_max_jobs)
{
	struct kcopyd_client *kc = new_client(64, 1, 0, 0);
	char *a = make_image("a", 8 * MiB, 13), *b = make_image("b", 8 * MiB, 0);
	struct block_device *sa = open_bdev(a, O_RDONLY);
	struct block_device *sb = open_bdev(b, O_RDWR);
	struct io_region from = { sa, 0, 16384 }, to = { sb, 0, 16384 };
	struct io_region zr = { sb, 0, 8 };
	struct kcopyd_job_desc d;
	struct result r1, r2, r3;
	struct done_count dc;
	uint64_t id1, id2;

	result_init(&r1);
	result_init(&r2);
	result_init(&r3);
	done_init(&dc);
	/* Slow enough that neither job ends before the third is tried. */
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 64 * 1024, 0), 0);
	ck_assert_int_eq(kcopyd_client_set_max_jobs(kc, 2), 0);
	d = copy_desc(&from, 1, &to, 0, &r1);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id1), 0);
	d = copy_desc(&from, 1, &to, 0, &r2);
	ck_assert_int_eq(kcopyd_submit(kc, &d, &id2), 0);
	d = copy_desc(NULL, 1, &zr, 0, &r3);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), -EAGAIN);
	ck_assert_int_eq(kcopyd_zero(kc, 1, &zr, 0, done_cb, &dc), -EAGAIN);
	ck_assert_int_eq(kcopyd_cancel(kc, id1), 0);
	ck_assert_int_eq(kcopyd_cancel(kc, id2), 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(r1.c.cancelled && r2.c.cancelled, 1);
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), 0);
	ck_assert_int_eq(kcopyd_client_set_max_jobs(kc, 0), 0);
	ck_assert_int_eq(kcopyd_client_set_throttle(kc, 0, 0), 0);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(kcopyd_zero(kc, 1, &zr, 0, done_cb, &dc), 0);
	done_wait(&dc, 5);
	result_wait(&r3);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(sa);
	kcopyd_bdev_close(sb);
	free(a);
	free(b);
}
END_TEST

static Suite *jobs_suite(void)
{
	Suite *s = suite_create("jobs");
	TCase *tc;

	tc = tcase_create("submit");
	tcase_add_test(tc, test_submit_refusals);
	tcase_add_test(tc, test_completion_success);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_ignore_error_ranges);
	tcase_add_test(tc, test_error_stops);
	tcase_add_test(tc, test_real_enospc);
	suite_add_tcase(s, tc);

	tc = tcase_create("cancel");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_cancel_running, 0, 2);
	tcase_add_test(tc, test_cancel_from_callback);
	tcase_add_test(tc, test_cancel_race);
	suite_add_tcase(s, tc);

	tc = tcase_create("flush_throttle");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_flush);
	tcase_add_test(tc, test_throttle_rate);
	tcase_add_test(tc, test_throttle_percent);
	tcase_add_test(tc, test_max_jobs);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(jobs_suite());
}
