/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block devices: image files and real block devices, read and written with
 * preadv/pwritev, with optional fault injection.
 *
 * Thread model: any number of threads may read and write one device at
 * once; the fd is never moved (positioned I/O only).  The fault rules are
 * guarded by fault_lock; nr_faults lets I/O skip the lock when there are
 * none.  Counters are atomics.  Open and close are the caller's to order
 * against I/O: a device is closed only when no job uses it.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef HAVE_LINUX_FS_H
#include <linux/fs.h>
#endif

#include "internal.h"

#define BDEV_OPEN_FLAGS (O_ACCMODE | O_DIRECT | O_SYNC | O_DSYNC)

void engine_die(const char *what, int err, const char *file, int line)
{
	fprintf(stderr, "libkcopyd: %s:%d: %s: %s\n", file, line, what,
		strerror(err));
	abort();
}

static int device_size(int fd, const struct stat *st, uint64_t *bytes)
{
	if (S_ISREG(st->st_mode)) {
		*bytes = (uint64_t)st->st_size;
		return 0;
	}
	if (S_ISBLK(st->st_mode)) {
#ifdef BLKGETSIZE64
		if (ioctl(fd, BLKGETSIZE64, bytes) == -1)
			return -errno;
		return 0;
#else
		return -ENOTSUP;
#endif
	}
	if (S_ISDIR(st->st_mode))
		return -EISDIR;
	return -ENOTBLK;
}

/*
 * The unit in which a failed transfer is retried piece by piece: the
 * logical block size of a block device, else a sector (a page with
 * O_DIRECT, which may need that alignment).
 */
static unsigned int block_size(int fd, const struct stat *st, int flags)
{
	int bs = 0;

#ifdef BLKSSZGET
	if (S_ISBLK(st->st_mode) && ioctl(fd, BLKSSZGET, &bs) == 0 &&
	    bs >= (int)KCOPYD_SECTOR_SIZE && bs <= (int)KCOPYD_PAGE_SIZE)
		return bs;
#endif
	return flags & O_DIRECT ? KCOPYD_PAGE_SIZE : KCOPYD_SECTOR_SIZE;
}

bool bdev_same(const struct block_device *a, const struct block_device *b)
{
	return a == b || (a->is_blockdev == b->is_blockdev &&
			  a->dev == b->dev && a->ino == b->ino);
}

int kcopyd_bdev_open(const char *path, int flags, struct block_device **result)
{
	struct block_device *bdev;
	struct stat st;
	uint64_t bytes;
	int acc = flags & O_ACCMODE;
	int fd, r;

	if (!path || !result || (flags & ~BDEV_OPEN_FLAGS) ||
	    (acc != O_RDONLY && acc != O_RDWR))
		return -EINVAL;

	/*
	 * O_NONBLOCK: an open of a FIFO would wait for a writer; refuse it
	 * at once instead.  Regular files and block devices ignore the
	 * flag, and it is cleared before any I/O.
	 */
	fd = open(path, flags | O_CLOEXEC | O_NONBLOCK);
	if (fd == -1)
		return -errno;
	if (fstat(fd, &st) == -1) {
		r = -errno;
		goto bad_fd;
	}
	r = device_size(fd, &st, &bytes);
	if (r)
		goto bad_fd;
	r = fcntl(fd, F_GETFL);
	if (r == -1 || fcntl(fd, F_SETFL, r & ~O_NONBLOCK) == -1) {
		r = -errno;
		goto bad_fd;
	}

	bdev = calloc(1, sizeof(*bdev));
	if (!bdev) {
		r = -ENOMEM;
		goto bad_fd;
	}
	bdev->path = strdup(path);
	if (!bdev->path) {
		free(bdev);
		r = -ENOMEM;
		goto bad_fd;
	}
	bdev->fd = fd;
	bdev->open_flags = flags;
	bdev->read_only = acc == O_RDONLY;
	bdev->is_blockdev = S_ISBLK(st.st_mode);
	bdev->sectors = bytes >> KCOPYD_SECTOR_SHIFT;
	bdev->block_size = block_size(fd, &st, flags);
	if (bdev->is_blockdev) {
		bdev->dev = st.st_rdev;
		bdev->ino = 0;
	} else {
		bdev->dev = st.st_dev;
		bdev->ino = st.st_ino;
	}
	pth(pthread_mutex_init(&bdev->fault_lock, NULL));
	*result = bdev;
	return 0;

bad_fd:
	close(fd);
	return r;
}

void kcopyd_bdev_close(struct block_device *bdev)
{
	if (!bdev)
		return;
	kcopyd_bdev_clear_faults(bdev);
	pth(pthread_mutex_destroy(&bdev->fault_lock));
	close(bdev->fd);
	free(bdev->path);
	free(bdev);
}

sector_t kcopyd_bdev_sectors(const struct block_device *bdev)
{
	return bdev ? bdev->sectors : 0;
}

void kcopyd_bdev_get_stats(const struct block_device *bdev,
			   struct kcopyd_bdev_stats *st)
{
	struct block_device *b = (struct block_device *)bdev;

	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!b)
		return;
	st->reads = atomic_load(&b->reads);
	st->writes = atomic_load(&b->writes);
	st->bytes_read = atomic_load(&b->bytes_read);
	st->bytes_written = atomic_load(&b->bytes_written);
	st->errors = atomic_load(&b->errors);
}

int kcopyd_bdev_add_fault(struct block_device *bdev,
			  const struct kcopyd_fault *fault)
{
	struct fault_rule *rule;

	if (!bdev || !fault || !fault->count || fault->error < 0 ||
	    !fault->ops ||
	    (fault->ops & ~(KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE)) ||
	    fault->sector + fault->count < fault->sector)
		return -EINVAL;
	switch (fault->kind) {
	case KCOPYD_FAULT_ERROR:
	case KCOPYD_FAULT_SHORT:
	case KCOPYD_FAULT_DELAY:
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
	pth(pthread_mutex_unlock(&bdev->fault_lock));
	for (; rule; rule = next) {
		next = rule->next;
		free(rule);
	}
}

/* The engine's own I/O and any front end's meet the same rules. */
int kcopyd_bdev_apply_faults(struct block_device *bdev, unsigned int op,
			     uint64_t off, size_t *len)
{
	sector_t first, end;
	unsigned int delay = 0;
	struct fault_rule *rule;
	int err = 0;

	if (!bdev || !len)
		return -EINVAL;
	if (!atomic_load(&bdev->nr_faults))
		return 0;

	first = off >> KCOPYD_SECTOR_SHIFT;
	end = (off + *len + KCOPYD_SECTOR_SIZE - 1) >> KCOPYD_SECTOR_SHIFT;
	pth(pthread_mutex_lock(&bdev->fault_lock));
	for (rule = bdev->faults; rule; rule = rule->next) {
		const struct kcopyd_fault *f = &rule->f;

		if (!(f->ops & op) || f->sector >= end ||
		    f->sector + f->count <= first)
			continue;
		switch (f->kind) {
		case KCOPYD_FAULT_ERROR:
			err = -f->error;
			break;
		case KCOPYD_FAULT_SHORT:
			if (*len > KCOPYD_SECTOR_SIZE) {
				size_t half = (*len / 2) &
					      ~(size_t)(KCOPYD_SECTOR_SIZE - 1);
				*len = half ? half : KCOPYD_SECTOR_SIZE;
			}
			break;
		case KCOPYD_FAULT_DELAY:
			if (f->delay_us > delay)
				delay = f->delay_us;
			break;
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
		       struct iovec *iov, int iovcnt, off_t off, size_t limit)
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
		r = pwritev(bdev->fd, iov, n, off);
	else
		r = preadv(bdev->fd, iov, n, off);
	if (cut >= 0)
		iov[cut].iov_len = saved;
	return r;
}

static int io_full(struct block_device *bdev, bool write, struct iovec *iov,
		   int iovcnt, off_t off)
{
	unsigned int op = write ? KCOPYD_FAULT_WRITE : KCOPYD_FAULT_READ;
	size_t total = iov_bytes(iov, iovcnt), left = total;
	int r;

	while (left) {
		size_t limit = left;
		ssize_t n;

		r = kcopyd_bdev_apply_faults(bdev, op, (uint64_t)off, &limit);
		if (r)
			goto fail;
		n = io_once(bdev, write, iov, iovcnt, off, limit);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
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
	} else {
		atomic_fetch_add(&bdev->reads, 1);
		atomic_fetch_add(&bdev->bytes_read, total);
	}
	return 0;

fail:
	atomic_fetch_add(&bdev->errors, 1);
	return r;
}

int bdev_read_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		   off_t off)
{
	return io_full(bdev, false, iov, iovcnt, off);
}

int bdev_write_full(struct block_device *bdev, struct iovec *iov, int iovcnt,
		    off_t off)
{
	return io_full(bdev, true, iov, iovcnt, off);
}
