/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Definitions shared by the files of libkcopyd; nothing here is exported.
 */
#ifndef KCOPYD_INTERNAL_H
#define KCOPYD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "kcopyd.h"
#include "list.h"

#define KCOPYD_DEFAULT_THREADS		2
#define KCOPYD_DEFAULT_SUBJOB_SIZE	(512u * 1024)
#define KCOPYD_MAX_SUBJOB_SIZE		(16u * 1024 * 1024)
#define KCOPYD_DEFAULT_INFLIGHT		8
#define KCOPYD_MAX_INFLIGHT		64

#define SECTORS_PER_PAGE	(KCOPYD_PAGE_SIZE >> KCOPYD_SECTOR_SHIFT)

/* A failed pthread call is a bug in the engine, not a condition to limp on. */
#define pth(call)							\
	do {								\
		int pth_err_ = (call);					\
		if (pth_err_ != 0)					\
			engine_die(#call, pth_err_, __FILE__, __LINE__); \
	} while (0)

void engine_die(const char *what, int err, const char *file, int line)
	__attribute__((noreturn));

/* --- Block devices (bdev.c) --------------------------------------------- */

struct fault_rule {
	struct kcopyd_fault f;
	struct fault_rule *next;
};

struct block_device {
	int fd;
	int open_flags;
	bool read_only;
	bool is_blockdev;
	sector_t sectors;
	unsigned int block_size;	/* smallest I/O it takes, in bytes */
	dev_t dev;			/* identity: st_dev and st_ino, or */
	ino_t ino;			/* st_rdev for a block device */
	char *path;

	/* Fault rules: a list prepended under fault_lock, read under it. */
	pthread_mutex_t fault_lock;
	atomic_uint nr_faults;		/* fast path: 0 means no rule */
	struct fault_rule *faults;

	atomic_uint_fast64_t reads, writes, bytes_read, bytes_written, errors;
};

/*
 * Read or write exactly the bytes described by iov at byte offset off,
 * retrying short transfers and EINTR.  Returns 0 or a negative errno
 * (-EIO for an unexpected end of file).  iov is modified.
 */
int bdev_read_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		   off_t off);
int bdev_write_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		    off_t off);

/* Are a and b the same file or device, whatever handles they came from? */
bool bdev_same(const struct block_device *a, const struct block_device *b);

/* --- Page pool (pages.c) -------------------------------------------------- */

/*
 * A fixed set of page-aligned 4 KiB pages, allocated once at client
 * creation.  The pool has no lock of its own: its caller holds the
 * client's lock around get and put.
 */
struct page_pool {
	char *mem;			/* nr pages, contiguous mapping */
	unsigned int nr;
	unsigned int nr_free;
	unsigned int peak;		/* most ever in use */
	unsigned int *free;		/* stack of free page indices */
};

int pool_init(struct page_pool *pool, unsigned int nr);
void pool_destroy(struct page_pool *pool);
/* Take n pages (n <= nr_free) into idx[]. */
void pool_get(struct page_pool *pool, unsigned int *idx, unsigned int n);
void pool_put(struct page_pool *pool, const unsigned int *idx, unsigned int n);
/*
 * Fill iov[] with the pages idx[0..n) covering `bytes`, merging pages
 * that are adjacent in memory.  Returns the number of iovecs used.
 */
int pool_iov(const struct page_pool *pool, const unsigned int *idx,
	     unsigned int n, size_t bytes, struct iovec *iov);

#endif /* KCOPYD_INTERNAL_H */
