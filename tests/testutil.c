/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static char dir[256];
static pid_t dir_owner;

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	remove(path);
	return 0;
}

static void rm_dir(void)
{
	/* Check forks a child per test: only the creator cleans up. */
	if (dir[0] && getpid() == dir_owner)
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *test_dir(void)
{
	if (!dir[0]) {
		const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" :
								    "/tmp";

		snprintf(dir, sizeof(dir), "%s/kcopyd-check.XXXXXX", base);
		if (!mkdtemp(dir))
			ck_abort_msg("mkdtemp %s: %s", dir, strerror(errno));
		dir_owner = getpid();
		atexit(rm_dir);
	}
	return dir;
}

void fill_pattern(unsigned char *buf, size_t len, unsigned int seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)(x | 1);
	}
}

char *make_image(const char *name, size_t bytes, unsigned int seed)
{
	char *path;
	unsigned char *buf;
	int fd;

	if (asprintf(&path, "%s/%s", test_dir(), name) < 0)
		ck_abort_msg("asprintf");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(ftruncate(fd, (off_t)bytes), 0);
	if (seed && bytes) {
		buf = malloc(bytes);
		ck_assert_ptr_nonnull(buf);
		fill_pattern(buf, bytes, seed);
		ck_assert_int_eq(pwrite(fd, buf, bytes, 0), (ssize_t)bytes);
		free(buf);
	}
	close(fd);
	return path;
}

unsigned char *read_file(const char *path, size_t *len)
{
	struct stat st;
	unsigned char *buf;
	int fd = open(path, O_RDONLY);

	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc(st.st_size ? st.st_size : 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, st.st_size, 0), st.st_size);
	close(fd);
	*len = st.st_size;
	return buf;
}

void done_init(struct done_count *d)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
}

void done_cb(int read_err, unsigned int write_err, void *context)
{
	struct done_count *d = context;

	pthread_mutex_lock(&d->lock);
	d->calls++;
	d->read_err |= read_err;
	d->write_err |= write_err;
	d->last_thread = pthread_self();
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

void wait_calls(pthread_mutex_t *lock, pthread_cond_t *cond,
		const unsigned int *calls, unsigned int want, int secs)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	pthread_mutex_lock(lock);
	while (*calls < want)
		if (pthread_cond_timedwait(cond, lock, &ts) == ETIMEDOUT)
			ck_abort_msg("only %u of %u callbacks in %d s", *calls,
				     want, secs);
	pthread_mutex_unlock(lock);
}

void done_wait(struct done_count *d, unsigned int calls)
{
	wait_calls(&d->lock, &d->cond, &d->calls, calls, 60);
}

unsigned int done_calls(struct done_count *d)
{
	unsigned int n;

	pthread_mutex_lock(&d->lock);
	n = d->calls;
	pthread_mutex_unlock(&d->lock);
	return n;
}

int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	test_dir();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

struct block_device *open_bdev(const char *path, int flags)
{
	struct block_device *bdev = NULL;
	int r = kcopyd_bdev_open(path, flags, &bdev);

	ck_assert_msg(r == 0, "kcopyd_bdev_open %s: %s", path, strerror(-r));
	return bdev;
}

void img_make(struct img *im, const char *name, size_t size,
	      unsigned int seed)
{
	im->path = make_image(name, size, seed);
	im->size = size;
	im->orig = calloc(1, size);
	ck_assert_ptr_nonnull(im->orig);
	if (seed)
		fill_pattern(im->orig, size, seed);
	im->bdev = open_bdev(im->path, O_RDWR);
}

unsigned char *img_now(const struct img *im)
{
	size_t len;
	unsigned char *buf = read_file(im->path, &len);

	ck_assert_uint_eq(len, im->size);
	return buf;
}

void img_free(struct img *im)
{
	kcopyd_bdev_close(im->bdev);
	unlink(im->path);
	free(im->orig);
	free(im->path);
}

void add_fault(struct block_device *bdev, unsigned int ops,
	       enum kcopyd_fault_kind kind, sector_t sector, sector_t count,
	       int error, unsigned int delay_us)
{
	struct kcopyd_fault f = {
		.ops = ops,
		.kind = kind,
		.sector = sector,
		.count = count,
		.error = error,
		.delay_us = delay_us,
	};

	ck_assert_int_eq(kcopyd_bdev_add_fault(bdev, &f), 0);
}
