/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of KCOPYD_DIGEST: the digest in the completion equals one
 * computed here, independently, with libxxhash over the source's bytes
 * (read with read(2) before the copy), as libkcopyd(3) defines it - for
 * data, for holes (which the engine does not read), for ranges that are
 * no multiple of the block and start at any sector, with several
 * destinations, with VERIFY, with chunks smaller than a block, and for a
 * copy up into an overlap, which runs from the end.  A failed read,
 * even one IGNORE_ERROR passes over, and a cancel leave no digest; a zero
 * job and the kernel's calls refuse the flag.
 *
 * Thread model: tests run on Check's thread; completions run on the
 * client's callback thread and report under struct result's mutex.
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
#include <xxhash.h>

#include "testutil.h"

#define BLOCK ((size_t)65536)

struct result {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int calls;
	struct kcopyd_completion c;
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
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* The definition, over bytes in memory: block hashes, then their hash. */
static uint64_t ref_digest(const unsigned char *p, size_t len)
{
	size_t nblocks = (len + BLOCK - 1) / BLOCK;
	unsigned char *le = malloc(nblocks * 8 + 1);
	uint64_t d;

	ck_assert_ptr_nonnull(le);
	for (size_t b = 0; b < nblocks; b++) {
		size_t n = len - b * BLOCK < BLOCK ? len - b * BLOCK : BLOCK;
		uint64_t h = XXH3_64bits_withSeed(p + b * BLOCK, n, 0);

		for (unsigned int i = 0; i < 8; i++)
			le[b * 8 + i] = (unsigned char)(h >> (8 * i));
	}
	d = XXH3_64bits_withSeed(le, nblocks * 8, 0);
	free(le);
	return d;
}

/* The reference digest of sectors [sector, sector + count) of a file. */
static uint64_t file_digest(const char *path, sector_t sector, sector_t count)
{
	size_t len;
	unsigned char *buf = read_file(path, &len);
	uint64_t d;

	ck_assert_uint_le((sector + count) * 512, len);
	d = ref_digest(buf + sector * 512, count * 512);
	free(buf);
	return d;
}

static void punch(const char *path, size_t off, size_t len)
{
	int fd = open(path, O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE |
				   FALLOC_FL_KEEP_SIZE, (off_t)off,
				   (off_t)len), 0);
	close(fd);
}

static int submit(struct kcopyd_client *kc, struct io_region *from,
		  unsigned int n, struct io_region *to, unsigned int flags,
		  struct result *r, uint64_t *id)
{
	struct kcopyd_job_desc d = {
		.size = sizeof(d),
		.op = KCOPYD_OP_COPY,
		.flags = flags,
		.from = from,
		.num_dests = n,
		.dests = to,
		.complete = record,
		.context = r,
	};

	result_init(r);
	return kcopyd_submit(kc, &d, id);
}

static void run(struct kcopyd_client *kc, struct io_region *from,
		unsigned int n, struct io_region *to, unsigned int flags,
		struct result *r)
{
	ck_assert_int_eq(submit(kc, from, n, to, flags, r, NULL), 0);
	wait_calls(&r->lock, &r->cond, &r->calls, 1, 300);
}

/* Are sectors [s, s + count) of a and [t, t + count) of b the same? */
static bool same_bytes(const char *a, sector_t s, const char *b, sector_t t,
		       sector_t count)
{
	size_t la, lb;
	unsigned char *pa = read_file(a, &la), *pb = read_file(b, &lb);
	bool same = memcmp(pa + s * 512, pb + t * 512, count * 512) == 0;

	free(pa);
	free(pb);
	return same;
}

/*
 * Copy sectors [sector, sector + count) of a fresh source of `size` bytes
 * (with the holes given, pairs of offset and length in bytes, 0-ended)
 * to `ndests` fresh files through kc, and check the digest and the copy.
 * Returns the source's bytes held in holes, per the engine's stats.
 */
static uint64_t check_copy(struct kcopyd_client *kc, size_t size,
			   const size_t *holes, sector_t sector,
			   sector_t count, unsigned int ndests,
			   unsigned int flags)
{
	static unsigned int n;
	struct block_device *src, *dst[KCOPYD_MAX_DESTS];
	struct io_region from, to[KCOPYD_MAX_DESTS];
	char name[64], *src_path, *dst_path[KCOPYD_MAX_DESTS];
	struct kcopyd_stats before, after;
	struct result r;
	uint64_t want;

	snprintf(name, sizeof(name), "dsrc%u", n);
	src_path = make_image(name, size, 3 + n);
	for (; holes && holes[1]; holes += 2)
		punch(src_path, holes[0], holes[1]);
	want = file_digest(src_path, sector, count);
	src = open_bdev(src_path, O_RDONLY);
	from = (struct io_region){ src, sector, count };
	for (unsigned int i = 0; i < ndests; i++) {
		snprintf(name, sizeof(name), "ddst%u-%u", n, i);
		dst_path[i] = make_image(name, count * 512, 50 + i);
		dst[i] = open_bdev(dst_path[i], O_RDWR);
		to[i] = (struct io_region){ dst[i], 0, count };
	}
	n++;

	ck_assert_int_eq(kcopyd_client_get_stats(kc, &before), 0);
	run(kc, &from, ndests, to, flags | KCOPYD_DIGEST, &r);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &after), 0);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_uint_eq(r.c.verify_err, 0);
	ck_assert_int_eq(r.c.digest_valid, 1);
	ck_assert_msg(r.c.digest == want,
		      "digest %016llx, want %016llx (sector %llu count %llu)",
		      (unsigned long long)r.c.digest,
		      (unsigned long long)want, (unsigned long long)sector,
		      (unsigned long long)count);
	for (unsigned int i = 0; i < ndests; i++) {
		ck_assert(same_bytes(src_path, sector, dst_path[i], 0, count));
		kcopyd_bdev_close(dst[i]);
		free(dst_path[i]);
	}
	kcopyd_bdev_close(src);
	free(src_path);
	return after.bytes_holes - before.bytes_holes;
}

START_TEST(test_all_data)
{
	struct kcopyd_client *kc = new_client(256, 0, 0, 0);

	/* Whole blocks only, then one short block at the end. */
	check_copy(kc, 4 * MiB, NULL, 0, 4 * MiB / 512, 1, 0);
	check_copy(kc, 3 * MiB + 1536, NULL, 0, (3 * MiB + 1536) / 512, 1,
		   0);
	kcopyd_client_destroy(kc);
}
END_TEST

/* Holes that begin and end inside blocks, and one at the end. */
static const size_t some_holes[] = {
	68 * KiB, 132 * KiB,
	1 * MiB + 4 * KiB, 2 * MiB + 32 * KiB,
	5 * MiB + 20 * KiB, 3 * MiB - 20 * KiB,
	0, 0,
};

/* 41 MiB from inside a block: more blocks of zeros than a page holds. */
static const size_t long_hole[] = { 5 * MiB + 12 * KiB, 41 * MiB, 0, 0 };

START_TEST(test_sparse)
{
	struct kcopyd_client *kc = new_client(256, 0, 0, 0);
	uint64_t holes;

	holes = check_copy(kc, 8 * MiB, some_holes, 0, 8 * MiB / 512, 1, 0);
	/* The holes really were hashed without being read. */
	ck_assert_uint_ge(holes, 2 * MiB);
	/* A hole of hundreds of blocks, their hashes fed by the page. */
	holes = check_copy(kc, 48 * MiB, long_hole, 3, 48 * MiB / 512 - 5, 1,
			   0);
	ck_assert_uint_ge(holes, 40 * MiB);
	kcopyd_client_destroy(kc);
}
END_TEST

/* A range from an odd sector, of an odd number of sectors. */
START_TEST(test_odd_range)
{
	struct kcopyd_client *kc = new_client(256, 0, 0, 0);

	check_copy(kc, 8 * MiB, some_holes, 7, 12345, 1, 0);
	check_copy(kc, 8 * MiB, some_holes, 129, 8 * MiB / 512 - 131, 1, 0);
	check_copy(kc, 1 * MiB, NULL, 3, 1, 1, 0);
	kcopyd_client_destroy(kc);
}
END_TEST

START_TEST(test_fan_out_verify)
{
	struct kcopyd_client *kc = new_client(256, 0, 0, 0);

	check_copy(kc, 8 * MiB, some_holes, 1, 8 * MiB / 512 - 3, 3, 0);
	check_copy(kc, 8 * MiB, some_holes, 1, 8 * MiB / 512 - 3, 3,
		   KCOPYD_VERIFY);
	check_copy(kc, 8 * MiB, NULL, 0, 8 * MiB / 512, 2,
		   KCOPYD_VERIFY | KCOPYD_WRITE_SEQ);
	kcopyd_client_destroy(kc);
}
END_TEST

/* Chunks smaller than a block: every block is cut, many times. */
START_TEST(test_small_chunks)
{
	struct kcopyd_client *kc = new_client(32, 3, 16384, 8);

	check_copy(kc, 8 * MiB, some_holes, 5, 8 * MiB / 512 - 9, 2, 0);
	check_copy(kc, 2 * MiB, NULL, 0, 2 * MiB / 512, 1, KCOPYD_VERIFY);
	kcopyd_client_destroy(kc);
	/* Chunks of 68 KiB: a block boundary inside most of them. */
	kc = new_client(40, 3, 68 * KiB, 4);
	check_copy(kc, 8 * MiB, some_holes, 0, 8 * MiB / 512, 1, 0);
	kcopyd_client_destroy(kc);
}
END_TEST

/*
 * A copy up into an overlap runs from the end, one chunk at a time; the
 * digest is still that of the source as it was before the copy.
 */
static void check_backward(unsigned int pages, sector_t start,
			   sector_t count, sector_t shift)
{
	struct kcopyd_client *kc = new_client(pages, 0, 0, 0);
	struct img im;
	struct io_region from, to;
	struct result r;
	uint64_t want;
	unsigned char *now;

	img_make(&im, "dback", (start + count + shift) * 512, 9);
	want = ref_digest(im.orig + start * 512, count * 512);
	from = (struct io_region){ im.bdev, start, count };
	to = (struct io_region){ im.bdev, start + shift, count };
	run(kc, &from, 1, &to, 0, &r);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_int_eq(r.c.digest_valid, 0);
	/* The first copy had no flag: no digest.  Now back, with one. */
	img_free(&im);

	img_make(&im, "dback", (start + count + shift) * 512, 9);
	from.bdev = im.bdev;
	to.bdev = im.bdev;
	run(kc, &from, 1, &to, KCOPYD_DIGEST, &r);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_uint_eq(r.c.write_err, 0);
	ck_assert_int_eq(r.c.digest_valid, 1);
	ck_assert_msg(r.c.digest == want, "backward digest %016llx, want %016llx",
		      (unsigned long long)r.c.digest, (unsigned long long)want);
	now = img_now(&im);
	ck_assert(memcmp(now + (start + shift) * 512, im.orig + start * 512,
			 count * 512) == 0);
	free(now);
	img_free(&im);
	kcopyd_client_destroy(kc);
}

START_TEST(test_backward)
{
	check_backward(256, 0, 4 * MiB / 512, 3);
	check_backward(256, 11, 4 * MiB / 512 + 77, 300);
	/* Chunks of 12 KiB: blocks gather from several chunks, top first. */
	check_backward(3, 5, 1 * MiB / 512 + 7, 1);
}
END_TEST

START_TEST(test_refused)
{
	struct kcopyd_client *kc = new_client(16, 0, 0, 0);
	struct img a, b;
	struct io_region from, to;
	struct kcopyd_job_desc d;
	struct done_count dc;
	struct result r;
	int culprit = 5;

	img_make(&a, "dref-a", 1 * MiB, 1);
	img_make(&b, "dref-b", 1 * MiB, 2);
	from = (struct io_region){ a.bdev, 0, 2048 };
	to = (struct io_region){ b.bdev, 0, 2048 };
	d = (struct kcopyd_job_desc){
		.size = sizeof(d),
		.op = KCOPYD_OP_ZERO,
		.flags = KCOPYD_DIGEST,
		.num_dests = 1,
		.dests = &to,
		.complete = record,
		.context = &r,
	};
	/* A zero has no source to digest. */
	ck_assert_int_eq(kcopyd_submit(kc, &d, NULL), -EINVAL);
	ck_assert_int_eq(kcopyd_check_copy(NULL, 1, &to, KCOPYD_DIGEST,
					   &culprit), -EINVAL);
	ck_assert_int_eq(culprit, -1);
	ck_assert_int_eq(kcopyd_check_copy(&from, 1, &to, KCOPYD_DIGEST,
					   NULL), 0);
	/* The kernel's calls have nowhere to put it. */
	done_init(&dc);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, KCOPYD_DIGEST,
				     done_cb, &dc), -EINVAL);
	ck_assert_int_eq(kcopyd_zero(kc, 1, &to, KCOPYD_DIGEST, done_cb,
				     &dc), -EINVAL);
	kcopyd_client_destroy(kc);
	ck_assert_uint_eq(done_calls(&dc), 0);
	img_free(&a);
	img_free(&b);
}
END_TEST

/* A failed read spoils the digest, even when the copy goes on. */
START_TEST(test_read_error)
{
	struct kcopyd_client *kc = new_client(64, 0, 0, 0);
	struct img a, b;
	struct io_region from, to;
	struct result r;

	img_make(&a, "derr-a", 4 * MiB, 1);
	img_make(&b, "derr-b", 4 * MiB, 2);
	from = (struct io_region){ a.bdev, 0, 4 * MiB / 512 };
	to = (struct io_region){ b.bdev, 0, 4 * MiB / 512 };
	add_fault(a.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR, 3000, 8,
		  EIO, 0);
	run(kc, &from, 1, &to, KCOPYD_DIGEST | KCOPYD_IGNORE_ERROR, &r);
	ck_assert_int_eq(r.c.read_err, 1);
	ck_assert_uint_eq(r.c.sectors_done, 4 * MiB / 512);
	ck_assert_int_eq(r.c.digest_valid, 0);
	ck_assert(r.c.digest == 0);
	run(kc, &from, 1, &to, KCOPYD_DIGEST, &r);
	ck_assert_int_eq(r.c.read_err, 1);
	ck_assert_int_eq(r.c.digest_valid, 0);
	/* Without the fault the same job has its digest. */
	kcopyd_bdev_clear_faults(a.bdev);
	run(kc, &from, 1, &to, KCOPYD_DIGEST, &r);
	ck_assert_int_eq(r.c.read_err, 0);
	ck_assert_int_eq(r.c.digest_valid, 1);
	ck_assert(r.c.digest == ref_digest(a.orig, 4 * MiB));
	kcopyd_client_destroy(kc);
	img_free(&a);
	img_free(&b);
}
END_TEST

/* A cancelled job has no digest, whatever it had read. */
START_TEST(test_cancel)
{
	struct kcopyd_client *kc = new_client(64, 2, 0, 0);
	struct img a, b;
	struct io_region from, to;
	struct result r;
	uint64_t id;

	img_make(&a, "dcan-a", 8 * MiB, 1);
	img_make(&b, "dcan-b", 8 * MiB, 2);
	from = (struct io_region){ a.bdev, 0, 8 * MiB / 512 };
	to = (struct io_region){ b.bdev, 0, 8 * MiB / 512 };
	/* Every read is slow, so the job is surely still running. */
	add_fault(a.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_DELAY, 0,
		  8 * MiB / 512, 0, 200000);
	ck_assert_int_eq(submit(kc, &from, 1, &to, KCOPYD_DIGEST, &r, &id),
			 0);
	ck_assert_int_eq(kcopyd_cancel(kc, id), 0);
	wait_calls(&r.lock, &r.cond, &r.calls, 1, 300);
	ck_assert_int_eq(r.c.cancelled, 1);
	ck_assert_int_eq(r.c.digest_valid, 0);
	kcopyd_client_destroy(kc);
	img_free(&a);
	img_free(&b);
}
END_TEST

/*
 * Random sizes, holes, ranges and clients against the reference; the
 * seed is printed, and KCOPYD_TEST_SEED runs one again.
 */
START_TEST(test_random)
{
	const char *env = getenv("KCOPYD_TEST_SEED");
	unsigned int seed = env ? (unsigned int)strtoul(env, NULL, 0) :
				  (unsigned int)time(NULL);
	static const unsigned int pages[] = { 2, 9, 40, 256 };
	static const unsigned int subjob[] = { 4096, 16384, 69632, 0 };

	printf("check_digest random seed %u\n", seed);
	srand(seed);
	for (unsigned int round = 0; round < 12; round++) {
		size_t size = (size_t)(1 + rand() % 48) * 64 * KiB +
			      (size_t)(rand() % 128) * 512;
		size_t holes[8] = { 0 };
		sector_t sectors = size / 512, start, count;
		struct kcopyd_client *kc;

		for (unsigned int h = 0; h < 3; h++) {
			size_t off = (size_t)rand() % size / 4096 * 4096;
			size_t len = (size_t)(rand() % 64 + 1) * 4096;

			if (off + len > size)
				continue;
			holes[2 * h] = off;
			holes[2 * h + 1] = len;
		}
		start = (sector_t)rand() % (sectors / 2);
		count = 1 + (sector_t)rand() % (sectors - start);
		kc = new_client(pages[rand() % 4], 1 + rand() % 3,
				subjob[rand() % 4], 1 + rand() % 8);
		check_copy(kc, size, holes[1] ? holes : NULL, start, count,
			   1 + rand() % 3, rand() % 2 ? KCOPYD_VERIFY : 0);
		kcopyd_client_destroy(kc);
	}
}
END_TEST

static Suite *digest_suite(void)
{
	Suite *s = suite_create("digest");
	TCase *tc = tcase_create("digest");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_all_data);
	tcase_add_test(tc, test_sparse);
	tcase_add_test(tc, test_odd_range);
	tcase_add_test(tc, test_fan_out_verify);
	tcase_add_test(tc, test_small_chunks);
	tcase_add_test(tc, test_backward);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_read_error);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_random);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(digest_suite());
}
