/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Direct mode: open the devices, and run the copy (or zero) through one
 * libkcopyd client: one job with every destination (one read feeds them
 * all), or with --map a job per range of the map.  SIGINT and SIGTERM
 * cancel the jobs in flight (kcopyd_cancel): their sub-jobs in flight
 * finish, and their completions say exactly which ranges are on every
 * destination.  Errors come back with their errno and sector, and with
 * --ignore-errors each lost range as the engine finds it.
 *
 * Thread model
 * ------------
 * - The main thread parses, opens, submits, and waits in poll(2) on a
 *   signalfd and an eventfd.  It alone reads and writes struct copy
 *   outside `lock`.  SIGINT and SIGTERM keep their default action while
 *   devices are opened (an open that waits can always be interrupted);
 *   they are blocked, in every thread, from just before the engine's
 *   threads start until the engine is destroyed, and read from the
 *   signalfd meanwhile.
 * - Engine workers call copy_progress(), which only adds to an atomic.
 * - The engine's callback thread calls job_done(), which puts the job on
 *   c->finished under c->lock and writes the eventfd.
 * - With --map or --ignore-errors, engine workers call bad_range(), which
 *   adds to c->bad and c->lost under c->lock; the main thread alone reads
 *   them and owns the map.
 *
 * With --map the copy is the list of ranges the map has not finished
 * (c->todo), each cut into jobs; a finished job's done ranges become '+',
 * the rest of a failed job and every bad range '-', and the map is saved
 * at most every MAP_SAVE_SECONDS, after the destinations are flushed, so
 * that what it calls finished is on stable storage.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef HAVE_LINUX_FS_H
#include <linux/fs.h>
#endif

#include "kcopy.h"
#include "replace.h"

/* The done ranges of the copy kept for an interruption's message. */
#define MAX_DONE	80
/* Lost ranges listed one by one; the rest are counted. */
#define MAX_LOST_LINES	100
/* With --map, 2 MiB: the most a crash between saves can redo per job. */
#define MAP_JOB_SECTORS	((sector_t)2 << (20 - KCOPYD_SECTOR_SHIFT))
#define MAP_SAVE_SECONDS 1.0
/* The size of a file is an off_t, in bytes. */
#define MAX_FILE_SECTORS	((sector_t)INT64_MAX >> KCOPYD_SECTOR_SHIFT)

struct dest {
	struct operand op;
	struct stat st;			/* identity, when prepared */
	struct block_device *bdev;	/* may be shared, see open_bdevs() */
	bool created;
	bool extended;
	off_t old_size;			/* before extension */
	sector_t count;			/* sectors this destination gets */
	unsigned int failed_jobs;
	int error;			/* errno of the lowest failed write */
	sector_t error_sector;		/* its device sector */
	unsigned int verify_failed_jobs;
	sector_t verify_sector;		/* the lowest sector read back wrong */
	int fsync_err;
};

struct job {
	struct copy *c;
	struct job *next;		/* on c->finished (c->lock) */
	struct job *run_next;		/* on c->running (main thread) */
	uint64_t id;			/* the engine's, for kcopyd_cancel */
	int read_error;			/* set by job_done(): errnos and */
	sector_t read_error_sector;	/* device sectors of failures */
	struct kcopyd_dest_result dres[KCOPYD_MAX_DESTS];
	sector_t offset, count;		/* relative to the regions' starts */
	unsigned int nr_dests;
	unsigned char dest_idx[KCOPYD_MAX_DESTS]; /* write_err bit -> dest */
	int read_err;			/* set by job_done() */
	unsigned int write_err;
	unsigned int verify_err;
	sector_t verify_sector[KCOPYD_MAX_DESTS];
	bool failed;
	unsigned int nr_done;
	struct kcopyd_range *done;	/* offsets in the job, malloc'd */
	int digest_valid;		/* --checksum: set by job_done() */
	uint64_t digest;
};

/* A range lost under --ignore-errors: the device's sectors. */
struct lost {
	struct block_device *bdev;
	sector_t sector, count;
	bool write;
	int error;
};

/* A range still to copy, in sectors from the start of the copy. */
struct todo {
	sector_t off, count;
	bool retry;			/* a failed range, --retry-bad */
};

struct copy {
	const struct options *o;
	bool zero;
	struct operand src;
	struct block_device *src_bdev;
	unsigned int nr_dests;
	struct dest dests[KCOPYD_MAX_DESTS];
	struct block_device *bdevs[KCOPYD_MAX_DESTS + 1]; /* to close */
	unsigned int nr_bdevs;
	sector_t total;			/* sectors of the longest region */
	bool backward;			/* jobs from the end (overlap) */
	unsigned int window;		/* jobs in flight at most */
	unsigned int flags;		/* KCOPYD_* of every job */
	struct kcopyd_stats stats;	/* the engine's, at the end */
	bool have_digest;		/* --checksum: the source's digest */
	uint64_t digest;

	struct kcopyd_client *kc;
	struct progress prog;
	int evfd, sigfd;

	pthread_mutex_t lock;
	struct job *finished;		/* c->lock */
	struct kcopyd_range *bad;	/* --map: bad ranges (c->lock) */
	size_t nr_bad, cap_bad;		/* (c->lock) */
	bool bad_nomem;			/* (c->lock) */
	struct lost *lost;		/* --ignore-errors: ranges lost */
	size_t nr_lost, max_lost;	/* (c->lock) */
	uint64_t lost_dropped;		/* (c->lock): no memory to keep */

	/* --map (main thread only) */
	bool use_map;
	struct map map;
	bool resumed;
	struct todo *todo;
	size_t nr_todo, todo_i;
	sector_t todo_off;		/* into todo[todo_i] */
	double last_save;
	int map_err;

	/* Main thread only. */
	sector_t submitted;		/* sectors handed to jobs */
	sector_t completed;		/* sectors of finished jobs */
	unsigned int inflight;
	bool stop;			/* an error without --ignore-errors */
	int signo;			/* the signal that interrupted us */
	unsigned int read_failed_jobs;
	int read_error;			/* errno of the lowest failed read */
	sector_t read_error_sector;
	struct job *running;		/* jobs in flight, to cancel */
	bool skip;			/* an error past which going on helps */
	unsigned int nr_done;		/* ranges of the copy done everywhere */
	struct kcopyd_range done[MAX_DONE];
	int submit_err;
};

/* --- Opening ----------------------------------------------------------- */

static const char *file_kind(mode_t mode)
{
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISDIR(mode))
		return "a directory";
	return "not a regular file";
}

/*
 * Only regular files and block devices have sectors to copy.  Anything
 * else is refused before it is opened: the open of a FIFO would wait.
 */
static int check_kind(const struct operand *op, const struct stat *st)
{
	if (S_ISREG(st->st_mode) || S_ISBLK(st->st_mode))
		return 0;
	say("%s: is %s: kcopy copies regular files and block devices only",
	    op->token, file_kind(st->st_mode));
	return S_ISDIR(st->st_mode) ? -EISDIR : -ENOTBLK;
}

/* Refuse an operand kcopy cannot use, before anything is opened. */
static int check_operand(const struct operand *op)
{
	struct stat st;

	if (!strcmp(op->path, "-")) {
		say("%s: standard input and output are not supported: kcopy "
		    "needs a file or a block device (a file named - is ./-)",
		    op->token);
		return -EINVAL;
	}
	/* A remote device is for the open to check; so is a missing path. */
	if (kcopyd_bdev_is_uri(op->path) || stat(op->path, &st) == -1)
		return 0;
	return check_kind(op, &st);
}

static int bdev_flags(const struct copy *c, int acc)
{
	return acc | (c->o->direct ? O_DIRECT : 0);
}

/* Learn the source's size and the range to copy. */
static int probe_source(struct copy *c)
{
	struct block_device *b;
	sector_t size;
	int r;

	r = kcopyd_bdev_open(c->src.path, bdev_flags(c, O_RDONLY), &b);
	if (r) {
		say("%s: %s", c->src.path, strerror(-r));
		return r;
	}
	size = kcopyd_bdev_sectors(b);
	kcopyd_bdev_close(b);
	if (c->src.start > size) {
		say("%s: START %llu is past the end of %s (%llu sectors)",
		    c->src.token, (unsigned long long)c->src.start,
		    c->src.path, (unsigned long long)size);
		return -ERANGE;
	}
	if (!c->src.has_count)
		c->src.count = size - c->src.start;
	if (c->src.start + c->src.count > size) {
		say("%s: the range ends at sector %llu, past the end of %s "
		    "(%llu sectors)", c->src.token,
		    (unsigned long long)(c->src.start + c->src.count),
		    c->src.path, (unsigned long long)size);
		return -ERANGE;
	}
	c->total = c->src.count;
	return 0;
}

/* --zero DST[:START] without COUNT: the rest of the device. */
static int zero_rest(struct dest *d, sector_t size)
{
	if (d->op.start > size) {
		say("%s: START %llu is past the end of %s (%llu sectors)",
		    d->op.token, (unsigned long long)d->op.start, d->op.path,
		    (unsigned long long)size);
		return -ERANGE;
	}
	d->count = size - d->op.start;
	return 0;
}

static int size_dest(struct copy *c, struct dest *d, int fd);

/*
 * Create a destination if missing (sparse: all holes) and grow a regular
 * file that is too small; the descriptor is closed again, as all I/O
 * goes through the engine's device.  Block devices are checked for size
 * when the engine opens them.
 */
static int prepare_dest(struct copy *c, struct dest *d)
{
	int fd, r;

	/* An NBD export has its size: nothing to create or grow. */
	if (kcopyd_bdev_is_uri(d->op.path))
		return 0;

	/* O_NONBLOCK: a FIFO put in its place since check_operand(). */
	fd = open(d->op.path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1 && errno == ENOENT) {
		if (c->zero && !d->op.has_count) {
			say("%s: %s does not exist: give a COUNT to create it",
			    d->op.token, d->op.path);
			return -ENOENT;
		}
		fd = open(d->op.path, O_RDWR | O_CREAT | O_EXCL |
				      O_NONBLOCK | O_CLOEXEC, 0666);
		d->created = fd != -1;
	}
	if (fd == -1) {
		r = -errno;
		say("%s: %s", d->op.path, strerror(errno));
		return r;
	}
	r = size_dest(c, d, fd);
	close(fd);
	return r;
}

static int size_dest(struct copy *c, struct dest *d, int fd)
{
	struct stat *st = &d->st;
	off_t need;
	int r;

	if (fstat(fd, st) == -1) {
		r = -errno;
		say("%s: %s", d->op.path, strerror(errno));
		return r;
	}
	r = check_kind(&d->op, st);
	if (r)
		return r;
	if (c->zero)
		d->count = d->op.count;
	if (!S_ISREG(st->st_mode))
		return 0;
	if (c->zero && !d->op.has_count)
		return zero_rest(d, (sector_t)st->st_size >>
					    KCOPYD_SECTOR_SHIFT);
	if (d->op.start + d->count > MAX_FILE_SECTORS) {
		say("%s: the region ends at sector %llu, past the largest "
		    "size a file can have (%llu sectors)", d->op.token,
		    (unsigned long long)(d->op.start + d->count),
		    (unsigned long long)MAX_FILE_SECTORS);
		return -EFBIG;
	}
	need = (off_t)((d->op.start + d->count) << KCOPYD_SECTOR_SHIFT);
	if (st->st_size >= need)
		return 0;
	if (ftruncate(fd, need) == -1) {
		r = -errno;
		say("%s: cannot extend to %lld bytes: %s", d->op.path,
		    (long long)need, strerror(errno));
		return r;
	}
	d->old_size = st->st_size;
	d->extended = !d->created;
	if (c->o->verbose > 0)
		say("%s: %s at %lld bytes", d->op.path,
		    d->created ? "created" : "extended", (long long)need);
	return 0;
}

/* Undo what prepare_dest() did, when the copy never starts. */
static void unprepare_dests(struct copy *c)
{
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		if (d->created)
			unlink(d->op.path);
		else if (d->extended && truncate(d->op.path, d->old_size) == -1)
			say("%s: cannot shrink back to %lld bytes: %s",
			    d->op.path, (long long)d->old_size,
			    strerror(errno));
	}
}

/* Local files by identity, remote devices by their URI. */
static bool same_dev(const struct operand *x, const struct stat *a,
		     const struct operand *y, const struct stat *b)
{
	bool xu = kcopyd_bdev_is_uri(x->path), yu = kcopyd_bdev_is_uri(y->path);

	if (xu || yu)
		return xu && yu && !strcmp(x->path, y->path);
	if (S_ISBLK(a->st_mode) && S_ISBLK(b->st_mode))
		return a->st_rdev == b->st_rdev;
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/*
 * Open one engine device per file: a path named twice (or a source that is
 * also a destination) shares one handle, so that the engine sees the
 * overlap and copies in the order memmove(3) would.
 */
static int open_bdevs(struct copy *c)
{
	struct stat sst = { 0 };
	bool src_is_dest = false;
	int r;

	if (!c->zero) {
		if (!kcopyd_bdev_is_uri(c->src.path) &&
		    stat(c->src.path, &sst) == -1) {
			r = -errno;
			say("%s: %s", c->src.path, strerror(errno));
			return r;
		}
		for (unsigned int i = 0; i < c->nr_dests; i++)
			if (same_dev(&c->src, &sst, &c->dests[i].op,
				     &c->dests[i].st))
				src_is_dest = true;
		r = kcopyd_bdev_open(c->src.path,
				     bdev_flags(c, src_is_dest ? O_RDWR :
								 O_RDONLY),
				     &c->src_bdev);
		if (r) {
			say("%s: %s", c->src.path, strerror(-r));
			return r;
		}
		c->bdevs[c->nr_bdevs++] = c->src_bdev;
	}
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		if (!c->zero && same_dev(&c->src, &sst, &d->op, &d->st))
			d->bdev = c->src_bdev;
		for (unsigned int j = 0; j < i && !d->bdev; j++)
			if (same_dev(&c->dests[j].op, &c->dests[j].st,
				     &d->op, &d->st))
				d->bdev = c->dests[j].bdev;
		if (d->bdev)
			continue;
		r = kcopyd_bdev_open(d->op.path, bdev_flags(c, O_RDWR),
				     &d->bdev);
		if (r) {
			say("%s: %s", d->op.path, strerror(-r));
			return r;
		}
		c->bdevs[c->nr_bdevs++] = d->bdev;
	}
	return 0;
}

static void close_bdevs(struct copy *c)
{
	for (unsigned int i = 0; i < c->nr_bdevs; i++)
		kcopyd_bdev_close(c->bdevs[i]);
	c->nr_bdevs = 0;
}

static bool overlap(struct block_device *a, sector_t as, sector_t an,
		    struct block_device *b, sector_t bs, sector_t bn)
{
	return kcopyd_bdev_same(a, b) && an && bn && as < bs + bn &&
	       bs < as + an;
}

/*
 * The alignment in bytes that O_DIRECT needs for offsets and lengths on a
 * file: what statx(2) reports, else the logical block size of a block
 * device, else a sector (the file system does not say).
 */
static unsigned int direct_align(const char *path)
{
	unsigned int align = KCOPYD_SECTOR_SIZE;
	struct stat st;
	int fd, bs;

#ifdef STATX_DIOALIGN
	struct statx stx;

	if (statx(AT_FDCWD, path, 0, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
		return stx.stx_dio_offset_align > align ?
			       stx.stx_dio_offset_align : align;
#endif
	if (stat(path, &st) == -1 || !S_ISBLK(st.st_mode))
		return align;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1)
		return align;
#ifdef BLKSSZGET
	if (ioctl(fd, BLKSSZGET, &bs) == 0 && bs > (int)align)
		align = (unsigned int)bs;
#endif
	close(fd);
	return align;
}

/* With --direct, a region must start and end on the device's alignment. */
static int check_direct_region(const char *token, const char *path,
			       sector_t start, sector_t count)
{
	unsigned int align = direct_align(path);
	sector_t unit = align >> KCOPYD_SECTOR_SHIFT;
	sector_t bad;

	if (align > KCOPYD_PAGE_SIZE) {
		say("%s: %s needs %u-byte alignment for --direct, more than "
		    "the %u bytes kcopy can align to", token, path, align,
		    KCOPYD_PAGE_SIZE);
		return -EINVAL;
	}
	if (start % unit == 0 && (start + count) % unit == 0)
		return 0;
	bad = start % unit ? start : start + count;
	say("%s: with --direct, %s takes I/O in multiples of %u bytes (%llu "
	    "sectors), but the region %s at sector %llu", token, path, align,
	    (unsigned long long)unit, start % unit ? "starts" : "ends",
	    (unsigned long long)bad);
	return -EINVAL;
}

static int check_direct(const struct copy *c)
{
	int r;

	if (!c->zero) {
		r = check_direct_region(c->src.token, c->src.path,
					c->src.start, c->src.count);
		if (r)
			return r;
	}
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		const struct dest *d = &c->dests[i];

		r = check_direct_region(d->op.token, d->op.path, d->op.start,
					d->count);
		if (r)
			return r;
	}
	return 0;
}

/* Say why the engine refuses the copy, naming the operand at fault. */
static void say_refusal(const struct copy *c, const struct io_region *from,
			const struct io_region *to, int r, int culprit)
{
	const struct dest *d = culprit >= 0 ? &c->dests[culprit] : NULL;

	if (r == -ERANGE && d)
		say("%s: the device has %llu sectors, the copy needs %llu",
		    d->op.token,
		    (unsigned long long)kcopyd_bdev_sectors(d->bdev),
		    (unsigned long long)(d->op.start + d->count));
	else if (r == -EROFS && d)
		say("%s: %s is read-only", d->op.token, d->op.path);
	else if (r == -EINVAL && d)
		say("%s overlaps another destination", d->op.token);
	else if (r == -EINVAL && (c->flags & KCOPYD_WRITE_SEQ) &&
		 !kcopyd_check_copy(from, c->nr_dests, to,
				    c->flags & ~KCOPYD_WRITE_SEQ, NULL))
		say("--write-seq cannot copy to an overlapping region above "
		    "the source");
	else if (r == -EINVAL)
		say("destinations overlap the source both above and below: "
		    "no copy order can satisfy both");
	else
		say("%s: %s", c->zero ? "zero" : c->src.token, strerror(-r));
}

/*
 * Check the whole copy as the engine will check each of its jobs, and
 * choose the order of the jobs: from the end when a destination overlaps
 * the source above it, one at a time whenever one overlaps at all.
 */
static int check_regions(struct copy *c)
{
	struct io_region from, to[KCOPYD_MAX_DESTS];
	bool up = false, down = false;
	int culprit, r;

	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];
		sector_t size = kcopyd_bdev_sectors(d->bdev);

		if (c->zero && !d->op.has_count && zero_rest(d, size))
			return -ERANGE;
		if (c->zero && d->count > c->total)
			c->total = d->count;
		to[i] = (struct io_region){ d->bdev, d->op.start, d->count };
		if (!c->zero &&
		    overlap(d->bdev, d->op.start, d->count, c->src_bdev,
			    c->src.start, c->src.count) &&
		    d->op.start != c->src.start) {
			if (d->op.start > c->src.start)
				up = true;
			else
				down = true;
		}
	}
	from = (struct io_region){ c->src_bdev, c->src.start, c->src.count };
	r = kcopyd_check_copy(c->zero ? NULL : &from, c->nr_dests, to,
			      c->flags, &culprit);
	if (r) {
		say_refusal(c, &from, to, r, culprit);
		return r;
	}
	c->backward = up;
	c->window = up || down || c->o->write_seq ? 1 : 2;
	if (c->use_map && (up || down)) {
		say("--map: the destination overlaps the source on %s: a copy "
		    "interrupted midway could not be resumed from a map (the "
		    "source is partly overwritten); copy without --map",
		    c->src.path);
		return -EINVAL;
	}
	return 0;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * One device in a map's identity: a block device by its number, a file by
 * its inode (not its file system's device number, which a FUSE or network
 * file system changes from one mount to the next) and, where the file
 * system keeps one, its birth time: ext4 and xfs give a new file the inode
 * number of one just deleted.
 */
static int ident_dev(char *buf, size_t len, const char *path,
		     const struct stat *st)
{
	struct statx stx;

	if (S_ISBLK(st->st_mode))
		return snprintf(buf, len, "blockdev %u:%u",
				major(st->st_rdev), minor(st->st_rdev));
	if (!statx(AT_FDCWD, path, 0, STATX_BTIME, &stx) &&
	    (stx.stx_mask & STATX_BTIME))
		return snprintf(buf, len, "inode %llu born %lld.%09u",
				(unsigned long long)st->st_ino,
				(long long)stx.stx_btime.tv_sec,
				stx.stx_btime.tv_nsec);
	return snprintf(buf, len, "inode %llu",
			(unsigned long long)st->st_ino);
}

/* What identifies the copy in its map: devices, sizes, regions. */
static int map_ident(const struct copy *c, char *buf, size_t len)
{
	struct stat st;
	size_t n;

	if (stat(c->src.path, &st) == -1)
		return -errno;
	n = (size_t)snprintf(buf, len, "kcopy map of ");
	n += (size_t)ident_dev(buf + n, len - n, c->src.path, &st);
	n += (size_t)snprintf(buf + n, len - n, " size %llu range %llu+%llu to",
			      (unsigned long long)kcopyd_bdev_size(c->src_bdev),
			      (unsigned long long)c->src.start,
			      (unsigned long long)c->src.count);
	for (unsigned int i = 0; i < c->nr_dests && n < len; i++) {
		n += (size_t)snprintf(buf + n, len - n, " ");
		if (n < len)
			n += (size_t)ident_dev(buf + n, len - n,
					       c->dests[i].op.path,
					       &c->dests[i].st);
		if (n < len)
			n += (size_t)snprintf(buf + n, len - n, " at %llu",
					      (unsigned long long)
					      c->dests[i].op.start);
	}
	return n < len ? 0 : -ENAMETOOLONG;
}

/*
 * The ranges to copy: all of it, or what the map has not finished (and,
 * with --retry-bad, what it has as failed).
 */
static int plan_todo(struct copy *c)
{
	char ident[sizeof(c->map.ident)];
	int r;

	if (!c->use_map) {
		c->todo = calloc(1, sizeof(*c->todo));
		if (!c->todo)
			return -ENOMEM;
		c->todo[0] = (struct todo){ 0, c->total, false };
		c->nr_todo = c->total ? 1 : 0;
		return 0;
	}
	r = map_ident(c, ident, sizeof(ident));
	if (r) {
		say("%s: %s", c->src.path, strerror(-r));
		return r;
	}
	r = map_open(&c->map, c->o->map, ident,
		     (uint64_t)c->total << KCOPYD_SECTOR_SHIFT, &c->resumed);
	if (r)
		return r;
	c->todo = calloc(c->map.n ? c->map.n : 1, sizeof(*c->todo));
	if (!c->todo)
		return -ENOMEM;
	for (size_t i = 0; i < c->map.n; i++) {
		const struct map_range *m = &c->map.r[i];
		sector_t s = m->pos >> KCOPYD_SECTOR_SHIFT;
		sector_t e = (m->pos + m->size + KCOPYD_SECTOR_SIZE - 1) >>
			     KCOPYD_SECTOR_SHIFT;

		if (m->st == '?' || (m->st == '-' && c->o->retry_bad))
			c->todo[c->nr_todo++] = (struct todo){ s, e - s,
							       m->st == '-' };
	}
	if (c->resumed && c->o->verbose > 0)
		say("%s: resuming: %llu bytes finished, %llu failed, %llu not "
		    "tried", c->o->map,
		    (unsigned long long)map_bytes(&c->map, '+'),
		    (unsigned long long)map_bytes(&c->map, '-'),
		    (unsigned long long)map_bytes(&c->map, '?'));
	c->last_save = now_seconds();
	return 0;
}

static sector_t todo_sectors(const struct copy *c)
{
	sector_t n = 0;

	for (size_t i = 0; i < c->nr_todo; i++)
		n += c->todo[i].count;
	return n;
}

/* --- Running ------------------------------------------------------------ */

static void copy_progress(sector_t sectors, void *context)
{
	struct job *j = context;

	progress_add(&j->c->prog, (uint64_t)sectors << KCOPYD_SECTOR_SHIFT);
}

static void job_done(const struct kcopyd_completion *done, void *context)
{
	struct job *j = context;
	struct copy *c = j->c;
	uint64_t one = 1;

	if (pthread_mutex_lock(&c->lock))
		abort();
	j->read_err = done->read_err;
	j->write_err = done->write_err;
	j->verify_err = done->verify_err;
	for (unsigned int i = 0; i < done->num_dests; i++)
		j->verify_sector[i] = done->verify_sector[i];
	j->failed = done->read_err || done->write_err || done->verify_err ||
		    done->cancelled;
	j->read_error = done->read_error;
	j->read_error_sector = done->read_error_sector;
	j->digest_valid = done->digest_valid;
	j->digest = done->digest;
	memcpy(j->dres, done->dests, done->num_dests * sizeof(j->dres[0]));
	if (done->nr_done) {
		/* Without memory the job's ranges stay as the map had them. */
		j->done = malloc(done->nr_done * sizeof(*j->done));
		if (j->done) {
			memcpy(j->done, done->done,
			       done->nr_done * sizeof(*j->done));
			j->nr_done = done->nr_done;
		}
	}
	j->next = c->finished;
	c->finished = j;
	if (pthread_mutex_unlock(&c->lock))
		abort();
	if (write(c->evfd, &one, sizeof(one)) != sizeof(one))
		abort();
}

/* Submit the next job; its range depends on the direction. */
static int submit_next(struct copy *c)
{
	struct io_region from, to[KCOPYD_MAX_DESTS];
	struct todo *td = &c->todo[c->todo_i];
	sector_t n = td->count - c->todo_off, off;
	/* One job for the whole copy, unless a map wants small ones. */
	sector_t max = c->use_map ? MAP_JOB_SECTORS : td->count;
	struct kcopyd_job_desc desc;
	struct job *j;
	int r;

	if (n > max)
		n = max;
	off = c->backward ? td->off + td->count - c->todo_off - n :
			    td->off + c->todo_off;

	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->c = c;
	j->offset = off;
	j->count = n;
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];
		struct io_region *t = &to[j->nr_dests];

		/* Zero regions may be shorter than the longest. */
		if (off >= d->count)
			continue;
		t->bdev = d->bdev;
		t->sector = d->op.start + off;
		t->count = d->count - off < n ? d->count - off : n;
		j->dest_idx[j->nr_dests++] = (unsigned char)i;
	}
	from.bdev = c->src_bdev;
	from.sector = c->src.start + off;
	from.count = n;
	desc = (struct kcopyd_job_desc){
		.size = sizeof(desc),
		.op = c->zero ? KCOPYD_OP_ZERO : KCOPYD_OP_COPY,
		.flags = c->flags | (td->retry ? KCOPYD_IGNORE_ERROR : 0),
		.from = c->zero ? NULL : &from,
		.num_dests = j->nr_dests,
		.dests = to,
		.complete = job_done,
		.progress = copy_progress,
		.context = j,
	};
	r = kcopyd_submit(c->kc, &desc, &j->id);
	if (r) {
		free(j);
		return r;
	}
	j->run_next = c->running;
	c->running = j;
	c->todo_off += n;
	if (c->todo_off == td->count) {
		c->todo_i++;
		c->todo_off = 0;
	}
	c->submitted += n;
	c->inflight++;
	return 0;
}

/*
 * Errors where going on past the failed block can save the rest: a bad
 * medium.  Past ENOSPC, EROFS or EDQUOT, every later write fails too.
 */
static bool skippable(int error)
{
	return error == EIO || error == ENODATA || error == EBADMSG ||
	       error == EILSEQ || error == EREMOTEIO;
}

/* Count a failure, and keep the lowest failed sector and its errno. */
static void note_failure(int *error, sector_t *sector, unsigned int *nr,
			 int err, sector_t at, bool *skip)
{
	if ((*nr)++ == 0 || at < *sector) {
		*error = err ? err : EIO;
		*sector = at;
	}
	*skip = *skip || skippable(err ? err : EIO);
}

static void forget_running(struct copy *c, struct job *j)
{
	for (struct job **p = &c->running; *p; p = &(*p)->run_next) {
		if (*p == j) {
			*p = j->run_next;
			return;
		}
	}
}

/* What the job put on every destination: into the copy's done ranges. */
static void note_done(struct copy *c, const struct job *j)
{
	for (unsigned int i = 0; i < j->nr_done; i++) {
		struct kcopyd_range r = {
			j->offset + j->done[i].sector, j->done[i].count,
		};

		c->completed += r.count;
		if (c->nr_done && c->done[c->nr_done - 1].sector +
				  c->done[c->nr_done - 1].count == r.sector)
			c->done[c->nr_done - 1].count += r.count;
		else if (c->nr_done < MAX_DONE)
			c->done[c->nr_done++] = r;
	}
}

/* A finished job in the map: its done ranges '+', the rest '-' if failed. */
static void map_job(struct copy *c, const struct job *j)
{
	uint64_t start = (uint64_t)j->offset << KCOPYD_SECTOR_SHIFT;
	uint64_t len = (uint64_t)j->count << KCOPYD_SECTOR_SHIFT;

	if (j->failed)
		c->map_err = c->map_err ?: map_set(&c->map, start, len, '-');
	for (unsigned int i = 0; i < j->nr_done; i++)
		c->map_err = c->map_err ?:
			map_set(&c->map,
				start + ((uint64_t)j->done[i].sector
					 << KCOPYD_SECTOR_SHIFT),
				(uint64_t)j->done[i].count
					<< KCOPYD_SECTOR_SHIFT, '+');
}

/*
 * Every bad range found so far is '-', again after each batch of done
 * ranges: a range found bad while its job ran must not end up '+'.
 */
static void map_bad(struct copy *c)
{
	if (pthread_mutex_lock(&c->lock))
		abort();
	for (size_t i = 0; i < c->nr_bad; i++)
		c->map_err = c->map_err ?:
			map_set(&c->map,
				(uint64_t)c->bad[i].sector
					<< KCOPYD_SECTOR_SHIFT,
				(uint64_t)c->bad[i].count
					<< KCOPYD_SECTOR_SHIFT, '-');
	if (c->bad_nomem)
		c->map_err = c->map_err ?: -ENOMEM;
	if (pthread_mutex_unlock(&c->lock))
		abort();
}

/* --ignore-errors: keep each lost range for the report (c->lock held). */
static void keep_lost(struct copy *c, struct block_device *bdev,
		      sector_t sector, sector_t count, int write, int error)
{
	if (c->nr_lost == c->max_lost) {
		size_t n = c->max_lost ? 2 * c->max_lost : 16;
		struct lost *l = realloc(c->lost, n * sizeof(*l));

		if (!l) {
			c->lost_dropped++;
			return;
		}
		c->lost = l;
		c->max_lost = n;
	}
	c->lost[c->nr_lost++] = (struct lost){ bdev, sector, count, write,
					       error };
}

/*
 * Engine worker: a range of a device was lost under IGNORE_ERROR.  Its
 * place in the copy: from the source's start, or from the start of the
 * destination region holding it.
 */
static void bad_range(uint64_t id, struct block_device *bdev, sector_t sector,
		      sector_t count, int write, int error, void *context)
{
	struct copy *c = context;
	sector_t off = 0;
	bool found = false;

	if (c->o->ignore_errors) {
		if (pthread_mutex_lock(&c->lock))
			abort();
		keep_lost(c, bdev, sector, count, write, error);
		if (pthread_mutex_unlock(&c->lock))
			abort();
	}
	if (!c->use_map)
		return;

	if (!write && bdev == c->src_bdev && sector >= c->src.start) {
		off = sector - c->src.start;
		found = true;
	}
	for (unsigned int i = 0; write && !found && i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		if (d->bdev == bdev && sector >= d->op.start &&
		    sector < d->op.start + d->count) {
			off = sector - d->op.start;
			found = true;
		}
	}
	if (!found)
		return;
	if (pthread_mutex_lock(&c->lock))
		abort();
	if (c->nr_bad == c->cap_bad) {
		size_t cap = c->cap_bad ? c->cap_bad * 2 : 16;
		struct kcopyd_range *b = realloc(c->bad, cap * sizeof(*b));

		if (b) {
			c->bad = b;
			c->cap_bad = cap;
		}
	}
	if (c->nr_bad < c->cap_bad)
		c->bad[c->nr_bad++] = (struct kcopyd_range){ off, count };
	else
		c->bad_nomem = true;
	if (pthread_mutex_unlock(&c->lock))
		abort();
}

/*
 * Save the map: the destinations are flushed first, so that what the map
 * calls finished survives a power cut, not only a crash of kcopy.
 */
static void save_map(struct copy *c)
{
	/* A read-only source has nothing to flush: 0. */
	for (unsigned int i = 0; i < c->nr_bdevs && !c->map_err; i++)
		c->map_err = kcopyd_bdev_flush(c->bdevs[i]);
	if (!c->map_err)
		c->map_err = map_save(&c->map);
	c->last_save = now_seconds();
	if (c->map_err)
		c->stop = true;
}

static void reap(struct copy *c)
{
	struct job *j, *next;
	uint64_t n;

	/* The count is not needed: the list says what finished. */
	if (read(c->evfd, &n, sizeof(n)) == -1 && errno != EAGAIN)
		abort();
	if (pthread_mutex_lock(&c->lock))
		abort();
	j = c->finished;
	c->finished = NULL;
	if (pthread_mutex_unlock(&c->lock))
		abort();

	for (; j; j = next) {
		next = j->next;
		c->inflight--;
		forget_running(c, j);
		note_done(c, j);
		if (j->read_err)
			note_failure(&c->read_error, &c->read_error_sector,
				     &c->read_failed_jobs, j->read_error,
				     j->read_error_sector, &c->skip);
		for (unsigned int b = 0; b < j->nr_dests; b++) {
			struct dest *d = &c->dests[j->dest_idx[b]];

			if (j->write_err & (1u << b))
				note_failure(&d->error, &d->error_sector,
					     &d->failed_jobs, j->dres[b].error,
					     j->dres[b].error_sector,
					     &c->skip);
			if ((j->verify_err & (1u << b)) &&
			    (d->verify_failed_jobs++ == 0 ||
			     j->verify_sector[b] < d->verify_sector))
				d->verify_sector = j->verify_sector[b];
		}
		if ((j->read_err || j->write_err || j->verify_err) &&
		    !c->o->ignore_errors)
			c->stop = true;
		if (c->use_map)
			map_job(c, j);
		/* Without --map the copy is one job: its digest is the copy's. */
		if (j->digest_valid) {
			c->have_digest = true;
			c->digest = j->digest;
		}
		free(j->done);
		free(j);
	}
	if (c->use_map)
		map_bad(c);
}

static void read_signal(struct copy *c)
{
	struct signalfd_siginfo si;

	while (read(c->sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (c->signo)
			continue;
		c->signo = (int)si.ssi_signo;
		/* -ENOENT: a job whose I/O is over already. */
		for (struct job *j = c->running; j; j = j->run_next)
			kcopyd_cancel(c->kc, j->id);
	}
}

static void run(struct copy *c)
{
	struct pollfd pfd[2] = {
		{ .fd = c->sigfd, .events = POLLIN },
		{ .fd = c->evfd, .events = POLLIN },
	};

	for (;;) {
		/* A signal that came during the setup stops us here. */
		read_signal(c);
		int timeout;

		while (!c->signo && !c->stop && !c->submit_err &&
		       c->todo_i < c->nr_todo && c->inflight < c->window)
			c->submit_err = submit_next(c);
		if (!c->inflight)
			break;
		timeout = progress_timeout(&c->prog);
		if (c->use_map && (timeout < 0 ||
				   timeout > MAP_SAVE_SECONDS * 1000))
			timeout = (int)(MAP_SAVE_SECONDS * 1000);
		if (poll(pfd, 2, timeout) == -1 && errno != EINTR)
			abort();
		if (pfd[0].revents & POLLIN)
			read_signal(c);
		if (pfd[1].revents & POLLIN)
			reap(c);
		if (c->use_map && !c->map_err &&
		    now_seconds() - c->last_save >= MAP_SAVE_SECONDS)
			save_map(c);
		progress_tick(&c->prog);
	}
	if (c->use_map && !c->map_err)
		save_map(c);
}

/*
 * The engine flushed every destination (KCOPYD_FLUSH); fsync the directory
 * of every file we created, so that its name is durable too.
 */
static void sync_dests(struct copy *c)
{
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		if (d->created && !d->failed_jobs)
			d->fsync_err = -sync_dir(d->op.path);
	}
}

/* --- Reporting ---------------------------------------------------------- */

static double percent(const struct copy *c, sector_t n)
{
	return c->total ? 100.0 * (double)n / (double)c->total : 100.0;
}

static const char *bdev_name(const struct copy *c, struct block_device *b)
{
	if (b == c->src_bdev && !c->zero)
		return c->src.path;
	for (unsigned int i = 0; i < c->nr_dests; i++)
		if (c->dests[i].bdev == b)
			return c->dests[i].op.path;
	return "?";
}

/* Every range lost under --ignore-errors, by device, as found. */
static void say_lost(struct copy *c)
{
	size_t n = c->nr_lost < MAX_LOST_LINES ? c->nr_lost : MAX_LOST_LINES;

	for (size_t i = 0; i < n; i++) {
		const struct lost *l = &c->lost[i];

		say("%s: lost sectors %llu+%llu: %s (%s)",
		    bdev_name(c, l->bdev), (unsigned long long)l->sector,
		    (unsigned long long)l->count, strerror(l->error),
		    l->write ? "not written" : "unreadable, written as zeros");
	}
	if (c->nr_lost + c->lost_dropped > n)
		say("... and %llu more lost ranges",
		    (unsigned long long)(c->nr_lost + c->lost_dropped - n));
}

/* "A+B, C+D": the ranges of the copy that every destination holds. */
static void say_interrupted(const struct copy *c)
{
	char ranges[MAX_DONE * 44 + 1] = "";
	size_t len = 0;

	for (unsigned int i = 0; i < c->nr_done; i++)
		len += (size_t)snprintf(ranges + len, sizeof(ranges) - len,
					"%s%llu+%llu", i ? ", " : "",
					(unsigned long long)c->done[i].sector,
					(unsigned long long)c->done[i].count);
	say("interrupted after %llu bytes (%.0f%%) by %s: %s%s of the range "
	    "%s done on every destination",
	    (unsigned long long)c->completed << KCOPYD_SECTOR_SHIFT,
	    percent(c, c->completed), strsignal(c->signo),
	    c->nr_done ? "sectors " : "no sector", ranges,
	    c->nr_done ? "are" : "is");
}

static int report(struct copy *c)
{
	bool rerr = c->read_failed_jobs > 0, werr = false, verr = false;

	if (rerr)
		say("%s: %s at sector %llu", c->src.path,
		    strerror(c->read_error),
		    (unsigned long long)c->read_error_sector);
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		if (d->failed_jobs) {
			say("%s: %s at sector %llu", d->op.path,
			    strerror(d->error),
			    (unsigned long long)d->error_sector);
			werr = true;
		}
		if (d->verify_failed_jobs) {
			say("%s: verify failed: sector %llu reads back "
			    "differently from the source", d->op.path,
			    (unsigned long long)d->verify_sector);
			verr = true;
		}
		if (d->fsync_err) {
			say("%s: fsync of its directory failed: %s",
			    d->op.path, strerror(d->fsync_err));
			werr = true;
		}
	}
	if (c->submit_err) {
		say("cannot submit a job: %s", strerror(-c->submit_err));
		werr = true;
	}
	if (c->map_err) {
		say("%s: the map could not be kept: %s", c->o->map,
		    strerror(-c->map_err));
		werr = true;
	} else if (c->stop && c->skip) {
		say("stopped after the first error; --ignore-errors would go "
		    "on past the failed blocks");
	} else if (c->stop) {
		say("stopped after the first error");
	}
	if (c->o->ignore_errors)
		say_lost(c);
	if (c->signo && c->use_map) {
		say("interrupted by %s: %s records what is done; run the same "
		    "command again to copy the rest", strsignal(c->signo),
		    c->o->map);
		return EXIT_INTERRUPTED;
	}
	if (c->signo) {
		say_interrupted(c);
		return EXIT_INTERRUPTED;
	}
	if (rerr && werr)
		return EXIT_BOTH_ERR;
	if (rerr)
		return EXIT_READ_ERR;
	if (werr)
		return EXIT_WRITE_ERR;
	if (verr)
		return EXIT_VERIFY_ERR;
	return EXIT_SUCCESS;
}

/*
 * --checksum: the digest on stdout, as sha256sum prints a file's, when
 * the whole source range was read (whatever became of the destinations).
 */
static void copy_checksum(struct copy *c)
{
	char hex[17];

	/* No job for an empty range: its digest is that of no block. */
	if (!c->total && !c->signo) {
		c->have_digest = true;
		c->digest = XXH3_64bits(NULL, 0);
	}
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)c->digest);
	print_checksum(c->have_digest ? hex : NULL, c->src.token);
}

static void say_plan(const struct copy *c)
{
	char size[32];

	format_bytes((uint64_t)c->total << KCOPYD_SECTOR_SHIFT, size,
		     sizeof(size));
	if (c->zero)
		say("zeroing %s in %u destination%s", size, c->nr_dests,
		    c->nr_dests == 1 ? "" : "s");
	else
		say("copying %s: %s sectors %llu+%llu", size, c->src.path,
		    (unsigned long long)c->src.start,
		    (unsigned long long)c->src.count);
	for (unsigned int i = 0; i < c->nr_dests; i++)
		say("  to %s at sector %llu (%llu sectors)",
		    c->dests[i].op.path,
		    (unsigned long long)c->dests[i].op.start,
		    (unsigned long long)c->dests[i].count);
}

/* What --verify read back, and its verdict on each destination. */
static void say_verified(struct copy *c)
{
	struct kcopyd_bdev_stats st;
	char sbytes[32];

	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		kcopyd_bdev_get_stats2(d->bdev, &st, sizeof(st));
		say("  %s: %s read back, verify %s", d->op.path,
		    format_bytes(st.bytes_verified, sbytes, sizeof(sbytes)),
		    d->verify_failed_jobs ? "FAILED" : "ok");
	}
}

static void say_summary(struct copy *c)
{
	double t = progress_elapsed(&c->prog);
	uint64_t bytes = (uint64_t)c->completed << KCOPYD_SECTOR_SHIFT;
	char sbytes[32], srate[32], zbytes[32];

	say("%s %s to %u destination%s in %.2f s (%s/s)",
	    c->zero ? "zeroed" : "copied",
	    format_bytes(bytes, sbytes, sizeof(sbytes)), c->nr_dests,
	    c->nr_dests == 1 ? "" : "s", t,
	    format_bytes(t > 0 ? (uint64_t)((double)bytes / t) : bytes, srate,
			 sizeof(srate)));
	if (c->zero)
		return;
	/* Holes and zeros are done work, but not data moved. */
	say("  %s of data written, %s of holes not read, %s of zeros "
	    "found in the data",
	    format_bytes(c->stats.bytes_written, sbytes, sizeof(sbytes)),
	    format_bytes(c->stats.bytes_holes, srate, sizeof(srate)),
	    format_bytes(c->stats.bytes_zero_data, zbytes, sizeof(zbytes)));
	if (c->o->verify)
		say_verified(c);
	if (c->use_map)
		say("  %s: %llu bytes read from the source; the map has %llu "
		    "bytes finished, %llu failed, %llu not tried", c->o->map,
		    (unsigned long long)c->stats.bytes_read,
		    (unsigned long long)map_bytes(&c->map, '+'),
		    (unsigned long long)map_bytes(&c->map, '-'),
		    (unsigned long long)map_bytes(&c->map, '?'));
}

/* --- Setup -------------------------------------------------------------- */

static int parse_operands(struct copy *c, int argc, char **argv)
{
	int first = c->zero ? 0 : 1;

	if (argc < first + 1) {
		say(c->zero ? "--zero needs at least one DST" :
			      "a SRC and at least one DST are needed");
		return -EINVAL;
	}
	if (argc - first > KCOPYD_MAX_DESTS) {
		say("%d destinations: at most %d are allowed", argc - first,
		    KCOPYD_MAX_DESTS);
		return -E2BIG;
	}
	if (!c->zero && (parse_operand(argv[0], &c->src) ||
			 check_operand(&c->src)))
		return -EINVAL;
	for (int i = first; i < argc; i++) {
		struct dest *d = &c->dests[c->nr_dests];

		if (parse_operand(argv[i], &d->op))
			return -EINVAL;
		c->nr_dests++;
		if (check_operand(&d->op))
			return -EINVAL;
		if (!c->zero && d->op.has_count) {
			say("%s: a destination takes no COUNT (it gets the "
			    "source's)", d->op.token);
			return -EINVAL;
		}
	}
	return 0;
}

static int setup(struct copy *c)
{
	struct kcopyd_options ko = {
		.threads = c->o->threads,
		.subjob_size = c->o->subjob_size,
		.sparse_size = c->o->sparse_size,
		.flags = c->o->no_zero_detect ? KCOPYD_OPT_NO_ZERO_DETECT : 0,
	};
	int r;

	c->flags = (c->o->ignore_errors ? KCOPYD_IGNORE_ERROR : 0) |
		   (c->o->write_seq ? KCOPYD_WRITE_SEQ : 0) |
		   (c->o->allocated ? KCOPYD_ALLOCATED : 0) |
		   (c->o->target_zero ? KCOPYD_TARGET_ZERO : 0) |
		   (c->o->verify ? KCOPYD_VERIFY : 0) |
		   (c->o->checksum ? KCOPYD_DIGEST : 0) |
		   (c->o->fsync ? KCOPYD_FLUSH : 0);

	if (!c->zero) {
		r = probe_source(c);
		if (r)
			return r;
	}
	for (unsigned int i = 0; i < c->nr_dests; i++) {
		struct dest *d = &c->dests[i];

		d->count = c->src.count;
		r = prepare_dest(c, d);
		if (r)
			return r;
	}
	r = open_bdevs(c);
	if (r)
		return r;
	r = check_regions(c);
	if (r)
		return r;
	r = plan_todo(c);
	if (r)
		return r;
	if (c->o->direct) {
		r = check_direct(c);
		if (r)
			return r;
	}
	/* Before the engine starts its threads, which inherit the mask. */
	c->sigfd = signals_block();
	if (c->sigfd < 0) {
		say("signalfd: %s", strerror(-c->sigfd));
		return c->sigfd;
	}
	r = kcopyd_client_create_opts(c->o->pages ? c->o->pages : DEFAULT_PAGES,
				      &ko, &c->kc);
	if (r)
		say("cannot start the copy engine: %s", strerror(-r));
	return r;
}

int direct_main(const struct options *o, int argc, char **argv)
{
	struct copy *c;
	int status = EXIT_USAGE;

	c = calloc(1, sizeof(*c));
	if (!c) {
		say("%s", strerror(ENOMEM));
		return EXIT_USAGE;
	}
	c->o = o;
	c->zero = o->zero;
	c->use_map = o->map != NULL;
	c->evfd = -1;
	c->sigfd = -1;
	if (pthread_mutex_init(&c->lock, NULL))
		abort();
	c->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->evfd == -1) {
		say("eventfd: %s", strerror(errno));
		goto out;
	}
	if (parse_operands(c, argc, argv)) {
		fputs("Try 'kcopy --help' for more information.\n", stderr);
		goto out;
	}
	if (setup(c)) {
		if (c->kc)
			kcopyd_client_destroy(c->kc);
		c->kc = NULL;
		close_bdevs(c);
		unprepare_dests(c);
		goto out;
	}
	if (o->verbose > 0)
		say_plan(c);

	progress_init(&c->prog, o,
		      (uint64_t)todo_sectors(c) << KCOPYD_SECTOR_SHIFT);
	if (c->use_map || o->ignore_errors)
		kcopyd_client_set_bad_range(c->kc, bad_range, c);
	if (o->rate)
		kcopyd_client_set_throttle(c->kc, o->rate, 0);
	run(c);
	kcopyd_client_get_stats(c->kc, &c->stats);
	kcopyd_client_destroy(c->kc);
	/*
	 * The engine's threads are gone: nothing needs the mask now, and a
	 * signal during the flush or the report takes its default action.
	 */
	signals_unblock(c->sigfd);
	c->sigfd = -1;
	if (c->signo)
		progress_clear(&c->prog);
	else
		progress_finish(&c->prog);
	if (o->fsync && !c->signo)
		sync_dests(c);
	status = report(c);
	if (o->checksum)
		copy_checksum(c);
	if (o->verbose > 0)
		say_summary(c);
	close_bdevs(c);
out:
	for (unsigned int i = 0; i < c->nr_dests; i++)
		free(c->dests[i].op.path);
	free(c->src.path);
	free(c->todo);
	free(c->bad);
	free(c->lost);
	map_free(&c->map);
	if (c->evfd != -1)
		close(c->evfd);
	if (c->sigfd >= 0)
		signals_unblock(c->sigfd);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return status;
}
