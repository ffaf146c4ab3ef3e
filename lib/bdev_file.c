/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The file backend: an image file or a block device behind one fd, with
 * positioned I/O only, so that any number of threads may use it at once.
 * Holes come from SEEK_DATA/SEEK_HOLE; zeroing from fallocate(2) (punch
 * a hole, zero a range) and, on a block device, BLKZEROOUT.
 *
 * Thread model: every operation may run in any thread, concurrently; the
 * fd is never moved (lseek with SEEK_DATA/SEEK_HOLE only reads the
 * offset it returns, and each call sets it afresh).  Nothing is mutable
 * after open.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef HAVE_LINUX_FS_H
#include <linux/fs.h>
#endif

#include "internal.h"

#define FILE_OPEN_FLAGS (O_ACCMODE | O_DIRECT | O_SYNC | O_DSYNC)

struct file_dev {
	struct block_device b;		/* first: the generic part */
	int fd;
	int direct_fd;			/* O_DIRECT reader for verify, or -1 */
	int flags;
	bool is_blockdev;
	dev_t dev;			/* identity: st_dev and st_ino, or */
	ino_t ino;			/* st_rdev for a block device */
};

static struct file_dev *fdev(const struct block_device *b)
{
	return (struct file_dev *)b;
}

static ssize_t file_preadv(struct block_device *b, const struct iovec *iov,
			   int iovcnt, uint64_t off)
{
	ssize_t n = preadv(fdev(b)->fd, iov, iovcnt, (off_t)off);

	return n < 0 ? -errno : n;
}

static ssize_t file_pwritev(struct block_device *b, const struct iovec *iov,
			    int iovcnt, uint64_t off)
{
	ssize_t n = pwritev(fdev(b)->fd, iov, iovcnt, (off_t)off);

	return n < 0 ? -errno : n;
}

/*
 * A verify reads what was written back from the medium: through a second
 * handle opened with O_DIRECT, for which the kernel first writes back the
 * range's dirty pages and then reads the device, not the page cache.
 * (posix_fadvise(POSIX_FADV_DONTNEED) would not do: it leaves dirty pages
 * in the cache, and those are exactly the ones just written.)  A read the
 * handle refuses for its alignment, and a file without such a handle
 * (tmpfs before Linux 6.6, where the cache is the medium), is read through
 * the ordinary handle.
 */
static ssize_t file_preadv_uncached(struct block_device *b,
				    const struct iovec *iov, int iovcnt,
				    uint64_t off)
{
	struct file_dev *f = fdev(b);
	ssize_t n;

	if (f->direct_fd >= 0) {
		n = preadv(f->direct_fd, iov, iovcnt, (off_t)off);
		if (n >= 0)
			return n;
		if (errno != EINVAL)
			return -errno;
	}
	return file_preadv(b, iov, iovcnt, off);
}

/* The O_DIRECT reader of a writable handle, if the file takes one. */
static int open_direct(int fd, int flags)
{
	char path[64];

	if ((flags & O_ACCMODE) != O_RDWR || (flags & O_DIRECT))
		return -1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

static bool unsupported(int err)
{
	return err == EOPNOTSUPP || err == ENOTTY || err == ENOSYS ||
	       err == EINVAL;
}

static int file_zero(struct block_device *b, uint64_t off, uint64_t len,
		     enum bdev_zero_method m)
{
	struct file_dev *f = fdev(b);
	int mode = FALLOC_FL_KEEP_SIZE;

	mode |= m == BDEV_ZERO_PUNCH ? FALLOC_FL_PUNCH_HOLE :
				       FALLOC_FL_ZERO_RANGE;
	while (fallocate(f->fd, mode, (off_t)off, (off_t)len) == -1) {
		if (errno == EINTR)
			continue;
		if (!unsupported(errno))
			return -errno;
#ifdef BLKZEROOUT
		/* Kernels before fallocate on block devices. */
		if (f->is_blockdev && m == BDEV_ZERO_RANGE) {
			uint64_t range[2] = { off, len };

			if (ioctl(f->fd, BLKZEROOUT, range) == 0)
				return 0;
			if (!unsupported(errno))
				return -errno;
		}
#endif
		return -EOPNOTSUPP;
	}
	return 0;
}

static int file_extent(struct block_device *b, uint64_t off, uint64_t len,
		       bool *hole, uint64_t *count)
{
	struct file_dev *f = fdev(b);
	off_t next;

	*hole = false;
	*count = len;
	if (f->is_blockdev)
		return 0;
	next = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (next == -1) {
		/* ENXIO: no data from off to the end of the file. */
		if (errno == ENXIO) {
			*hole = true;
			return 0;
		}
		/* A file system that cannot tell: all data. */
		return unsupported(errno) ? 0 : -errno;
	}
	if ((uint64_t)next > off) {
		*hole = true;
		if ((uint64_t)next - off < len)
			*count = (uint64_t)next - off;
		return 0;
	}
	next = lseek(f->fd, (off_t)off, SEEK_HOLE);
	if (next == -1)
		return unsupported(errno) || errno == ENXIO ? 0 : -errno;
	if ((uint64_t)next > off && (uint64_t)next - off < len)
		*count = (uint64_t)next - off;
	return 0;
}

static int file_flush(struct block_device *b)
{
	return fsync(fdev(b)->fd) == -1 ? -errno : 0;
}

static ssize_t file_copy_range(struct block_device *in, uint64_t in_off,
			       struct block_device *out, uint64_t out_off,
			       size_t len)
{
	loff_t io = (loff_t)in_off, oo = (loff_t)out_off;
	ssize_t n;

	do {
		n = copy_file_range(fdev(in)->fd, &io, fdev(out)->fd, &oo,
				    len, 0);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static bool file_same(const struct block_device *a,
		      const struct block_device *b)
{
	const struct file_dev *fa = fdev(a), *fb = fdev(b);

	return fa->is_blockdev == fb->is_blockdev && fa->dev == fb->dev &&
	       fa->ino == fb->ino;
}

static int file_allocated(struct block_device *b, uint64_t *bytes)
{
	struct file_dev *f = fdev(b);
	struct stat st;

	if (f->is_blockdev) {
		*bytes = b->size;
		return 0;
	}
	if (fstat(f->fd, &st) == -1)
		return -errno;
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

static void file_close(struct block_device *b)
{
	close(fdev(b)->fd);
	if (fdev(b)->direct_fd >= 0)
		close(fdev(b)->direct_fd);
	free(fdev(b));
}

static const struct bdev_ops file_ops = {
	.name = "file",
	.preadv = file_preadv,
	.pwritev = file_pwritev,
	.preadv_uncached = file_preadv_uncached,
	.zero = file_zero,
	.extent = file_extent,
	.flush = file_flush,
	.copy_range = file_copy_range,
	.same = file_same,
	.allocated = file_allocated,
	.close = file_close,
};

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

int bdev_file_open(const char *path, int flags, struct block_device **result)
{
	struct file_dev *f;
	struct stat st;
	uint64_t bytes;
	int acc = flags & O_ACCMODE;
	int fd, r;

	if (!path || !result || (flags & ~FILE_OPEN_FLAGS) ||
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
	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		goto bad_fd;
	}
	f->fd = fd;
	f->direct_fd = open_direct(fd, flags);
	f->flags = flags;
	f->is_blockdev = S_ISBLK(st.st_mode);
	f->dev = f->is_blockdev ? st.st_rdev : st.st_dev;
	f->ino = f->is_blockdev ? 0 : st.st_ino;
	r = bdev_init(&f->b, &file_ops, path, bytes, acc == O_RDONLY,
		      block_size(fd, &st, flags));
	if (r) {
		if (f->direct_fd >= 0)
			close(f->direct_fd);
		free(f);
		goto bad_fd;
	}
	/* copy_file_range(2) would bypass O_DIRECT and O_SYNC. */
	f->b.copy_offload = !f->is_blockdev &&
			    !(flags & (O_DIRECT | O_SYNC | O_DSYNC));
	*result = &f->b;
	return 0;

bad_fd:
	close(fd);
	return r;
}
