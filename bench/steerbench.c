/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * steerbench: what steerable jobs cost, measured through libkcopyd.
 *
 *   steerbench slice SRC DST [rev]
 *                                 a copy of all of SRC to DST as one job,
 *                                 then as jobs of 64 MiB with two in
 *                                 flight (what kcopy did before it could
 *                                 cancel), or the other way round with
 *                                 rev; prints "one SECONDS" and
 *                                 "sliced SECONDS"
 *   steerbench small SRC DST N    N jobs of 4 KiB through kcopyd_copy and
 *                                 through kcopyd_submit; prints "notify
 *                                 JOBS_PER_S" and "complete JOBS_PER_S"
 *   steerbench throttle SRC DST RATE
 *                                 a copy of SRC at RATE bytes per second;
 *                                 prints "throttled SECONDS"
 *   steerbench cancel SRC DST     a copy cancelled 0.2 s after it starts;
 *                                 prints "cancel_latency SECONDS" (cancel
 *                                 to completion) and "done SECTORS"
 *
 * Thread model: the main thread submits and waits on a condition; the
 * completion functions run on the client's callback thread and signal it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kcopyd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long finished;
static sector_t done_sectors;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "steerbench: %s: %s\n", what, strerror(-r));
	exit(1);
}

static void notify(int read_err, unsigned int write_err, void *context)
{
	(void)context;
	if (read_err || write_err)
		die("job", -EIO);
	pthread_mutex_lock(&lock);
	finished++;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
}

static void complete(const struct kcopyd_completion *c, void *context)
{
	(void)context;
	if (c->read_err || c->write_err)
		die("job", -EIO);
	pthread_mutex_lock(&lock);
	finished++;
	done_sectors = c->sectors_done;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
}

static void wait_for(unsigned long n)
{
	pthread_mutex_lock(&lock);
	while (finished < n)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
}

static struct block_device *open_dev(const char *path, int flags)
{
	struct block_device *b;
	int r = kcopyd_bdev_open(path, flags, &b);

	if (r)
		die(path, r);
	return b;
}

static void submit(struct kcopyd_client *kc, struct block_device *s,
		   struct block_device *d, sector_t at, sector_t n,
		   uint64_t *id)
{
	struct io_region from = { s, at, n }, to = { d, at, n };
	struct kcopyd_job_desc desc = {
		.size = sizeof(desc),
		.op = KCOPYD_OP_COPY,
		.from = &from,
		.num_dests = 1,
		.dests = &to,
		.complete = complete,
	};
	int r = kcopyd_submit(kc, &desc, id);

	if (r)
		die("kcopyd_submit", r);
}

static void one_job(struct kcopyd_client *kc, struct block_device *s,
		    struct block_device *d)
{
	unsigned long n = finished + 1;
	double t = now();

	submit(kc, s, d, 0, kcopyd_bdev_sectors(s), NULL);
	wait_for(n);
	printf("one %.3f\n", now() - t);
}

static void slice(struct kcopyd_client *kc, struct block_device *s,
		  struct block_device *d, bool rev)
{
	sector_t total = kcopyd_bdev_sectors(s), job = 64u << 11, at = 0;
	unsigned long n;
	double t;

	if (!rev)
		one_job(kc, s, d);
	n = finished;
	t = now();
	while (at < total) {
		sector_t len = total - at < job ? total - at : job;

		/* Two in flight: wait for the one before the last. */
		if (n - finished >= 2)
			wait_for(finished + 1);
		submit(kc, s, d, at, len, NULL);
		n++;
		at += len;
	}
	wait_for(n);
	printf("sliced %.3f\n", now() - t);
	if (rev)
		one_job(kc, s, d);
}

static void small(struct kcopyd_client *kc, struct block_device *s,
		  struct block_device *d, unsigned long jobs)
{
	sector_t total = kcopyd_bdev_sectors(s);
	unsigned long base = finished;
	double t;

	t = now();
	for (unsigned long i = 0; i < jobs; i++) {
		struct io_region from = { s, (i * 8) % total, 8 };
		struct io_region to = { d, (i * 8) % total, 8 };
		int r = kcopyd_copy(kc, &from, 1, &to, 0, notify, NULL);

		if (r)
			die("kcopyd_copy", r);
	}
	wait_for(base + jobs);
	printf("notify %.0f\n", jobs / (now() - t));

	base = finished;
	t = now();
	for (unsigned long i = 0; i < jobs; i++)
		submit(kc, s, d, (i * 8) % total, 8, NULL);
	wait_for(base + jobs);
	printf("complete %.0f\n", jobs / (now() - t));
}

int main(int argc, char **argv)
{
	struct kcopyd_client *kc;
	struct block_device *s, *d;
	double t;
	uint64_t id;
	int r;

	if (argc < 4) {
		fprintf(stderr, "usage: steerbench slice|small|throttle|cancel "
				"SRC DST [N|RATE]\n");
		return 1;
	}
	s = open_dev(argv[2], O_RDONLY);
	d = open_dev(argv[3], O_RDWR);
	r = kcopyd_client_create(1024, &kc);
	if (r)
		die("kcopyd_client_create", r);
	if (!strcmp(argv[1], "slice")) {
		slice(kc, s, d, argc > 4 && !strcmp(argv[4], "rev"));
	} else if (!strcmp(argv[1], "small") && argc > 4) {
		small(kc, s, d, strtoul(argv[4], NULL, 10));
	} else if (!strcmp(argv[1], "throttle") && argc > 4) {
		kcopyd_client_set_throttle(kc, strtoull(argv[4], NULL, 10), 0);
		t = now();
		submit(kc, s, d, 0, kcopyd_bdev_sectors(s), NULL);
		wait_for(1);
		printf("throttled %.3f\n", now() - t);
	} else if (!strcmp(argv[1], "cancel")) {
		/* Slowed so that it is still running when cancelled. */
		kcopyd_client_set_throttle(kc, 256u << 20, 0);
		submit(kc, s, d, 0, kcopyd_bdev_sectors(s), &id);
		usleep(200000);
		t = now();
		r = kcopyd_cancel(kc, id);
		if (r)
			die("kcopyd_cancel", r);
		wait_for(1);
		printf("cancel_latency %.4f\ndone %llu\n", now() - t,
		       (unsigned long long)done_sectors);
	} else {
		fprintf(stderr, "steerbench: unknown mode %s\n", argv[1]);
		return 1;
	}
	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(s);
	kcopyd_bdev_close(d);
	return 0;
}
