/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block devices: the part every backend shares.  A backend (bdev_file.c)
 * moves the bytes; this file adds what must be the same whatever the
 * device is: fault rules, counters, the zeroing ladder, and the public
 * device I/O that programs use instead of descriptors of their own.
 *
 * Zeroing takes the cheapest method the device supports, probed on first
 * use and remembered: punch a hole, zero a range in place, and only then
 * write zeros from one shared buffer (no pool pages).
 *
 * Thread model: any number of threads may do I/O on one device at once.
 * The fault rules are guarded by fault_lock; nr_faults lets I/O skip the
 * lock when there are none.  Counters and zero_unsupported are atomics.
 * Open and close are the caller's to order against I/O: a device is
 * closed only when no job uses it.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void engine_die(const char *what, int err, const char *file, int line)
{
	fprintf(stderr, "libkcopyd: %s:%d: %s: %s\n", file, line, what,
		strerror(err));
	abort();
}

/* Zeros for the last rung of the ladder, shared by every device. */
#define ZERO_BUF_SIZE	(1024 * 1024)
static const char zero_buf[ZERO_BUF_SIZE]
	__attribute__((aligned(KCOPYD_PAGE_SIZE)));

bool bdev_same(const struct block_device *a, const struct block_device *b)
{
	return a == b || (a->ops == b->ops && a->ops->same(a, b));
}

int bdev_init(struct block_device *b, const struct bdev_ops *ops,
	      const char *path, uint64_t size, bool read_only,
	      unsigned int block_size)
{
	b->path = strdup(path);
	if (!b->path)
		return -ENOMEM;
	b->ops = ops;
	b->read_only = read_only;
	b->sectors = size >> KCOPYD_SECTOR_SHIFT;
	b->size = b->sectors << KCOPYD_SECTOR_SHIFT;
	b->block_size = block_size;
	pth(pthread_mutex_init(&b->fault_lock, NULL));
	return 0;
}

int kcopyd_bdev_open(const char *path, int flags, struct block_device **result)
{
	if (bdev_is_nbd_uri(path)) {
#ifdef HAVE_LIBNBD
		return bdev_nbd_open(path, flags, result);
#else
		return -EPROTONOSUPPORT;
#endif
	}
	return bdev_file_open(path, flags, result);
}

int kcopyd_bdev_is_uri(const char *name)
{
	return bdev_is_nbd_uri(name);
}

bool bdev_is_nbd_uri(const char *name)
{
	static const char *const schemes[] = {
		"nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
		"nbd+vsock://", "nbds+vsock://",
	};

	if (!name)
		return false;
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (!strncmp(name, schemes[i], strlen(schemes[i])))
			return true;
	return false;
}

void kcopyd_bdev_close(struct block_device *bdev)
{
	if (!bdev)
		return;
	kcopyd_bdev_clear_faults(bdev);
	pth(pthread_mutex_destroy(&bdev->fault_lock));
	free(bdev->path);
	bdev->ops->close(bdev);
}

sector_t kcopyd_bdev_sectors(const struct block_device *bdev)
{
	return bdev ? bdev->sectors : 0;
}

/* The struct kcopyd_bdev_stats of the first release: reads to errors. */
#define KCOPYD_BDEV_STATS_V1 offsetof(struct kcopyd_bdev_stats, zeros)

void kcopyd_bdev_get_stats(const struct block_device *bdev,
			   struct kcopyd_bdev_stats *st)
{
	struct block_device *b = (struct block_device *)bdev;

	if (!st)
		return;
	/* Programs built before `zeros` existed have room for no more. */
	memset(st, 0, KCOPYD_BDEV_STATS_V1);
	if (!b)
		return;
	st->reads = atomic_load(&b->reads);
	st->writes = atomic_load(&b->writes);
	st->bytes_read = atomic_load(&b->bytes_read);
	st->bytes_written = atomic_load(&b->bytes_written);
	st->errors = atomic_load(&b->errors);
}

int kcopyd_bdev_get_stats2(const struct block_device *bdev,
			   struct kcopyd_bdev_stats *st, size_t size)
{
	struct block_device *b = (struct block_device *)bdev;
	struct kcopyd_bdev_stats all;

	if (!b || !st || size < KCOPYD_BDEV_STATS_V1)
		return -EINVAL;
	kcopyd_bdev_get_stats(b, &all);
	all.zeros = atomic_load(&b->zeros);
	all.bytes_zeroed = atomic_load(&b->bytes_zeroed);
	all.bytes_holes = atomic_load(&b->bytes_holes);
	all.zeroed_punch = atomic_load(&b->zero_bytes[BDEV_ZERO_PUNCH]);
	all.zeroed_range = atomic_load(&b->zero_bytes[BDEV_ZERO_RANGE]);
	all.zeroed_write = atomic_load(&b->zero_bytes[BDEV_ZERO_WRITE]);
	all.flushes = atomic_load(&b->flushes);
	all.bytes_verified = atomic_load(&b->bytes_verified);
	memcpy(st, &all, size < sizeof(all) ? size : sizeof(all));
	return 0;
}

int kcopyd_bdev_add_fault(struct block_device *bdev,
			  const struct kcopyd_fault *fault)
{
	struct fault_rule *rule;

	if (!bdev || !fault || !fault->count || fault->error < 0 ||
	    !fault->ops ||
	    (fault->ops & ~(KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE |
			    KCOPYD_FAULT_FLUSH)) ||
	    fault->sector + fault->count < fault->sector)
		return -EINVAL;
	switch (fault->kind) {
	case KCOPYD_FAULT_ERROR:
	case KCOPYD_FAULT_SHORT:
	case KCOPYD_FAULT_DELAY:
		break;
	case KCOPYD_FAULT_CORRUPT:
		if (fault->ops & KCOPYD_FAULT_FLUSH)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}

	rule = malloc(sizeof(*rule));
	if (!rule)
		return -ENOMEM;
	rule->f = *fault;
	if (rule->f.kind == KCOPYD_FAULT_ERROR && !rule->f.error)
		rule->f.error = EIO;

	pth(pthread_mutex_lock(&bdev->fault_lock));
	rule->next = bdev->faults;
	bdev->faults = rule;
	atomic_fetch_add(&bdev->nr_faults, 1);
	if (rule->f.kind == KCOPYD_FAULT_CORRUPT)
		atomic_fetch_add(&bdev->nr_corrupt, 1);
	pth(pthread_mutex_unlock(&bdev->fault_lock));
	return 0;
}

void kcopyd_bdev_clear_faults(struct block_device *bdev)
{
	struct fault_rule *rule, *next;

	if (!bdev)
		return;
	pth(pthread_mutex_lock(&bdev->fault_lock));
	rule = bdev->faults;
	bdev->faults = NULL;
	atomic_store(&bdev->nr_faults, 0);
	atomic_store(&bdev->nr_corrupt, 0);
	pth(pthread_mutex_unlock(&bdev->fault_lock));
	for (; rule; rule = next) {
		next = rule->next;
		free(rule);
	}
}

/*
 * Apply the rules of operation op to an I/O of [off, off + *len): sleeps
 * for a delay rule, may shorten *len (a short rule, never below one
 * sector), and returns the negative errno of an error rule, else 0.
 */
static int apply_faults(struct block_device *bdev, unsigned int op,
			uint64_t off, uint64_t *len)
{
	sector_t first, end;
	unsigned int delay = 0;
	struct fault_rule *rule;
	int err = 0;

	if (!atomic_load(&bdev->nr_faults))
		return 0;

	first = off >> KCOPYD_SECTOR_SHIFT;
	end = (off + *len + KCOPYD_SECTOR_SIZE - 1) >> KCOPYD_SECTOR_SHIFT;
	pth(pthread_mutex_lock(&bdev->fault_lock));
	for (rule = bdev->faults; rule; rule = rule->next) {
		const struct kcopyd_fault *f = &rule->f;

		if (!(f->ops & op))
			continue;
		if (op != KCOPYD_FAULT_FLUSH &&
		    (f->sector >= end || f->sector + f->count <= first))
			continue;
		switch (f->kind) {
		case KCOPYD_FAULT_ERROR:
			err = -f->error;
			break;
		case KCOPYD_FAULT_SHORT:
			if (*len > KCOPYD_SECTOR_SIZE) {
				uint64_t half = (*len / 2) &
					~(uint64_t)(KCOPYD_SECTOR_SIZE - 1);
				*len = half ? half : KCOPYD_SECTOR_SIZE;
			}
			break;
		case KCOPYD_FAULT_DELAY:
			if (f->delay_us > delay)
				delay = f->delay_us;
			break;
		case KCOPYD_FAULT_CORRUPT:
			break;		/* applied to the data, see below */
		}
	}
	pth(pthread_mutex_unlock(&bdev->fault_lock));

	if (delay)
		usleep(delay);
	return err;
}

static size_t iov_bytes(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;

	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

/*
 * One preadv/pwritev of at most `limit` bytes of iov: the vector is cut
 * at the limit in place and restored afterwards.
 */
static ssize_t io_once(struct block_device *bdev, bool write,
		       struct iovec *iov, int iovcnt, off_t off, uint64_t limit,
		       bool uncached)
{
	size_t sum = 0, saved = 0;
	int cut = -1, n;
	ssize_t r;

	if (iovcnt > IOV_MAX)
		iovcnt = IOV_MAX;
	for (n = 0; n < iovcnt; n++) {
		if (sum + iov[n].iov_len >= limit) {
			cut = n;
			saved = iov[n].iov_len;
			iov[n].iov_len = limit - sum;
			n++;
			break;
		}
		sum += iov[n].iov_len;
	}
	if (write)
		r = bdev->ops->pwritev(bdev, iov, n, (uint64_t)off);
	else if (uncached && bdev->ops->preadv_uncached)
		r = bdev->ops->preadv_uncached(bdev, iov, n, (uint64_t)off);
	else
		r = bdev->ops->preadv(bdev, iov, n, (uint64_t)off);
	if (cut >= 0)
		iov[cut].iov_len = saved;
	return r;
}

/* Does a corrupt rule of operation op cover sector s? (fault_lock held) */
static bool corrupt_rule_at(struct block_device *bdev, unsigned int op,
			    sector_t s)
{
	for (struct fault_rule *rule = bdev->faults; rule; rule = rule->next)
		if (rule->f.kind == KCOPYD_FAULT_CORRUPT &&
		    (rule->f.ops & op) && rule->f.sector <= s &&
		    s - rule->f.sector < rule->f.count)
			return true;
	return false;
}

/*
 * Apply the corrupt rules of op to the data of iov, which is (or will be)
 * at byte offset off: the first byte of every sector they cover is
 * inverted.  Returns whether anything was.
 */
static bool corrupt_iov(struct block_device *bdev, unsigned int op,
			const struct iovec *iov, int iovcnt, uint64_t off)
{
	bool hit = false;

	pth(pthread_mutex_lock(&bdev->fault_lock));
	for (int i = 0; i < iovcnt; i++) {
		unsigned char *p = iov[i].iov_base;
		uint64_t pos = (KCOPYD_SECTOR_SIZE - off % KCOPYD_SECTOR_SIZE) %
			       KCOPYD_SECTOR_SIZE;

		for (; pos < iov[i].iov_len; pos += KCOPYD_SECTOR_SIZE)
			if (corrupt_rule_at(bdev, op, (off + pos) >>
						      KCOPYD_SECTOR_SHIFT)) {
				p[pos] ^= 0xff;
				hit = true;
			}
		off += iov[i].iov_len;
	}
	pth(pthread_mutex_unlock(&bdev->fault_lock));
	return hit;
}

static int io_transfer(struct block_device *bdev, bool write,
		       struct iovec *iov, int iovcnt, off_t off,
		       uint64_t *failed_at, bool uncached);

/*
 * A transfer with corrupt rules on the device: a write goes out from a
 * corrupted copy of the data, a read is corrupted once it has arrived.
 */
static int io_corrupt(struct block_device *bdev, bool write,
		      struct iovec *iov, int iovcnt, off_t off,
		      uint64_t *failed_at, bool uncached)
{
	size_t total = iov_bytes(iov, iovcnt), at = 0;
	struct iovec one, *saved;
	char *copy;
	int r;

	if (write) {
		copy = aligned_alloc(KCOPYD_PAGE_SIZE,
				     (total + KCOPYD_PAGE_SIZE - 1) /
				     KCOPYD_PAGE_SIZE * KCOPYD_PAGE_SIZE);
		if (!copy)
			return -ENOMEM;
		for (int i = 0; i < iovcnt; i++) {
			memcpy(copy + at, iov[i].iov_base, iov[i].iov_len);
			at += iov[i].iov_len;
		}
		one = (struct iovec){ copy, total };
		corrupt_iov(bdev, KCOPYD_FAULT_WRITE, &one, 1, (uint64_t)off);
		r = io_transfer(bdev, true, &one, 1, off, failed_at, uncached);
		free(copy);
		return r;
	}
	saved = malloc(sizeof(*saved) * (size_t)iovcnt);
	if (!saved)
		return -ENOMEM;
	memcpy(saved, iov, sizeof(*saved) * (size_t)iovcnt);
	r = io_transfer(bdev, false, iov, iovcnt, off, failed_at, uncached);
	if (!r)
		corrupt_iov(bdev, KCOPYD_FAULT_READ, saved, iovcnt,
			    (uint64_t)off);
	free(saved);
	return r;
}

static int io_full(struct block_device *bdev, bool write, struct iovec *iov,
		   int iovcnt, off_t off, uint64_t *failed_at, bool uncached)
{
	if (atomic_load(&bdev->nr_corrupt))
		return io_corrupt(bdev, write, iov, iovcnt, off, failed_at,
				  uncached);
	return io_transfer(bdev, write, iov, iovcnt, off, failed_at,
			   uncached);
}

static int io_transfer(struct block_device *bdev, bool write,
		       struct iovec *iov, int iovcnt, off_t off,
		       uint64_t *failed_at, bool uncached)
{
	unsigned int op = write ? KCOPYD_FAULT_WRITE : KCOPYD_FAULT_READ;
	size_t total = iov_bytes(iov, iovcnt), left = total;
	int r;

	while (left) {
		uint64_t limit = left;
		ssize_t n;

		r = apply_faults(bdev, op, (uint64_t)off, &limit);
		if (r)
			goto fail;
		n = io_once(bdev, write, iov, iovcnt, off, limit, uncached);
		if (n < 0) {
			if (n == -EINTR)
				continue;
			r = (int)n;
			goto fail;
		}
		if (n == 0) {
			/* End of file inside the device: it shrank. */
			r = write ? -ENOSPC : -EIO;
			goto fail;
		}
		left -= n;
		off += n;
		while (n > 0 && (size_t)n >= iov->iov_len) {
			n -= iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (n) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= n;
		}
	}

	if (write) {
		atomic_fetch_add(&bdev->writes, 1);
		atomic_fetch_add(&bdev->bytes_written, total);
	} else if (uncached) {
		atomic_fetch_add(&bdev->bytes_verified, total);
	} else {
		atomic_fetch_add(&bdev->reads, 1);
		atomic_fetch_add(&bdev->bytes_read, total);
	}
	return 0;

fail:
	atomic_fetch_add(&bdev->errors, 1);
	if (failed_at)
		*failed_at = (uint64_t)off;
	return r;
}

int bdev_read_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		   off_t off)
{
	return io_full(bdev, false, iov, iovcnt, off, NULL, false);
}

int bdev_write_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		    off_t off)
{
	return io_full(bdev, true, iov, iovcnt, off, NULL, false);
}

int bdev_rw_full(struct block_device *bdev, bool write, struct iovec *iov,
		 int iovcnt, off_t off, uint64_t *failed_at)
{
	return io_full(bdev, write, iov, iovcnt, off, failed_at, false);
}

int bdev_read_back(struct block_device *bdev, struct iovec *iov, int iovcnt,
		   off_t off, uint64_t *failed_at)
{
	return io_full(bdev, false, iov, iovcnt, off, failed_at, true);
}

int bdev_flush(struct block_device *bdev)
{
	uint64_t len = 0;
	int r;

	r = apply_faults(bdev, KCOPYD_FAULT_FLUSH, 0, &len);
	if (!r)
		r = bdev->ops->flush(bdev);
	if (r) {
		atomic_fetch_add(&bdev->errors, 1);
		return r;
	}
	atomic_fetch_add(&bdev->flushes, 1);
	return 0;
}

/* --- Zeroing and holes ------------------------------------------------------ */

/*
 * The last rung: write zeros.  Unless the blocks must stay allocated,
 * what is a hole already is left alone, as it reads as zeros.
 */
static int zero_by_writes(struct block_device *bdev, uint64_t off,
			  uint64_t len, bool allocated)
{
	while (len) {
		uint64_t n = len;
		bool hole = false;
		int r;

		if (!allocated) {
			r = bdev->ops->extent(bdev, off, len, &hole, &n);
			if (r)
				return r;
			if (!n)
				n = len;
		}
		if (hole) {
			off += n;
			len -= n;
			continue;
		}
		while (n) {
			struct iovec iov = {
				.iov_base = (void *)zero_buf,
				.iov_len = n < ZERO_BUF_SIZE ? n : ZERO_BUF_SIZE,
			};
			ssize_t w = bdev->ops->pwritev(bdev, &iov, 1, off);

			if (w == -EINTR)
				continue;
			if (w < 0)
				return (int)w;
			if (w == 0)
				return -ENOSPC;
			off += (uint64_t)w;
			len -= (uint64_t)w;
			n -= (uint64_t)w;
		}
	}
	return 0;
}

/* One rung after another, from the cheapest the device may take. */
static int zero_once(struct block_device *bdev, uint64_t off, uint64_t len,
		     bool allocated)
{
	enum bdev_zero_method m;
	int r;

	for (m = allocated ? BDEV_ZERO_RANGE : BDEV_ZERO_PUNCH;
	     m < BDEV_ZERO_WRITE; m++) {
		if (atomic_load(&bdev->zero_unsupported) & (1u << m))
			continue;
		r = bdev->ops->zero(bdev, off, len, m);
		if (r == -EOPNOTSUPP) {
			atomic_fetch_or(&bdev->zero_unsupported, 1u << m);
			continue;
		}
		if (r)
			return r;
		atomic_fetch_add(&bdev->zero_bytes[m], len);
		return 0;
	}
	r = zero_by_writes(bdev, off, len, allocated);
	if (!r)
		atomic_fetch_add(&bdev->zero_bytes[BDEV_ZERO_WRITE], len);
	return r;
}

int bdev_zero(struct block_device *bdev, uint64_t off, uint64_t len,
	      bool allocated)
{
	uint64_t total = len;
	int r;

	while (len) {
		uint64_t n = len;

		r = apply_faults(bdev, KCOPYD_FAULT_WRITE, off, &n);
		if (r)
			goto fail;
		r = zero_once(bdev, off, n, allocated);
		if (r)
			goto fail;
		off += n;
		len -= n;
	}
	atomic_fetch_add(&bdev->zeros, 1);
	atomic_fetch_add(&bdev->bytes_zeroed, total);
	return 0;

fail:
	atomic_fetch_add(&bdev->errors, 1);
	return r;
}

int bdev_read_hole(struct block_device *bdev, uint64_t off, uint64_t len)
{
	uint64_t total = len;
	int r;

	/* A short rule only cuts the range: go on past it. */
	while (len) {
		uint64_t n = len;

		r = apply_faults(bdev, KCOPYD_FAULT_READ, off, &n);
		if (r) {
			atomic_fetch_add(&bdev->errors, 1);
			return r;
		}
		off += n;
		len -= n;
	}
	atomic_fetch_add(&bdev->bytes_holes, total);
	return 0;
}

int bdev_extent(struct block_device *bdev, uint64_t off, uint64_t len,
		bool *hole, uint64_t *count)
{
	int r;

	if (off >= bdev->size || !len) {
		*hole = false;
		*count = 0;
		return 0;
	}
	if (len > bdev->size - off)
		len = bdev->size - off;
	r = bdev->ops->extent(bdev, off, len, hole, count);
	if (r)
		return r;
	if (!*count || *count > len)
		*count = len;
	return 0;
}

bool bdev_copy_range(struct block_device *in, uint64_t in_off,
		     struct block_device *out, uint64_t out_off, size_t len)
{
	size_t left = len;

	if (!in->copy_offload || !out->copy_offload || in->ops != out->ops ||
	    !in->ops->copy_range || atomic_load(&in->nr_faults) ||
	    atomic_load(&out->nr_faults))
		return false;
	while (left) {
		ssize_t n = in->ops->copy_range(in, in_off, out, out_off,
						left);

		if (n <= 0)
			return false;
		left -= (size_t)n;
		in_off += (uint64_t)n;
		out_off += (uint64_t)n;
	}
	atomic_fetch_add(&in->reads, 1);
	atomic_fetch_add(&in->bytes_read, len);
	atomic_fetch_add(&out->writes, 1);
	atomic_fetch_add(&out->bytes_written, len);
	return true;
}

bool bdev_fully_allocated(struct block_device *bdev)
{
	uint64_t bytes;

	return bdev->ops->allocated(bdev, &bytes) == 0 && bytes >= bdev->size;
}

/* --- Public device I/O ------------------------------------------------------ */

static int check_range(const struct block_device *bdev, uint64_t off,
		       uint64_t len)
{
	if (off > bdev->size || len > bdev->size - off)
		return -ERANGE;
	return 0;
}

int kcopyd_bdev_pread(struct block_device *bdev, void *buf, size_t len,
		      uint64_t offset)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	int r;

	if (!bdev || (!buf && len))
		return -EINVAL;
	r = check_range(bdev, offset, len);
	if (r || !len)
		return r;
	return bdev_read_full(bdev, &iov, 1, (off_t)offset);
}

int kcopyd_bdev_pwrite(struct block_device *bdev, const void *buf,
		       size_t len, uint64_t offset)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	int r;

	if (!bdev || (!buf && len))
		return -EINVAL;
	if (bdev->read_only)
		return -EROFS;
	r = check_range(bdev, offset, len);
	if (r || !len)
		return r;
	return bdev_write_full(bdev, &iov, 1, (off_t)offset);
}

int kcopyd_bdev_zero(struct block_device *bdev, uint64_t offset,
		     uint64_t len, unsigned int flags)
{
	int r;

	if (!bdev || (flags & ~KCOPYD_ALLOCATED))
		return -EINVAL;
	if (bdev->read_only)
		return -EROFS;
	r = check_range(bdev, offset, len);
	if (r || !len)
		return r;
	return bdev_zero(bdev, offset, len, flags & KCOPYD_ALLOCATED);
}

int kcopyd_bdev_flush(struct block_device *bdev)
{
	if (!bdev)
		return -EINVAL;
	if (bdev->read_only)
		return 0;
	return bdev_flush(bdev);
}

int kcopyd_bdev_extent(struct block_device *bdev, uint64_t offset,
		       uint64_t len, unsigned int *type, uint64_t *count)
{
	bool hole;
	int r;

	if (!bdev || !type || !count || !len)
		return -EINVAL;
	if (offset >= bdev->size)
		return -ERANGE;
	r = bdev_extent(bdev, offset, len, &hole, count);
	if (!r)
		*type = hole ? KCOPYD_EXTENT_HOLE : KCOPYD_EXTENT_DATA;
	return r;
}

int kcopyd_bdev_allocated(struct block_device *bdev, uint64_t *bytes)
{
	if (!bdev || !bytes)
		return -EINVAL;
	return bdev->ops->allocated(bdev, bytes);
}

int kcopyd_bdev_same(const struct block_device *a,
		     const struct block_device *b)
{
	return a && b && bdev_same(a, b);
}

uint64_t kcopyd_bdev_size(const struct block_device *bdev)
{
	return bdev ? bdev->size : 0;
}

int kcopyd_bdev_is_read_only(const struct block_device *bdev)
{
	return bdev && bdev->read_only;
}
