/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of KCOPYD_VERIFY and of the KCOPYD_FAULT_CORRUPT rules it is
 * tested against: silent corruption on a write or on a read back is
 * caught on the destination that suffered it and only there, at its first
 * wrong sector, in data and in holes; IGNORE_ERROR reports each wrong run
 * to the bad-range function; without VERIFY the same corruption passes
 * unseen, which shows the rules really are silent.
 *
 * Thread model: tests run on Check's thread; completions and bad-range
 * functions run on the client's threads and report under struct
 * result's mutex.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define NDESTS 3

struct bad {
	struct block_device *bdev;
	sector_t sector, count;
	int write, error;
};

struct result {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int calls;
	struct kcopyd_completion c;
	sector_t vsec[KCOPYD_MAX_DESTS];
	sector_t done;
	unsigned int nr_bad;
	struct bad bad[16];
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

	pthread_mutex_lock(&r->lock);
	r->calls++;
	r->c = *c;
	memcpy(r->vsec, c->verify_sector, c->num_dests * sizeof(sector_t));
	r->done = c->sectors_done;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void record_bad(uint64_t id, struct block_device *bdev,
		       sector_t sector, sector_t count, int write, int error,
		       void *context)
{
	struct result *r = context;

	pthread_mutex_lock(&r->lock);
	if (r->nr_bad < 16)
		r->bad[r->nr_bad] = (struct bad){ bdev, sector, count, write,
						  error };
	r->nr_bad++;
	pthread_mutex_unlock(&r->lock);
}

static void result_wait(struct result *r)
{
	wait_calls(&r->lock, &r->cond, &r->calls, 1, 120);
}

struct setup {
	char *src_path, *dst_path[NDESTS];
	struct block_device *src, *dst[NDESTS];
	struct io_region from, to[NDESTS];
	struct kcopyd_client *kc;
	size_t len;
};

/* A source of `len` bytes (a hole in [hole, hole + hole_len) if given). */
static void setup(struct setup *s, size_t len, size_t hole, size_t hole_len)
{
	static unsigned int n;
	char name[64];

	memset(s, 0, sizeof(*s));
	s->len = len;
	snprintf(name, sizeof(name), "src%u", n);
	s->src_path = make_image(name, len, 7 + n);
	if (hole_len) {
		int fd = open(s->src_path, O_RDWR);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE |
					   FALLOC_FL_KEEP_SIZE, (off_t)hole,
					   (off_t)hole_len), 0);
		close(fd);
	}
	s->src = open_bdev(s->src_path, O_RDONLY);
	s->from = (struct io_region){ s->src, 0, len >> 9 };
	for (unsigned int i = 0; i < NDESTS; i++) {
		snprintf(name, sizeof(name), "dst%u-%u", n, i);
		s->dst_path[i] = make_image(name, len, 100 + i);
		s->dst[i] = open_bdev(s->dst_path[i], O_RDWR);
		s->to[i] = (struct io_region){ s->dst[i], 0, len >> 9 };
	}
	n++;
	ck_assert_int_eq(kcopyd_client_create(256, &s->kc), 0);
}

static void teardown(struct setup *s)
{
	kcopyd_client_destroy(s->kc);
	kcopyd_bdev_close(s->src);
	free(s->src_path);
	for (unsigned int i = 0; i < NDESTS; i++) {
		kcopyd_bdev_close(s->dst[i]);
		free(s->dst_path[i]);
	}
}

static void run(struct setup *s, unsigned int flags, struct result *r)
{
	struct kcopyd_job_desc d = {
		.size = sizeof(d),
		.op = KCOPYD_OP_COPY,
		.flags = flags,
		.from = &s->from,
		.num_dests = NDESTS,
		.dests = s->to,
		.complete = record,
		.context = r,
	};

	result_init(r);
	ck_assert_int_eq(kcopyd_client_set_bad_range(s->kc, record_bad, r),
			 0);
	ck_assert_int_eq(kcopyd_submit(s->kc, &d, NULL), 0);
	result_wait(r);
}

static void add_corrupt(struct block_device *b, unsigned int ops,
			sector_t sector, sector_t count)
{
	add_fault(b, ops, KCOPYD_FAULT_CORRUPT, sector, count, 0, 0);
}

/* Sectors of dest i's file that differ from the source's. */
static unsigned int differing(struct setup *s, unsigned int i,
			      sector_t *first)
{
	size_t a, b;
	unsigned char *src = read_file(s->src_path, &a);
	unsigned char *dst = read_file(s->dst_path[i], &b);
	unsigned int n = 0;

	ck_assert_uint_eq(a, b);
	for (size_t off = 0; off < a; off += 512)
		if (memcmp(src + off, dst + off, 512)) {
			if (!n)
				*first = off / 512;
			n++;
		}
	free(src);
	free(dst);
	return n;
}

/*
 * A corrupting write on one destination of three: caught there only.
 * IGNORE_ERROR lets the job run to its end, so that every destination
 * can be compared with the source in full.
 */
START_TEST(test_corrupt_write_caught)
{
	struct setup s;
	struct result r;
	sector_t first = 0;

	setup(&s, 4 * MiB, 0, 0);
	add_corrupt(s.dst[1], KCOPYD_FAULT_WRITE, 3001, 5);
	run(&s, KCOPYD_VERIFY | KCOPYD_IGNORE_ERROR, &r);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_eq(r.c.verify_err, 1u << 1);
	ck_assert_uint_eq(r.vsec[1], 3001);
	/* The corruption is real, on dest 1 only. */
	ck_assert_uint_eq(differing(&s, 1, &first), 5);
	ck_assert_uint_eq(first, 3001);
	ck_assert_uint_eq(differing(&s, 0, &first), 0);
	ck_assert_uint_eq(differing(&s, 2, &first), 0);
	teardown(&s);
}
END_TEST

/* Without IGNORE_ERROR a verify error stops the job, as a write error. */
START_TEST(test_verify_error_stops)
{
	struct setup s;
	struct result r;

	setup(&s, 8 * MiB, 0, 0);
	add_corrupt(s.dst[0], KCOPYD_FAULT_WRITE, 0, 1);
	run(&s, KCOPYD_VERIFY, &r);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_eq(r.c.verify_err, 1u << 0);
	ck_assert_uint_eq(r.vsec[0], 0);
	ck_assert_uint_lt(r.done, 8 * MiB / 512);
	teardown(&s);
}
END_TEST

/* The same rule without VERIFY: the copy says all is well. */
START_TEST(test_corrupt_write_silent)
{
	struct setup s;
	struct result r;
	sector_t first = 0;

	setup(&s, 4 * MiB, 0, 0);
	add_corrupt(s.dst[2], KCOPYD_FAULT_WRITE, 10, 1);
	run(&s, 0, &r);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_eq(r.c.verify_err, 0);
	ck_assert_uint_eq(differing(&s, 2, &first), 1);
	ck_assert_uint_eq(first, 10);
	teardown(&s);
}
END_TEST

/*
 * A corrupting read of a destination (the data on it is right, what
 * comes back is not) is a verify error too: verify cannot tell, and must
 * not vouch.  In a hole of the source, where the destination is zeroed
 * rather than written, at the rule's first sector.
 */
START_TEST(test_corrupt_read_back_in_hole)
{
	struct setup s;
	struct result r;
	struct kcopyd_bdev_stats st;
	sector_t first = 0;

	setup(&s, 4 * MiB, 1 * MiB, 1 * MiB);
	add_corrupt(s.dst[0], KCOPYD_FAULT_READ, 2100, 3);
	run(&s, KCOPYD_VERIFY | KCOPYD_IGNORE_ERROR, &r);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_eq(r.c.verify_err, 1u << 0);
	ck_assert_uint_eq(r.vsec[0], 2100);
	ck_assert_uint_eq(differing(&s, 0, &first), 0);
	/* Every destination was read back in full, holes included. */
	for (unsigned int i = 0; i < NDESTS; i++) {
		ck_assert_int_eq(kcopyd_bdev_get_stats2(s.dst[i], &st,
							sizeof(st)), 0);
		ck_assert_uint_eq(st.bytes_verified, 4 * MiB);
		ck_assert_uint_eq(st.bytes_read, 0);
	}
	teardown(&s);
}
END_TEST

/*
 * IGNORE_ERROR: the job goes on; each wrong run, and only those, goes to
 * the bad-range function as EILSEQ on that destination.
 */
START_TEST(test_ignore_error_reports_runs)
{
	struct setup s;
	struct result r;
	bool seen[2] = { false, false };

	setup(&s, 2 * MiB, 0, 0);
	add_corrupt(s.dst[2], KCOPYD_FAULT_WRITE, 40, 8);
	add_corrupt(s.dst[2], KCOPYD_FAULT_WRITE, 3000, 2);
	run(&s, KCOPYD_VERIFY | KCOPYD_IGNORE_ERROR, &r);
	ck_assert_uint_eq(r.c.verify_err, 1u << 2);
	ck_assert_uint_eq(r.vsec[2], 40);
	ck_assert_uint_eq(r.done, 2 * MiB / 512);
	ck_assert_uint_eq(r.nr_bad, 2);
	for (unsigned int i = 0; i < 2; i++) {
		ck_assert_ptr_eq(r.bad[i].bdev, s.dst[2]);
		ck_assert_int_eq(r.bad[i].write, 1);
		ck_assert_int_eq(r.bad[i].error, EILSEQ);
		if (r.bad[i].sector == 40 && r.bad[i].count == 8)
			seen[0] = true;
		if (r.bad[i].sector == 3000 && r.bad[i].count == 2)
			seen[1] = true;
	}
	ck_assert(seen[0] && seen[1]);
	teardown(&s);
}
END_TEST

/* The kernel's interface has only write_err to say it with. */
static void notify(int read_err, unsigned int write_err, void *context)
{
	struct result *r = context;

	pthread_mutex_lock(&r->lock);
	r->calls++;
	r->c.read_err = read_err;
	r->c.write_err = write_err;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

START_TEST(test_notify_write_err)
{
	struct setup s;
	struct result r;

	setup(&s, 1 * MiB, 0, 0);
	add_corrupt(s.dst[0], KCOPYD_FAULT_WRITE, 0, 1);
	result_init(&r);
	ck_assert_int_eq(kcopyd_copy(s.kc, &s.from, NDESTS, s.to,
				     KCOPYD_VERIFY, notify, &r), 0);
	result_wait(&r);
	ck_assert_uint_eq(r.c.write_err, 1u << 0);
	teardown(&s);
}
END_TEST

/* A clean copy verifies clean, without stopping the zero detection. */
START_TEST(test_clean_copy)
{
	struct setup s;
	struct result r;
	struct kcopyd_bdev_stats st;
	sector_t first;

	setup(&s, 3 * MiB, 512 * 1024, 1 * MiB);
	run(&s, KCOPYD_VERIFY, &r);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_eq(r.c.verify_err, 0);
	for (unsigned int i = 0; i < NDESTS; i++) {
		ck_assert_uint_eq(differing(&s, i, &first), 0);
		ck_assert_int_eq(kcopyd_bdev_get_stats2(s.dst[i], &st,
							sizeof(st)), 0);
		ck_assert_uint_eq(st.bytes_verified, 3 * MiB);
	}
	teardown(&s);
}
END_TEST

/* The rule itself: first byte of each covered sector, reads and writes. */
START_TEST(test_corrupt_rule)
{
	char *path = make_image("rule", 8192, 3);
	struct block_device *b = open_bdev(path, O_RDWR);
	struct kcopyd_fault f = {
		.ops = KCOPYD_FAULT_FLUSH, .kind = KCOPYD_FAULT_CORRUPT,
		.sector = 0, .count = 1,
	};
	unsigned char want[8192], got[8192], buf[8192];
	size_t len;
	unsigned char *file;

	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_pread(b, want, sizeof(want), 0), 0);
	add_corrupt(b, KCOPYD_FAULT_READ, 2, 2);
	ck_assert_int_eq(kcopyd_bdev_pread(b, got, sizeof(got), 0), 0);
	for (size_t i = 0; i < sizeof(got); i++) {
		bool hit = (i == 1024 || i == 1536);

		ck_assert_int_eq(got[i], hit ? want[i] ^ 0xff : want[i]);
	}
	kcopyd_bdev_clear_faults(b);
	add_corrupt(b, KCOPYD_FAULT_WRITE, 15, 4);
	memcpy(buf, want, sizeof(buf));
	ck_assert_int_eq(kcopyd_bdev_pwrite(b, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(memcmp(buf, want, sizeof(buf)), 0);
	file = read_file(path, &len);
	ck_assert_uint_eq(len, sizeof(want));
	for (size_t i = 0; i < len; i++)
		ck_assert_int_eq(file[i], i == 7680 ? want[i] ^ 0xff :
						      want[i]);
	free(file);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

static Suite *verify_suite(void)
{
	Suite *s = suite_create("verify");
	TCase *tc = tcase_create("verify");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_corrupt_rule);
	tcase_add_test(tc, test_corrupt_write_caught);
	tcase_add_test(tc, test_corrupt_write_silent);
	tcase_add_test(tc, test_verify_error_stops);
	tcase_add_test(tc, test_corrupt_read_back_in_hole);
	tcase_add_test(tc, test_ignore_error_reports_runs);
	tcase_add_test(tc, test_notify_write_err);
	tcase_add_test(tc, test_clean_copy);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(verify_suite());
}
