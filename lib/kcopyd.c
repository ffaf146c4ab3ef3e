/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy engine: clients, jobs, sub-jobs and the threads that run them.
 *
 * Thread model
 * ------------
 * Each client owns its threads, so one client blocked on a slow device
 * never occupies the workers of another:
 *   - `threads` I/O workers.  A worker takes the next chunk of the job at
 *     the head of the ready list, reads it from the source into pool pages
 *     with preadv, writes every destination from those same pages with
 *     pwritev, and gives the pages back.  The I/O runs with no lock held.
 *     A chunk that is a hole of the source (or any chunk of a zero job)
 *     takes no pages: it is not read, and each destination is zeroed.
 *     The source's holes are asked a window (one extent) at a time, by
 *     the worker that finds the head job without an answer, with no lock
 *     held; the other workers wait for it as they wait for pages.
 *     A worker also flushes the destinations of a KCOPYD_FLUSH job whose
 *     I/O is over, before anything else, with no lock held.
 *   - one callback thread, which runs the notify functions one at a time,
 *     with no lock held.  So callbacks of one client never run
 *     concurrently, never run on the submitter's stack, and may submit.
 *   - any number of submitting threads (kcopyd_copy, kcopyd_zero,
 *     kcopyd_submit, kcopyd_cancel, flush, the setters).
 *
 * kc->lock protects everything in the client and the mutable part of every
 * job (marked below).  A job lives on up to three lists:
 *   kc->ready     jobs with chunks left to issue and room for one more in
 *                 flight, in round-robin order;
 *   kc->flush     KCOPYD_FLUSH jobs whose I/O is over, waiting for a
 *                 worker to flush their destinations; or
 *   kc->complete  jobs whose I/O is over (and flushed), waiting for their
 *                 callback;
 *   kc->jobs      every accepted job, in submission order, until its
 *                 callback has returned (flush, destroy and cancel look
 *                 there).
 *
 * Cancel takes a job off kc->ready and marks it stopped, as an error does:
 * the chunks in flight finish, and the last one to finish sends the job on.
 * A job with nothing in flight is sent on by the cancel itself.  What is on
 * the destinations is then exactly the union of the chunks whose I/O ran
 * to its end, which each finishing chunk adds to the job's done ranges.
 *
 * The throttle is applied by a worker after it has taken a chunk (so the
 * pages it waits with count against num_pages like any others) and before
 * its I/O; a chunk of a job cancelled meanwhile then does no I/O.
 *
 * Pages are taken all-or-nothing per chunk.  A chunk that cannot get its
 * pages stays at the head of kc->ready and the workers wait for pages to
 * come back, so jobs are served in order and none fails for want of
 * memory.  Pages are returned before the job reaches kc->complete, which
 * is what lets a callback submit more work without deadlock.
 *
 * KCOPYD_VERIFY: a chunk's worker hashes each sector it read (XXH3,
 * 64 bits), writes, then reads each destination's part back into the
 * same pages and compares hashes, all before it gives the pages back; so
 * verifying needs no memory beyond the chunk's pages and its hashes.
 * Holes of such a job are taken in chunks with pages too, to be read
 * back.  A sector that differs is a verify error of that destination,
 * which stops the job or is reported and passed over (IGNORE_ERROR) as a
 * write error is.
 *
 * KCOPYD_DIGEST: a chunk's worker hashes the whole digest blocks of the
 * chunk from the pages it read, with no lock held (a hole's blocks have
 * the hash of a zero block, computed once per client, and go in a page of
 * hashes at a time, so a hole of terabytes costs little).  The digest takes
 * the block hashes in order, and a block cut by a chunk boundary must be
 * streamed in order too, so a forward job hands a baton from chunk to
 * chunk: a chunk waits, as for WRITE_SEQ, until every lower chunk has fed
 * the job's digest state (job->dg_fed, kc->lock, reaches its offset), then
 * feeds it with no lock held - only its block hashes and the pieces of
 * the blocks it shares with its neighbours - and passes the baton on.
 * Chunks are issued in offset order and hold their pages, so the lowest
 * chunk in flight can always go on.  Paged chunks of a digest job end on
 * block boundaries where they can, so that most blocks are one chunk's.
 * A backward job (a copy up into an overlap) runs one chunk at a time
 * from the end: it keeps every block hash (8 bytes per block) and a
 * block's worth of bytes for a block cut by a chunk boundary, whose
 * pieces come highest first, and digests the hashes when its I/O is over.
 *
 * A sub-job's state (its pages, iovecs and zero map included) lives in
 * the sub-job, which is allocated with its worker, never on a stack; a
 * backend that completes I/O from a thread of its own can finish it there.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"

struct kcopyd_client;

/* Where a transfer failed: errno and device sector, as for a destination. */
#define io_fail kcopyd_dest_result

struct kcopyd_job {
	struct kcopyd_client *kc;
	struct list_head ready;		/* on kc->ready (kc->lock) */
	struct list_head complete;	/* on kc->complete (kc->lock) */
	struct list_head all;		/* on kc->jobs (kc->lock) */
	uint64_t seq;
	uint64_t id;			/* seq + 1: never 0 */

	/* Set at submission, read-only afterwards. */
	bool zero;
	bool backward;			/* issue chunks from the end */
	bool allocated;			/* destinations stay allocated */
	bool target_zero;		/* destinations are zeros already */
	bool detect;			/* zero detection after reads */
	unsigned int flags;
	unsigned int max_inflight;
	sector_t total;			/* sectors of the longest region */
	kcopyd_notify_fn fn;
	kcopyd_complete_fn complete_fn;
	kcopyd_progress_fn progress;
	void *context;
	struct io_region src;
	unsigned int max_done;		/* room in done[] */

	/* Protected by kc->lock. */
	sector_t issued;		/* sectors handed to sub-jobs */
	sector_t written;		/* WRITE_SEQ: sectors written in order */
	unsigned int inflight;
	bool stopped;			/* error without IGNORE_ERROR, or cancel */
	bool cancelled;
	bool io_over;			/* on kc->flush or kc->complete */
	/*
	 * The source's allocation, known for [issued, ext_end) only: one
	 * extent, asked when the issue point reaches its end.
	 */
	bool sparse;			/* holes are asked at all */
	bool querying;			/* a worker is asking now */
	bool ext_hole;
	sector_t ext_end;
	int read_err;
	unsigned int write_err;
	unsigned int verify_err;
	struct io_fail read_fail;	/* the lowest failed read */
	struct io_fail *dres;		/* num_dests: lowest failed write */
	sector_t *vsec;			/* num_dests: lowest wrong sector */
	unsigned int nr_done;
	struct kcopyd_range *done;	/* offsets, sorted, merged */

	/*
	 * KCOPYD_DIGEST.  dg_fed counts the sectors fed (kc->lock).
	 * Forward: the chunk at offset dg_fed holds the baton and owns
	 * dg_outer and dg_blk (the block cut at dg_fed, streamed so far).
	 * Backward: the one chunk in flight owns dg_hashes (one per block)
	 * and dg_buf (the pieces of a cut block).
	 */
	bool dg_bad;			/* a read failed (kc->lock) */
	sector_t dg_fed;
	XXH3_state_t *dg_outer;
	XXH3_state_t *dg_blk;
	uint64_t *dg_hashes;
	unsigned char *dg_buf;

	unsigned int num_dests;
	struct io_region dests[];	/* then dres[], done[], vsec[] */
};

/*
 * One chunk of a job, owned by the worker running it.  The arrays are
 * allocated once with the worker and reused by each chunk it takes.
 */
struct sub_job {
	struct kcopyd_job *job;
	sector_t offset;		/* relative to the regions' starts */
	sector_t count;
	bool hole;			/* not read: zero the destinations */
	unsigned int nr_pages;
	unsigned int *pages;		/* max_pages indices */
	struct iovec *iov;		/* max_pages iovecs */
	unsigned char *zmap;		/* zero detection: 1 = piece is zeros */
	uint64_t *hash;			/* verify: XXH3 of each sector read */
	uint64_t *dg_hash;		/* digest: XXH3 of each whole block */
	XXH3_state_t *dg_state;		/* digest: for one block */
	bool skip;			/* job cancelled before its I/O began */
	bool done;			/* its I/O ran to the end everywhere */
	int read_err;
	unsigned int write_err;
	unsigned int verify_err;
	struct io_fail read_fail;
	struct io_fail write_fail[KCOPYD_MAX_DESTS];
	sector_t verify_sector[KCOPYD_MAX_DESTS];
	kcopyd_bad_range_fn bad_range;	/* the client's, when it was taken */
	void *bad_range_context;
	uint64_t bytes_read;		/* what really went through */
	uint64_t bytes_written;
	uint64_t bytes_zeroed;
	uint64_t bytes_holes;
	uint64_t bytes_zero_data;
};

struct worker {
	struct kcopyd_client *kc;
	pthread_t thread;
	struct sub_job sj;
};

/* Blocks of zeros fed to a digest at a time: a page of their hashes. */
#define ZERO_RUN	(KCOPYD_PAGE_SIZE / 8)

struct kcopyd_client {
	pthread_mutex_t lock;
	pthread_cond_t work_cond;	/* a job is ready or pages came back */
	pthread_cond_t seq_cond;	/* a WRITE_SEQ or digest cursor moved */
	pthread_cond_t cb_cond;		/* a job reached kc->complete */
	pthread_cond_t idle_cond;	/* a callback returned */
	pthread_cond_t throttle_cond;	/* the throttle changed (monotonic) */

	/* Read-only after creation. */
	unsigned int nr_threads;
	unsigned int subjob_sectors;
	unsigned int max_pages;		/* pages of one chunk */
	unsigned int max_inflight;
	unsigned int sparse_size;	/* zero detection grain, 0: off */
	bool allocated;			/* every job KCOPYD_ALLOCATED */
	uint64_t zero_hash;		/* XXH3 of a sector of zeros */
	uint64_t zero_block_hash;	/* XXH3 of a digest block of zeros */
	/* zero_block_hash as a digest takes it, ZERO_RUN times */
	unsigned char zero_run[ZERO_RUN * 8];
	struct worker *workers;
	pthread_t cb_thread;

	/* Protected by lock. */
	struct page_pool pool;
	struct list_head ready;
	struct list_head flush;
	struct list_head complete;
	struct list_head jobs;
	uint64_t next_seq;
	bool closing;			/* destroy has begun: refuse new jobs */
	bool quit;			/* threads must exit */
	struct kcopyd_stats stats;
	unsigned int max_jobs;		/* 0: no bound */
	kcopyd_bad_range_fn bad_range;
	void *bad_range_context;

	/*
	 * Throttle.  Byte rate: a token bucket whose state is the time the
	 * next chunk may start (a burst of 100 ms of the rate).  Share
	 * of time: the kernel's accounting of the time with I/O in flight
	 * against all the time, halved as it passes about a second.
	 */
	uint64_t rate;			/* bytes per second, 0: none */
	unsigned int percent;		/* 1..99, 0: none */
	uint64_t tb_next_us;
	uint64_t last_us;
	uint64_t io_period_us;
	uint64_t total_period_us;
	unsigned int num_io;		/* chunks doing I/O */
};

/*
 * The client this thread works for, if it is one of a client's own
 * threads: flush and destroy called from there would wait for themselves.
 */
static __thread struct kcopyd_client *engine_thread;

static const char zero_sector[KCOPYD_SECTOR_SIZE];
static const char zero_page[KCOPYD_PAGE_SIZE];

/* A digest block, in sectors. */
#define DG_BLOCK_SECTORS	(KCOPYD_DIGEST_BLOCK >> KCOPYD_SECTOR_SHIFT)

static void free_job(struct kcopyd_job *job);

const char *kcopyd_version(void)
{
	return PACKAGE_VERSION;
}

static void lock(struct kcopyd_client *kc)
{
	pth(pthread_mutex_lock(&kc->lock));
}

static void unlock(struct kcopyd_client *kc)
{
	pth(pthread_mutex_unlock(&kc->lock));
}

static sector_t min_sector(sector_t a, sector_t b)
{
	return a < b ? a : b;
}

/* --- Scheduling (all under kc->lock) -------------------------------------- */

static bool job_can_issue(const struct kcopyd_job *job)
{
	return !job->stopped && job->issued < job->total &&
	       job->inflight < job->max_inflight;
}

static void queue_ready(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	if (list_empty(&job->ready) && job_can_issue(job)) {
		list_add_tail(&job->ready, &kc->ready);
		pth(pthread_cond_signal(&kc->work_cond));
	}
}

static void queue_complete(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	list_add_tail(&job->complete, &kc->complete);
	pth(pthread_cond_signal(&kc->cb_cond));
}

/*
 * The job's I/O is over: its destinations are flushed first if it asked
 * for that and anything was issued, then its callback is due.
 */
static void job_io_over(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	job->io_over = true;
	if ((job->flags & KCOPYD_FLUSH) && job->issued) {
		list_add_tail(&job->complete, &kc->flush);
		pth(pthread_cond_signal(&kc->work_cond));
	} else {
		queue_complete(kc, job);
	}
}

/*
 * Add [offset, offset + count) to the job's done ranges, merging.  The
 * ranges never outnumber the chunks that can be in flight at once plus
 * one: chunks are issued in order, and after the first error or a cancel
 * no new one is, so the gaps are chunks that were in flight together.
 */
static void add_done(struct kcopyd_job *job, sector_t offset, sector_t count)
{
	struct kcopyd_range *d = job->done;
	sector_t end = offset + count;
	unsigned int i = 0, j;

	while (i < job->nr_done && d[i].sector + d[i].count < offset)
		i++;
	/* d[i..j) touch or overlap the new range: merge them into it. */
	for (j = i; j < job->nr_done && d[j].sector <= end; j++) {
		sector_t e = d[j].sector + d[j].count;

		if (d[j].sector < offset)
			offset = d[j].sector;
		if (e > end)
			end = e;
	}
	if (j == i) {
		if (job->nr_done == job->max_done)
			engine_die("done ranges overflow", EOVERFLOW, __FILE__,
				   __LINE__);
		memmove(&d[i + 1], &d[i], (job->nr_done - i) * sizeof(*d));
		job->nr_done++;
	} else if (j > i + 1) {
		memmove(&d[i + 1], &d[j], (job->nr_done - j) * sizeof(*d));
		job->nr_done -= j - i - 1;
	}
	d[i].sector = offset;
	d[i].count = end - offset;
}

/* Keep the failure at the lowest sector: the order of chunks is not fixed. */
static void note_fail(struct io_fail *to, const struct io_fail *f)
{
	if (f->error && (!to->error || f->error_sector < to->error_sector))
		*to = *f;
}

/*
 * A paged chunk of a digest job of n sectors: cut it back so that it ends
 * (starts, going backward) on a block boundary, if it holds one.
 */
static sector_t digest_align(const struct kcopyd_job *job, sector_t n)
{
	sector_t lo, hi, cut;

	if (job->backward) {
		hi = job->total - job->issued;
		lo = hi - n;
		cut = (lo + DG_BLOCK_SECTORS - 1) / DG_BLOCK_SECTORS *
		      DG_BLOCK_SECTORS;
		return lo && cut < hi ? hi - cut : n;
	}
	lo = job->issued;
	hi = lo + n;
	cut = hi / DG_BLOCK_SECTORS * DG_BLOCK_SECTORS;
	return hi < job->total && cut > lo ? cut - lo : n;
}

enum take {
	TAKE_NONE,			/* nothing to do now: wait */
	TAKE_CHUNK,			/* a chunk to run */
	TAKE_QUERY,			/* ask the head job's next extent */
};

/*
 * Carve the next chunk off the job at the head of the ready list.
 * Returns TAKE_NONE if there is no job, if the head job's chunk needs
 * more pages than are free, or if its next extent is being asked: then
 * the caller waits, and the head keeps its place.  A chunk of a hole (or
 * of a zero job) needs no pages, and may be much longer than a sub-job.
 */
static enum take take_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job;
	bool paged;
	sector_t n;

	if (list_empty(&kc->ready))
		return TAKE_NONE;
	job = list_entry(kc->ready.next, struct kcopyd_job, ready);
	if (job->querying)
		return TAKE_NONE;
	if (job->sparse && job->issued >= job->ext_end) {
		/* In flight, so that no error elsewhere completes the job. */
		job->querying = true;
		job->inflight++;
		sj->job = job;
		return TAKE_QUERY;
	}

	sj->hole = job->zero || (job->sparse && job->ext_hole);
	/* A verified hole is read back: it needs pages. */
	paged = !sj->hole || (job->flags & KCOPYD_VERIFY);
	n = job->total - job->issued;
	if (job->sparse)
		n = min_sector(n, job->ext_end - job->issued);
	n = min_sector(n, paged ? kc->subjob_sectors : HOLE_CHUNK_SECTORS);
	if ((job->flags & KCOPYD_DIGEST) && paged)
		n = digest_align(job, n);
	sj->nr_pages = paged ? (n + SECTORS_PER_PAGE - 1) / SECTORS_PER_PAGE :
			       0;
	if (sj->nr_pages > kc->pool.nr_free)
		return TAKE_NONE;

	pool_get(&kc->pool, sj->pages, sj->nr_pages);
	sj->job = job;
	sj->count = n;
	sj->offset = job->backward ? job->total - job->issued - n :
				     job->issued;
	sj->skip = false;
	sj->done = false;
	sj->read_err = 0;
	sj->write_err = 0;
	sj->verify_err = 0;
	sj->read_fail.error = 0;
	for (unsigned int i = 0; i < job->num_dests; i++)
		sj->write_fail[i].error = 0;
	sj->bad_range = kc->bad_range;
	sj->bad_range_context = kc->bad_range_context;
	sj->bytes_read = 0;
	sj->bytes_written = 0;
	sj->bytes_zeroed = 0;
	sj->bytes_holes = 0;
	sj->bytes_zero_data = 0;
	job->issued += n;
	job->inflight++;
	kc->stats.subjobs++;

	/* Round robin: the job goes to the back, if it has more to issue. */
	list_del_init(&job->ready);
	queue_ready(kc, job);
	return TAKE_CHUNK;
}

/*
 * Ask the source's allocation from the issue point on, with no lock
 * held (it is a system call, or a round trip for a remote device).
 * Nothing is issued from the job meanwhile, so `issued` cannot move; the
 * query counts as in flight, so the job cannot complete under it.  A
 * device that fails to say is read in full.
 */
static void query_extent(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	sector_t at = job->issued, left = job->total - job->issued, n;
	uint64_t count = 0;
	bool hole = false;
	int r;

	unlock(kc);
	r = bdev_extent(job->src.bdev,
			(job->src.sector + at) << KCOPYD_SECTOR_SHIFT,
			left << KCOPYD_SECTOR_SHIFT, &hole, &count);
	lock(kc);
	/* A hole is used in whole sectors only; data is rounded up. */
	n = hole ? count >> KCOPYD_SECTOR_SHIFT :
		   (count + KCOPYD_SECTOR_SIZE - 1) >> KCOPYD_SECTOR_SHIFT;
	if (r || !n) {
		hole = false;
		n = left;
		if (r)
			job->sparse = false;
	}
	job->ext_hole = hole;
	job->ext_end = at + min_sector(n, left);
	job->querying = false;
	job->inflight--;
	pth(pthread_cond_broadcast(&kc->work_cond));
	/* A chunk that failed meanwhile, or a cancel, may have stopped it. */
	if (job->inflight == 0 && job->stopped)
		job_io_over(kc, job);
	else
		queue_ready(kc, job);
}

/* The chunk's I/O is over: give back its pages and account for it. */
static void finish_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;

	kc->stats.bytes_read += sj->bytes_read;
	kc->stats.bytes_written += sj->bytes_written;
	kc->stats.bytes_zeroed += sj->bytes_zeroed;
	kc->stats.bytes_holes += sj->bytes_holes;
	kc->stats.bytes_zero_data += sj->bytes_zero_data;
	pool_put(&kc->pool, sj->pages, sj->nr_pages);
	pth(pthread_cond_broadcast(&kc->work_cond));

	job->inflight--;
	if (sj->read_err)
		job->read_err = 1;
	job->write_err |= sj->write_err;
	note_fail(&job->read_fail, &sj->read_fail);
	for (unsigned int i = 0; i < job->num_dests; i++) {
		unsigned int bit = 1u << i;

		note_fail(&job->dres[i], &sj->write_fail[i]);
		if ((sj->verify_err & bit) &&
		    (!(job->verify_err & bit) ||
		     sj->verify_sector[i] < job->vsec[i]))
			job->vsec[i] = sj->verify_sector[i];
	}
	job->verify_err |= sj->verify_err;
	if (sj->done)
		add_done(job, sj->offset, sj->count);
	if ((sj->read_err || sj->write_err || sj->verify_err) &&
	    !(job->flags & KCOPYD_IGNORE_ERROR)) {
		job->stopped = true;
		list_del_init(&job->ready);
	}
	if (job->flags & KCOPYD_WRITE_SEQ) {
		job->written = sj->offset + sj->count;
		pth(pthread_cond_broadcast(&kc->seq_cond));
	}

	if (job->inflight == 0 &&
	    (job->stopped || job->issued == job->total))
		job_io_over(kc, job);
	else
		queue_ready(kc, job);
}

/* --- Throttle (under kc->lock) --------------------------------------------- */

#define ACCOUNT_INTERVAL_SHIFT	20	/* about a second, in microseconds */
#define THROTTLE_SLEEP_US	100000
#define THROTTLE_MAX_SLEEPS	10
#define THROTTLE_BURST_US	100000

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Wait, releasing the lock, until `until` or a throttle change. */
static void throttle_sleep(struct kcopyd_client *kc, uint64_t until)
{
	struct timespec ts = {
		.tv_sec = (time_t)(until / 1000000),
		.tv_nsec = (long)(until % 1000000) * 1000,
	};
	int r = pthread_cond_timedwait(&kc->throttle_cond, &kc->lock, &ts);

	if (r && r != ETIMEDOUT)
		engine_die("pthread_cond_timedwait", r, __FILE__, __LINE__);
}

/* The kernel's accounting of time with I/O in flight (io_job_start). */
static void account_period(struct kcopyd_client *kc, uint64_t now)
{
	uint64_t diff = now - kc->last_us;

	kc->last_us = now;
	if (kc->num_io)
		kc->io_period_us += diff;
	kc->total_period_us += diff;
	if (kc->io_period_us > kc->total_period_us)
		kc->io_period_us = kc->total_period_us;
	if (kc->total_period_us >= (1u << ACCOUNT_INTERVAL_SHIFT)) {
		unsigned int shift = 0;

		for (uint64_t t = kc->total_period_us >> ACCOUNT_INTERVAL_SHIFT;
		     t; t >>= 1)
			shift++;
		kc->total_period_us >>= shift;
		kc->io_period_us >>= shift;
	}
}

/*
 * Before a chunk's I/O of `bytes`: wait for the byte rate's turn, and
 * while I/O has been in flight more than the allowed share of the time
 * (at most ten sleeps of 100 ms, as the kernel).  The settings are read
 * afresh after every wait, so a change takes effect at once.
 */
static void throttle_start(struct kcopyd_client *kc, struct kcopyd_job *job,
			   uint64_t bytes)
{
	unsigned int slept = 0;
	uint64_t now;

	for (;;) {
		now = now_us();
		if (job->cancelled) {
			kc->num_io++;
			return;
		}
		if (kc->rate && kc->tb_next_us > now) {
			throttle_sleep(kc, kc->tb_next_us);
			continue;
		}
		if (kc->percent) {
			account_period(kc, now);
			if (kc->io_period_us * 100 >
			    (uint64_t)kc->percent * kc->total_period_us &&
			    slept < THROTTLE_MAX_SLEEPS) {
				slept++;
				throttle_sleep(kc, now + THROTTLE_SLEEP_US);
				continue;
			}
		}
		break;
	}
	/*
	 * A worker that comes late (a slow device, a loaded machine) may
	 * catch up on up to THROTTLE_BURST_US of the rate's time, so the
	 * rate is kept over the whole copy, not only between chunks.
	 */
	if (kc->rate)
		kc->tb_next_us = (kc->tb_next_us + THROTTLE_BURST_US > now ?
				  kc->tb_next_us : now - THROTTLE_BURST_US) +
				 bytes * 1000000 / kc->rate;
	kc->num_io++;
}

/* After a chunk's I/O (io_job_finish). */
static void throttle_finish(struct kcopyd_client *kc)
{
	kc->num_io--;
	if (kc->percent && !kc->num_io) {
		uint64_t now = now_us();

		kc->io_period_us += now - kc->last_us;
		kc->total_period_us += now - kc->last_us;
		kc->last_us = now;
		if (kc->io_period_us > kc->total_period_us)
			kc->io_period_us = kc->total_period_us;
	}
}

/* --- I/O (no lock held) ------------------------------------------------------ */

static sector_t dest_len(const struct io_region *d, const struct sub_job *sj)
{
	if (sj->offset >= d->count)
		return 0;
	return min_sector(sj->count, d->count - sj->offset);
}

static uint64_t bytes_of(sector_t sectors)
{
	return (uint64_t)sectors << KCOPYD_SECTOR_SHIFT;
}

/* The address of byte `off` of the chunk, in its pool pages. */
static char *chunk_byte(struct kcopyd_client *kc, struct sub_job *sj,
			size_t off)
{
	return kc->pool.mem +
	       (size_t)sj->pages[off / KCOPYD_PAGE_SIZE] * KCOPYD_PAGE_SIZE +
	       off % KCOPYD_PAGE_SIZE;
}

/* iovecs for bytes [skip, skip + bytes) of the chunk's pages. */
static int chunk_iov(struct kcopyd_client *kc, struct sub_job *sj,
		     size_t skip, size_t bytes)
{
	int cnt = 0;

	if (skip == 0)
		return pool_iov(&kc->pool, sj->pages, sj->nr_pages, bytes,
				sj->iov);
	while (bytes) {
		size_t in_page = KCOPYD_PAGE_SIZE - skip % KCOPYD_PAGE_SIZE;
		size_t n = bytes < in_page ? bytes : in_page;
		char *p = chunk_byte(kc, sj, skip);

		if (cnt && (char *)sj->iov[cnt - 1].iov_base +
				   sj->iov[cnt - 1].iov_len == p)
			sj->iov[cnt - 1].iov_len += n;
		else
			sj->iov[cnt++] = (struct iovec){ p, n };
		skip += n;
		bytes -= n;
	}
	return cnt;
}

/*
 * One transfer of `bytes` of the chunk's pages, starting at byte `skip` of
 * the chunk, at byte offset `at` of the device.  On failure *fail gets
 * the errno and the sector where the transfer stopped.
 */
static int chunk_io(struct kcopyd_client *kc, struct sub_job *sj,
		    struct block_device *bdev, bool write, size_t skip,
		    size_t bytes, off_t at, struct io_fail *fail)
{
	int cnt = chunk_iov(kc, sj, skip, bytes);
	uint64_t failed_at = (uint64_t)at;
	int r = bdev_rw_full(bdev, write, sj->iov, cnt, at, &failed_at);

	if (r) {
		fail->error = -r;
		fail->error_sector = failed_at >> KCOPYD_SECTOR_SHIFT;
	}
	return r;
}

/* Tell the bad-range function of bytes [start, end) of a device. */
static void report_bad(struct sub_job *sj, struct block_device *bdev,
		       bool write, uint64_t start, uint64_t end, int error)
{
	if (!sj->bad_range || start == end)
		return;
	sj->bad_range(sj->job->id, bdev, start >> KCOPYD_SECTOR_SHIFT,
		      (end - start + KCOPYD_SECTOR_SIZE - 1) >>
			      KCOPYD_SECTOR_SHIFT,
		      write, error, sj->bad_range_context);
}

/* Keep the first failure of a sub-job's transfer to one device. */
static void first_fail(struct io_fail *to, int r, uint64_t at)
{
	if (!to->error) {
		to->error = -r;
		to->error_sector = at >> KCOPYD_SECTOR_SHIFT;
	}
}

/*
 * A transfer of the whole chunk failed and the job goes on after errors:
 * retry it one block at a time, as a rescue copy does, so that only the
 * blocks that really fail are lost.  A block that cannot be read becomes
 * zeros; one that cannot be written is left as it was.  Each run of lost
 * blocks with one errno goes to the bad-range function, and *fail (reset
 * here) gets the first.  Returns the bytes that went through.
 */
static uint64_t salvage(struct kcopyd_client *kc, struct sub_job *sj,
			struct block_device *bdev, bool write, size_t skip,
			size_t len, off_t at, struct io_fail *fail)
{
	size_t bs = bdev->block_size;
	uint64_t good = 0, bad_start = 0, bad_end = 0;
	int bad_err = 0;

	fail->error = 0;
	for (size_t off = 0; off < len; off += bs) {
		size_t n = len - off < bs ? len - off : bs;
		uint64_t here = (uint64_t)at + off;
		struct io_fail f;

		if (!chunk_io(kc, sj, bdev, write, skip + off, n, at + off,
			      &f)) {
			good += n;
			continue;
		}
		if (!write)
			memset(chunk_byte(kc, sj, skip + off), 0, n);
		if (!fail->error)
			*fail = f;
		if (bad_err == f.error && bad_end == here) {
			bad_end += n;
			continue;
		}
		report_bad(sj, bdev, write, bad_start, bad_end, bad_err);
		bad_err = f.error;
		bad_start = here;
		bad_end = here + n;
	}
	report_bad(sj, bdev, write, bad_start, bad_end, bad_err);
	/* The whole transfer failed, but no block did when retried. */
	if (!fail->error) {
		fail->error = EIO;
		fail->error_sector = (uint64_t)at >> KCOPYD_SECTOR_SHIFT;
	}
	return good;
}

/*
 * The same for a zeroing that failed: halve the range until the pieces
 * that fail are single blocks, so a failing block in a hole of a
 * gigabyte costs a few dozen tries, not millions.
 */
static uint64_t salvage_zero(struct sub_job *sj, struct block_device *bdev,
			     uint64_t at, uint64_t len, bool allocated,
			     struct io_fail *fail)
{
	uint64_t bs = bdev->block_size, half;
	int r = bdev_zero(bdev, at, len, allocated);

	if (!r)
		return len;
	if (len <= bs) {
		first_fail(fail, r, at);
		report_bad(sj, bdev, true, at, at + len, -r);
		return 0;
	}
	half = (len / 2 + bs - 1) / bs * bs;
	return salvage_zero(sj, bdev, at, half, allocated, fail) +
	       salvage_zero(sj, bdev, at + half, len - half, allocated, fail);
}

/* Zero bytes [at, at + len) of destination i, with IGNORE_ERROR salvage. */
static void zero_dest(struct sub_job *sj, unsigned int i, uint64_t at,
		      uint64_t len)
{
	struct kcopyd_job *job = sj->job;
	struct block_device *bdev = job->dests[i].bdev;
	int r;

	if (job->target_zero)
		return;
	r = bdev_zero(bdev, at, len, job->allocated);
	if (!r) {
		sj->bytes_zeroed += len;
		return;
	}
	sj->write_err |= 1u << i;
	if (!(job->flags & KCOPYD_IGNORE_ERROR)) {
		first_fail(&sj->write_fail[i], r, at);
		return;
	}
	sj->bytes_zeroed += salvage_zero(sj, bdev, at, len, job->allocated,
					 &sj->write_fail[i]);
	first_fail(&sj->write_fail[i], r, at);	/* no block failed alone */
}

static void read_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	size_t bytes = bytes_of(sj->count);
	off_t at = (off_t)bytes_of(job->src.sector + sj->offset);

	if (!chunk_io(kc, sj, job->src.bdev, false, 0, bytes, at,
		      &sj->read_fail)) {
		sj->bytes_read = bytes;
		return;
	}
	sj->read_err = 1;
	if (job->flags & KCOPYD_IGNORE_ERROR)
		sj->bytes_read = salvage(kc, sj, job->src.bdev, false, 0,
					 bytes, at, &sj->read_fail);
}

/* Does [off, off + len) of the chunk read as zeros? */
static bool chunk_is_zero(struct kcopyd_client *kc, struct sub_job *sj,
			  size_t off, size_t len)
{
	while (len) {
		size_t in_page = KCOPYD_PAGE_SIZE - off % KCOPYD_PAGE_SIZE;
		size_t n = len < in_page ? len : in_page;
		const char *p = chunk_byte(kc, sj, off);

		if (p[0] || memcmp(p, p + 1, n - 1))
			return false;
		off += n;
		len -= n;
	}
	return true;
}

/*
 * Zero detection: mark the pieces of the chunk that read as zeros.
 * Returns how many there are (0: write the chunk as it is).
 */
static unsigned int detect_zeros(struct kcopyd_client *kc,
				 struct sub_job *sj, unsigned int *npieces)
{
	size_t bytes = bytes_of(sj->count), g = kc->sparse_size;
	unsigned int n = (unsigned int)((bytes + g - 1) / g), zeros = 0;

	for (unsigned int i = 0; i < n; i++) {
		size_t off = (size_t)i * g;
		size_t len = bytes - off < g ? bytes - off : g;

		sj->zmap[i] = chunk_is_zero(kc, sj, off, len);
		if (sj->zmap[i]) {
			zeros++;
			sj->bytes_zero_data += len;
		}
	}
	*npieces = n;
	return zeros;
}

/* Write the chunk to destination i: whole, or by runs of data. */
static void write_dest(struct kcopyd_client *kc, struct sub_job *sj,
		       unsigned int i, unsigned int npieces, bool runs)
{
	struct kcopyd_job *job = sj->job;
	const struct io_region *d = &job->dests[i];
	size_t len = bytes_of(dest_len(d, sj)), g = kc->sparse_size;
	off_t at = (off_t)bytes_of(d->sector + sj->offset);
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	struct io_fail f;

	if (!len)
		return;
	if (!runs) {
		npieces = 1;
		g = len;
	}
	for (unsigned int p = 0; p < npieces;) {
		unsigned int q = p + 1;
		size_t skip = (size_t)p * g, n;

		while (runs && q < npieces && sj->zmap[q] == sj->zmap[p])
			q++;
		n = (size_t)q * g < len ? (size_t)q * g - skip : len - skip;
		if (runs && sj->zmap[p])
			zero_dest(sj, i, (uint64_t)at + skip, n);
		else if (!chunk_io(kc, sj, d->bdev, true, skip, n,
				     at + (off_t)skip, &f)) {
			sj->bytes_written += n;
		} else {
			sj->write_err |= 1u << i;
			if (ignore)
				sj->bytes_written += salvage(kc, sj, d->bdev,
							     true, skip, n,
							     at + (off_t)skip,
							     &f);
			if (!sj->write_fail[i].error)
				sj->write_fail[i] = f;
		}
		p = q;
	}
}

static void write_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	unsigned int npieces = 0;
	bool runs = job->detect && detect_zeros(kc, sj, &npieces);

	for (unsigned int i = 0; i < job->num_dests; i++)
		write_dest(kc, sj, i, npieces, runs);
}

/*
 * A hole of the source, or a chunk of a zero job: nothing is read, but
 * the source's read fault rules still apply to the range, and each
 * destination is zeroed.
 */
static bool read_hole(struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	uint64_t len = bytes_of(sj->count);

	uint64_t at = bytes_of(job->src.sector + sj->offset);
	int r;

	if (job->zero)
		return true;
	r = bdev_read_hole(job->src.bdev, at, len);
	if (r) {
		sj->read_err = 1;
		first_fail(&sj->read_fail, r, at);
		if (job->flags & KCOPYD_IGNORE_ERROR)
			report_bad(sj, job->src.bdev, false, at, at + len,
				   -r);
		return job->flags & KCOPYD_IGNORE_ERROR;
	}
	sj->bytes_holes = len;
	return true;
}

static void zero_chunk(struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;

	for (unsigned int i = 0; i < job->num_dests; i++) {
		const struct io_region *d = &job->dests[i];
		uint64_t len = bytes_of(dest_len(d, sj));

		if (len)
			zero_dest(sj, i, bytes_of(d->sector + sj->offset),
				  len);
	}
}

/*
 * WRITE_SEQ: wait until every earlier chunk of the job has been written.
 * Chunks are issued in offset order and already hold their pages, so the
 * lowest chunk in flight can always go on: no wait here can deadlock,
 * whatever the size of the pool.
 */
static bool wait_turn(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	bool go;

	lock(kc);
	while (job->written != sj->offset)
		pth(pthread_cond_wait(&kc->seq_cond, &kc->lock));
	/*
	 * After an error or a cancel, leave each destination holding a
	 * clean prefix.
	 */
	go = !job->stopped || (job->flags & KCOPYD_IGNORE_ERROR);
	unlock(kc);
	return go;
}

/*
 * A chunk of a copy to one destination goes file to file by copy offload
 * (copy_file_range(2)): the kernel moves each byte once, where preadv
 * into the pool and pwritev out of it move it twice (on tmpfs a fifth
 * less CPU than dd; see bench/README.md).  It cannot see zeros, so it
 * serves only jobs without zero detection.  With several destinations,
 * reading once into the pool and writing from there moves fewer bytes, so
 * they keep that path.  The chunk holds its pool pages all the same, so
 * scheduling and the page cap do not change.  Returns false, with nothing
 * counted, if the chunk must take the ordinary path: that path then redoes
 * the whole chunk and tells a read error from a write error, which
 * copy_file_range cannot.
 */
static bool copy_chunk_range(struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	size_t bytes = bytes_of(sj->count);

	if (job->zero || job->detect || job->num_dests != 1 ||
	    (job->flags & (KCOPYD_WRITE_SEQ | KCOPYD_VERIFY | KCOPYD_DIGEST)))
		return false;
	if (!bdev_copy_range(job->src.bdev,
			     bytes_of(job->src.sector + sj->offset),
			     job->dests[0].bdev,
			     bytes_of(job->dests[0].sector + sj->offset),
			     bytes))
		return false;
	sj->bytes_read = bytes;
	sj->bytes_written = bytes;
	return true;
}

/* Verify: the hash of each sector the destinations should now hold. */
static void hash_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	for (sector_t s = 0; s < sj->count; s++)
		sj->hash[s] = sj->hole ? kc->zero_hash :
			XXH3_64bits(chunk_byte(kc, sj, bytes_of(s)),
				    KCOPYD_SECTOR_SIZE);
}

/*
 * Read destination i's part of the chunk back into the chunk's pages and
 * compare it with the hashes.  The first wrong sector is kept; under
 * IGNORE_ERROR every run of wrong sectors goes to the bad-range function
 * as a write of that destination that failed with EILSEQ.  A read back
 * that fails leaves the rest of the part unvouched for: wrong, from
 * where it failed.
 */
static void verify_dest(struct kcopyd_client *kc, struct sub_job *sj,
			unsigned int i)
{
	struct kcopyd_job *job = sj->job;
	const struct io_region *d = &job->dests[i];
	sector_t n = dest_len(d, sj), s, bad_end = n, run = n;
	uint64_t at = bytes_of(d->sector + sj->offset), failed_at = at;
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	int cnt, r;

	if (!n)
		return;
	cnt = chunk_iov(kc, sj, 0, bytes_of(n));
	r = bdev_read_back(d->bdev, sj->iov, cnt, (off_t)at, &failed_at);
	if (r)
		bad_end = (failed_at - at) >> KCOPYD_SECTOR_SHIFT;
	for (s = 0; s <= n; s++) {
		bool bad = s < n && (s >= bad_end ||
			XXH3_64bits(chunk_byte(kc, sj, bytes_of(s)),
				    KCOPYD_SECTOR_SIZE) != sj->hash[s]);

		if (bad && run == n) {
			run = s;
			if (!(sj->verify_err & (1u << i))) {
				sj->verify_err |= 1u << i;
				sj->verify_sector[i] = d->sector + sj->offset +
						       s;
			}
		} else if (!bad && run != n) {
			if (ignore)
				report_bad(sj, d->bdev, true,
					   at + bytes_of(run),
					   at + bytes_of(s), EILSEQ);
			run = n;
			if (!ignore)
				break;
		}
	}
}

/* Verify every destination whose writes of the chunk went through. */
static void verify_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	for (unsigned int i = 0; i < sj->job->num_dests; i++)
		if (!(sj->write_err & (1u << i)))
			verify_dest(kc, sj, i);
}

/* --- Digest (no lock held, but for the baton) ------------------------------- */

/* Feed bytes [off, off + len) of the chunk to st: zeros for a hole. */
static void digest_feed(struct kcopyd_client *kc, struct sub_job *sj,
			XXH3_state_t *st, size_t off, size_t len)
{
	while (len) {
		size_t in_page = KCOPYD_PAGE_SIZE - off % KCOPYD_PAGE_SIZE;
		size_t n = len < in_page ? len : in_page;

		XXH3_64bits_update(st, sj->hole ? zero_page :
						 chunk_byte(kc, sj, off), n);
		off += n;
		len -= n;
	}
}

/* The hash of the block [lo, hi) of the job, all of it in the chunk. */
static uint64_t digest_block(struct kcopyd_client *kc, struct sub_job *sj,
			     sector_t lo, sector_t hi)
{
	if (sj->hole && hi - lo == DG_BLOCK_SECTORS)
		return kc->zero_block_hash;
	XXH3_64bits_reset(sj->dg_state);
	digest_feed(kc, sj, sj->dg_state, bytes_of(lo - sj->offset),
		    bytes_of(hi - lo));
	return XXH3_64bits_digest(sj->dg_state);
}

/* The digest block around offset pos: [*lo, *hi). */
static void block_of(const struct kcopyd_job *job, sector_t pos,
		     sector_t *lo, sector_t *hi)
{
	*lo = pos / DG_BLOCK_SECTORS * DG_BLOCK_SECTORS;
	*hi = min_sector(*lo + DG_BLOCK_SECTORS, job->total);
}

/* A block hash goes into the digest as 8 bytes, little-endian. */
static void put_hash(XXH3_state_t *st, uint64_t h)
{
	unsigned char le[8];

	for (unsigned int i = 0; i < 8; i++)
		le[i] = (unsigned char)(h >> (8 * i));
	XXH3_64bits_update(st, le, sizeof(le));
}

/* n whole blocks of zeros: their hashes, ZERO_RUN at a time. */
static void put_zero_blocks(struct kcopyd_client *kc, XXH3_state_t *st,
			    sector_t n)
{
	while (n) {
		sector_t k = min_sector(n, ZERO_RUN);

		XXH3_64bits_update(st, kc->zero_run, k * sizeof(uint64_t));
		n -= k;
	}
}

/* Forward, before the baton: the hashes of the chunk's whole blocks. */
static void digest_hash_blocks(struct kcopyd_client *kc, struct sub_job *sj)
{
	sector_t end = sj->offset + sj->count, lo, hi;
	unsigned int i = 0;

	for (sector_t pos = sj->offset; pos < end; pos = hi) {
		block_of(sj->job, pos, &lo, &hi);
		if (lo >= sj->offset && hi <= end)
			sj->dg_hash[i++] = digest_block(kc, sj, lo, hi);
	}
}

/*
 * Forward, holding the baton: the block cut at the chunk's start is
 * finished, the whole blocks' hashes follow, and the block cut at its end
 * is begun.
 */
static void digest_forward(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	sector_t end = sj->offset + sj->count, lo, hi, to;
	unsigned int i = 0;

	for (sector_t pos = sj->offset; pos < end; pos = to) {
		block_of(job, pos, &lo, &hi);
		to = min_sector(hi, end);
		/* A hole's whole blocks in one go: a hole may be terabytes. */
		if (sj->hole && pos == lo &&
		    end - pos >= DG_BLOCK_SECTORS) {
			to = pos + (end - pos) / DG_BLOCK_SECTORS *
				   DG_BLOCK_SECTORS;
			put_zero_blocks(kc, job->dg_outer,
					(to - pos) / DG_BLOCK_SECTORS);
			continue;
		}
		if (pos == lo && to == hi) {
			put_hash(job->dg_outer,
				 sj->hole ? digest_block(kc, sj, lo, hi) :
					    sj->dg_hash[i++]);
			continue;
		}
		if (pos == lo)
			XXH3_64bits_reset(job->dg_blk);
		digest_feed(kc, sj, job->dg_blk, bytes_of(pos - sj->offset),
			    bytes_of(to - pos));
		if (to == hi)
			put_hash(job->dg_outer, XXH3_64bits_digest(job->dg_blk));
	}
}

/*
 * Backward, the one chunk in flight: each block's hash into its slot;
 * the pieces of a cut block gather in dg_buf, highest first, and it is
 * hashed when its lowest piece comes.
 */
static void digest_backward(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	sector_t end = sj->offset + sj->count, lo, hi, to;

	for (sector_t pos = sj->offset; pos < end; pos = to) {
		block_of(job, pos, &lo, &hi);
		to = min_sector(hi, end);
		if (pos == lo && to == hi) {
			job->dg_hashes[lo / DG_BLOCK_SECTORS] =
				digest_block(kc, sj, lo, hi);
			continue;
		}
		for (size_t off = bytes_of(pos - sj->offset),
			    left = bytes_of(to - pos),
			    at = bytes_of(pos - lo); left;) {
			size_t in_page = KCOPYD_PAGE_SIZE -
					 off % KCOPYD_PAGE_SIZE;
			size_t n = left < in_page ? left : in_page;

			memcpy(job->dg_buf + at, chunk_byte(kc, sj, off), n);
			off += n;
			at += n;
			left -= n;
		}
		if (pos == lo)
			job->dg_hashes[lo / DG_BLOCK_SECTORS] =
				XXH3_64bits(job->dg_buf, bytes_of(hi - lo));
	}
}

/*
 * The chunk's part of the digest, once it is read (or skipped, or its
 * read failed: then the digest is spoilt, and the baton passes on all
 * the same).
 */
static void digest_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	bool ok = !sj->read_err && !sj->skip, feed;

	if (job->backward) {
		/* Backward jobs are never sparse: no hole to see here. */
		if (ok)
			digest_backward(kc, sj);
		lock(kc);
		if (ok)
			job->dg_fed += sj->count;
		else
			job->dg_bad = true;
		unlock(kc);
		return;
	}
	if (ok && !sj->hole)
		digest_hash_blocks(kc, sj);
	lock(kc);
	while (job->dg_fed != sj->offset)
		pth(pthread_cond_wait(&kc->seq_cond, &kc->lock));
	if (!ok)
		job->dg_bad = true;
	feed = !job->dg_bad;
	unlock(kc);
	if (feed)
		digest_forward(kc, sj);
	lock(kc);
	job->dg_fed += sj->count;
	pth(pthread_cond_broadcast(&kc->seq_cond));
	unlock(kc);
}

/* At the callback: the digest, if every sector of the source went in. */
static bool job_digest(struct kcopyd_job *job, uint64_t *digest)
{
	if (!(job->flags & KCOPYD_DIGEST) || job->dg_bad || job->cancelled ||
	    job->dg_fed != job->total)
		return false;
	if (job->backward) {
		sector_t n = (job->total + DG_BLOCK_SECTORS - 1) /
			     DG_BLOCK_SECTORS;

		XXH3_64bits_reset(job->dg_outer);
		for (sector_t i = 0; i < n; i++)
			put_hash(job->dg_outer, job->dg_hashes[i]);
	}
	*digest = XXH3_64bits_digest(job->dg_outer);
	return true;
}

static void run_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	bool go;

	if (!sj->hole && copy_chunk_range(sj)) {
		sj->done = true;
		if (job->progress)
			job->progress(sj->count, job->context);
		return;
	}
	if (sj->hole) {
		go = read_hole(sj);
	} else {
		read_chunk(kc, sj);
		go = !sj->read_err || ignore;
	}
	if (job->flags & KCOPYD_DIGEST)
		digest_chunk(kc, sj);
	if (job->flags & KCOPYD_WRITE_SEQ)
		go = wait_turn(kc, sj) && go;
	if (go && (job->flags & KCOPYD_VERIFY))
		hash_chunk(kc, sj);
	if (go && sj->hole)
		zero_chunk(sj);
	else if (go)
		write_chunk(kc, sj);
	if (go && (job->flags & KCOPYD_VERIFY))
		verify_chunk(kc, sj);
	sj->done = go && ((!sj->write_err && !sj->verify_err) || ignore);
	if (job->progress)
		job->progress(sj->count, job->context);
}

/*
 * Flush every destination of a KCOPYD_FLUSH job: a failure is a write
 * error of that destination, at the start of its region.
 */
static void flush_job(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	struct io_fail fail[KCOPYD_MAX_DESTS];
	unsigned int err = 0;

	for (unsigned int i = 0; i < job->num_dests; i++) {
		int r = bdev_flush(job->dests[i].bdev);

		if (r) {
			err |= 1u << i;
			fail[i].error = -r;
			fail[i].error_sector = job->dests[i].sector;
		}
	}
	lock(kc);
	job->write_err |= err;
	for (unsigned int i = 0; i < job->num_dests; i++)
		if ((err & (1u << i)) && !job->dres[i].error)
			job->dres[i] = fail[i];
	queue_complete(kc, job);
	unlock(kc);
}

/*
 * Run a chunk taken: after the throttle's wait, unless its job was
 * cancelled meanwhile.  Called and returns with kc->lock held.
 */
static void start_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	if (kc->rate || kc->percent)
		throttle_start(kc, sj->job,
			       sj->hole ? 0 : bytes_of(sj->count));
	else
		kc->num_io++;
	sj->skip = sj->job->cancelled;
	unlock(kc);
	if (!sj->skip) {
		run_chunk(kc, sj);
	} else {
		/* Keep the cursors in order. */
		if (sj->job->flags & KCOPYD_DIGEST)
			digest_chunk(kc, sj);
		if (sj->job->flags & KCOPYD_WRITE_SEQ)
			wait_turn(kc, sj);
	}
	lock(kc);
	throttle_finish(kc);
	finish_chunk(kc, sj);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct kcopyd_client *kc = w->kc;
	struct sub_job *sj = &w->sj;
	struct kcopyd_job *job;

	engine_thread = kc;
	lock(kc);
	for (;;) {
		/* A flush first: its job's callback waits for nothing else. */
		if (!list_empty(&kc->flush)) {
			job = list_entry(kc->flush.next, struct kcopyd_job,
					 complete);
			list_del_init(&job->complete);
			unlock(kc);
			flush_job(kc, job);
			lock(kc);
			continue;
		}
		switch (take_chunk(kc, sj)) {
		case TAKE_CHUNK:
			start_chunk(kc, sj);
			break;
		case TAKE_QUERY:
			query_extent(kc, sj->job);
			break;
		case TAKE_NONE:
			if (kc->quit)
				goto out;
			pth(pthread_cond_wait(&kc->work_cond, &kc->lock));
			break;
		}
	}
out:
	unlock(kc);
	return NULL;
}

/* --- Callbacks ------------------------------------------------------------------ */

static void run_callback(struct kcopyd_job *job)
{
	struct kcopyd_completion c = {
		.size = sizeof(c),
		.id = job->id,
		.read_err = job->read_err,
		.write_err = job->write_err,
		.read_error = job->read_fail.error,
		.read_error_sector = job->read_fail.error_sector,
		.num_dests = job->num_dests,
		.dests = job->dres,
		.cancelled = job->cancelled,
		.nr_done = job->nr_done,
		.done = job->done,

		.verify_err = job->verify_err,
		.verify_sector = job->vsec,
	};

	if (job->fn) {
		/* The kernel's interface knows only read and write errors. */
		job->fn(job->read_err, job->write_err | job->verify_err,
			job->context);
		return;
	}
	if (!job->complete_fn)
		return;
	for (unsigned int i = 0; i < job->nr_done; i++)
		c.sectors_done += job->done[i].count;
	c.digest_valid = job_digest(job, &c.digest);
	job->complete_fn(&c, job->context);
}

static void *callback_main(void *arg)
{
	struct kcopyd_client *kc = arg;
	struct kcopyd_job *job;

	engine_thread = kc;
	lock(kc);
	for (;;) {
		if (list_empty(&kc->complete)) {
			if (kc->quit)
				break;
			pth(pthread_cond_wait(&kc->cb_cond, &kc->lock));
			continue;
		}
		job = list_entry(kc->complete.next, struct kcopyd_job,
				 complete);
		list_del_init(&job->complete);
		unlock(kc);

		run_callback(job);

		lock(kc);
		/* Only now is the job gone: destroy waits for this. */
		list_del_init(&job->all);
		kc->stats.jobs_running--;
		if (job->read_err || job->write_err || job->verify_err)
			kc->stats.jobs_failed++;
		else
			kc->stats.jobs_done++;
		pth(pthread_cond_broadcast(&kc->idle_cond));
		free_job(job);
	}
	unlock(kc);
	return NULL;
}

/* --- Clients ---------------------------------------------------------------------- */

static uint64_t zero_block_hash(void)
{
	XXH3_state_t *st = XXH3_createState();
	uint64_t h;

	if (!st)
		engine_die("XXH3_createState", ENOMEM, __FILE__, __LINE__);
	XXH3_64bits_reset(st);
	for (unsigned int i = 0; i < KCOPYD_DIGEST_BLOCK / KCOPYD_PAGE_SIZE; i++)
		XXH3_64bits_update(st, zero_page, sizeof(zero_page));
	h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

static int check_options(const struct kcopyd_options *o)
{
	if (o->threads > 256 || o->max_inflight > KCOPYD_MAX_INFLIGHT ||
	    (o->flags & ~(KCOPYD_OPT_NO_ZERO_DETECT | KCOPYD_OPT_ALLOCATED)))
		return -EINVAL;
	/* Pieces tile the pages: a divisor or a multiple of a page. */
	if (o->sparse_size &&
	    (o->sparse_size % KCOPYD_SECTOR_SIZE ||
	     (KCOPYD_PAGE_SIZE % o->sparse_size &&
	      o->sparse_size % KCOPYD_PAGE_SIZE) ||
	     o->sparse_size > KCOPYD_MAX_SUBJOB_SIZE))
		return -EINVAL;
	if (o->subjob_size &&
	    (o->subjob_size % KCOPYD_PAGE_SIZE ||
	     o->subjob_size > KCOPYD_MAX_SUBJOB_SIZE))
		return -EINVAL;
	return 0;
}

static void stop_threads(struct kcopyd_client *kc, unsigned int started,
			 bool cb_started)
{
	lock(kc);
	kc->quit = true;
	pth(pthread_cond_broadcast(&kc->work_cond));
	pth(pthread_cond_broadcast(&kc->cb_cond));
	unlock(kc);
	for (unsigned int i = 0; i < started; i++)
		pth(pthread_join(kc->workers[i].thread, NULL));
	if (cb_started)
		pth(pthread_join(kc->cb_thread, NULL));
}

static void free_client(struct kcopyd_client *kc)
{
	for (unsigned int i = 0; i < kc->nr_threads; i++) {
		free(kc->workers[i].sj.pages);
		free(kc->workers[i].sj.iov);
		free(kc->workers[i].sj.zmap);
		free(kc->workers[i].sj.hash);
		free(kc->workers[i].sj.dg_hash);
		XXH3_freeState(kc->workers[i].sj.dg_state);
	}
	free(kc->workers);
	pool_destroy(&kc->pool);
	pth(pthread_cond_destroy(&kc->throttle_cond));
	pth(pthread_cond_destroy(&kc->idle_cond));
	pth(pthread_cond_destroy(&kc->cb_cond));
	pth(pthread_cond_destroy(&kc->seq_cond));
	pth(pthread_cond_destroy(&kc->work_cond));
	pth(pthread_mutex_destroy(&kc->lock));
	free(kc);
}

static int start_threads(struct kcopyd_client *kc)
{
	unsigned int i;
	int r;

	r = pthread_create(&kc->cb_thread, NULL, callback_main, kc);
	if (r)
		return -r;
	for (i = 0; i < kc->nr_threads; i++) {
		struct worker *w = &kc->workers[i];

		r = pthread_create(&w->thread, NULL, worker_main, w);
		if (r) {
			stop_threads(kc, i, true);
			return -r;
		}
	}
	return 0;
}

int kcopyd_client_create_opts(unsigned int num_pages,
			      const struct kcopyd_options *opts,
			      struct kcopyd_client **result)
{
	struct kcopyd_options o = { 0 };
	struct kcopyd_client *kc;
	unsigned int subjob_pages;
	pthread_condattr_t mono;
	int r;

	if (!num_pages || !result)
		return -EINVAL;
	if (opts)
		o = *opts;
	r = check_options(&o);
	if (r)
		return r;
	if (!o.threads)
		o.threads = KCOPYD_DEFAULT_THREADS;
	if (!o.subjob_size)
		o.subjob_size = KCOPYD_DEFAULT_SUBJOB_SIZE;
	if (!o.max_inflight)
		o.max_inflight = KCOPYD_DEFAULT_INFLIGHT;

	kc = calloc(1, sizeof(*kc));
	if (!kc)
		return -ENOMEM;
	pth(pthread_mutex_init(&kc->lock, NULL));
	pth(pthread_cond_init(&kc->work_cond, NULL));
	pth(pthread_cond_init(&kc->seq_cond, NULL));
	pth(pthread_cond_init(&kc->cb_cond, NULL));
	pth(pthread_cond_init(&kc->idle_cond, NULL));
	pth(pthread_condattr_init(&mono));
	pth(pthread_condattr_setclock(&mono, CLOCK_MONOTONIC));
	pth(pthread_cond_init(&kc->throttle_cond, &mono));
	pth(pthread_condattr_destroy(&mono));
	list_init(&kc->ready);
	list_init(&kc->flush);
	list_init(&kc->complete);
	list_init(&kc->jobs);

	/* A chunk never needs more pages than the whole pool. */
	subjob_pages = o.subjob_size / KCOPYD_PAGE_SIZE;
	kc->max_pages = subjob_pages < num_pages ? subjob_pages : num_pages;
	kc->subjob_sectors = kc->max_pages * SECTORS_PER_PAGE;
	kc->max_inflight = o.max_inflight;
	if (!(o.flags & KCOPYD_OPT_NO_ZERO_DETECT))
		kc->sparse_size = o.sparse_size ? o.sparse_size :
				  KCOPYD_DEFAULT_SPARSE_SIZE;
	kc->allocated = o.flags & KCOPYD_OPT_ALLOCATED;
	kc->zero_hash = XXH3_64bits(zero_sector, sizeof(zero_sector));
	kc->zero_block_hash = zero_block_hash();
	for (unsigned int i = 0; i < sizeof(kc->zero_run); i++)
		kc->zero_run[i] = (unsigned char)(kc->zero_block_hash >>
						  (8 * (i % 8)));

	r = pool_init(&kc->pool, num_pages);
	if (r)
		goto fail;
	kc->workers = calloc(o.threads, sizeof(*kc->workers));
	if (!kc->workers)
		goto fail_mem;
	kc->nr_threads = o.threads;
	for (unsigned int i = 0; i < kc->nr_threads; i++) {
		struct worker *w = &kc->workers[i];

		w->kc = kc;
		w->sj.pages = malloc(sizeof(*w->sj.pages) * kc->max_pages);
		w->sj.iov = malloc(sizeof(*w->sj.iov) * kc->max_pages);
		/* One byte per piece of the smallest grain, a sector. */
		w->sj.zmap = malloc((size_t)kc->max_pages * SECTORS_PER_PAGE);
		w->sj.hash = malloc(sizeof(*w->sj.hash) * kc->max_pages *
				    SECTORS_PER_PAGE);
		/* A chunk's whole digest blocks, however it lies. */
		w->sj.dg_hash = malloc(sizeof(*w->sj.dg_hash) *
				       (kc->max_pages * KCOPYD_PAGE_SIZE /
					KCOPYD_DIGEST_BLOCK + 1));
		w->sj.dg_state = XXH3_createState();
		if (!w->sj.pages || !w->sj.iov || !w->sj.zmap || !w->sj.hash ||
		    !w->sj.dg_hash || !w->sj.dg_state)
			goto fail_mem;
	}
	r = start_threads(kc);
	if (r)
		goto fail;
	kc->stats.pages_total = num_pages;
	kc->stats.threads = kc->nr_threads;
	*result = kc;
	return 0;

fail_mem:
	r = -ENOMEM;
fail:
	free_client(kc);
	return r;
}

int kcopyd_client_create(unsigned int num_pages, struct kcopyd_client **result)
{
	return kcopyd_client_create_opts(num_pages, NULL, result);
}

int kcopyd_client_flush(struct kcopyd_client *kc)
{
	uint64_t upto;

	if (!kc)
		return -EINVAL;
	if (engine_thread == kc)
		return -EDEADLK;
	lock(kc);
	upto = kc->next_seq;
	while (!list_empty(&kc->jobs) &&
	       list_entry(kc->jobs.next, struct kcopyd_job, all)->seq < upto)
		pth(pthread_cond_wait(&kc->idle_cond, &kc->lock));
	unlock(kc);
	return 0;
}

void kcopyd_client_destroy(struct kcopyd_client *kc)
{
	if (!kc)
		return;
	if (engine_thread == kc) {
		fprintf(stderr, "libkcopyd: kcopyd_client_destroy called from "
				"one of its own callbacks; refused\n");
		return;
	}
	lock(kc);
	kc->closing = true;
	while (!list_empty(&kc->jobs))
		pth(pthread_cond_wait(&kc->idle_cond, &kc->lock));
	unlock(kc);
	stop_threads(kc, kc->nr_threads, true);

	if (!list_empty(&kc->ready) || !list_empty(&kc->flush) ||
	    !list_empty(&kc->complete) ||
	    kc->pool.nr_free != kc->pool.nr)
		engine_die("destroy: lists not empty", EBUSY, __FILE__,
			   __LINE__);
	free_client(kc);
}

int kcopyd_client_set_bad_range(struct kcopyd_client *kc,
				kcopyd_bad_range_fn fn, void *context)
{
	if (!kc)
		return -EINVAL;
	lock(kc);
	kc->bad_range = fn;
	kc->bad_range_context = context;
	unlock(kc);
	return 0;
}

int kcopyd_client_set_throttle(struct kcopyd_client *kc,
			       uint64_t bytes_per_sec, unsigned int percent)
{
	if (!kc || percent > 100)
		return -EINVAL;
	lock(kc);
	kc->rate = bytes_per_sec;
	/* Start the share-of-time accounting afresh. */
	kc->percent = percent == 100 ? 0 : percent;
	kc->last_us = now_us();
	kc->io_period_us = 0;
	kc->total_period_us = 0;
	/* The new rate counts from now, not from the old one's schedule. */
	kc->tb_next_us = 0;
	pth(pthread_cond_broadcast(&kc->throttle_cond));
	unlock(kc);
	return 0;
}

int kcopyd_client_set_max_jobs(struct kcopyd_client *kc,
			       unsigned int max_jobs)
{
	if (!kc)
		return -EINVAL;
	lock(kc);
	kc->max_jobs = max_jobs;
	unlock(kc);
	return 0;
}

int kcopyd_cancel(struct kcopyd_client *kc, uint64_t id)
{
	struct list_head *p;
	int r = -ENOENT;

	if (!kc || !id)
		return -EINVAL;
	lock(kc);
	/* Newest first: a caller cancels what it has just submitted. */
	for (p = kc->jobs.prev; p != &kc->jobs; p = p->prev) {
		struct kcopyd_job *job = list_entry(p, struct kcopyd_job, all);

		if (job->id != id)
			continue;
		if (job->io_over || job->cancelled)
			break;
		job->cancelled = true;
		job->stopped = true;
		list_del_init(&job->ready);
		if (!job->inflight)
			job_io_over(kc, job);
		/* Chunks waiting for the throttle give up at once. */
		pth(pthread_cond_broadcast(&kc->throttle_cond));
		r = 0;
		break;
	}
	unlock(kc);
	return r;
}

/* The struct kcopyd_stats of the first release: up to bytes_written. */
#define KCOPYD_STATS_V1 offsetof(struct kcopyd_stats, bytes_zeroed)

int kcopyd_client_get_stats2(struct kcopyd_client *kc, struct kcopyd_stats *st,
			     size_t size)
{
	struct kcopyd_stats all;

	if (!kc || !st || size < KCOPYD_STATS_V1)
		return -EINVAL;
	lock(kc);
	all = kc->stats;
	all.pages_in_use = kc->pool.nr - kc->pool.nr_free;
	all.pages_peak = kc->pool.peak;
	unlock(kc);
	memcpy(st, &all, size < sizeof(all) ? size : sizeof(all));
	return 0;
}

#undef kcopyd_client_get_stats
int kcopyd_client_get_stats(struct kcopyd_client *kc, struct kcopyd_stats *st)
{
	return kcopyd_client_get_stats2(kc, st, KCOPYD_STATS_V1);
}

/* --- Submission ------------------------------------------------------------------ */

#define JOB_FLAGS (KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ | KCOPYD_ALLOCATED | \
		   KCOPYD_TARGET_ZERO | KCOPYD_FLUSH | KCOPYD_VERIFY | \
		   KCOPYD_DIGEST)

static bool region_past_end(const struct io_region *r)
{
	sector_t size = kcopyd_bdev_sectors(r->bdev);

	return r->sector > size || r->count > size - r->sector;
}

static bool regions_overlap(const struct io_region *a,
			    const struct io_region *b)
{
	return bdev_same(a->bdev, b->bdev) && a->count && b->count &&
	       a->sector < b->sector + b->count &&
	       b->sector < a->sector + a->count;
}

/*
 * A destination that overlaps the source must be copied in the one order
 * that reads every sector before it is overwritten, one chunk at a time:
 * from the end if it lies above the source, from the start if below.
 */
static void overlap_directions(const struct io_region *from,
			       unsigned int num_dests,
			       const struct io_region *dests, bool *up,
			       bool *down)
{
	*up = *down = false;
	for (unsigned int i = 0; i < num_dests; i++) {
		const struct io_region *d = &dests[i];

		if (!regions_overlap(d, from) || d->sector == from->sector)
			continue;
		if (d->sector > from->sector)
			*up = true;
		else
			*down = true;
	}
}

static int check_copy(const struct io_region *from, unsigned int num_dests,
		      const struct io_region *dests, unsigned int flags,
		      int *culprit)
{
	bool up, down;

	*culprit = -1;
	if (!dests || !num_dests || (flags & ~JOB_FLAGS))
		return -EINVAL;
	if (num_dests > KCOPYD_MAX_DESTS)
		return -E2BIG;
	if ((from && !from->bdev) || (!from && (flags & KCOPYD_DIGEST)))
		return -EINVAL;
	for (unsigned int i = 0; i < num_dests; i++) {
		*culprit = (int)i;
		if (!dests[i].bdev)
			return -EINVAL;
		if (from && dests[i].count != from->count)
			return -EINVAL;
	}
	*culprit = -1;
	if (from && region_past_end(from))
		return -ERANGE;
	for (unsigned int i = 0; i < num_dests; i++) {
		*culprit = (int)i;
		if (region_past_end(&dests[i]))
			return -ERANGE;
	}
	for (unsigned int i = 0; i < num_dests; i++) {
		*culprit = (int)i;
		if (dests[i].bdev->read_only)
			return -EROFS;
	}
	/* Two copies into one place have no single right answer. */
	for (unsigned int i = 0; from && i < num_dests; i++)
		for (unsigned int j = i + 1; j < num_dests; j++) {
			*culprit = (int)j;
			if (regions_overlap(&dests[i], &dests[j]))
				return -EINVAL;
		}
	*culprit = -1;
	if (!from)
		return 0;
	overlap_directions(from, num_dests, dests, &up, &down);
	/* Not one destination's fault: the job as a whole has no order. */
	*culprit = -1;
	if (up && down)
		return -EINVAL;
	if (up && (flags & KCOPYD_WRITE_SEQ))
		return -EINVAL;
	return 0;
}

int kcopyd_check_copy(const struct io_region *from, unsigned int num_dests,
		      const struct io_region *dests, unsigned int flags,
		      int *culprit)
{
	int dummy;

	return check_copy(from, num_dests, dests, flags,
			  culprit ? culprit : &dummy);
}

/*
 * Holes are worth asking for in a source of some size that is not known
 * to be allocated in full, copied forward (SEEK_DATA and SEEK_HOLE look
 * forward only; a copy up into an overlap reads everything).
 */
static bool job_sparse(const struct kcopyd_job *job)
{
	return !job->zero && !job->backward &&
	       job->total >= SPARSE_MIN_SECTORS &&
	       !bdev_fully_allocated(job->src.bdev);
}

static void free_job(struct kcopyd_job *job)
{
	XXH3_freeState(job->dg_outer);
	XXH3_freeState(job->dg_blk);
	free(job->dg_hashes);
	free(job->dg_buf);
	free(job);
}

/*
 * A digest job's state.  A backward one keeps every block's hash: 8 bytes
 * for each 64 KiB of the range.
 */
static int digest_init(struct kcopyd_job *job)
{
	job->dg_outer = XXH3_createState();
	job->dg_blk = XXH3_createState();
	if (!job->dg_outer || !job->dg_blk)
		return -ENOMEM;
	XXH3_64bits_reset(job->dg_outer);
	if (!job->backward)
		return 0;
	job->dg_hashes = calloc((job->total + DG_BLOCK_SECTORS - 1) /
				DG_BLOCK_SECTORS, sizeof(*job->dg_hashes));
	job->dg_buf = malloc(KCOPYD_DIGEST_BLOCK);
	return job->dg_hashes && job->dg_buf ? 0 : -ENOMEM;
}

/*
 * Every submission comes here: a notify function (the kernel's calls) or
 * a completion function (kcopyd_submit), never both.
 */
static int submit(struct kcopyd_client *kc, const struct io_region *from,
		  unsigned int num_dests, const struct io_region *dests,
		  unsigned int flags, kcopyd_notify_fn fn,
		  kcopyd_complete_fn complete, kcopyd_progress_fn progress,
		  void *context, uint64_t *id)
{
	struct kcopyd_job *job;
	bool up = false, down = false;
	unsigned int max_done;
	int culprit, r;

	if (!kc)
		return -EINVAL;
	r = check_copy(from, num_dests, dests, flags, &culprit);
	if (r)
		return r;
	/* The kernel's interface has nowhere to put a digest. */
	if ((flags & KCOPYD_DIGEST) && fn)
		return -EINVAL;

	/* The done ranges never outnumber the chunks in flight plus one. */
	max_done = kc->max_inflight + 2;
	job = calloc(1, sizeof(*job) + num_dests * sizeof(job->dests[0]) +
			       num_dests * sizeof(job->dres[0]) +
			       max_done * sizeof(job->done[0]) +
			       num_dests * sizeof(job->vsec[0]));
	if (!job)
		return -ENOMEM;
	job->kc = kc;
	list_init(&job->ready);
	list_init(&job->complete);
	list_init(&job->all);
	job->zero = !from;
	if (from)
		job->src = *from;
	job->flags = flags;
	job->allocated = (flags & KCOPYD_ALLOCATED) || kc->allocated;
	job->target_zero = flags & KCOPYD_TARGET_ZERO;
	job->detect = from && kc->sparse_size;
	job->fn = fn;
	job->complete_fn = complete;
	job->progress = progress;
	job->context = context;
	job->num_dests = num_dests;
	memcpy(job->dests, dests, num_dests * sizeof(dests[0]));
	job->dres = (struct io_fail *)&job->dests[num_dests];
	job->done = (struct kcopyd_range *)&job->dres[num_dests];
	job->max_done = max_done;
	job->vsec = (sector_t *)&job->done[max_done];
	job->max_inflight = kc->max_inflight;
	for (unsigned int i = 0; i < num_dests; i++)
		if (dests[i].count > job->total)
			job->total = dests[i].count;
	if (from)
		overlap_directions(from, num_dests, dests, &up, &down);
	if (up || down)
		job->max_inflight = 1;
	job->backward = up;
	job->sparse = job_sparse(job);
	if (flags & KCOPYD_DIGEST) {
		r = digest_init(job);
		if (r) {
			free_job(job);
			return r;
		}
	}

	lock(kc);
	if (kc->closing) {
		r = -ESHUTDOWN;
		goto refused;
	}
	if (kc->max_jobs && kc->stats.jobs_running >= kc->max_jobs) {
		r = -EAGAIN;
		goto refused;
	}
	job->seq = kc->next_seq++;
	job->id = job->seq + 1;
	if (id)
		*id = job->id;
	list_add_tail(&job->all, &kc->jobs);
	kc->stats.jobs_submitted++;
	kc->stats.jobs_running++;
	if (job->total)
		queue_ready(kc, job);
	else
		job_io_over(kc, job);
	unlock(kc);
	return 0;

refused:
	unlock(kc);
	free_job(job);
	return r;
}

int kcopyd_submit(struct kcopyd_client *kc,
		  const struct kcopyd_job_desc *desc, uint64_t *id)
{
	struct kcopyd_job_desc d = { 0 };

	if (!desc || desc->size < offsetof(struct kcopyd_job_desc, context) +
				  sizeof(desc->context))
		return -EINVAL;
	/* A newer caller's fields must be unset, or we would ignore them. */
	for (size_t i = sizeof(d); i < desc->size; i++)
		if (((const unsigned char *)desc)[i])
			return -E2BIG;
	memcpy(&d, desc, desc->size < sizeof(d) ? desc->size : sizeof(d));
	if (d.op == KCOPYD_OP_COPY ? !d.from :
	    d.op != KCOPYD_OP_ZERO || d.from)
		return -EINVAL;
	return submit(kc, d.from, d.num_dests, d.dests, d.flags, NULL,
		      d.complete, d.progress, d.context, id);
}

int kcopyd_copy_progress(struct kcopyd_client *kc, struct io_region *from,
			 unsigned int num_dests, struct io_region *dests,
			 unsigned int flags, kcopyd_notify_fn fn,
			 kcopyd_progress_fn progress, void *context)
{
	return submit(kc, from, num_dests, dests, flags, fn, NULL, progress,
		      context, NULL);
}

int kcopyd_copy(struct kcopyd_client *kc, struct io_region *from,
		unsigned int num_dests, struct io_region *dests,
		unsigned int flags, kcopyd_notify_fn fn, void *context)
{
	if (!from)
		return -EINVAL;
	return kcopyd_copy_progress(kc, from, num_dests, dests, flags, fn,
				    NULL, context);
}

int kcopyd_zero(struct kcopyd_client *kc, unsigned int num_dests,
		struct io_region *dests, unsigned int flags,
		kcopyd_notify_fn fn, void *context)
{
	return kcopyd_copy_progress(kc, NULL, num_dests, dests, flags, fn,
				    NULL, context);
}
