/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libkcopyd - the device-mapper copy engine in user space.
 *
 * A client sets aside a number of memory pages, then hands the engine copy
 * jobs: one source region of a block device to one or more destination
 * regions.  When a job is done the client's notify function is called with
 * read_err and a write_err bit mask (bit i = dests[i]).
 *
 * Every function that can fail returns 0 or a negative errno value.
 * See libkcopyd(3) and the page of each function.
 */
#ifndef KCOPYD_H
#define KCOPYD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 512-byte sectors, 64 bits wide, as in the kernel. */
typedef uint64_t sector_t;

#define KCOPYD_SECTOR_SHIFT	9
#define KCOPYD_SECTOR_SIZE	(1u << KCOPYD_SECTOR_SHIFT)
#define KCOPYD_PAGE_SIZE	4096u

/* A job has at most this many destinations: the width of write_err. */
#define KCOPYD_MAX_DESTS	32

/*
 * Flag masks for kcopyd_copy() and kcopyd_zero().
 * IGNORE_ERROR: go on to the end after errors; a sub-job whose read or
 * write fails is retried block by block, so only the blocks that fail are
 * lost (written as zeros when unreadable, left as they were when
 * unwritable).  WRITE_SEQ: write each destination in offset order.
 */
#define KCOPYD_IGNORE_ERROR	(1u << 0)
#define KCOPYD_WRITE_SEQ	(1u << 1)
/*
 * Holes and zeros.  A copy does not read the holes of its source, and
 * zeroes the destinations there instead; data that reads back as all
 * zeros is zeroed rather than written (see kcopyd_options.sparse_size).
 * Zeroing deallocates where the device can.  ALLOCATED: the destinations
 * keep every block allocated (zeros are written or zeroed in place, never
 * punched).  TARGET_ZERO: the caller knows the destinations read as zeros
 * already, so holes and zeros cost nothing at all.
 */
#define KCOPYD_ALLOCATED	(1u << 2)
#define KCOPYD_TARGET_ZERO	(1u << 3)
/*
 * FLUSH: make each destination durable (fdatasync(2)) after its last write
 * and before the callback; a failed flush is a write error of that
 * destination.
 */
#define KCOPYD_FLUSH		(1u << 4)
/*
 * VERIFY: after a chunk is written, read each destination's part of it
 * back (bypassing the page cache where the device allows it) and compare
 * it, sector by sector, with what was read from the source (XXH3 hashes
 * taken before the write; holes and zeros must read back as zeros).  A
 * difference is a verify error of that destination: verify_err and
 * verify_sector in a kcopyd_completion, and a write_err bit for a
 * kcopyd_notify_fn, which has nothing else to tell it by.  Copy offload
 * is not used, since the data must pass through the pages.
 */
#define KCOPYD_VERIFY		(1u << 5)
/*
 * DIGEST: a copy also computes a digest of its whole source range, from
 * the pages it reads anyway (holes are hashed without being read): the
 * range is cut into blocks of KCOPYD_DIGEST_BLOCK bytes counted from its
 * first byte (the last one shorter), each block is hashed with XXH3-64
 * (seed 0), and the digest is the XXH3-64 (seed 0) of those block hashes
 * in order, each as 8 bytes little-endian.  Only for kcopyd_submit(),
 * which has a completion to carry it (digest, digest_valid); a zero job,
 * or a kcopyd_notify_fn call, refuses it with -EINVAL.  Copy offload is
 * not used, since the data must pass through the pages.
 */
#define KCOPYD_DIGEST		(1u << 6)
#define KCOPYD_DIGEST_BLOCK	65536u

/* Opaque handles. */
struct block_device;
struct kcopyd_client;

struct io_region {
	struct block_device *bdev;
	sector_t sector;
	sector_t count;
};

/*
 * Called once for every accepted job, after all its I/O, on the client's
 * callback thread, with no engine lock held.  Callbacks of one client never
 * run concurrently.  A callback may submit new jobs; it must not call
 * kcopyd_client_flush() or kcopyd_client_destroy() on its own client.
 */
typedef void (*kcopyd_notify_fn)(int read_err, unsigned int write_err,
				 void *context);

/*
 * Optional progress report: the I/O of `sectors` more sectors of the job
 * is over (read, and written to every destination, or failed: errors are
 * reported by the notify function).  Called on a worker thread, with no
 * engine lock held, possibly concurrently for different sub-jobs of the
 * same job: add the deltas atomically.  Must not block, and must not call
 * kcopyd_client_flush() or kcopyd_client_destroy() on its client.
 */
typedef void (*kcopyd_progress_fn)(sector_t sectors, void *context);

/* --- Block devices ------------------------------------------------------ */

/*
 * Open an image file, a block device, or a remote NBD export named by a
 * URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, the
 * nbds TLS forms; query parameters timeout=SECONDS and connections=N are
 * kcopyd's, the rest libnbd's).  flags: O_RDONLY or O_RDWR, plus
 * optionally O_DIRECT, O_SYNC, O_DSYNC.  The size is the file's size,
 * BLKGETSIZE64 for a block device, or the export's, rounded down to whole
 * sectors.  Returns 0, -EINVAL (NULL or unknown flags, a bad kcopyd query
 * parameter), -EISDIR (a directory), -ENOTBLK (neither a regular file nor
 * a block device), -ENOMEM, -EROFS (O_RDWR on a read-only export),
 * -ETIMEDOUT (no handshake within the timeout), -EPROTONOSUPPORT (a URI,
 * built without libnbd), or the errno of open(2), fstat(2), the size
 * ioctl or libnbd's connection.
 */
int kcopyd_bdev_open(const char *path, int flags,
		     struct block_device **result);

/*
 * Is name an NBD URI that kcopyd_bdev_open() connects to rather than a
 * path?  1 or 0.  (A file whose name looks like one: ./nbd:...)
 */
int kcopyd_bdev_is_uri(const char *name);

/* Close a device no job uses any more. */
void kcopyd_bdev_close(struct block_device *bdev);

/* The device's size in sectors. */
sector_t kcopyd_bdev_sectors(const struct block_device *bdev);

/* The device's size in bytes (whole sectors). */
uint64_t kcopyd_bdev_size(const struct block_device *bdev);

/* 1 if the device was opened read-only (writes fail with EROFS), else 0. */
int kcopyd_bdev_is_read_only(const struct block_device *bdev);

/*
 * 1 if a and b are one file or block device, whatever handles they came
 * from (what the engine's overlap rules compare), else 0.
 */
int kcopyd_bdev_same(const struct block_device *a,
		     const struct block_device *b);

/*
 * Device I/O for programs, through the same path as the engine's: counted
 * in the device's stats and subject to its fault rules (a short rule is
 * absorbed: these calls transfer everything or fail).  Offsets and
 * lengths are in bytes; with O_DIRECT they must be aligned as the device
 * needs.  Each returns 0 or a negative errno: -EINVAL (NULL, unknown
 * flag), -ERANGE (past the end of the device), -EROFS (a write, zero to a
 * read-only device), or the error of the I/O or of a fault rule.
 */
int kcopyd_bdev_pread(struct block_device *bdev, void *buf, size_t len,
		      uint64_t offset);
int kcopyd_bdev_pwrite(struct block_device *bdev, const void *buf,
		       size_t len, uint64_t offset);

/*
 * Make [offset, offset + len) read as zeros, the cheapest way the device
 * takes (punch a hole, zero in place, write zeros); flags 0 or
 * KCOPYD_ALLOCATED to keep the blocks allocated.  Write fault rules apply.
 */
int kcopyd_bdev_zero(struct block_device *bdev, uint64_t offset,
		     uint64_t len, unsigned int flags);

/* Make what was written durable (fsync(2)); 0 for a read-only device. */
int kcopyd_bdev_flush(struct block_device *bdev);

/*
 * Allocation: the extent that starts at offset, of at most len bytes, is
 * a hole (reads as zeros, holds no blocks) or data; sets *type and its
 * length *count (> 0).  A device that cannot tell says data.  Returns 0,
 * -EINVAL, -ERANGE (offset at or past the end) or an I/O errno.
 */
#define KCOPYD_EXTENT_DATA	0u
#define KCOPYD_EXTENT_HOLE	1u
int kcopyd_bdev_extent(struct block_device *bdev, uint64_t offset,
		       uint64_t len, unsigned int *type, uint64_t *count);

/* Bytes allocated to the device (its size, for a block device). */
int kcopyd_bdev_allocated(struct block_device *bdev, uint64_t *bytes);

/* Per-device counters, as seen by the engine. */
struct kcopyd_bdev_stats {
	uint64_t reads;		/* read calls that completed */
	uint64_t writes;	/* write calls that completed */
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t errors;	/* reads, writes, zeroings, flushes that failed */
	/* Filled by kcopyd_bdev_get_stats2() only: */
	uint64_t zeros;		/* zeroings that completed */
	uint64_t bytes_zeroed;
	uint64_t bytes_holes;	/* source bytes skipped as holes, not read */
	uint64_t zeroed_punch;	/* bytes zeroed by punching holes */
	uint64_t zeroed_range;	/* ... by zeroing in place */
	uint64_t zeroed_write;	/* ... by writing zeros */
	uint64_t flushes;	/* flushes (KCOPYD_FLUSH) that completed */
	uint64_t bytes_verified; /* read back by KCOPYD_VERIFY (not in
				    reads or bytes_read) */
};
/* The counters up to and including `errors`. */
void kcopyd_bdev_get_stats(const struct block_device *bdev,
			   struct kcopyd_bdev_stats *st);
/*
 * The counters that fit in `size` bytes (pass sizeof(*st)): a program
 * built against an older, shorter struct gets only the fields it knows.
 * Returns 0, or -EINVAL for a NULL pointer or a size below the fields of
 * kcopyd_bdev_get_stats().
 */
int kcopyd_bdev_get_stats2(const struct block_device *bdev,
			   struct kcopyd_bdev_stats *st, size_t size);

/*
 * Fault injection (what dm-flakey and dm-dust do): any I/O of this device
 * that touches [sector, sector + count) of a rule's operation is affected
 * (a flush, which has no range, meets every FLUSH rule).
 *   KCOPYD_FAULT_ERROR  the I/O fails with `error` (EIO if 0)
 *   KCOPYD_FAULT_SHORT  a read or write transfers only part of what was
 *                       asked (at least one sector), so the caller must
 *                       go on
 *   KCOPYD_FAULT_DELAY  the I/O is delayed by delay_us microseconds
 *   KCOPYD_FAULT_CORRUPT silent corruption, as dm-flakey's
 *                       corrupt_bio_byte: the first byte of every sector
 *                       of the range that the I/O carries is inverted
 *                       (xor 0xff), on the device for a write (the
 *                       caller's buffer is left alone), in the caller's
 *                       buffer for a read (the device is left alone);
 *                       the I/O itself succeeds
 * Rules may be added while jobs run.  Returns 0, -EINVAL or -ENOMEM.
 */
#define KCOPYD_FAULT_READ	(1u << 0)
#define KCOPYD_FAULT_WRITE	(1u << 1)
#define KCOPYD_FAULT_FLUSH	(1u << 2)	/* any flush, whatever the range */

enum kcopyd_fault_kind {
	KCOPYD_FAULT_ERROR = 0,
	KCOPYD_FAULT_SHORT = 1,
	KCOPYD_FAULT_DELAY = 2,
	KCOPYD_FAULT_CORRUPT = 3,
};

struct kcopyd_fault {
	unsigned int ops;		/* KCOPYD_FAULT_READ | _WRITE */
	enum kcopyd_fault_kind kind;
	sector_t sector;
	sector_t count;
	int error;			/* positive errno, for ERROR */
	unsigned int delay_us;		/* for DELAY */
};

int kcopyd_bdev_add_fault(struct block_device *bdev,
			  const struct kcopyd_fault *fault);
void kcopyd_bdev_clear_faults(struct block_device *bdev);

/* --- Clients ------------------------------------------------------------ */

/*
 * Create a client whose copy buffers never exceed num_pages x 4 KiB.
 * Returns 0, -EINVAL (num_pages 0 or result NULL), -ENOMEM, or the errno
 * of a failed thread creation.
 */
int kcopyd_client_create(unsigned int num_pages,
			 struct kcopyd_client **result);

/* Engine tuning; zero fields take the defaults. */
struct kcopyd_options {
	unsigned int threads;		/* I/O worker threads (default 2) */
	unsigned int subjob_size;	/* bytes, multiple of 4096
					   (default 524288, max 16 MiB) */
	unsigned int max_inflight;	/* sub-jobs in flight per job
					   (default 8) */
	unsigned int sparse_size;	/* zero detection: bytes, a multiple
					   of 512 that divides 4096 or a
					   multiple of 4096 (default 4096) */
	unsigned int flags;		/* KCOPYD_OPT_* below */
};

/* Options flags: no zero detection; every job KCOPYD_ALLOCATED. */
#define KCOPYD_OPT_NO_ZERO_DETECT	(1u << 0)
#define KCOPYD_OPT_ALLOCATED		(1u << 1)

/* As kcopyd_client_create(), with options (may be NULL). */
int kcopyd_client_create_opts(unsigned int num_pages,
			      const struct kcopyd_options *opts,
			      struct kcopyd_client **result);

/*
 * Wait for every outstanding job and callback, then free the client.
 * Called from one of the client's own callbacks it would wait for itself:
 * it is refused, with a message on stderr, and the client stays usable.
 */
void kcopyd_client_destroy(struct kcopyd_client *kc);

/*
 * Wait until every job submitted before this call has completed and its
 * callback has returned.  Returns 0, -EINVAL, or -EDEADLK from a callback.
 */
int kcopyd_client_flush(struct kcopyd_client *kc);

/*
 * Copy `from` to each of dests[0..num_dests).  Every destination's count
 * must equal the source's.  Returns 0 when the job is queued (fn will be
 * called exactly once), or, with nothing queued and no callback:
 *   -EINVAL  NULL pointer, no destination, unknown flag, counts differ,
 *            destinations that overlap each other, or an overlap with the
 *            source that no copy order can satisfy
 *   -E2BIG   more than KCOPYD_MAX_DESTS destinations
 *   -ERANGE  a region past the end of its device
 *   -EROFS   a destination device opened read-only
 *   -ESHUTDOWN the client is being destroyed
 *   -ENOMEM
 * A source and destination that overlap on one device (the same file or
 * block device, through one handle or two) give the result of memmove(3).
 */
int kcopyd_copy(struct kcopyd_client *kc, struct io_region *from,
		unsigned int num_dests, struct io_region *dests,
		unsigned int flags, kcopyd_notify_fn fn, void *context);

/*
 * What kcopyd_copy() (from non-NULL) or kcopyd_zero() (from NULL) would
 * refuse, without a client: returns 0 or the negative errno it would
 * return (see kcopyd_copy), and sets *culprit (may be NULL) to the index
 * of the destination at fault, or -1 for the source or the job as a
 * whole.  A program checks every job of a batch first, so that a refused
 * batch queues nothing.
 */
int kcopyd_check_copy(const struct io_region *from, unsigned int num_dests,
		      const struct io_region *dests, unsigned int flags,
		      int *culprit);

/*
 * Make each of dests[0..num_dests) read as zeros, the cheapest way each
 * device takes (see kcopyd_bdev_zero); errors as kcopyd_copy().
 */
int kcopyd_zero(struct kcopyd_client *kc, unsigned int num_dests,
		struct io_region *dests, unsigned int flags,
		kcopyd_notify_fn fn, void *context);

/*
 * As kcopyd_copy(), with a progress function (may be NULL); a NULL `from`
 * makes it kcopyd_zero().  Destinations of a zero may differ in count.
 */
int kcopyd_copy_progress(struct kcopyd_client *kc, struct io_region *from,
			 unsigned int num_dests, struct io_region *dests,
			 unsigned int flags, kcopyd_notify_fn fn,
			 kcopyd_progress_fn progress, void *context);

/* --- Jobs a caller can steer ------------------------------------------- */

/* The operation of a kcopyd_job_desc. */
#define KCOPYD_OP_COPY	0u
#define KCOPYD_OP_ZERO	1u

/* A range of sectors. */
struct kcopyd_range {
	sector_t sector;
	sector_t count;
};

/* What happened to one destination of a job. */
struct kcopyd_dest_result {
	int error;			/* positive errno of its first failed
					   write or flush, else 0 */
	sector_t error_sector;		/* device sector where it failed (the
					   first sector of the failed write,
					   or of the region for a flush) */
};

/*
 * The result of a job, passed by pointer to its completion function; it
 * and everything it points to live until that function returns.  size is
 * sizeof the struct the library was built with: fields past it are not
 * there (a newer program on an older library checks it).
 */
struct kcopyd_completion {
	size_t size;
	uint64_t id;			/* as returned by kcopyd_submit() */
	int read_err;			/* as for kcopyd_notify_fn */
	unsigned int write_err;
	int read_error;			/* positive errno of the first failed
					   read, else 0 */
	sector_t read_error_sector;	/* source device sector where it failed */
	unsigned int num_dests;
	const struct kcopyd_dest_result *dests;	/* num_dests entries */
	int cancelled;			/* kcopyd_cancel() stopped the job */
	/*
	 * The sectors whose I/O ran to its end on every destination, as
	 * ranges of offsets from the regions' starts, in increasing order:
	 * with nothing failed and nothing cancelled, one range covering the
	 * job; with WRITE_SEQ, at most one range, from offset 0.  Under
	 * IGNORE_ERROR a range may still hold blocks that were lost: the
	 * bad-range function was told of each.
	 */
	sector_t sectors_done;		/* sum of the ranges' counts */
	unsigned int nr_done;
	const struct kcopyd_range *done;
	/*
	 * KCOPYD_VERIFY: bit i set when dests[i] read back differently from
	 * the source (not set for a destination's chunks whose write
	 * failed: those are write_err); verify_sector[i] is then the lowest
	 * device sector of dests[i] found wrong.  num_dests entries.
	 */
	unsigned int verify_err;
	const sector_t *verify_sector;
	/*
	 * KCOPYD_DIGEST: digest_valid is 1 when digest is the digest of the
	 * whole source range as it was read (see KCOPYD_DIGEST); 0 when the
	 * job was cancelled or stopped before reading all of it, or a read
	 * failed, even one IGNORE_ERROR passed over (those blocks went out
	 * as zeros, not as the source holds them).  Both 0 without the flag.
	 */
	int digest_valid;
	uint64_t digest;
};

/*
 * Called once for every job accepted by kcopyd_submit(), as
 * kcopyd_notify_fn is (the client's callback thread, no lock held,
 * serialised; may submit and cancel; must not flush or destroy its own
 * client).
 */
typedef void (*kcopyd_complete_fn)(const struct kcopyd_completion *c,
				   void *context);

/*
 * A job for kcopyd_submit().  size must be sizeof(struct kcopyd_job_desc)
 * as the caller was built: fields past it count as zero, so the struct may
 * grow without breaking programs built against an older one.
 */
struct kcopyd_job_desc {
	size_t size;
	unsigned int op;		/* KCOPYD_OP_COPY or KCOPYD_OP_ZERO */
	unsigned int flags;		/* KCOPYD_IGNORE_ERROR, _WRITE_SEQ,
					   _FLUSH, _VERIFY, _DIGEST, ... */
	const struct io_region *from;	/* the source of a copy; NULL for zero */
	unsigned int num_dests;
	const struct io_region *dests;
	kcopyd_complete_fn complete;	/* may be NULL */
	kcopyd_progress_fn progress;	/* may be NULL */
	void *context;			/* for complete and progress */
};

/*
 * Submit a copy or zero job, with the rules and errors of kcopyd_copy()
 * and kcopyd_zero(), plus: -EINVAL for a NULL desc, a size below the
 * fields above, an unknown op, or a `from` given to a zero (or missing
 * from a copy); -E2BIG for a size past the struct known here with a
 * field set there; -EAGAIN when the client's kcopyd_client_set_max_jobs()
 * limit is reached.  On success *id (if id is not NULL) holds the job's
 * id, never 0, before the completion function can run.
 */
int kcopyd_submit(struct kcopyd_client *kc,
		  const struct kcopyd_job_desc *desc, uint64_t *id);

/*
 * Cancel a job: it issues no more I/O, the sub-jobs in flight finish, and
 * its callback runs once, as it would have, with `cancelled` set in a
 * completion.  Returns 0, -EINVAL (kc NULL or id 0), or -ENOENT when no
 * job of this client has that id whose I/O is still going: unknown, its
 * I/O over, or already cancelled.  May be called from any thread,
 * including the client's callbacks.
 */
int kcopyd_cancel(struct kcopyd_client *kc, uint64_t id);

/*
 * Under KCOPYD_IGNORE_ERROR, told of every range of a device that could
 * not be read (write 0, the range went to the destinations as zeros) or
 * written (write 1, the range of that destination kept its old data), as
 * soon as it is found, with the positive errno.  Runs on an I/O worker
 * thread with no lock held, possibly concurrently for different jobs and
 * sub-jobs; must not block long, flush or destroy the client.
 */
typedef void (*kcopyd_bad_range_fn)(uint64_t id, struct block_device *bdev,
				    sector_t sector, sector_t count,
				    int write, int error, void *context);

/*
 * Set the client's bad-range function (NULL: none).  It applies to
 * sub-jobs that start after the call.  Returns 0 or -EINVAL.
 */
int kcopyd_client_set_bad_range(struct kcopyd_client *kc,
				kcopyd_bad_range_fn fn, void *context);

/*
 * Throttle the client's I/O, while jobs run or not.  bytes_per_sec > 0
 * limits the bytes read per second (a token bucket, with a burst of 100 ms
 * of the rate; holes of the source are not counted); percent in 1..99
 * keeps I/O in flight no more than
 * that share of wall-clock time, as the kernel's kcopyd throttle does.
 * 0 (either) means no limit, as does percent 100.  The client still uses
 * no more than its num_pages.  Returns 0, or -EINVAL (kc NULL, percent
 * above 100).
 */
int kcopyd_client_set_throttle(struct kcopyd_client *kc,
			       uint64_t bytes_per_sec, unsigned int percent);

/*
 * Bound the client's queue: with max_jobs > 0, submission (by any of the
 * calls) returns -EAGAIN while max_jobs jobs are outstanding (accepted,
 * callback not yet returned).  0 (the default) means no bound.  Returns 0
 * or -EINVAL.
 */
int kcopyd_client_set_max_jobs(struct kcopyd_client *kc,
			       unsigned int max_jobs);

/* Client counters, a consistent snapshot. */
struct kcopyd_stats {
	unsigned int pages_total;
	unsigned int pages_in_use;
	unsigned int pages_peak;	/* most pages ever in use at once */
	unsigned int threads;
	uint64_t jobs_submitted;
	uint64_t jobs_running;		/* accepted, callback not yet returned */
	uint64_t jobs_done;		/* callback returned, no error */
	uint64_t jobs_failed;		/* callback returned, with an error */
	uint64_t subjobs;
	uint64_t bytes_read;
	uint64_t bytes_written;		/* summed over destinations */
	/* Not filled by the kcopyd_client_get_stats symbol itself: */
	uint64_t bytes_zeroed;		/* summed over destinations */
	uint64_t bytes_holes;		/* source holes, not read */
	uint64_t bytes_zero_data;	/* read, found all zeros, zeroed */
};
/*
 * The symbol fills the fields up to bytes_written, the struct of programs
 * built before bytes_zeroed existed; kcopyd_client_get_stats2 fills what
 * fits in `size` bytes (at least up to bytes_written), and the macro
 * makes a call of kcopyd_client_get_stats compiled now fill every field.
 */
int kcopyd_client_get_stats(struct kcopyd_client *kc, struct kcopyd_stats *st);
int kcopyd_client_get_stats2(struct kcopyd_client *kc, struct kcopyd_stats *st,
			     size_t size);
#define kcopyd_client_get_stats(kc, st) \
	kcopyd_client_get_stats2((kc), (st), sizeof(*(st)))

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *kcopyd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* KCOPYD_H */
