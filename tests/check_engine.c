/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the engine (lib/kcopyd.c): the API's refusals, copies and
 * zeros, the page cap, sub-job splitting, callbacks, flush and destroy,
 * overlap, WRITE_SEQ, and submission from many threads.
 *
 * Thread model: tests run on Check's thread; callbacks and progress
 * functions run on each client's threads and report through mutexes or
 * atomics.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"


static void assert_same(const char *a, size_t aoff, const char *b,
			size_t boff, size_t len)
{
	size_t la, lb;
	unsigned char *x = read_file(a, &la), *y = read_file(b, &lb);

	ck_assert_uint_ge(la, aoff + len);
	ck_assert_uint_ge(lb, boff + len);
	ck_assert_msg(memcmp(x + aoff, y + boff, len) == 0,
		      "%s+%zu and %s+%zu differ", a, aoff, b, boff);
	free(x);
	free(y);
}

/* --- Creation ------------------------------------------------------------- */

START_TEST(test_create_refusals)
{
	struct kcopyd_client *kc = NULL;
	struct kcopyd_options o = { 0 };

	ck_assert_int_eq(kcopyd_client_create(0, &kc), -EINVAL);
	ck_assert_int_eq(kcopyd_client_create(1, NULL), -EINVAL);
	o.subjob_size = 1000;
	ck_assert_int_eq(kcopyd_client_create_opts(8, &o, &kc), -EINVAL);
	o.subjob_size = 32 * MiB;
	ck_assert_int_eq(kcopyd_client_create_opts(8, &o, &kc), -EINVAL);
	o.subjob_size = 0;
	o.threads = 100000;
	ck_assert_int_eq(kcopyd_client_create_opts(8, &o, &kc), -EINVAL);
	ck_assert_ptr_null(kc);
}
END_TEST

START_TEST(test_create_destroy)
{
	struct kcopyd_client *kc = NULL;
	struct kcopyd_stats st;

	ck_assert_int_eq(kcopyd_client_create(1, &kc), 0);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.pages_total, 1);
	ck_assert_uint_eq(st.pages_in_use, 0);
	ck_assert_uint_eq(st.threads, 2);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	kcopyd_client_destroy(kc);
	kcopyd_client_destroy(NULL);
	ck_assert_str_eq(kcopyd_version(), PACKAGE_VERSION);
}
END_TEST

/* --- Refused submissions queue nothing and call nothing --------------------- */

struct refusal_env {
	struct kcopyd_client *kc;
	struct block_device *src, *dst, *ro;
	struct done_count done;
};

static void refusal_setup(struct refusal_env *e)
{
	char *a = make_image("ref-src", MiB, 1);
	char *b = make_image("ref-dst", MiB, 0);

	e->kc = new_client(16, 2, 0, 0);
	e->src = open_bdev(a, O_RDONLY);
	e->dst = open_bdev(b, O_RDWR);
	e->ro = open_bdev(b, O_RDONLY);
	done_init(&e->done);
	free(a);
	free(b);
}

static void refusal_check_nothing_queued(struct refusal_env *e)
{
	struct kcopyd_stats st;

	ck_assert_int_eq(kcopyd_client_flush(e->kc), 0);
	ck_assert_int_eq(kcopyd_client_get_stats(e->kc, &st), 0);
	ck_assert_uint_eq(st.jobs_submitted, 0);
	ck_assert_uint_eq(done_calls(&e->done), 0);
	kcopyd_client_destroy(e->kc);
	kcopyd_bdev_close(e->src);
	kcopyd_bdev_close(e->dst);
	kcopyd_bdev_close(e->ro);
}

START_TEST(test_copy_refusals)
{
	struct refusal_env e;
	struct io_region from, to[KCOPYD_MAX_DESTS + 1];
	sector_t size;

	refusal_setup(&e);
	size = kcopyd_bdev_sectors(e.src);
	ck_assert_uint_eq(size, 2048);
	from = (struct io_region){ e.src, 0, 64 };
	for (int i = 0; i <= KCOPYD_MAX_DESTS; i++)
		to[i] = (struct io_region){ e.dst, (sector_t)i * 64, 64 };

#define REFUSE(err, ...) \
	ck_assert_int_eq(kcopyd_copy(__VA_ARGS__, done_cb, &e.done), err)
	REFUSE(-EINVAL, NULL, &from, 1, to, 0);
	REFUSE(-EINVAL, e.kc, NULL, 1, to, 0);
	REFUSE(-EINVAL, e.kc, &from, 1, NULL, 0);
	REFUSE(-EINVAL, e.kc, &from, 0, to, 0);
	REFUSE(-E2BIG, e.kc, &from, KCOPYD_MAX_DESTS + 1, to, 0);
	REFUSE(-EINVAL, e.kc, &from, 1, to, 1u << 8);
	REFUSE(-EINVAL, e.kc, &from, 1, to, 0x80000000u);

	to[1].count = 63;		/* counts differ */
	REFUSE(-EINVAL, e.kc, &from, 2, to, 0);
	to[1].count = 64;
	to[1].bdev = NULL;
	REFUSE(-EINVAL, e.kc, &from, 2, to, 0);
	to[1].bdev = e.dst;

	from.sector = size - 63;	/* source past the end */
	REFUSE(-ERANGE, e.kc, &from, 1, to, 0);
	from.sector = UINT64_MAX - 10;	/* sector + count overflows */
	REFUSE(-ERANGE, e.kc, &from, 1, to, 0);
	from.sector = 0;
	to[0].sector = size - 1;	/* destination past the end */
	REFUSE(-ERANGE, e.kc, &from, 1, to, 0);
	to[0].sector = 0;

	to[0].bdev = e.ro;		/* read-only destination */
	REFUSE(-EROFS, e.kc, &from, 1, to, 0);
	to[0].bdev = e.dst;

	to[1].sector = 32;		/* destinations overlap each other */
	REFUSE(-EINVAL, e.kc, &from, 2, to, 0);
#undef REFUSE
	refusal_check_nothing_queued(&e);
}
END_TEST

START_TEST(test_zero_refusals)
{
	struct refusal_env e;
	struct io_region to[2];

	refusal_setup(&e);
	to[0] = (struct io_region){ e.dst, 2000, 100 };
	ck_assert_int_eq(kcopyd_zero(e.kc, 1, to, 0, done_cb, &e.done),
			 -ERANGE);
	to[0] = (struct io_region){ e.ro, 0, 100 };
	ck_assert_int_eq(kcopyd_zero(e.kc, 1, to, 0, done_cb, &e.done),
			 -EROFS);
	ck_assert_int_eq(kcopyd_zero(e.kc, 0, to, 0, done_cb, &e.done),
			 -EINVAL);
	ck_assert_int_eq(kcopyd_zero(e.kc, 1, to, 0x100, done_cb, &e.done),
			 -EINVAL);
	refusal_check_nothing_queued(&e);
}
END_TEST

/* --- Copies and zeros ------------------------------------------------------- */

START_TEST(test_copy_fanout)
{
	unsigned int n = (unsigned int)_i ? 8 : 1;
	char *src = make_image("fan-src", 3 * MiB, 7);
	char *dst[8];
	struct block_device *s, *d[8];
	struct io_region from, to[8];
	struct kcopyd_client *kc = new_client(256, 2, 0, 0);
	struct done_count done;

	done_init(&done);
	s = open_bdev(src, O_RDONLY);
	for (unsigned int i = 0; i < n; i++) {
		char name[32];

		snprintf(name, sizeof(name), "fan-dst%u", i);
		dst[i] = make_image(name, 4 * MiB, 0);
		d[i] = open_bdev(dst[i], O_RDWR);
		/* Odd offsets and a length that is not a whole chunk. */
		to[i] = (struct io_region){ d[i], 3 + i * 11, 5000 };
	}
	from = (struct io_region){ s, 17, 5000 };
	ck_assert_int_eq(kcopyd_copy(kc, &from, n, to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 0);
	ck_assert_uint_eq(done.write_err, 0);
	for (unsigned int i = 0; i < n; i++) {
		size_t len;
		unsigned char *buf = read_file(dst[i], &len);
		size_t at = (3 + i * 11) * 512, end = at + 5000 * 512;

		assert_same(src, 17 * 512, dst[i], at, 5000 * 512);
		/* Nothing outside the region was touched. */
		memset(buf + at, 0, end - at);
		for (size_t k = 0; k < len; k++)
			if (buf[k])
				ck_abort_msg("%s byte %zu written", dst[i], k);
		free(buf);
		kcopyd_bdev_close(d[i]);
		free(dst[i]);
	}
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	free(src);
}
END_TEST

START_TEST(test_zero)
{
	char *path = make_image("zero", 2 * MiB, 3);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_client *kc = new_client(4, 2, 0, 0);
	/* Zeros of different lengths in one job. */
	struct io_region to[2] = { { b, 100, 300 }, { b, 1000, 1500 } };
	struct done_count done;
	unsigned char *buf, *ref;
	size_t len;

	done_init(&done);
	ck_assert_int_eq(kcopyd_zero(kc, 2, to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 0);
	ck_assert_uint_eq(done.write_err, 0);
	buf = read_file(path, &len);
	ref = malloc(len);
	fill_pattern(ref, len, 3);
	memset(ref + 100 * 512, 0, 300 * 512);
	memset(ref + 1000 * 512, 0, 1500 * 512);
	ck_assert(memcmp(buf, ref, len) == 0);
	free(buf);
	free(ref);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

START_TEST(test_empty_job)
{
	char *path = make_image("empty", MiB, 1);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_client *kc = new_client(1, 1, 0, 0);
	struct io_region from = { b, 10, 0 }, to = { b, 2048, 0 };
	struct done_count done;

	done_init(&done);
	/* A zero-length region may sit at the very end of the device. */
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 0);
	ck_assert_uint_eq(done.write_err, 0);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

/* --- The page pool is a hard cap, and any size completes any copy ----------- */

static const unsigned int cap_pages[] = { 1, 3, 16, 200 };

START_TEST(test_page_cap)
{
	unsigned int pages = cap_pages[_i];
	char *src = make_image("cap-src", 8 * MiB, 5);
	char *dst = make_image("cap-dst", 8 * MiB, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d[2] = { open_bdev(dst, O_RDWR),
				      open_bdev(dst, O_RDWR) };
	struct kcopyd_client *kc = new_client(pages, 4, 0, 0);
	struct done_count done;
	struct kcopyd_stats st;
	size_t chunk;

	done_init(&done);
	/* Several jobs at once, all competing for the pool. */
	for (unsigned int j = 0; j < 4; j++) {
		struct io_region from = { s, j * 4096, 4096 };
		struct io_region to = { d[j & 1], j * 4096, 4096 };

		ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb,
					     &done), 0);
	}
	done_wait(&done, 4);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_le(st.pages_peak, pages);
	ck_assert_uint_ge(st.pages_peak, 1);
	ck_assert_uint_eq(st.pages_in_use, 0);
	ck_assert_uint_eq(st.jobs_done, 4);
	/* Chunks shrink to the pool: 2 MiB jobs / min(512 KiB, pool). */
	chunk = pages < 128 ? pages * 4096 : 512 * 1024;
	ck_assert_uint_eq(st.subjobs, 4 * ((2 * MiB + chunk - 1) / chunk));
	ck_assert_uint_eq(st.bytes_read, 8 * MiB);
	ck_assert_uint_eq(st.bytes_written, 8 * MiB);
	assert_same(src, 0, dst, 0, 8 * MiB);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d[0]);
	kcopyd_bdev_close(d[1]);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_subjob_size)
{
	char *src = make_image("sj-src", 4 * MiB, 5);
	char *dst = make_image("sj-dst", 4 * MiB, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d = open_bdev(dst, O_RDWR);
	struct kcopyd_client *kc = new_client(1024, 2, 64 * 1024, 0);
	struct io_region from = { s, 0, 8192 }, to = { d, 0, 8192 };
	struct kcopyd_stats st;

	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, NULL, NULL), 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.subjobs, 64);
	/* At most max_inflight (8) chunks of 16 pages of the one job. */
	ck_assert_uint_le(st.pages_peak, 8 * 16);
	ck_assert_uint_eq(st.jobs_done, 1);
	assert_same(src, 0, dst, 0, 4 * MiB);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d);
	free(src);
	free(dst);
}
END_TEST

/* --- Callbacks ---------------------------------------------------------------- */

struct cb_probe {
	pthread_t submitter;
	atomic_int inside;
	atomic_int max_inside;
	atomic_int calls;
	atomic_int on_submitter;
};

static void probe_cb(int read_err, unsigned int write_err, void *context)
{
	struct cb_probe *p = context;
	int n = atomic_fetch_add(&p->inside, 1) + 1;

	if (n > atomic_load(&p->max_inside))
		atomic_store(&p->max_inside, n);
	if (pthread_equal(pthread_self(), p->submitter))
		atomic_fetch_add(&p->on_submitter, 1);
	usleep(200);		/* widen any window for a second callback */
	atomic_fetch_sub(&p->inside, 1);
	atomic_fetch_add(&p->calls, 1);
}

START_TEST(test_callbacks_serialised)
{
	char *path = make_image("cb", 4 * MiB, 9);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_client *kc = new_client(64, 4, 0, 0);
	struct cb_probe p = { .submitter = pthread_self() };

	for (unsigned int j = 0; j < 200; j++) {
		struct io_region from = { b, (j % 16) * 8, 8 };
		struct io_region to = { b, 4096 + (j % 64) * 8, 8 };

		/* Zero-length jobs complete at once: still not on our stack. */
		if (j % 10 == 0)
			from.count = to.count = 0;
		ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, probe_cb,
					     &p), 0);
	}
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(atomic_load(&p.calls), 200);
	ck_assert_int_eq(atomic_load(&p.max_inside), 1);
	ck_assert_int_eq(atomic_load(&p.on_submitter), 0);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

struct chain {
	struct kcopyd_client *kc;
	struct block_device *b;
	int left;
	int submit_err;
	int flush_err;
	struct done_count done;
};

static void chain_cb(int read_err, unsigned int write_err, void *context)
{
	struct chain *c = context;
	struct io_region from = { c->b, 0, 8 }, to = { c->b, 8, 8 };

	c->flush_err = kcopyd_client_flush(c->kc);
	/* Refused, not a deadlock; the client stays usable. */
	if (c->left == 100)
		kcopyd_client_destroy(c->kc);
	if (--c->left > 0)
		c->submit_err = kcopyd_copy(c->kc, &from, 1, &to, 0,
					    chain_cb, c);
	else
		done_cb(read_err, write_err, &c->done);
}

START_TEST(test_callback_submits)
{
	char *path = make_image("chain", MiB, 4);
	struct chain c = { .left = 100 };
	struct io_region from, to;

	done_init(&c.done);
	c.kc = new_client(2, 2, 0, 0);
	c.b = open_bdev(path, O_RDWR);
	from = (struct io_region){ c.b, 0, 8 };
	to = (struct io_region){ c.b, 8, 8 };
	ck_assert_int_eq(kcopyd_copy(c.kc, &from, 1, &to, 0, chain_cb, &c), 0);
	done_wait(&c.done, 1);
	ck_assert_int_eq(c.submit_err, 0);
	ck_assert_int_eq(c.flush_err, -EDEADLK);
	ck_assert_int_eq(c.left, 0);
	kcopyd_client_destroy(c.kc);
	kcopyd_bdev_close(c.b);
	free(path);
}
END_TEST

/* flush and destroy wait for slow jobs and their callbacks. */
START_TEST(test_flush_and_destroy_wait)
{
	bool destroy = _i;
	char *path = make_image("slow", 2 * MiB, 4);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_fault slow = { .ops = KCOPYD_FAULT_READ,
				     .kind = KCOPYD_FAULT_DELAY,
				     .sector = 0, .count = 1024,
				     .delay_us = 20000 };
	struct kcopyd_client *kc = new_client(8, 2, 0, 0);
	struct done_count done;

	done_init(&done);
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &slow), 0);
	for (unsigned int j = 0; j < 20; j++) {
		struct io_region from = { b, j * 32, 32 };
		struct io_region to = { b, 2048 + j * 32, 32 };

		ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb,
					     &done), 0);
	}
	ck_assert_uint_lt(done_calls(&done), 20);
	if (destroy) {
		kcopyd_client_destroy(kc);
		ck_assert_uint_eq(done_calls(&done), 20);
	} else {
		ck_assert_int_eq(kcopyd_client_flush(kc), 0);
		ck_assert_uint_eq(done_calls(&done), 20);
		kcopyd_client_destroy(kc);
	}
	assert_same(path, 0, path, MiB, 640 * 512);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

/* --- Errors (the fault tests go further) ------------------------------------ */

START_TEST(test_errors_reported)
{
	char *src = make_image("err-src", MiB, 2);
	char *dst = make_image("err-dst", MiB, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d[3] = { open_bdev(dst, O_RDWR),
				      open_bdev(dst, O_RDWR),
				      open_bdev(dst, O_RDWR) };
	struct kcopyd_fault bad_write = { .ops = KCOPYD_FAULT_WRITE,
					  .sector = 0, .count = 2048 };
	struct kcopyd_fault bad_read = { .ops = KCOPYD_FAULT_READ,
					 .sector = 100, .count = 1 };
	struct kcopyd_client *kc = new_client(32, 2, 0, 0);
	struct io_region from = { s, 0, 256 };
	struct io_region to[3] = { { d[0], 0, 256 }, { d[1], 256, 256 },
				   { d[2], 512, 256 } };
	struct done_count done;

	done_init(&done);
	ck_assert_int_eq(kcopyd_bdev_add_fault(d[1], &bad_write), 0);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 3, to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 0);
	ck_assert_uint_eq(done.write_err, 1u << 1);
	/* The other destinations were still written. */
	assert_same(src, 0, dst, 0, 256 * 512);
	assert_same(src, 0, dst, 512 * 512, 256 * 512);

	done_init(&done);
	ck_assert_int_eq(kcopyd_bdev_add_fault(s, &bad_read), 0);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 1);
	ck_assert_uint_eq(done.write_err, 0);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	for (int i = 0; i < 3; i++)
		kcopyd_bdev_close(d[i]);
	free(src);
	free(dst);
}
END_TEST

/*
 * IGNORE_ERROR retries a failed chunk block by block, as a rescue copy
 * does: only the unreadable sectors become zeros.
 */
START_TEST(test_salvage_bad_sectors)
{
	char *src = make_image("salv-src", MiB, 21);
	char *dst = make_image("salv-dst", MiB, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d = open_bdev(dst, O_RDWR);
	struct kcopyd_fault bad = { .ops = KCOPYD_FAULT_READ, .count = 1 };
	struct kcopyd_client *kc = new_client(256, 2, 0, 0);
	struct io_region from = { s, 0, 2048 }, to = { d, 0, 2048 };
	struct done_count done;
	struct kcopyd_stats st;
	unsigned char *ref, *got;
	size_t len;

	bad.sector = 5;
	ck_assert_int_eq(kcopyd_bdev_add_fault(s, &bad), 0);
	bad.sector = 1700;
	ck_assert_int_eq(kcopyd_bdev_add_fault(s, &bad), 0);
	done_init(&done);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, KCOPYD_IGNORE_ERROR,
				     done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 1);
	ck_assert_uint_eq(done.write_err, 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.bytes_read, MiB - 2 * 512);
	ck_assert_uint_eq(st.bytes_written, MiB);
	ck_assert_uint_eq(st.jobs_failed, 1);

	ref = read_file(src, &len);
	memset(ref + 5 * 512, 0, 512);
	memset(ref + 1700 * 512, 0, 512);
	got = read_file(dst, &len);
	ck_assert(memcmp(ref, got, MiB) == 0);
	free(ref);
	free(got);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d);
	free(src);
	free(dst);
}
END_TEST

/* --- Overlap gives memmove ---------------------------------------------------- */

static const long overlap_shift[] = { 100, -100, 1, -1, 1500, -1500, 0 };

START_TEST(test_overlap_memmove)
{
	long shift = overlap_shift[_i % 7];
	unsigned int pages = _i < 7 ? 1 : 512;
	size_t bytes = 8 * MiB;
	char *path = make_image("ovl", bytes, 6);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_client *kc = new_client(pages, 4, 0, 0);
	sector_t base = 4000, count = 6000;
	struct io_region from = { b, base, count };
	struct io_region to = { b, base + shift, count };
	struct done_count done;
	unsigned char *ref = malloc(bytes), *got;
	size_t len;

	done_init(&done);
	fill_pattern(ref, bytes, 6);
	memmove(ref + (base + shift) * 512, ref + base * 512, count * 512);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 0);
	ck_assert_uint_eq(done.write_err, 0);
	got = read_file(path, &len);
	ck_assert_uint_eq(len, bytes);
	ck_assert_msg(memcmp(got, ref, bytes) == 0,
		      "overlap by %ld sectors is not a memmove", shift);
	free(got);
	free(ref);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

/* The same file through two handles is still one device. */
START_TEST(test_overlap_two_handles)
{
	size_t bytes = 2 * MiB;
	char *path = make_image("ovl3", bytes, 13);
	struct block_device *r = open_bdev(path, O_RDONLY);
	struct block_device *w = open_bdev(path, O_RDWR);
	struct kcopyd_client *kc = new_client(16, 4, 0, 0);
	struct io_region from = { r, 0, 3000 }, to = { w, 10, 3000 };
	struct done_count done;
	unsigned char *ref = malloc(bytes), *got;
	size_t len;

	done_init(&done);
	fill_pattern(ref, bytes, 13);
	memmove(ref + 10 * 512, ref, 3000 * 512);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb, &done), 0);
	done_wait(&done, 1);
	got = read_file(path, &len);
	ck_assert(memcmp(got, ref, bytes) == 0);
	free(got);
	free(ref);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(r);
	kcopyd_bdev_close(w);
	free(path);
}
END_TEST

START_TEST(test_overlap_refused)
{
	char *path = make_image("ovl2", MiB, 6);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_client *kc = new_client(8, 2, 0, 0);
	struct io_region from = { b, 100, 100 };
	struct io_region to[2] = { { b, 50, 100 }, { b, 150, 100 } };
	struct io_region up = { b, 150, 100 };

	/* Overlapping the source from below and from above at once. */
	ck_assert_int_eq(kcopyd_copy(kc, &from, 2, to, 0, NULL, NULL),
			 -EINVAL);
	/* Upwards needs a backward copy: not with WRITE_SEQ. */
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &up, KCOPYD_WRITE_SEQ,
				     NULL, NULL), -EINVAL);
	/* Downwards is forwards: fine with WRITE_SEQ. */
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to[0], KCOPYD_WRITE_SEQ,
				     NULL, NULL), 0);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

/* --- WRITE_SEQ ---------------------------------------------------------------------- */

struct seq_probe {
	const char *src, *dst;
	size_t bytes;
	atomic_int not_prefix;
	atomic_int calls;
};

static atomic_int progress_flush_err;
static struct kcopyd_client *progress_client;

/* After each chunk is written: is the destination an exact prefix? */
static void seq_progress(sector_t sectors, void *context)
{
	struct seq_probe *p = context;

	/* A worker waiting for its own client: refused, not a deadlock. */
	atomic_store(&progress_flush_err,
		     kcopyd_client_flush(progress_client));
	size_t ls, ld, i;
	unsigned char *s = read_file(p->src, &ls), *d = read_file(p->dst, &ld);

	for (i = 0; i < p->bytes && s[i] == d[i]; i++)
		;
	for (; i < p->bytes; i++)
		if (d[i] != 0) {
			atomic_fetch_add(&p->not_prefix, 1);
			break;
		}
	atomic_fetch_add(&p->calls, 1);
	free(s);
	free(d);
}

START_TEST(test_write_seq)
{
	bool seq = _i;
	struct seq_probe p = { .bytes = 4 * MiB };
	char *src = make_image("seq-src", p.bytes, 8);
	char *dst = make_image("seq-dst", p.bytes, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d = open_bdev(dst, O_RDWR);
	/*
	 * The first chunk's read is slow: later chunks overtake it, even on
	 * a loaded machine or under a sanitizer.
	 */
	struct kcopyd_fault slow = { .ops = KCOPYD_FAULT_READ,
				     .kind = KCOPYD_FAULT_DELAY,
				     .sector = 0, .count = 1,
				     .delay_us = 600000 };
	struct kcopyd_client *kc = new_client(64, 4, 64 * 1024, 0);
	struct io_region from = { s, 0, p.bytes / 512 };
	struct io_region to = { d, 0, p.bytes / 512 };

	p.src = src;
	p.dst = dst;
	progress_client = kc;
	ck_assert_int_eq(kcopyd_bdev_add_fault(s, &slow), 0);
	ck_assert_int_eq(kcopyd_copy_progress(kc, &from, 1, &to,
					      seq ? KCOPYD_WRITE_SEQ : 0, NULL,
					      seq_progress, &p), 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_int_eq(atomic_load(&p.calls), 64);
	ck_assert_int_eq(atomic_load(&progress_flush_err), -EDEADLK);
	if (seq)
		ck_assert_int_eq(atomic_load(&p.not_prefix), 0);
	else	/* the probe can see out-of-order writes */
		ck_assert_int_gt(atomic_load(&p.not_prefix), 0);
	assert_same(src, 0, dst, 0, p.bytes);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_write_seq_tiny_pool)
{
	char *src = make_image("seqt-src", 2 * MiB, 8);
	char *dst = make_image("seqt-dst", 2 * MiB, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d = open_bdev(dst, O_RDWR);
	struct kcopyd_client *kc = new_client(1, 8, 0, 0);
	struct done_count done;

	done_init(&done);
	for (unsigned int j = 0; j < 4; j++) {
		struct io_region from = { s, j * 1024, 1024 };
		struct io_region to = { d, j * 1024, 1024 };

		ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to,
					     KCOPYD_WRITE_SEQ, done_cb, &done),
				 0);
	}
	done_wait(&done, 4);
	assert_same(src, 0, dst, 0, 2 * MiB);
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d);
	free(src);
	free(dst);
}
END_TEST

/*
 * Each client has threads of its own: one stuck on a slow device never
 * holds up another (the kernel's shared kcopyd thread once did).
 */
START_TEST(test_clients_independent)
{
	char *slow_path = make_image("iso-slow", MiB, 31);
	char *fast_path = make_image("iso-fast", MiB, 32);
	struct block_device *slow = open_bdev(slow_path, O_RDWR);
	struct block_device *fast = open_bdev(fast_path, O_RDWR);
	struct kcopyd_fault stall = { .ops = KCOPYD_FAULT_READ,
				      .kind = KCOPYD_FAULT_DELAY,
				      .sector = 0, .count = 2048,
				      .delay_us = 1500000 };
	struct kcopyd_client *a = new_client(8, 2, 0, 0);
	struct kcopyd_client *b = new_client(8, 2, 0, 0);
	struct done_count da, db;

	done_init(&da);
	done_init(&db);
	ck_assert_int_eq(kcopyd_bdev_add_fault(slow, &stall), 0);
	/* Enough stalled work for every worker of client a. */
	for (unsigned int j = 0; j < 4; j++) {
		struct io_region from = { slow, j * 8, 8 };
		struct io_region to = { slow, 1024 + j * 8, 8 };

		ck_assert_int_eq(kcopyd_copy(a, &from, 1, &to, 0, done_cb,
					     &da), 0);
	}
	for (unsigned int j = 0; j < 16; j++) {
		struct io_region from = { fast, j * 8, 8 };
		struct io_region to = { fast, 1024 + j * 8, 8 };

		ck_assert_int_eq(kcopyd_copy(b, &from, 1, &to, 0, done_cb,
					     &db), 0);
	}
	ck_assert_int_eq(kcopyd_client_flush(b), 0);
	ck_assert_uint_eq(done_calls(&db), 16);
	/* Client a is still in its first reads. */
	ck_assert_uint_eq(done_calls(&da), 0);
	kcopyd_client_destroy(b);
	kcopyd_client_destroy(a);
	ck_assert_uint_eq(done_calls(&da), 4);
	assert_same(fast_path, 0, fast_path, 1024 * 512, 128 * 512);
	kcopyd_bdev_close(slow);
	kcopyd_bdev_close(fast);
	free(slow_path);
	free(fast_path);
}
END_TEST

/* --- Many submitting threads -------------------------------------------------------- */

struct submitter {
	struct kcopyd_client *kc;
	struct block_device *s, *d;
	unsigned int id;
	struct done_count *done;
	int err;
};

static void *submit_many(void *arg)
{
	struct submitter *t = arg;

	for (unsigned int j = 0; j < 50; j++) {
		sector_t at = (t->id * 50 + j) * 16;
		struct io_region from = { t->s, at, 16 };
		struct io_region to = { t->d, at, 16 };
		int r = kcopyd_copy(t->kc, &from, 1, &to, 0, done_cb, t->done);

		if (r)
			t->err = r;
	}
	return NULL;
}

START_TEST(test_concurrent_submit)
{
	char *src = make_image("conc-src", 4 * MiB, 12);
	char *dst = make_image("conc-dst", 4 * MiB, 0);
	struct block_device *s = open_bdev(src, O_RDONLY);
	struct block_device *d = open_bdev(dst, O_RDWR);
	struct kcopyd_client *kc = new_client(8, 3, 0, 0);
	struct submitter t[8];
	pthread_t th[8];
	struct done_count done;

	done_init(&done);
	for (unsigned int i = 0; i < 8; i++) {
		t[i] = (struct submitter){ kc, s, d, i, &done, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, submit_many,
						&t[i]), 0);
	}
	for (unsigned int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(t[i].err, 0);
	}
	kcopyd_client_destroy(kc);
	ck_assert_uint_eq(done_calls(&done), 400);
	assert_same(src, 0, dst, 0, 400 * 16 * 512);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d);
	free(src);
	free(dst);
}
END_TEST

static Suite *engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc;

	tc = tcase_create("create");
	tcase_add_test(tc, test_create_refusals);
	tcase_add_test(tc, test_create_destroy);
	suite_add_tcase(s, tc);

	tc = tcase_create("refusals");
	tcase_add_test(tc, test_copy_refusals);
	tcase_add_test(tc, test_zero_refusals);
	suite_add_tcase(s, tc);

	tc = tcase_create("copy");
	tcase_add_loop_test(tc, test_copy_fanout, 0, 2);
	tcase_add_test(tc, test_zero);
	tcase_add_test(tc, test_empty_job);
	suite_add_tcase(s, tc);

	tc = tcase_create("pages");
	tcase_add_loop_test(tc, test_page_cap, 0, 4);
	tcase_add_test(tc, test_subjob_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("callbacks");
	tcase_add_test(tc, test_callbacks_serialised);
	tcase_add_test(tc, test_callback_submits);
	tcase_add_loop_test(tc, test_flush_and_destroy_wait, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_errors_reported);
	tcase_add_test(tc, test_salvage_bad_sectors);
	suite_add_tcase(s, tc);

	tc = tcase_create("overlap");
	tcase_add_loop_test(tc, test_overlap_memmove, 0, 14);
	tcase_add_test(tc, test_overlap_two_handles);
	tcase_add_test(tc, test_overlap_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("write_seq");
	tcase_add_loop_test(tc, test_write_seq, 0, 2);
	tcase_add_test(tc, test_write_seq_tiny_pool);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_add_test(tc, test_concurrent_submit);
	tcase_add_test(tc, test_clients_independent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(engine_suite());
}
