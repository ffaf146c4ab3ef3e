/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The randomised test: many jobs with random sources and 1 to 8
 * destinations, random num_pages (1 to 1024), thread counts and sub-job
 * sizes, on tmpfs images, compared byte for byte with a reference that
 * the test makes itself with memmove over plain pread'd copies.
 *
 * It prints its seed; KCOPYD_SEED=N re-runs it, KCOPYD_ROUNDS=N changes
 * the number of client configurations tried.
 *
 * Thread model: the test thread submits; callbacks run on the client's
 * callback thread and only count (struct done_count).  Jobs of one batch
 * never write where another job of the batch reads or writes, so the
 * result does not depend on the order the engine runs them in.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define NR_IMAGES	4
#define MAX_RANGES	(NR_IMAGES * 64)

struct image {
	char *path;
	struct block_device *bdev;
	unsigned char *ref;
	sector_t sectors;
};

/* Sector ranges claimed by the jobs of the current batch. */
struct claim {
	unsigned int img;
	sector_t start, end;
	bool write;
};

static uint64_t rng, seed;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t rand_below(uint64_t n)
{
	return n ? next_rand() % n : 0;
}

/* A range conflicts if it meets a range another job writes, or writes
 * where another job reads. */
static bool conflicts(const struct claim *c, unsigned int n,
		      const struct claim *x)
{
	for (unsigned int i = 0; i < n; i++)
		if (c[i].img == x->img && c[i].start < x->end &&
		    x->start < c[i].end && (c[i].write || x->write))
			return true;
	return false;
}

static bool overlaps(const struct claim *a, const struct claim *b)
{
	return a->img == b->img && a->start < b->end && b->start < a->end;
}

struct plan {
	bool zero;
	unsigned int flags;
	struct claim src;
	unsigned int nd;
	struct claim dst[8];
};

/* Choose a job whose ranges do not conflict with the batch's claims. */
static bool plan_job(struct image *img, struct claim *claims,
		     unsigned int *nclaims, struct plan *p)
{
	sector_t count = 1 + rand_below(rand_below(4) ? 64 : 4096);
	unsigned int nd = 1 + rand_below(8);
	bool up = false, down = false;

	p->zero = rand_below(8) == 0;
	p->flags = rand_below(4) == 0 ? KCOPYD_WRITE_SEQ : 0;
	p->nd = 0;
	p->src.img = rand_below(NR_IMAGES);
	if (count > img[p->src.img].sectors)
		count = img[p->src.img].sectors;
	p->src.start = rand_below(img[p->src.img].sectors - count + 1);
	p->src.end = p->src.start + count;
	p->src.write = false;
	if (!p->zero && conflicts(claims, *nclaims, &p->src))
		return false;

	for (unsigned int i = 0; i < nd; i++) {
		struct claim *d = &p->dst[p->nd];
		unsigned int im = rand_below(NR_IMAGES);
		sector_t at;

		if (img[im].sectors < count)
			continue;
		/* Now and then, a destination that overlaps the source. */
		if (!p->zero && rand_below(6) == 0) {
			im = p->src.img;
			at = p->src.start + rand_below(2 * count) - count;
			if (at > img[im].sectors - count)
				continue;
		} else {
			at = rand_below(img[im].sectors - count + 1);
		}
		*d = (struct claim){ im, at, at + count, true };
		if (conflicts(claims, *nclaims, d))
			continue;
		bool clash = false;
		for (unsigned int j = 0; j < p->nd; j++)
			clash |= overlaps(&p->dst[j], d);
		if (clash)
			continue;
		if (!p->zero && overlaps(d, &p->src) &&
		    d->start != p->src.start) {
			if (d->start > p->src.start)
				up = true;
			else
				down = true;
		}
		/* The engine refuses overlaps no copy order can satisfy. */
		if ((up && down) || (up && (p->flags & KCOPYD_WRITE_SEQ)))
			return false;
		p->nd++;
	}
	if (!p->nd)
		return false;
	if (!p->zero)
		claims[(*nclaims)++] = p->src;
	for (unsigned int i = 0; i < p->nd; i++)
		claims[(*nclaims)++] = p->dst[i];
	return true;
}

static void submit(struct kcopyd_client *kc, struct image *img,
		   const struct plan *p, struct done_count *done)
{
	struct io_region from = { img[p->src.img].bdev, p->src.start,
				  p->src.end - p->src.start };
	struct io_region to[8];
	int r;

	for (unsigned int i = 0; i < p->nd; i++)
		to[i] = (struct io_region){ img[p->dst[i].img].bdev,
					    p->dst[i].start,
					    p->dst[i].end - p->dst[i].start };
	if (p->zero)
		r = kcopyd_zero(kc, p->nd, to, p->flags, done_cb, done);
	else
		r = kcopyd_copy(kc, &from, p->nd, to, p->flags, done_cb, done);
	ck_assert_msg(r == 0, "submit: %s", strerror(-r));
}

/* The reference: what the job must do, applied to the in-memory images. */
static void apply(struct image *img, const struct plan *p)
{
	size_t len = (p->src.end - p->src.start) * 512;
	unsigned char *buf = malloc(len);

	if (p->zero)
		memset(buf, 0, len);
	else
		memcpy(buf, img[p->src.img].ref + p->src.start * 512, len);
	for (unsigned int i = 0; i < p->nd; i++)
		memcpy(img[p->dst[i].img].ref + p->dst[i].start * 512, buf,
		       len);
	free(buf);
}

static void compare(struct image *img)
{
	for (unsigned int i = 0; i < NR_IMAGES; i++) {
		size_t len;
		unsigned char *got = read_file(img[i].path, &len);

		ck_assert_uint_eq(len, img[i].sectors * 512);
		for (size_t k = 0; k < len; k++)
			if (got[k] != img[i].ref[k])
				ck_abort_msg("image %u differs at byte %zu "
					     "(seed %" PRIu64 ")",
					     i, k, seed);
		free(got);
	}
}

START_TEST(test_random)
{
	const char *env = getenv("KCOPYD_SEED");
	const char *rounds_env = getenv("KCOPYD_ROUNDS");
	unsigned int rounds = rounds_env ? atoi(rounds_env) : 12;
	struct image img[NR_IMAGES];
	unsigned long jobs = 0;

	seed = env ? strtoull(env, NULL, 0) :
		     (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
	printf("check_random: seed %" PRIu64 " (re-run with KCOPYD_SEED=%"
	       PRIu64 ")\n", seed, seed);
	fflush(stdout);
	rng = seed ? seed : 1;

	for (unsigned int i = 0; i < NR_IMAGES; i++) {
		char name[16];
		size_t bytes = (1 + rand_below(8)) * 1024 * 1024 +
			       rand_below(64) * 512;

		snprintf(name, sizeof(name), "rnd%u", i);
		img[i].path = make_image(name, bytes, 100 + i);
		img[i].bdev = open_bdev(img[i].path, O_RDWR);
		img[i].sectors = bytes / 512;
		img[i].ref = malloc(bytes);
		fill_pattern(img[i].ref, bytes, 100 + i);
	}

	for (unsigned int round = 0; round < rounds; round++) {
		static const unsigned int page_choices[] = { 1, 2, 7, 64,
							     256, 1024 };
		struct kcopyd_options o = {
			.threads = 1 + rand_below(8),
			.subjob_size = 4096 * (1 + rand_below(256)),
		};
		unsigned int pages = rand_below(2) ?
			page_choices[rand_below(6)] : 1 + rand_below(1024);
		struct kcopyd_client *kc;

		ck_assert_int_eq(kcopyd_client_create_opts(pages, &o, &kc), 0);
		for (unsigned int batch = 0; batch < 4; batch++) {
			struct claim claims[MAX_RANGES];
			unsigned int nclaims = 0, njobs = 0;
			struct plan plans[24];
			struct done_count done;

			done_init(&done);
			for (unsigned int t = 0; t < 200 && njobs < 24; t++)
				if (plan_job(img, claims, &nclaims,
					     &plans[njobs]) &&
				    nclaims <= MAX_RANGES - 9)
					njobs++;
			for (unsigned int j = 0; j < njobs; j++) {
				submit(kc, img, &plans[j], &done);
				apply(img, &plans[j]);
			}
			ck_assert_int_eq(kcopyd_client_flush(kc), 0);
			ck_assert_uint_eq(done_calls(&done), njobs);
			ck_assert_int_eq(done.read_err, 0);
			ck_assert_uint_eq(done.write_err, 0);
			jobs += njobs;
			compare(img);
		}
		kcopyd_client_destroy(kc);
	}
	printf("check_random: %lu jobs in %u configurations, all equal\n",
	       jobs, rounds);

	for (unsigned int i = 0; i < NR_IMAGES; i++) {
		kcopyd_bdev_close(img[i].bdev);
		free(img[i].ref);
		free(img[i].path);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("random");
	TCase *tc = tcase_create("random");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_random);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
