/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection: what a job reports and what it leaves on its
 * destinations when reads and writes fail, come back short, run out of
 * space or are slowed down.  Real image files on tmpfs; faults through
 * kcopyd_bdev_add_fault() and, for ENOSPC, a size-limited tmpfs.
 *
 * Thread model: the test thread submits; the client's callback thread
 * runs record() and the per-job callbacks, which only write their own
 * job's struct with atomics.  The test reads results after
 * kcopyd_client_flush() or kcopyd_client_destroy(), which return only
 * after every callback has.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"

/* What a chunk of a destination holds after a job. */
enum chunk_state { HOLDS_SRC, HOLDS_ORIG, HOLDS_ZERO, HOLDS_MIX };

static const char *state_name[] = { "source", "original", "zeros", "mixed" };

static bool all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static enum chunk_state chunk_state(const unsigned char *now,
				    const unsigned char *src,
				    const unsigned char *orig, size_t len)
{
	if (!memcmp(now, src, len))
		return HOLDS_SRC;
	if (!memcmp(now, orig, len))
		return HOLDS_ORIG;
	if (all_zero(now, len))
		return HOLDS_ZERO;
	return HOLDS_MIX;
}

static void expect_chunk(const unsigned char *now, const unsigned char *src,
			 const unsigned char *orig, size_t len,
			 enum chunk_state want, const char *what, size_t off)
{
	enum chunk_state got = chunk_state(now, src, orig, len);

	ck_assert_msg(got == want, "%s at byte %zu holds %s, expected %s",
		      what, off, state_name[got], state_name[want]);
}

/*
 * With IGNORE_ERROR a failed chunk is retried block by block: inside it,
 * only [bad, bad + bad_len) holds `want`; the rest holds the source.
 */
static void expect_salvaged(const unsigned char *now,
			    const unsigned char *src,
			    const unsigned char *orig, size_t len, size_t bad,
			    size_t bad_len, enum chunk_state want,
			    const char *what, size_t off)
{
	if (bad)
		expect_chunk(now, src, orig, bad, HOLDS_SRC, what, off);
	expect_chunk(now + bad, src + bad, orig + bad, bad_len, want, what,
		     off + bad);
	if (bad + bad_len < len)
		expect_chunk(now + bad + bad_len, src + bad + bad_len,
			     orig + bad + bad_len, len - bad - bad_len,
			     HOLDS_SRC, what, off + bad + bad_len);
}

static struct io_region region(const struct img *im, sector_t sector,
			       sector_t count)
{
	return (struct io_region){ im->bdev, sector, count };
}

/* Copy src to every dst whole, wait, and return the one callback's result. */
static struct done_count copy_whole(struct kcopyd_client *kc,
				    const struct img *src, struct img *dst,
				    unsigned int n, unsigned int flags)
{
	struct io_region from = region(src, 0, src->size >> 9);
	struct io_region to[KCOPYD_MAX_DESTS];
	struct done_count d;

	for (unsigned int i = 0; i < n; i++)
		to[i] = region(&dst[i], 0, src->size >> 9);
	done_init(&d);
	ck_assert_int_eq(kcopyd_copy(kc, &from, n, to, flags, done_cb, &d), 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_uint_eq(done_calls(&d), 1);
	return d;
}

/* --- Read errors ------------------------------------------------------ */

/*
 * One worker, one chunk in flight: chunks run strictly in order, so the
 * chunks before the failing one are copied and none after it is touched.
 */
static void check_read_error_in_order(unsigned int ndests)
{
	const size_t size = 1 * MiB, chunk = 64 * KiB;
	const size_t bad = 5;		/* the chunk whose read fails */
	struct kcopyd_client *kc = new_client(16, 1, chunk, 1);
	struct kcopyd_stats st;
	struct img src, dst[4];
	struct done_count d;
	char name[32];

	img_make(&src, "src", size, 1);
	for (unsigned int i = 0; i < ndests; i++) {
		snprintf(name, sizeof(name), "dst%u", i);
		img_make(&dst[i], name, size, 10 + i);
	}
	/* One sector in the middle of chunk `bad`. */
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
		  (bad * chunk >> 9) + 17, 1, EIO, 0);

	d = copy_whole(kc, &src, dst, ndests, 0);
	ck_assert_int_eq(d.read_err, 1);
	ck_assert_uint_eq(d.write_err, 0);

	for (unsigned int i = 0; i < ndests; i++) {
		unsigned char *now = img_now(&dst[i]);

		for (size_t off = 0; off < size; off += chunk)
			expect_chunk(now + off, src.orig + off,
				     dst[i].orig + off, chunk,
				     off < bad * chunk ? HOLDS_SRC : HOLDS_ORIG,
				     "destination", off);
		free(now);
	}
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.subjobs, bad + 1);
	ck_assert_uint_eq(st.jobs_failed, 1);
	ck_assert_uint_eq(st.jobs_done, 0);

	kcopyd_client_destroy(kc);
	img_free(&src);
	for (unsigned int i = 0; i < ndests; i++)
		img_free(&dst[i]);
}

START_TEST(test_read_error_one_dest)
{
	check_read_error_in_order(1);
}
END_TEST

START_TEST(test_read_error_many_dests)
{
	check_read_error_in_order(4);
}
END_TEST

/*
 * Several workers and chunks in flight: each chunk of each destination is
 * either the source's (written before the error was seen, or in flight
 * with it) or untouched, never torn; the failed chunk is untouched; every
 * destination received the same chunks.
 */
START_TEST(test_read_error_parallel)
{
	const size_t size = 2 * MiB, chunk = 32 * KiB, bad = 20;
	struct kcopyd_client *kc = new_client(64, 4, chunk, 8);
	struct kcopyd_bdev_stats bs;
	struct img src, dst[3];
	struct done_count d;
	unsigned char *now[3];

	img_make(&src, "src", size, 1);
	img_make(&dst[0], "dst0", size, 2);
	img_make(&dst[1], "dst1", size, 3);
	img_make(&dst[2], "dst2", size, 4);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
		  bad * chunk >> 9, 1, EIO, 0);

	d = copy_whole(kc, &src, dst, 3, 0);
	ck_assert_int_eq(d.read_err, 1);
	ck_assert_uint_eq(d.write_err, 0);

	for (unsigned int i = 0; i < 3; i++)
		now[i] = img_now(&dst[i]);
	for (size_t off = 0; off < size; off += chunk) {
		enum chunk_state s = chunk_state(now[0] + off, src.orig + off,
						 dst[0].orig + off, chunk);

		ck_assert_msg(s == HOLDS_SRC || s == HOLDS_ORIG,
			      "chunk at %zu holds %s", off, state_name[s]);
		if (off == bad * chunk)
			ck_assert_int_eq(s, HOLDS_ORIG);
		for (unsigned int i = 1; i < 3; i++)
			expect_chunk(now[i] + off, src.orig + off,
				     dst[i].orig + off, chunk, s,
				     "destination", off);
	}
	/* Every chunk read was written, to every destination. */
	kcopyd_bdev_get_stats(src.bdev, &bs);
	ck_assert_uint_eq(bs.errors, 1);
	for (unsigned int i = 0; i < 3; i++) {
		struct kcopyd_bdev_stats ds;

		kcopyd_bdev_get_stats(dst[i].bdev, &ds);
		ck_assert_uint_eq(ds.writes, bs.reads);
		ck_assert_uint_eq(ds.errors, 0);
		free(now[i]);
	}

	kcopyd_client_destroy(kc);
	img_free(&src);
	for (unsigned int i = 0; i < 3; i++)
		img_free(&dst[i]);
}
END_TEST

/* --- Write errors ----------------------------------------------------- */

static const unsigned int bad_dest[] = { 0, 5, 31 };

/*
 * 32 destinations, each its own image; writes to destination k fail in
 * its second chunk.  write_err is exactly bit k, with or without
 * IGNORE_ERROR; with it, every other destination is a full copy and
 * destination k misses only the failed sector.
 */
static void check_write_error_bit(unsigned int k, unsigned int flags)
{
	const size_t size = 128 * KiB, chunk = 32 * KiB;
	struct kcopyd_client *kc = new_client(32, 2, chunk, 4);
	struct img src, *dst = calloc(KCOPYD_MAX_DESTS, sizeof(*dst));
	struct done_count d;
	char name[32];

	ck_assert_ptr_nonnull(dst);
	img_make(&src, "src", size, 1);
	for (unsigned int i = 0; i < KCOPYD_MAX_DESTS; i++) {
		snprintf(name, sizeof(name), "dst%u", i);
		img_make(&dst[i], name, size, 100 + i);
	}
	add_fault(dst[k].bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR,
		  (chunk >> 9) + 3, 1, EIO, 0);

	d = copy_whole(kc, &src, dst, KCOPYD_MAX_DESTS, flags);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_msg(d.write_err == 1u << k, "write_err %#x, expected %#x",
		      d.write_err, 1u << k);

	for (unsigned int i = 0; i < KCOPYD_MAX_DESTS; i++) {
		unsigned char *now = img_now(&dst[i]);

		for (size_t off = 0; off < size; off += chunk) {
			enum chunk_state want = HOLDS_SRC;

			if (i == k && off == chunk)
				want = HOLDS_ORIG;
			if ((flags & KCOPYD_IGNORE_ERROR) &&
			    want == HOLDS_ORIG)
				expect_salvaged(now + off, src.orig + off,
						dst[i].orig + off, chunk,
						3 * 512, 512, HOLDS_ORIG,
						"destination", off);
			else if (flags & KCOPYD_IGNORE_ERROR)
				expect_chunk(now + off, src.orig + off,
					     dst[i].orig + off, chunk, want,
					     "destination", off);
			else if (want == HOLDS_ORIG)
				expect_chunk(now + off, src.orig + off,
					     dst[i].orig + off, chunk, want,
					     "failed chunk", off);
		}
		free(now);
	}

	kcopyd_client_destroy(kc);
	img_free(&src);
	for (unsigned int i = 0; i < KCOPYD_MAX_DESTS; i++)
		img_free(&dst[i]);
	free(dst);
}

START_TEST(test_write_error_bit)
{
	check_write_error_bit(bad_dest[_i], 0);
}
END_TEST

START_TEST(test_write_error_bit_ignore)
{
	check_write_error_bit(bad_dest[_i], KCOPYD_IGNORE_ERROR);
}
END_TEST

/* A zero job reports its failed destinations the same way. */
START_TEST(test_zero_write_error)
{
	const size_t size = 256 * KiB;
	struct kcopyd_client *kc = new_client(8, 2, 16 * KiB, 4);
	struct img dst[3];
	struct io_region to[3];
	struct done_count d;

	img_make(&dst[0], "z0", size, 1);
	img_make(&dst[1], "z1", size, 2);
	img_make(&dst[2], "z2", size, 3);
	add_fault(dst[1].bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR, 0, 1,
		  ENOSPC, 0);
	for (unsigned int i = 0; i < 3; i++)
		to[i] = region(&dst[i], 0, size >> 9);
	done_init(&d);
	ck_assert_int_eq(kcopyd_zero(kc, 3, to, KCOPYD_IGNORE_ERROR, done_cb,
				     &d), 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_uint_eq(done_calls(&d), 1);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 2);
	for (unsigned int i = 0; i < 3; i += 2) {
		unsigned char *now = img_now(&dst[i]);

		ck_assert(all_zero(now, size));
		free(now);
	}
	kcopyd_client_destroy(kc);
	for (unsigned int i = 0; i < 3; i++)
		img_free(&dst[i]);
}
END_TEST

/* --- IGNORE_ERROR ------------------------------------------------------- */

/*
 * Three jobs on one client: the middle one meets a read error and a write
 * error on one destination.  With IGNORE_ERROR it goes on to the end: the
 * two unreadable sectors are written as zeros to every destination that
 * can be written, the unwritable sector alone is missing, and everything
 * else is the source.  The jobs beside it are unaffected.
 */
START_TEST(test_ignore_error_finishes)
{
	const size_t size = 1 * MiB, chunk = 64 * KiB, part = 256 * KiB;
	const size_t rbad = 1, wbad = 2;	/* chunks of the middle job */
	struct kcopyd_client *kc = new_client(32, 2, chunk, 8);
	struct img src, dst[2];
	struct done_count d[3];
	unsigned char *now[2];

	img_make(&src, "src", size, 1);
	img_make(&dst[0], "dst0", size, 2);
	img_make(&dst[1], "dst1", size, 3);
	/* The middle job copies [part, 2 * part) of each image. */
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
		  (part + rbad * chunk + 4096) >> 9, 2, EIO, 0);
	add_fault(dst[1].bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR,
		  (part + wbad * chunk) >> 9, 1, EIO, 0);

	for (unsigned int j = 0; j < 3; j++) {
		struct io_region from = region(&src, j * part >> 9, part >> 9);
		struct io_region to[2] = {
			region(&dst[0], j * part >> 9, part >> 9),
			region(&dst[1], j * part >> 9, part >> 9),
		};

		done_init(&d[j]);
		ck_assert_int_eq(kcopyd_copy(kc, &from, 2, to,
					     KCOPYD_IGNORE_ERROR, done_cb,
					     &d[j]), 0);
	}
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	for (unsigned int j = 0; j < 3; j++) {
		ck_assert_uint_eq(done_calls(&d[j]), 1);
		ck_assert_int_eq(d[j].read_err, j == 1);
		ck_assert_uint_eq(d[j].write_err, j == 1 ? 2 : 0);
	}

	now[0] = img_now(&dst[0]);
	now[1] = img_now(&dst[1]);
	for (unsigned int i = 0; i < 2; i++) {
		for (size_t off = 0; off < 3 * part; off += chunk) {
			const char *what = i ? "dst1" : "dst0";

			if (off == part + rbad * chunk)
				expect_salvaged(now[i] + off, src.orig + off,
						dst[i].orig + off, chunk, 4096,
						1024, HOLDS_ZERO, what, off);
			else if (i == 1 && off == part + wbad * chunk)
				expect_salvaged(now[i] + off, src.orig + off,
						dst[i].orig + off, chunk, 0,
						512, HOLDS_ORIG, what, off);
			else
				expect_chunk(now[i] + off, src.orig + off,
					     dst[i].orig + off, chunk,
					     HOLDS_SRC, what, off);
		}
		/* Beyond the three jobs: untouched. */
		ck_assert(!memcmp(now[i] + 3 * part, dst[i].orig + 3 * part,
				  size - 3 * part));
		free(now[i]);
	}

	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst[0]);
	img_free(&dst[1]);
}
END_TEST

/* --- Stopping after an error --------------------------------------------- */

/*
 * Without IGNORE_ERROR no chunk starts once a chunk has failed.  With one
 * chunk in flight the count is exact, while other jobs keep the other
 * workers busy; every read of the source is slowed so that an engine that
 * went on would be seen issuing more chunks.
 */
START_TEST(test_stop_exact)
{
	const size_t size = 512 * KiB, chunk = 4 * KiB, bad = 7;
	const size_t nchunks = size / chunk;
	struct kcopyd_client *kc = new_client(8, 4, chunk, 1);
	struct kcopyd_bdev_stats ss, ds;
	struct kcopyd_stats st;
	struct img src, dst, other, odst;
	struct io_region from, to, ofrom, oto;
	struct done_count d, od;

	img_make(&src, "src", size, 1);
	img_make(&dst, "dst", size, 2);
	img_make(&other, "other", size, 3);
	img_make(&odst, "odst", size, 4);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_DELAY, 0,
		  size >> 9, 0, 500);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
		  bad * chunk >> 9, 1, EIO, 0);

	from = region(&src, 0, size >> 9);
	to = region(&dst, 0, size >> 9);
	ofrom = region(&other, 0, size >> 9);
	oto = region(&odst, 0, size >> 9);
	done_init(&d);
	done_init(&od);
	ck_assert_int_eq(kcopyd_copy(kc, &ofrom, 1, &oto, 0, done_cb, &od), 0);
	ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to, 0, done_cb, &d), 0);
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);

	ck_assert_int_eq(d.read_err, 1);
	ck_assert_int_eq(od.read_err, 0);
	ck_assert_uint_eq(od.write_err, 0);
	kcopyd_bdev_get_stats(src.bdev, &ss);
	kcopyd_bdev_get_stats(dst.bdev, &ds);
	ck_assert_uint_eq(ss.reads, bad);
	ck_assert_uint_eq(ss.errors, 1);
	ck_assert_uint_eq(ds.writes, bad);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(st.subjobs, nchunks + bad + 1);

	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
	img_free(&other);
	img_free(&odst);
}
END_TEST

/*
 * Many chunks in flight: the first chunk fails at once while every other
 * read is slowed by 50 ms, so the chunks issued are those already taken by
 * the other workers, a handful out of 256.  Every chunk that was read was
 * written; the count is bounded, not exact, because a worker may finish a
 * slowed chunk and take the next before the failure is recorded.
 */
START_TEST(test_stop_parallel)
{
	const size_t size = 1 * MiB, chunk = 4 * KiB;
	const size_t nchunks = size / chunk;
	const unsigned int threads = 4;
	struct kcopyd_client *kc = new_client(16, threads, chunk, 8);
	struct kcopyd_bdev_stats ss, ds;
	struct kcopyd_stats st;
	struct img src, dst;
	struct done_count d;
	unsigned char *now;

	img_make(&src, "src", size, 1);
	img_make(&dst, "dst", size, 2);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_DELAY,
		  chunk >> 9, (size - chunk) >> 9, 0, 50000);
	add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR, 0, 1,
		  EIO, 0);

	d = copy_whole(kc, &src, &dst, 1, 0);
	ck_assert_int_eq(d.read_err, 1);
	ck_assert_uint_eq(d.write_err, 0);

	kcopyd_bdev_get_stats(src.bdev, &ss);
	kcopyd_bdev_get_stats(dst.bdev, &ds);
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
	ck_assert_uint_eq(ss.errors, 1);
	ck_assert_uint_eq(st.subjobs, ss.reads + 1);
	ck_assert_uint_eq(ds.writes, ss.reads);
	ck_assert_msg(st.subjobs < nchunks / 4,
		      "%llu of %zu chunks issued after the first failed",
		      (unsigned long long)st.subjobs, nchunks);

	now = img_now(&dst);
	expect_chunk(now, src.orig, dst.orig, chunk, HOLDS_ORIG, "chunk", 0);
	for (size_t off = chunk; off < size; off += chunk) {
		enum chunk_state s = chunk_state(now + off, src.orig + off,
						 dst.orig + off, chunk);

		ck_assert(s == HOLDS_SRC || s == HOLDS_ORIG);
	}
	free(now);

	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

/* --- WRITE_SEQ ---------------------------------------------------------------- */

/*
 * How many leading sectors of now are the source's; every byte after
 * them must be the original.  Counted in sectors, where the source and
 * the original never agree, so a chance equal byte cannot move it.
 */
static size_t exact_prefix(const unsigned char *now, const unsigned char *src,
			   const unsigned char *orig, size_t size)
{
	size_t p = 0;

	while (p < size && !memcmp(now + p, src + p, KCOPYD_SECTOR_SIZE))
		p += KCOPYD_SECTOR_SIZE;
	ck_assert_msg(!memcmp(now + p, orig + p, size - p),
		      "destination is not a prefix of the source: sector %zu",
		      p >> 9);
	return p;
}

/*
 * WRITE_SEQ, several workers, random delays on the destinations' writes
 * to shuffle completion order, and a write error on destination 1 in
 * chunk `bad`: each destination holds an exact prefix of the source, the
 * failed one up to the failed chunk, the others up to its start or end.
 * A read error instead leaves every destination up to the failed chunk.
 */
static void check_write_seq_prefix(unsigned int pages, bool read_fault)
{
	const size_t size = 1 * MiB, chunk = 16 * KiB, bad = 37;
	/* The engine's chunk: what the pool can hold, at most. */
	const size_t echunk = pages * 4096 < chunk ? pages * 4096 : chunk;
	struct kcopyd_client *kc = new_client(pages, 4, chunk, 8);
	struct img src, dst[3];
	struct done_count d;

	img_make(&src, "src", size, 1);
	for (unsigned int i = 0; i < 3; i++) {
		char name[16];

		snprintf(name, sizeof(name), "dst%u", i);
		img_make(&dst[i], name, size, 2 + i);
		for (size_t c = i; c < size / chunk; c += 5)
			add_fault(dst[i].bdev, KCOPYD_FAULT_WRITE,
				  KCOPYD_FAULT_DELAY, c * chunk >> 9, 1, 0,
				  300 * (c % 7));
	}
	if (read_fault)
		add_fault(src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR,
			  bad * chunk >> 9, 1, EIO, 0);
	else
		add_fault(dst[1].bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR,
			  bad * chunk >> 9, 1, EIO, 0);

	d = copy_whole(kc, &src, dst, 3, KCOPYD_WRITE_SEQ);
	ck_assert_int_eq(d.read_err, read_fault);
	ck_assert_uint_eq(d.write_err, read_fault ? 0 : 2);

	for (unsigned int i = 0; i < 3; i++) {
		unsigned char *now = img_now(&dst[i]);
		size_t p = exact_prefix(now, src.orig, dst[i].orig, size);

		if (read_fault || i == 1)
			ck_assert_uint_eq(p, bad * chunk);
		else
			ck_assert(p == bad * chunk || p == bad * chunk + echunk);
		free(now);
	}

	kcopyd_client_destroy(kc);
	img_free(&src);
	for (unsigned int i = 0; i < 3; i++)
		img_free(&dst[i]);
}

START_TEST(test_write_seq_write_error)
{
	check_write_seq_prefix(64, false);
}
END_TEST

START_TEST(test_write_seq_read_error)
{
	check_write_seq_prefix(64, true);
}
END_TEST

/* One page: a chunk at a time, each written before the next is read. */
START_TEST(test_write_seq_one_page)
{
	check_write_seq_prefix(1, false);
}
END_TEST

/* --- ENOSPC ---------------------------------------------------------------------- */

/*
 * A 1 MiB sparse image on a 256 KiB tmpfs: writes run out of space part
 * way.  The other destination, on a roomy tmpfs, gets a full copy.
 */
START_TEST(test_enospc_full_tmpfs)
{
	const size_t size = 1 * MiB;
	struct kcopyd_client *kc = new_client(16, 2, 64 * KiB, 4);
	struct kcopyd_bdev_stats bs;
	struct img src, good, full;
	struct img dst[2];
	struct done_count d;
	unsigned char *now;
	char *mnt;
	int fd;

	ck_assert_int_ne(asprintf(&mnt, "%s/small", test_dir()), -1);
	ck_assert_int_eq(mkdir(mnt, 0700), 0);
	if (mount("kcopyd-test", mnt, "tmpfs", MS_NOSUID | MS_NODEV,
		  "size=256k") == -1) {
		printf("SKIP test_enospc_full_tmpfs: mount tmpfs: %s\n",
		       strerror(errno));
		kcopyd_client_destroy(kc);
		free(mnt);
		return;
	}
	/*
	 * Detached at once, the mount lives as long as the image's
	 * descriptors, whatever happens to the test.
	 */
	ck_assert_int_ne(asprintf(&full.path, "%s/img", mnt), -1);
	fd = open(full.path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, size), 0);
	free(full.path);
	ck_assert_int_ne(asprintf(&full.path, "/proc/self/fd/%d", fd), -1);
	ck_assert_int_eq(kcopyd_bdev_open(full.path, O_RDWR, &full.bdev), 0);
	close(fd);
	full.size = size;
	full.orig = NULL;

	img_make(&src, "src", size, 1);
	img_make(&good, "good", size, 2);
	dst[0] = full;
	dst[1] = good;
	d = copy_whole(kc, &src, dst, 2, KCOPYD_IGNORE_ERROR);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 1);
	kcopyd_bdev_get_stats(full.bdev, &bs);
	ck_assert_uint_gt(bs.errors, 0);
	ck_assert_uint_gt(bs.writes, 0);
	now = img_now(&good);
	ck_assert(!memcmp(now, src.orig, size));
	free(now);

	/* Without IGNORE_ERROR the job stops, with the same report. */
	d = copy_whole(kc, &src, dst, 2, 0);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 1);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(full.bdev);
	free(full.orig);
	free(full.path);
	img_free(&src);
	img_free(&good);
	free(mnt);
}
END_TEST

/* The same report when ENOSPC is injected, on a zero and on a copy. */
START_TEST(test_enospc_injected)
{
	const size_t size = 256 * KiB;
	struct kcopyd_client *kc = new_client(4, 2, 16 * KiB, 4);
	struct img src, dst[2];
	struct done_count d;

	img_make(&src, "src", size, 1);
	img_make(&dst[0], "dst0", size, 2);
	img_make(&dst[1], "dst1", size, 3);
	add_fault(dst[0].bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR,
		  (size >> 9) - 1, 1, ENOSPC, 0);
	d = copy_whole(kc, &src, dst, 2, 0);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 1);

	d = copy_whole(kc, &src, dst, 2, KCOPYD_IGNORE_ERROR);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 1);
	{
		unsigned char *now = img_now(&dst[1]);

		ck_assert(!memcmp(now, src.orig, size));
		free(now);
	}
	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst[0]);
	img_free(&dst[1]);
}
END_TEST

/* --- Short transfers ------------------------------------------------------------- */

/*
 * Every read and write of every device transfers at most half of what was
 * asked: the engine must carry on until the whole chunk is through.
 * Unaligned regions and a one-page pool make the pieces odd-sized.
 */
START_TEST(test_short_io)
{
	const size_t size = 1 * MiB;
	const unsigned int pages[] = { 1, 3, 64 };
	struct img src, dst[3];

	img_make(&src, "src", size, 1);
	img_make(&dst[0], "dst0", size, 2);
	img_make(&dst[1], "dst1", size, 3);
	img_make(&dst[2], "dst2", size, 4);
	add_fault(src.bdev, KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE,
		  KCOPYD_FAULT_SHORT, 0, size >> 9, 0, 0);
	for (unsigned int i = 0; i < 3; i++)
		add_fault(dst[i].bdev, KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE,
			  KCOPYD_FAULT_SHORT, 0, size >> 9, 0, 0);

	for (unsigned int p = 0; p < 3; p++) {
		struct kcopyd_client *kc = new_client(pages[p], 2, 64 * KiB, 4);
		const sector_t s = 3 + p, n = (size >> 9) - 11;
		struct io_region from = region(&src, s, n);
		struct io_region to[3] = {
			region(&dst[0], 7, n),
			region(&dst[1], 0, n),
			region(&dst[2], 11, n),
		};
		struct done_count d;

		done_init(&d);
		ck_assert_int_eq(kcopyd_copy(kc, &from, 3, to, p ? 0 :
					     KCOPYD_WRITE_SEQ, done_cb, &d), 0);
		kcopyd_client_destroy(kc);
		ck_assert_uint_eq(done_calls(&d), 1);
		ck_assert_int_eq(d.read_err, 0);
		ck_assert_uint_eq(d.write_err, 0);
		for (unsigned int i = 0; i < 3; i++) {
			unsigned char *now = img_now(&dst[i]);
			size_t at = to[i].sector << 9;

			ck_assert(!memcmp(now + at, src.orig + (s << 9),
					  n << 9));
			ck_assert(!memcmp(now, dst[i].orig, at));
			at += n << 9;
			ck_assert(!memcmp(now + at, dst[i].orig + at,
					  size - at));
			free(now);
		}
	}
	img_free(&src);
	for (unsigned int i = 0; i < 3; i++)
		img_free(&dst[i]);
}
END_TEST

/* --- Every I/O fails: many jobs, every callback once ------------------------------ */

struct job_rec {
	atomic_uint calls;
	atomic_int read_err;
	atomic_uint write_err;
	int want_read_err;
	unsigned int want_write_err;
};

static void job_cb(int read_err, unsigned int write_err, void *context)
{
	struct job_rec *j = context;

	atomic_store(&j->read_err, read_err);
	atomic_store(&j->write_err, write_err);
	atomic_fetch_add(&j->calls, 1);
}

/*
 * A source whose every read fails with EIO and a destination whose every
 * write fails, slowed down, mixed with good devices in thousands of
 * random jobs (copies and zeros, any flags, one to four destinations).
 * Every job's callback fires exactly once with the errors it must report,
 * through flush and through destroy with jobs still in flight.
 */
static void check_eio_storm(bool destroy_in_flight)
{
	const unsigned int njobs = 2000;
	const size_t size = 1 * MiB;
	const sector_t sectors = size >> 9;
	struct kcopyd_client *kc = new_client(4, 3, 8 * KiB, 4);
	struct img good_src, bad_src, good_dst[3], bad_dst;
	struct job_rec *jobs = calloc(njobs, sizeof(*jobs));
	uint64_t x = 0x5eed;
	unsigned int failed = 0;
	struct kcopyd_stats st;

	ck_assert_ptr_nonnull(jobs);
	img_make(&good_src, "gsrc", size, 1);
	img_make(&bad_src, "bsrc", size, 2);
	img_make(&good_dst[0], "gdst0", size, 3);
	img_make(&good_dst[1], "gdst1", size, 4);
	img_make(&good_dst[2], "gdst2", size, 5);
	img_make(&bad_dst, "bdst", size, 6);
	add_fault(bad_src.bdev, KCOPYD_FAULT_READ, KCOPYD_FAULT_ERROR, 0,
		  sectors, EIO, 0);
	add_fault(bad_dst.bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_ERROR, 0,
		  sectors, EIO, 0);
	add_fault(bad_dst.bdev, KCOPYD_FAULT_WRITE, KCOPYD_FAULT_DELAY, 0,
		  sectors, 0, 20);

	for (unsigned int n = 0; n < njobs; n++) {
		struct job_rec *j = &jobs[n];
		struct io_region from, to[4];
		unsigned int ndst, bad_at = 4, flags;
		sector_t count;
		bool zero, src_bad;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		zero = x % 5 == 0;
		src_bad = !zero && (x >> 3) % 3 == 0;
		ndst = 1 + (x >> 5) % 4;
		if ((x >> 8) % 2)
			bad_at = (x >> 9) % ndst;
		flags = (x >> 12) % 4;
		count = (x >> 16) % 128;
		/* Each destination in its own quarter of its device. */
		for (unsigned int i = 0; i < ndst; i++) {
			const struct img *im = i == bad_at ? &bad_dst :
					       &good_dst[i % 3];

			to[i] = region(im, i * sectors / 4 + (x >> 24) % 64,
				       count);
		}
		from = region(src_bad ? &bad_src : &good_src,
			      (x >> 32) % (sectors - count), count);
		j->want_read_err = src_bad && count;
		j->want_write_err = bad_at < 4 && count ? 1u << bad_at : 0;
		/* A failed read without IGNORE_ERROR writes nothing. */
		if (j->want_read_err && !(flags & KCOPYD_IGNORE_ERROR))
			j->want_write_err = 0;
		if (j->want_read_err || j->want_write_err)
			failed++;
		ck_assert_int_eq(zero ? kcopyd_zero(kc, ndst, to, flags,
						    job_cb, j) :
					kcopyd_copy(kc, &from, ndst, to, flags,
						    job_cb, j), 0);
	}
	if (destroy_in_flight) {
		kcopyd_client_destroy(kc);
		kc = NULL;
	} else {
		ck_assert_int_eq(kcopyd_client_flush(kc), 0);
		ck_assert_int_eq(kcopyd_client_get_stats(kc, &st), 0);
		ck_assert_uint_eq(st.jobs_submitted, njobs);
		ck_assert_uint_eq(st.jobs_running, 0);
		ck_assert_uint_eq(st.jobs_failed, failed);
		ck_assert_uint_eq(st.jobs_done, njobs - failed);
		ck_assert_uint_eq(st.pages_in_use, 0);
	}
	for (unsigned int n = 0; n < njobs; n++) {
		struct job_rec *j = &jobs[n];

		ck_assert_msg(atomic_load(&j->calls) == 1,
			      "job %u: %u callbacks", n,
			      atomic_load(&j->calls));
		ck_assert_msg(atomic_load(&j->read_err) == j->want_read_err &&
			      atomic_load(&j->write_err) == j->want_write_err,
			      "job %u: read_err %d write_err %#x, expected "
			      "%d %#x", n, atomic_load(&j->read_err),
			      atomic_load(&j->write_err), j->want_read_err,
			      j->want_write_err);
	}

	kcopyd_client_destroy(kc);
	img_free(&good_src);
	img_free(&bad_src);
	for (unsigned int i = 0; i < 3; i++)
		img_free(&good_dst[i]);
	img_free(&bad_dst);
	free(jobs);
}

START_TEST(test_eio_storm_flush)
{
	check_eio_storm(false);
}
END_TEST

START_TEST(test_eio_storm_destroy)
{
	check_eio_storm(true);
}
END_TEST

/*
 * Faults added and cleared while jobs run: each job still completes once,
 * and once the rules are gone a copy is clean again.
 */
START_TEST(test_faults_change_while_running)
{
	const size_t size = 512 * KiB;
	struct kcopyd_client *kc = new_client(8, 2, 8 * KiB, 4);
	struct img src, dst;
	struct done_count d;
	unsigned char *now;

	img_make(&src, "src", size, 1);
	img_make(&dst, "dst", size, 2);
	done_init(&d);
	for (unsigned int n = 0; n < 200; n++) {
		struct io_region from = region(&src, 0, size >> 9);
		struct io_region to = region(&dst, 0, size >> 9);

		ck_assert_int_eq(kcopyd_copy(kc, &from, 1, &to,
					     KCOPYD_IGNORE_ERROR, done_cb, &d),
				 0);
		if (n % 10 == 0)
			add_fault(src.bdev, KCOPYD_FAULT_READ,
				  n % 20 ? KCOPYD_FAULT_ERROR :
					   KCOPYD_FAULT_SHORT,
				  n, 8, EIO, 0);
		if (n % 50 == 49)
			kcopyd_bdev_clear_faults(src.bdev);
	}
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	ck_assert_uint_eq(done_calls(&d), 200);

	kcopyd_bdev_clear_faults(src.bdev);
	d = copy_whole(kc, &src, &dst, 1, 0);
	ck_assert_int_eq(d.read_err, 0);
	ck_assert_uint_eq(d.write_err, 0);
	now = img_now(&dst);
	ck_assert(!memcmp(now, src.orig, size));
	free(now);

	kcopyd_client_destroy(kc);
	img_free(&src);
	img_free(&dst);
}
END_TEST

static Suite *faults_suite(void)
{
	Suite *s = suite_create("faults");
	TCase *tc;

	tc = tcase_create("read errors");
	tcase_add_test(tc, test_read_error_one_dest);
	tcase_add_test(tc, test_read_error_many_dests);
	tcase_add_test(tc, test_read_error_parallel);
	suite_add_tcase(s, tc);

	tc = tcase_create("write errors");
	tcase_add_loop_test(tc, test_write_error_bit, 0, 3);
	tcase_add_loop_test(tc, test_write_error_bit_ignore, 0, 3);
	tcase_add_test(tc, test_zero_write_error);
	suite_add_tcase(s, tc);

	tc = tcase_create("ignore error");
	tcase_add_test(tc, test_ignore_error_finishes);
	suite_add_tcase(s, tc);

	tc = tcase_create("stop after error");
	tcase_add_test(tc, test_stop_exact);
	tcase_add_test(tc, test_stop_parallel);
	suite_add_tcase(s, tc);

	tc = tcase_create("write seq");
	tcase_add_test(tc, test_write_seq_write_error);
	tcase_add_test(tc, test_write_seq_read_error);
	tcase_add_test(tc, test_write_seq_one_page);
	suite_add_tcase(s, tc);

	tc = tcase_create("enospc");
	tcase_add_test(tc, test_enospc_full_tmpfs);
	tcase_add_test(tc, test_enospc_injected);
	suite_add_tcase(s, tc);

	tc = tcase_create("short io");
	tcase_add_test(tc, test_short_io);
	suite_add_tcase(s, tc);

	tc = tcase_create("callbacks");
	tcase_add_test(tc, test_eio_storm_flush);
	tcase_add_test(tc, test_eio_storm_destroy);
	tcase_add_test(tc, test_faults_change_while_running);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(faults_suite());
}
