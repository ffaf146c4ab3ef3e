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

/* Zero detection grain by default, and its smallest. */
#define KCOPYD_DEFAULT_SPARSE_SIZE	4096u
/* The longest chunk of a hole (1 GiB): one zeroing of each destination. */
#define HOLE_CHUNK_SECTORS	((sector_t)1 << (30 - KCOPYD_SECTOR_SHIFT))
/* Jobs shorter than this are read in full: asking for holes costs more. */
#define SPARSE_MIN_SECTORS	((sector_t)(64 * 1024) >> KCOPYD_SECTOR_SHIFT)

/* A failed pthread call is a bug in the engine, not a condition to limp on. */
#define pth(call)							\
	do {								\
		int pth_err_ = (call);					\
		if (pth_err_ != 0)					\
			engine_die(#call, pth_err_, __FILE__, __LINE__); \
	} while (0)

void engine_die(const char *what, int err, const char *file, int line)
	__attribute__((noreturn));

/* --- Block devices (bdev.c, bdev_file.c) --------------------------------- */

/*
 * How a range is zeroed, cheapest first.  PUNCH deallocates (the range
 * reads back as zeros); RANGE zeroes and keeps the blocks allocated
 * (FALLOC_FL_ZERO_RANGE, BLKZEROOUT); WRITE writes zeros from one shared
 * buffer, which every device can do.
 */
enum bdev_zero_method {
	BDEV_ZERO_PUNCH,
	BDEV_ZERO_RANGE,
	BDEV_ZERO_WRITE,
	BDEV_ZERO_METHODS
};

/*
 * A backend: what a kind of device does, with no fault rules and no
 * counters (bdev.c adds those, the same for every backend).  Every call
 * may run in any thread, concurrently; offsets and lengths are in bytes.
 * Calls are synchronous today; a backend with requests in flight (NBD)
 * completes a sub-job from its own thread, which the engine allows since
 * a sub-job's state lives in the sub-job, not on a worker's stack.
 */
struct bdev_ops {
	const char *name;
	/* One transfer, possibly short; -errno on failure. */
	ssize_t (*preadv)(struct block_device *b, const struct iovec *iov,
			  int iovcnt, uint64_t off);
	ssize_t (*pwritev)(struct block_device *b, const struct iovec *iov,
			   int iovcnt, uint64_t off);
	/*
	 * As preadv, from the medium rather than a cache of the host, for a
	 * verify's read back; optional (preadv is used without it).
	 */
	ssize_t (*preadv_uncached)(struct block_device *b,
				   const struct iovec *iov, int iovcnt,
				   uint64_t off);
	/* Zero by PUNCH or RANGE; -EOPNOTSUPP if the device cannot. */
	int (*zero)(struct block_device *b, uint64_t off, uint64_t len,
		    enum bdev_zero_method m);
	/*
	 * The extent at off, at most len bytes: *hole and its *count.  A
	 * device that cannot tell says data.
	 */
	int (*extent)(struct block_device *b, uint64_t off, uint64_t len,
		      bool *hole, uint64_t *count);
	int (*flush)(struct block_device *b);
	/* Copy offload between two devices of this backend; optional. */
	ssize_t (*copy_range)(struct block_device *in, uint64_t in_off,
			      struct block_device *out, uint64_t out_off,
			      size_t len);
	/* Are a and b (both of this backend) one file or device? */
	bool (*same)(const struct block_device *a,
		     const struct block_device *b);
	/* Bytes allocated to the device (its size if it cannot tell). */
	int (*allocated)(struct block_device *b, uint64_t *bytes);
	/* Free the backend's state, including the block_device itself. */
	void (*close)(struct block_device *b);
};

struct fault_rule {
	struct kcopyd_fault f;
	struct fault_rule *next;
};

struct block_device {
	const struct bdev_ops *ops;
	bool read_only;
	bool copy_offload;		/* ops->copy_range may be used */
	sector_t sectors;
	uint64_t size;			/* bytes, whole sectors */
	unsigned int block_size;	/* smallest I/O it takes, in bytes */
	char *path;

	/* Fault rules: a list prepended under fault_lock, read under it. */
	pthread_mutex_t fault_lock;
	atomic_uint nr_faults;		/* fast path: 0 means no rule */
	atomic_uint nr_corrupt;		/* ... no KCOPYD_FAULT_CORRUPT rule */
	struct fault_rule *faults;

	/* Zeroing methods found not to work here (bit per method). */
	atomic_uint zero_unsupported;

	atomic_uint_fast64_t reads, writes, bytes_read, bytes_written, errors;
	atomic_uint_fast64_t zeros, bytes_zeroed, bytes_holes;
	atomic_uint_fast64_t zero_bytes[BDEV_ZERO_METHODS];
	atomic_uint_fast64_t flushes, bytes_verified;
};

/* bdev.c: set up the common part of a device a backend has allocated. */
int bdev_init(struct block_device *b, const struct bdev_ops *ops,
	      const char *path, uint64_t size, bool read_only,
	      unsigned int block_size);

/* bdev_file.c: an image file or a block device. */
int bdev_file_open(const char *path, int flags, struct block_device **result);

/* Does name start with an NBD URI scheme (nbd://, nbds+unix://, ...)? */
bool bdev_is_nbd_uri(const char *name);
/* bdev_nbd.c: an NBD export named by a URI. */
int bdev_nbd_open(const char *uri, int flags, struct block_device **result);

/*
 * Read or write exactly the bytes described by iov at byte offset off,
 * retrying short transfers and EINTR.  Returns 0 or a negative errno
 * (-EIO for an unexpected end of file).  iov is modified.
 */
int bdev_read_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		   off_t off);
int bdev_write_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		    off_t off);

/*
 * Zero [off, off + len) the cheapest way the device takes: with
 * `allocated`, the blocks must stay allocated.  Write fault rules apply.
 * Returns 0 or a negative errno.
 */
int bdev_zero(struct block_device *bdev, uint64_t off, uint64_t len,
	      bool allocated);

/*
 * The source side of a hole: it is not read, but read fault rules still
 * apply to it (delays sleep, an error rule fails).  Counts the bytes as
 * skipped.  Returns 0 or the rule's negative errno.
 */
int bdev_read_hole(struct block_device *bdev, uint64_t off, uint64_t len);

/* The extent at off (at most len bytes), as ops->extent. */
int bdev_extent(struct block_device *bdev, uint64_t off, uint64_t len,
		bool *hole, uint64_t *count);

/*
 * Copy offload of len bytes, all or nothing: false if either device
 * cannot (then nothing is counted and the caller copies itself).
 */
bool bdev_copy_range(struct block_device *in, uint64_t in_off,
		     struct block_device *out, uint64_t out_off, size_t len);

/* Is the device certainly allocated in full (so holes need no query)? */
bool bdev_fully_allocated(struct block_device *bdev);

/*
 * As bdev_read_full() or bdev_write_full(); on failure *failed_at (if not
 * NULL) is the byte offset of the transfer that failed.
 */
int bdev_rw_full(struct block_device *bdev, bool write, struct iovec *iov,
		 int iovcnt, off_t off, uint64_t *failed_at);

/*
 * A verify's read back, as bdev_rw_full() for a read, but through
 * ops->preadv_uncached where the backend has it, and counted in
 * bytes_verified rather than as a read.
 */
int bdev_read_back(struct block_device *bdev, struct iovec *iov, int iovcnt,
		   off_t off, uint64_t *failed_at);

/*
 * Make what was written durable (ops->flush); flush fault rules apply.
 * Counts a flush or an error.  Returns 0 or -errno.
 */
int bdev_flush(struct block_device *bdev);

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
