/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the Check unit tests: scratch images on tmpfs and a
 * callback that counts completions.
 *
 * Thread model: struct done_count is updated by the client's callback
 * thread and read by the test thread, under its own mutex.
 */
#ifndef KCOPYD_TESTUTIL_H
#define KCOPYD_TESTUTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "kcopyd.h"

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* A fresh directory on tmpfs, removed with everything in it at exit. */
const char *test_dir(void);

/* Create PATH-in-test_dir of `bytes`, filled from `seed` (0: zeros). */
char *make_image(const char *name, size_t bytes, unsigned int seed);

/* Read a whole file into a malloc'd buffer; *len gets its size. */
unsigned char *read_file(const char *path, size_t *len);

/* Fill buf deterministically from seed (never all zeros). */
void fill_pattern(unsigned char *buf, size_t len, unsigned int seed);

struct done_count {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int calls;
	int read_err;			/* OR of every call's read_err */
	unsigned int write_err;		/* OR of every call's write_err */
	pthread_t last_thread;
};

void done_init(struct done_count *d);
/* A kcopyd_notify_fn; context is a struct done_count. */
void done_cb(int read_err, unsigned int write_err, void *context);
/*
 * Wait, under lock, until *calls (counted under lock, cond broadcast) reaches
 * want; fails the test after secs seconds.
 */
void wait_calls(pthread_mutex_t *lock, pthread_cond_t *cond,
		const unsigned int *calls, unsigned int want, int secs);
/* Wait until `calls` callbacks have run (fails the test after 60 s). */
void done_wait(struct done_count *d, unsigned int calls);
unsigned int done_calls(struct done_count *d);

struct block_device *open_bdev(const char *path, int flags);

/* A scratch image, opened read-write, with the contents it was made with. */
struct img {
	char *path;
	size_t size;
	unsigned char *orig;
	struct block_device *bdev;
};

/* Make `name` of `size` filled from `seed` (0: zeros) and open it. */
void img_make(struct img *im, const char *name, size_t size,
	      unsigned int seed);
/* The image's current contents (malloc'd; its size is checked). */
unsigned char *img_now(const struct img *im);
/* Close, unlink and free the image. */
void img_free(struct img *im);

/*
 * A client with `threads` workers and the given sub-job/in-flight limits
 * (0: the defaults). Inline, so that tests built without the engine link.
 */
static inline struct kcopyd_client *
new_client(unsigned int pages, unsigned int threads, unsigned int subjob,
	   unsigned int inflight)
{
	struct kcopyd_options o = {
		.threads = threads,
		.subjob_size = subjob,
		.max_inflight = inflight,
	};
	struct kcopyd_client *kc = NULL;

	ck_assert_int_eq(kcopyd_client_create_opts(pages, &o, &kc), 0);
	return kc;
}

/* Add a fault rule to bdev; fails the test if it is refused. */
void add_fault(struct block_device *bdev, unsigned int ops,
	       enum kcopyd_fault_kind kind, sector_t sector, sector_t count,
	       int error, unsigned int delay_us);

/*
 * Run a suite with its scratch directory made first (so the forked tests
 * share it and the parent removes it); the exit status for main().
 */
int run_suite(Suite *s);

#endif
