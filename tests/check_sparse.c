/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of holes and zeros: sparse sources copied without reading
 * their holes, zero detection, the zeroing ladder, ALLOCATED and
 * TARGET_ZERO, and every promise of the engine with holes in play (the
 * page cap, memmove on one device, WRITE_SEQ prefixes, IGNORE_ERROR,
 * exact error bits, fault rules on holes).  Real sparse files on tmpfs,
 * checked against plain pread(2) and the allocation stat(2) reports.
 *
 * Thread model: the test thread submits and waits; callbacks run on each
 * client's callback thread and only touch a struct done_count.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"


struct extent {
	size_t off, len;
};

/* A sparse image of `size`: random data at each extent, holes elsewhere. */
static void img_sparse(struct img *im, const char *name, size_t size,
		       const struct extent *ext, unsigned int n,
		       unsigned int seed)
{
	int fd;

	im->path = make_image(name, size, 0);
	im->size = size;
	im->orig = calloc(1, size);
	ck_assert_ptr_nonnull(im->orig);
	fd = open(im->path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	for (unsigned int i = 0; i < n; i++) {
		fill_pattern(im->orig + ext[i].off, ext[i].len, seed + i);
		ck_assert_int_eq(pwrite(fd, im->orig + ext[i].off, ext[i].len,
					(off_t)ext[i].off),
				 (ssize_t)ext[i].len);
	}
	close(fd);
	im->bdev = open_bdev(im->path, O_RDWR);
}

/* A fully allocated image filled from seed (0: allocated zeros). */
static void img_full(struct img *im, const char *name, size_t size,
		     unsigned int seed)
{
	int fd;

	im->path = make_image(name, size, 0);
	im->size = size;
	im->orig = calloc(1, size);
	ck_assert_ptr_nonnull(im->orig);
	if (seed)
		fill_pattern(im->orig, size, seed);
	fd = open(im->path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, im->orig, size, 0), (ssize_t)size);
	close(fd);
	im->bdev = open_bdev(im->path, O_RDWR);
}

static void assert_holds(const struct img *im, const unsigned char *want)
{
	unsigned char *now = img_now(im);

	for (size_t i = 0; i < im->size; i++)
		if (now[i] != want[i])
			ck_abort_msg("%s: byte %zu is %u, want %u", im->path,
				     i, now[i], want[i]);
	free(now);
}

static uint64_t allocated(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static struct kcopyd_client *client_opts(unsigned int pages,
					 unsigned int sparse_size,
					 unsigned int flags)
{
	struct kcopyd_options o = {
		.threads = 3,
		.subjob_size = 64 * KiB,
		.sparse_size = sparse_size,
		.flags = flags,
	};
	struct kcopyd_client *kc;

	ck_assert_int_eq(kcopyd_client_create_opts(pages, &o, &kc), 0);
	return kc;
}

static struct done_count copy_img(struct kcopyd_client *kc, struct img *src,
				  struct img *dst, unsigned int ndst,
				  unsigned int flags)
{
	struct io_region from = { src->bdev, 0, src->size >> 9 };
	struct io_region to[4];
	struct done_count d;

	for (unsigned int i = 0; i < ndst; i++)
		to[i] = (struct io_region){ dst[i].bdev, 0, src->size >> 9 };
	done_init(&d);
	ck_assert_int_eq(kcopyd_copy(kc, &from, ndst, to, flags, done_cb, &d),
			 0);
	done_wait(&d, 1);
	return d;
}

/* 8 MiB with 1 MiB of data in four extents, one at each end. */
static const struct extent four[] = {
	{ 0, 128 * KiB },
	{ 1 * MiB + 4 * KiB, 260 * KiB },
	{ 5 * MiB, 512 * KiB },
	{ 8 * MiB - 124 * KiB, 124 * KiB },
};
#define FOUR_SIZE	(8 * MiB)
#define FOUR_DATA	(1024 * KiB)

/* --- Sparse copies ------------------------------------------------------------ */

START_TEST(test_holes_not_read)
{
	struct kcopyd_client *kc = client_opts(64, 0, 0);
	struct kcopyd_stats st;
	struct img src, dst;
	struct done_count d;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 1);
	img_sparse(&dst, "dst", FOUR_SIZE, NULL, 0, 0);
	d = copy_img(kc, &src, &dst, 1, 0);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 0);
	assert_holds(&dst, src.orig);

	/* Only the data was read and written; the rest is holes still. */
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.bytes_read, FOUR_DATA);
	ck_assert_uint_eq(st.bytes_written, FOUR_DATA);
	ck_assert_uint_eq(st.bytes_holes, FOUR_SIZE - FOUR_DATA);
	ck_assert_uint_le(allocated(dst.path), allocated(src.path));
	ck_assert_uint_ge(allocated(dst.path), FOUR_DATA);

	/*
	 * The symbol itself, as a program built against the first struct
	 * calls it, fills only that struct; a size below it is refused.
	 */
	memset(&st, 0xff, sizeof(st));
	ck_assert_int_eq((kcopyd_client_get_stats)(kc, &st), 0);
	ck_assert_uint_eq(st.bytes_written, FOUR_DATA);
	ck_assert_uint_eq(st.bytes_zeroed, UINT64_MAX);
	ck_assert_uint_eq(st.bytes_holes, UINT64_MAX);
	ck_assert_uint_eq(st.bytes_zero_data, UINT64_MAX);
	ck_assert_int_eq(kcopyd_client_get_stats2(kc, &st, 8), -EINVAL);

	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* A destination holding data where the source has holes gets zeros. */
START_TEST(test_holes_zero_old_data)
{
	struct kcopyd_client *kc = client_opts(64, 0, 0);
	struct kcopyd_bdev_stats bs;
	struct img src, dst;
	struct done_count d;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 1);
	img_full(&dst, "dst", FOUR_SIZE, 9);
	d = copy_img(kc, &src, &dst, 1, 0);
	ck_assert_uint_eq(d.write_err, 0);
	assert_holds(&dst, src.orig);
	/* Zeroed by punching (tmpfs can), so no longer allocated there. */
	ck_assert_int_eq(kcopyd_bdev_get_stats2(dst.bdev, &bs, sizeof(bs)), 0);
	ck_assert_uint_eq(bs.bytes_zeroed, FOUR_SIZE - FOUR_DATA);
	ck_assert_uint_eq(bs.zeroed_punch, FOUR_SIZE - FOUR_DATA);
	ck_assert_uint_eq(bs.zeroed_write, 0);
	ck_assert_uint_le(allocated(dst.path), allocated(src.path));

	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* Several destinations, aligned or not with the source's holes. */
START_TEST(test_holes_many_dests_offsets)
{
	struct kcopyd_client *kc = client_opts(16, 0, 0);
	struct img src, dst[2];
	struct io_region from, to[2];
	struct done_count d;
	unsigned char *want;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 3);
	img_full(&dst[0], "dst0", FOUR_SIZE + 64 * KiB, 5);
	img_full(&dst[1], "dst1", FOUR_SIZE + 64 * KiB, 6);
	/* Source sectors 7.. of length 8 MiB - 7 sectors - 3 KiB. */
	from = (struct io_region){ src.bdev, 7, (FOUR_SIZE >> 9) - 13 };
	to[0] = (struct io_region){ dst[0].bdev, 1, from.count };
	to[1] = (struct io_region){ dst[1].bdev, 100, from.count };
	done_init(&d);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 2, to, 0, done_cb, &d), 0);
	done_wait(&d, 1);
	ck_assert_uint_eq(d.write_err, 0);
	for (unsigned int i = 0; i < 2; i++) {
		want = malloc(dst[i].size);
		memcpy(want, dst[i].orig, dst[i].size);
		memcpy(want + (to[i].sector << 9), src.orig + (7 << 9),
		       from.count << 9);
		assert_holds(&dst[i], want);
		free(want);
	}
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst[0]);
	img_free(&dst[1]);
}
END_TEST

/* --- Zero detection ----------------------------------------------------------- */

/* Allocated zeros are found after the read and zeroed, not written. */
START_TEST(test_zero_detection)
{
	struct kcopyd_client *kc = client_opts(64, 0, 0);
	struct kcopyd_stats st;
	struct img src, dst;
	struct done_count d;
	int fd;

	img_full(&src, "src", 4 * MiB, 0);
	/* Some data among the zeros: pages 3, 100 and 1023. */
	fd = open(src.path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	for (size_t p = 3; p < 1024; p = p == 3 ? 100 : p == 100 ? 1023 : 1024) {
		fill_pattern(src.orig + p * 4096, 4096, (unsigned int)p);
		ck_assert_int_eq(pwrite(fd, src.orig + p * 4096, 4096,
					(off_t)(p * 4096)), 4096);
	}
	close(fd);
	ck_assert_uint_eq(allocated(src.path), 4 * MiB);

	img_full(&dst, "dst", 4 * MiB, 7);
	d = copy_img(kc, &src, &dst, 1, 0);
	ck_assert_uint_eq(d.write_err, 0);
	assert_holds(&dst, src.orig);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.bytes_read, 4 * MiB);
	ck_assert_uint_eq(st.bytes_written, 3 * 4096);
	ck_assert_uint_eq(st.bytes_zero_data, 4 * MiB - 3 * 4096);
	ck_assert_uint_le(allocated(dst.path), 3 * 4096);
	kcopyd_client_destroy(kc);

	/* Turned off, every byte is written, and allocated. */
	kc = client_opts(64, 0, KCOPYD_OPT_NO_ZERO_DETECT);
	img_free(&dst);
	img_sparse(&dst, "dst", 4 * MiB, NULL, 0, 0);
	d = copy_img(kc, &src, &dst, 1, 0);
	assert_holds(&dst, src.orig);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.bytes_written, 4 * MiB);
	ck_assert_uint_eq(st.bytes_zero_data, 0);
	ck_assert_uint_eq(allocated(dst.path), 4 * MiB);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* A coarser grain: a 64 KiB piece with one non-zero byte is written whole. */
START_TEST(test_zero_detection_grain)
{
	struct kcopyd_client *kc = client_opts(64, 64 * KiB, 0);
	struct kcopyd_stats st;
	struct img src, dst;
	struct kcopyd_options bad = { .sparse_size = 3000 };
	struct kcopyd_client *refused = NULL;
	int fd;

	ck_assert_int_eq(kcopyd_client_create_opts(8, &bad, &refused),
			 -EINVAL);
	bad.sparse_size = 6 * KiB;	/* neither divides nor is a multiple */
	ck_assert_int_eq(kcopyd_client_create_opts(8, &bad, &refused),
			 -EINVAL);
	ck_assert_ptr_null(refused);

	img_full(&src, "src", 1 * MiB, 0);
	src.orig[200 * KiB] = 1;
	fd = open(src.path, O_RDWR);
	ck_assert_int_eq(pwrite(fd, src.orig + 200 * KiB, 1, 200 * KiB), 1);
	close(fd);
	img_full(&dst, "dst", 1 * MiB, 4);
	copy_img(kc, &src, &dst, 1, 0);
	assert_holds(&dst, src.orig);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.bytes_written, 64 * KiB);
	ck_assert_uint_eq(st.bytes_zero_data, 1 * MiB - 64 * KiB);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* --- ALLOCATED and TARGET_ZERO -------------------------------------------------- */

static void check_allocated(bool by_flag)
{
	struct kcopyd_client *kc =
		client_opts(64, 0, by_flag ? 0 : KCOPYD_OPT_ALLOCATED);
	struct kcopyd_bdev_stats bs;
	struct img src, dst;
	struct done_count d;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 2);
	img_full(&dst, "dst", FOUR_SIZE, 8);
	d = copy_img(kc, &src, &dst, 1, by_flag ? KCOPYD_ALLOCATED : 0);
	ck_assert_uint_eq(d.write_err, 0);
	assert_holds(&dst, src.orig);
	/* Every block still allocated: zeroed in place or written. */
	ck_assert_uint_eq(allocated(dst.path), FOUR_SIZE);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(dst.bdev, &bs, sizeof(bs)), 0);
	ck_assert_uint_eq(bs.zeroed_punch, 0);
	ck_assert_uint_eq(bs.bytes_zeroed, FOUR_SIZE - FOUR_DATA);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}

START_TEST(test_allocated_flag)
{
	check_allocated(true);
}
END_TEST

START_TEST(test_allocated_option)
{
	check_allocated(false);
}
END_TEST

/* The caller says the destination is zeros: holes cost nothing. */
START_TEST(test_target_zero)
{
	struct kcopyd_client *kc = client_opts(64, 0, 0);
	struct kcopyd_bdev_stats bs;
	struct img src, dst;
	unsigned char *want;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 2);
	/* Not zeros, so the test sees that nothing was zeroed. */
	img_full(&dst, "dst", FOUR_SIZE, 8);
	copy_img(kc, &src, &dst, 1, KCOPYD_TARGET_ZERO);
	want = malloc(FOUR_SIZE);
	memcpy(want, dst.orig, FOUR_SIZE);
	for (unsigned int i = 0; i < 4; i++)
		memcpy(want + four[i].off, src.orig + four[i].off,
		       four[i].len);
	assert_holds(&dst, want);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(dst.bdev, &bs, sizeof(bs)), 0);
	ck_assert_uint_eq(bs.zeros, 0);
	ck_assert_uint_eq(bs.bytes_zeroed, 0);
	free(want);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* --- Zeroing ---------------------------------------------------------------------- */

START_TEST(test_zero_punches)
{
	struct kcopyd_client *kc = client_opts(2, 0, 0);
	struct kcopyd_bdev_stats bs;
	struct kcopyd_stats st;
	struct img dst;
	struct io_region to;
	struct done_count d;
	unsigned char *want;

	img_full(&dst, "dst", 16 * MiB, 3);
	to = (struct io_region){ dst.bdev, 8, (16 * MiB >> 9) - 16 };
	done_init(&d);
	ck_assert_int_eq(kcopyd_zero(kc, 1, &to, 0, done_cb, &d), 0);
	done_wait(&d, 1);
	ck_assert_uint_eq(d.write_err, 0);
	want = calloc(1, dst.size);
	memcpy(want, dst.orig, 4096);
	memcpy(want + dst.size - 4096, dst.orig + dst.size - 4096, 4096);
	assert_holds(&dst, want);
	free(want);
	/* Holes now, and no page of the pool was needed. */
	ck_assert_uint_le(allocated(dst.path), 8 * KiB);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(dst.bdev, &bs, sizeof(bs)), 0);
	ck_assert_uint_eq(bs.zeroed_punch, to.count << 9);
	ck_assert_uint_eq(bs.bytes_written, 0);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.pages_peak, 0);
	ck_assert_uint_eq(st.bytes_zeroed, to.count << 9);
	kcopyd_client_destroy(kc);
	img_free(&dst);
}
END_TEST

START_TEST(test_zero_allocated)
{
	struct kcopyd_client *kc = client_opts(2, 0, 0);
	struct img dst;
	struct io_region to;
	struct done_count d;
	unsigned char *want;

	img_full(&dst, "dst", 4 * MiB, 3);
	to = (struct io_region){ dst.bdev, 0, 4 * MiB >> 9 };
	done_init(&d);
	ck_assert_int_eq(kcopyd_zero(kc, 1, &to, KCOPYD_ALLOCATED, done_cb,
				     &d), 0);
	done_wait(&d, 1);
	want = calloc(1, dst.size);
	assert_holds(&dst, want);
	free(want);
	ck_assert_uint_eq(allocated(dst.path), 4 * MiB);
	kcopyd_client_destroy(kc);
	img_free(&dst);
}
END_TEST

/* A write fault fails a zeroing as it fails a write; exact bits. */
START_TEST(test_zero_write_fault_bits)
{
	struct kcopyd_client *kc = client_opts(8, 0, 0);
	struct img src, dst[3];
	struct done_count d;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 2);
	for (unsigned int i = 0; i < 3; i++) {
		char name[8];

		snprintf(name, sizeof(name), "d%u", i);
		img_full(&dst[i], name, FOUR_SIZE, 10 + i);
	}
	/* Inside the hole between the first two extents, dest 1 only. */
	add_fault(dst[1].bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR,
		  (512 * KiB) >> 9, 1, EIO, 200);
	d = copy_img(kc, &src, dst, 3, 0);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 2);

	/* IGNORE_ERROR: only the failing sector keeps its old bytes. */
	d = copy_img(kc, &src, dst, 3, KCOPYD_IGNORE_ERROR);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 2);
	assert_holds(&dst[0], src.orig);
	assert_holds(&dst[2], src.orig);
	{
		unsigned char *want = malloc(FOUR_SIZE);

		memcpy(want, src.orig, FOUR_SIZE);
		memcpy(want + 512 * KiB, dst[1].orig + 512 * KiB, 512);
		assert_holds(&dst[1], want);
		free(want);
	}
	kcopyd_client_destroy(kc);
	img_free(&src);
	for (unsigned int i = 0; i < 3; i++)
		img_free(&dst[i]);
}
END_TEST

/* A read fault on a hole still fails the read. */
START_TEST(test_read_fault_on_hole)
{
	struct kcopyd_client *kc = client_opts(8, 0, 0);
	struct img src, dst;
	struct done_count d;
	unsigned char *now;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 2);
	img_full(&dst, "dst", FOUR_SIZE, 12);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
		  (3 * MiB) >> 9, 8, EIO, 200);
	d = copy_img(kc, &src, &dst, 1, 0);
	ck_assert_int_eq(d.read_err, 1);
	ck_assert_uint_eq(d.write_err, 0);
	/* The failed range was not zeroed. */
	now = img_now(&dst);
	ck_assert(!memcmp(now + 3 * MiB, dst.orig + 3 * MiB, 4096));
	free(now);

	/* Going on after errors: unreadable blocks become zeros. */
	d = copy_img(kc, &src, &dst, 1, KCOPYD_IGNORE_ERROR);
	ck_assert_int_eq(d.read_err, 1);
	assert_holds(&dst, src.orig);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* --- Promises with holes ------------------------------------------------------------ */

/* The page cap: a pool of one page copies a sparse image. */
START_TEST(test_page_cap)
{
	struct kcopyd_client *kc = client_opts(1, 0, 0);
	struct kcopyd_stats st;
	struct img src, dst;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 4);
	img_full(&dst, "dst", FOUR_SIZE, 1);
	copy_img(kc, &src, &dst, 1, 0);
	assert_holds(&dst, src.orig);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_le(st.pages_peak, 1);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/*
 * Overlap on one device, through a second handle: the result is
 * memmove's, though holes in the source become zeroing of a destination
 * that covers source data not yet read.
 */
static void check_overlap(long shift, unsigned int flags)
{
	struct kcopyd_client *kc = client_opts(4, 0, 0);
	const size_t size = 8 * MiB, len = 6 * MiB;
	const size_t from = shift > 0 ? 512 * KiB : 1536 * KiB;
	const struct extent ext[] = {
		{ 0, 64 * KiB }, { 700 * KiB, 68 * KiB },
		{ 2 * MiB, 300 * KiB }, { 3 * MiB + 4 * KiB, 4 * KiB },
		{ 5 * MiB, 1 * MiB }, { 7 * MiB + 512 * KiB, 512 * KiB },
	};
	struct block_device *alias;
	struct io_region src, dst;
	struct done_count d;
	struct img im;
	unsigned char *want;

	img_sparse(&im, "ovl", size, ext, 6, 21);
	alias = open_bdev(im.path, O_RDWR);
	src = (struct io_region){ im.bdev, from >> 9, len >> 9 };
	dst = (struct io_region){ alias, (from + shift) >> 9, len >> 9 };
	done_init(&d);
	ck_assert_int_eq(kcopyd_copy(kc, &src, 1, &dst, flags, done_cb, &d),
			 0);
	done_wait(&d, 1);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 0);
	want = malloc(size);
	memcpy(want, im.orig, size);
	memmove(want + from + shift, want + from, len);
	assert_holds(&im, want);
	free(want);
	kcopyd_bdev_close(alias);
	kcopyd_client_destroy(kc);
	img_free(&im);
}

START_TEST(test_overlap_down)
{
	check_overlap(-(long)(260 * KiB), 0);
	check_overlap(-4096, KCOPYD_WRITE_SEQ);
}
END_TEST

START_TEST(test_overlap_up)
{
	check_overlap(260 * KiB, 0);
	check_overlap(4096, 0);
}
END_TEST

/*
 * WRITE_SEQ with holes: a write error (in data) leaves an exact prefix of
 * the source, holes zeroed included, and the rest as it was.
 */
START_TEST(test_write_seq_prefix_holes)
{
	struct kcopyd_client *kc = client_opts(16, 0, 0);
	const sector_t bad = (5 * MiB + 100 * KiB) >> 9;
	struct img src, dst;
	struct done_count d;
	unsigned char *now;
	size_t p = 0;

	img_sparse(&src, "src", FOUR_SIZE, four, 4, 5);
	img_full(&dst, "dst", FOUR_SIZE, 6);
	/* Delays shuffle the order chunks finish in. */
	for (sector_t s = 0; s < FOUR_SIZE >> 9; s += 200)
		add_fault(dst.bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_DELAY, s,
			  1, EIO, 200);
	add_fault(dst.bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR, bad, 1, EIO,
		  200);
	d = copy_img(kc, &src, &dst, 1, KCOPYD_WRITE_SEQ);
	ck_assert_uint_eq(d.write_err, 1);
	now = img_now(&dst);
	/* Sectors of the source (zeros, in the holes) up to the failure. */
	while (p < FOUR_SIZE && !memcmp(now + p, src.orig + p, 512))
		p += 512;
	ck_assert_uint_ge(p, 5 * MiB);
	ck_assert_uint_le(p, bad << 9);
	ck_assert_msg(!memcmp(now + p, dst.orig + p, FOUR_SIZE - p),
		      "not a prefix: sector %zu", p >> 9);
	free(now);
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/*
 * A job stopped (by an error, or cancelled) while a worker asks the
 * source's next extent, with no lock held: the query holds the job, which
 * completes once, after it.  Many small extents make queries frequent;
 * the sanitizers see any use of a freed job.
 */
static void complete_cb(const struct kcopyd_completion *c, void *context)
{
	done_cb(c->read_err, c->write_err, context);
}

START_TEST(test_stop_during_queries)
{
	struct kcopyd_client *kc = client_opts(64, 0, 0);
	struct extent ext[64];
	struct img src, dst;
	struct io_region from, to;
	struct done_count d;

	for (unsigned int i = 0; i < 64; i++)
		ext[i] = (struct extent){ (size_t)i * 128 * KiB, 4 * KiB };
	img_sparse(&src, "src", FOUR_SIZE, ext, 64, 30);
	img_sparse(&dst, "dst", FOUR_SIZE, NULL, 0, 0);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
		  (3 * 128 * KiB) >> 9, 1, EIO, 200);
	from = (struct io_region){ src.bdev, 0, FOUR_SIZE >> 9 };
	to = (struct io_region){ dst.bdev, 0, FOUR_SIZE >> 9 };
	for (unsigned int round = 0; round < 30; round++) {
		struct kcopyd_job_desc desc = {
			.size = sizeof(desc), .op = KCOPYD_OP_COPY,
			.from = &from, .num_dests = 1, .dests = &to,
			.complete = complete_cb, .context = &d,
		};
		uint64_t id;
		int r;

		done_init(&d);
		ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb,
					     &d), 0);
		done_wait(&d, 1);
		ck_assert_int_eq(d.read_err, 1);

		done_init(&d);
		ck_assert_int_eq(kcopyd_submit(kc, &desc, &id), 0);
		/* Its error may have ended its I/O already. */
		r = kcopyd_cancel(kc, id);
		ck_assert(r == 0 || r == -ENOENT);
		done_wait(&d, 1);
		ck_assert_int_eq(kcopyd_client_flush(kc), 0);
		ck_assert_uint_eq(done_calls(&d), 1);
	}
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* --- The device seam, public ---------------------------------------------------------- */

START_TEST(test_public_io)
{
	struct img im;
	struct block_device *ro, *other;
	unsigned char buf[8192], back[8192];
	unsigned int type;
	uint64_t count, bytes;
	struct kcopyd_bdev_stats st;
	char *path;

	img_sparse(&im, "pub", FOUR_SIZE, four, 4, 7);
	ck_assert_uint_eq(kcopyd_bdev_size(im.bdev), FOUR_SIZE);
	ck_assert_int_eq(kcopyd_bdev_is_read_only(im.bdev), 0);

	/* Extents: data at 0 for 128 KiB, then a hole up to 1 MiB + 4 KiB. */
	ck_assert_int_eq(kcopyd_bdev_extent(im.bdev, 0, FOUR_SIZE, &type,
					    &count), 0);
	ck_assert_uint_eq(type, KCOPYD_EXTENT_DATA);
	ck_assert_uint_eq(count, 128 * KiB);
	ck_assert_int_eq(kcopyd_bdev_extent(im.bdev, 128 * KiB, FOUR_SIZE,
					    &type, &count), 0);
	ck_assert_uint_eq(type, KCOPYD_EXTENT_HOLE);
	ck_assert_uint_eq(count, 1 * MiB + 4 * KiB - 128 * KiB);
	ck_assert_int_eq(kcopyd_bdev_extent(im.bdev, 128 * KiB, 4096, &type,
					    &count), 0);
	ck_assert_uint_eq(count, 4096);
	ck_assert_int_eq(kcopyd_bdev_extent(im.bdev, FOUR_SIZE, 1, &type,
					    &count), -ERANGE);

	/* Read, write, zero: counted, and range-checked. */
	ck_assert_int_eq(kcopyd_bdev_pread(im.bdev, buf, 8192, 124 * KiB), 0);
	ck_assert(!memcmp(buf, im.orig + 124 * KiB, 8192));
	fill_pattern(buf, sizeof(buf), 3);
	ck_assert_int_eq(kcopyd_bdev_pwrite(im.bdev, buf, 8192, 2 * MiB), 0);
	ck_assert_int_eq(kcopyd_bdev_pread(im.bdev, back, 8192, 2 * MiB), 0);
	ck_assert(!memcmp(buf, back, 8192));
	ck_assert_int_eq(kcopyd_bdev_pread(im.bdev, buf, 8192,
					   FOUR_SIZE - 4096), -ERANGE);
	ck_assert_int_eq(kcopyd_bdev_zero(im.bdev, 2 * MiB, 8192, 0), 0);
	ck_assert_int_eq(kcopyd_bdev_pread(im.bdev, back, 8192, 2 * MiB), 0);
	memset(buf, 0, sizeof(buf));
	ck_assert(!memcmp(buf, back, 8192));
	ck_assert_int_eq(kcopyd_bdev_zero(im.bdev, 0, 1, 8), -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_flush(im.bdev), 0);
	ck_assert_int_eq(kcopyd_bdev_allocated(im.bdev, &bytes), 0);
	ck_assert_uint_eq(bytes, allocated(im.path));
	ck_assert_int_eq(kcopyd_bdev_get_stats2(im.bdev, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.reads, 3);
	ck_assert_uint_eq(st.writes, 1);
	ck_assert_uint_eq(st.zeros, 1);
	ck_assert_uint_eq(st.bytes_zeroed, 8192);

	/* A write fault fails a zeroing. */
	add_fault(im.bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR, 10, 1, EIO,
		  200);
	ck_assert_int_eq(kcopyd_bdev_zero(im.bdev, 0, 64 * KiB, 0), -EIO);
	ck_assert_int_eq(kcopyd_bdev_pread(im.bdev, buf, 4096, 0), 0);
	ck_assert(!memcmp(buf, im.orig, 4096));
	kcopyd_bdev_clear_faults(im.bdev);

	/* Read-only: reads served, writes and zeroing refused. */
	ro = open_bdev(im.path, O_RDONLY);
	ck_assert_int_eq(kcopyd_bdev_is_read_only(ro), 1);
	ck_assert_int_eq(kcopyd_bdev_pread(ro, buf, 4096, 0), 0);
	ck_assert_int_eq(kcopyd_bdev_pwrite(ro, buf, 4096, 0), -EROFS);
	ck_assert_int_eq(kcopyd_bdev_zero(ro, 0, 4096, 0), -EROFS);
	ck_assert_int_eq(kcopyd_bdev_flush(ro), 0);

	/* Identity: two handles of one file, not a third file. */
	path = make_image("other", 4096, 1);
	other = open_bdev(path, O_RDONLY);
	ck_assert_int_eq(kcopyd_bdev_same(other, im.bdev), 0);
	kcopyd_bdev_close(other);
	free(path);
	ck_assert_int_eq(kcopyd_bdev_same(ro, im.bdev), 1);
	ck_assert_int_eq(kcopyd_bdev_same(ro, NULL), 0);
	kcopyd_bdev_close(ro);
	img_free(&im);
}
END_TEST

START_TEST(test_check_copy)
{
	struct img a, c;
	struct block_device *b, *ro;
	struct io_region from, to[2];
	int culprit = 99;

	img_full(&a, "a", 64 * KiB, 1);
	img_full(&c, "c", 64 * KiB, 2);
	b = open_bdev(a.path, O_RDWR);		/* a second name for a */
	ro = open_bdev(c.path, O_RDONLY);

	from = (struct io_region){ c.bdev, 0, 16 };
	to[0] = (struct io_region){ c.bdev, 100, 16 };
	ck_assert_int_eq(kcopyd_check_copy(&from, 1, to, 0, &culprit), 0);
	ck_assert_int_eq(culprit, -1);

	/* One image under two names: the destinations overlap. */
	to[0] = (struct io_region){ a.bdev, 0, 16 };
	to[1] = (struct io_region){ b, 8, 16 };
	ck_assert_int_eq(kcopyd_check_copy(&from, 2, to, 0, &culprit),
			 -EINVAL);
	ck_assert_int_eq(culprit, 1);

	to[1] = (struct io_region){ b, 120, 16 };
	ck_assert_int_eq(kcopyd_check_copy(&from, 2, to, 0, &culprit),
			 -ERANGE);
	ck_assert_int_eq(culprit, 1);
	to[1] = (struct io_region){ ro, 0, 16 };
	ck_assert_int_eq(kcopyd_check_copy(&from, 2, to, 0, &culprit),
			 -EROFS);
	ck_assert_int_eq(culprit, 1);
	to[1] = (struct io_region){ b, 16, 15 };
	ck_assert_int_eq(kcopyd_check_copy(&from, 2, to, 0, &culprit),
			 -EINVAL);
	ck_assert_int_eq(kcopyd_check_copy(&from, 1, to, 1u << 20, NULL),
			 -EINVAL);
	ck_assert_int_eq(kcopyd_check_copy(&from, 33, to, 0, NULL), -E2BIG);

	/* Overlaps with the source, up and down at once: no order. */
	from = (struct io_region){ a.bdev, 32, 16 };
	to[0] = (struct io_region){ b, 24, 16 };
	to[1] = (struct io_region){ a.bdev, 40, 16 };
	ck_assert_int_eq(kcopyd_check_copy(&from, 2, to, 0, &culprit),
			 -EINVAL);
	ck_assert_int_eq(kcopyd_check_copy(&from, 1, &to[1], 0, NULL), 0);
	ck_assert_int_eq(kcopyd_check_copy(&from, 1, &to[1],
					   KCOPYD_WRITE_SEQ, NULL), -EINVAL);

	/* A zero: regions may differ, but not be read-only. */
	to[0] = (struct io_region){ a.bdev, 0, 16 };
	to[1] = (struct io_region){ ro, 0, 8 };
	ck_assert_int_eq(kcopyd_check_copy(NULL, 1, to, 0, NULL), 0);
	ck_assert_int_eq(kcopyd_check_copy(NULL, 2, to, 0, &culprit),
			 -EROFS);
	ck_assert_int_eq(culprit, 1);

	kcopyd_bdev_close(b);
	kcopyd_bdev_close(ro);
	img_free(&a);
	img_free(&c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sparse");
	TCase *tc = tcase_create("holes");

	tcase_add_test(tc, test_holes_not_read);
	tcase_add_test(tc, test_holes_zero_old_data);
	tcase_add_test(tc, test_holes_many_dests_offsets);
	suite_add_tcase(s, tc);
	tc = tcase_create("zero detection");
	tcase_add_test(tc, test_zero_detection);
	tcase_add_test(tc, test_zero_detection_grain);
	suite_add_tcase(s, tc);
	tc = tcase_create("allocated and target zero");
	tcase_add_test(tc, test_allocated_flag);
	tcase_add_test(tc, test_allocated_option);
	tcase_add_test(tc, test_target_zero);
	suite_add_tcase(s, tc);
	tc = tcase_create("zeroing");
	tcase_add_test(tc, test_zero_punches);
	tcase_add_test(tc, test_zero_allocated);
	tcase_add_test(tc, test_zero_write_fault_bits);
	tcase_add_test(tc, test_read_fault_on_hole);
	suite_add_tcase(s, tc);
	tc = tcase_create("promises");
	tcase_add_test(tc, test_page_cap);
	tcase_add_test(tc, test_overlap_down);
	tcase_add_test(tc, test_overlap_up);
	tcase_add_test(tc, test_write_seq_prefix_holes);
	tcase_add_test(tc, test_stop_during_queries);
	suite_add_tcase(s, tc);
	tc = tcase_create("seam");
	tcase_add_test(tc, test_public_io);
	tcase_add_test(tc, test_check_copy);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
