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
 *   - one callback thread, which runs the notify functions one at a time,
 *     with no lock held.  So callbacks of one client never run
 *     concurrently, never run on the submitter's stack, and may submit.
 *   - any number of submitting threads (kcopyd_copy, kcopyd_zero, flush).
 *
 * kc->lock protects everything in the client and the mutable part of every
 * job (marked below).  A job lives on up to three lists:
 *   kc->ready     jobs with chunks left to issue and room for one more in
 *                 flight, in round-robin order;
 *   kc->complete  jobs whose I/O is over, waiting for their callback;
 *   kc->jobs      every accepted job, in submission order, until its
 *                 callback has returned (flush and destroy wait on it).
 *
 * Pages are taken all-or-nothing per chunk.  A chunk that cannot get its
 * pages stays at the head of kc->ready and the workers wait for pages to
 * come back, so jobs are served in order and none fails for want of
 * memory.  Pages are returned before the job reaches kc->complete, which
 * is what lets a callback submit more work without deadlock.
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

#include "internal.h"

struct kcopyd_client;

struct kcopyd_job {
	struct kcopyd_client *kc;
	struct list_head ready;		/* on kc->ready (kc->lock) */
	struct list_head complete;	/* on kc->complete (kc->lock) */
	struct list_head all;		/* on kc->jobs (kc->lock) */
	uint64_t seq;

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
	kcopyd_progress_fn progress;
	void *context;
	struct io_region src;

	/* Protected by kc->lock. */
	sector_t issued;		/* sectors handed to sub-jobs */
	sector_t written;		/* WRITE_SEQ: sectors written in order */
	unsigned int inflight;
	bool stopped;			/* error without IGNORE_ERROR */
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

	unsigned int num_dests;
	struct io_region dests[];
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
	int read_err;
	unsigned int write_err;
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

struct kcopyd_client {
	pthread_mutex_t lock;
	pthread_cond_t work_cond;	/* a job is ready or pages came back */
	pthread_cond_t seq_cond;	/* a WRITE_SEQ cursor moved */
	pthread_cond_t cb_cond;		/* a job reached kc->complete */
	pthread_cond_t idle_cond;	/* a callback returned */

	/* Read-only after creation. */
	unsigned int nr_threads;
	unsigned int subjob_sectors;
	unsigned int max_pages;		/* pages of one chunk */
	unsigned int max_inflight;
	unsigned int sparse_size;	/* zero detection grain, 0: off */
	bool allocated;			/* every job KCOPYD_ALLOCATED */
	struct worker *workers;
	pthread_t cb_thread;

	/* Protected by lock. */
	struct page_pool pool;
	struct list_head ready;
	struct list_head complete;
	struct list_head jobs;
	uint64_t next_seq;
	bool closing;			/* destroy has begun: refuse new jobs */
	bool quit;			/* threads must exit */
	struct kcopyd_stats stats;
};

/*
 * The client this thread works for, if it is one of a client's own
 * threads: flush and destroy called from there would wait for themselves.
 */
static __thread struct kcopyd_client *engine_thread;

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
	sector_t n;

	if (list_empty(&kc->ready))
		return TAKE_NONE;
	job = list_entry(kc->ready.next, struct kcopyd_job, ready);
	if (job->querying)
		return TAKE_NONE;
	if (job->sparse && job->issued >= job->ext_end) {
		job->querying = true;
		sj->job = job;
		return TAKE_QUERY;
	}

	sj->hole = job->zero || (job->sparse && job->ext_hole);
	n = job->total - job->issued;
	if (job->sparse)
		n = min_sector(n, job->ext_end - job->issued);
	n = min_sector(n, sj->hole ? HOLE_CHUNK_SECTORS : kc->subjob_sectors);
	sj->nr_pages = sj->hole ? 0 :
		       (n + SECTORS_PER_PAGE - 1) / SECTORS_PER_PAGE;
	if (sj->nr_pages > kc->pool.nr_free)
		return TAKE_NONE;

	pool_get(&kc->pool, sj->pages, sj->nr_pages);
	sj->job = job;
	sj->count = n;
	sj->offset = job->backward ? job->total - job->issued - n :
				     job->issued;
	sj->read_err = 0;
	sj->write_err = 0;
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
 * Nothing is issued from the job meanwhile, so `issued` cannot move.  A
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
	pth(pthread_cond_broadcast(&kc->work_cond));
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
	if ((sj->read_err || sj->write_err) &&
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
		queue_complete(kc, job);
	else
		queue_ready(kc, job);
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
 * the chunk, at byte offset `at` of the device.
 */
static int chunk_io(struct kcopyd_client *kc, struct sub_job *sj,
		    struct block_device *bdev, bool write, size_t skip,
		    size_t bytes, off_t at)
{
	int cnt = chunk_iov(kc, sj, skip, bytes);

	return write ? bdev_write_full(bdev, sj->iov, cnt, at) :
		       bdev_read_full(bdev, sj->iov, cnt, at);
}

/*
 * A transfer of the whole chunk failed and the job goes on after errors:
 * retry it one block at a time, as a rescue copy does, so that only the
 * blocks that really fail are lost.  A block that cannot be read becomes
 * zeros; one that cannot be written is left as it was.  Returns the bytes
 * that went through.
 */
static uint64_t salvage(struct kcopyd_client *kc, struct sub_job *sj,
			struct block_device *bdev, bool write, size_t skip,
			size_t len, off_t at)
{
	size_t bs = bdev->block_size;
	uint64_t good = 0;

	for (size_t off = 0; off < len; off += bs) {
		size_t n = len - off < bs ? len - off : bs;

		if (!chunk_io(kc, sj, bdev, write, skip + off, n, at + off))
			good += n;
		else if (!write)
			memset(chunk_byte(kc, sj, skip + off), 0, n);
	}
	return good;
}

/*
 * The same for a zeroing that failed: halve the range until the pieces
 * that fail are single blocks, so a failing block in a hole of a
 * gigabyte costs a few dozen tries, not millions.
 */
static uint64_t salvage_zero(struct block_device *bdev, uint64_t at,
			     uint64_t len, bool allocated)
{
	uint64_t bs = bdev->block_size, half;

	if (!bdev_zero(bdev, at, len, allocated))
		return len;
	if (len <= bs)
		return 0;
	half = (len / 2 + bs - 1) / bs * bs;
	return salvage_zero(bdev, at, half, allocated) +
	       salvage_zero(bdev, at + half, len - half, allocated);
}

/* Zero bytes [at, at + len) of destination i, with IGNORE_ERROR salvage. */
static void zero_dest(struct sub_job *sj, unsigned int i, uint64_t at,
		      uint64_t len)
{
	struct kcopyd_job *job = sj->job;
	struct block_device *bdev = job->dests[i].bdev;

	if (job->target_zero)
		return;
	if (!bdev_zero(bdev, at, len, job->allocated)) {
		sj->bytes_zeroed += len;
		return;
	}
	sj->write_err |= 1u << i;
	if (job->flags & KCOPYD_IGNORE_ERROR)
		sj->bytes_zeroed += salvage_zero(bdev, at, len,
						 job->allocated);
}

static void read_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	size_t bytes = bytes_of(sj->count);
	off_t at = (off_t)bytes_of(job->src.sector + sj->offset);

	if (!chunk_io(kc, sj, job->src.bdev, false, 0, bytes, at)) {
		sj->bytes_read = bytes;
		return;
	}
	sj->read_err = 1;
	if (job->flags & KCOPYD_IGNORE_ERROR)
		sj->bytes_read = salvage(kc, sj, job->src.bdev, false, 0,
					 bytes, at);
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
				     at + (off_t)skip)) {
			sj->bytes_written += n;
		} else {
			sj->write_err |= 1u << i;
			if (ignore)
				sj->bytes_written += salvage(kc, sj, d->bdev,
							     true, skip, n,
							     at + (off_t)skip);
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

	if (job->zero)
		return true;
	if (bdev_read_hole(job->src.bdev, bytes_of(job->src.sector +
						   sj->offset), len)) {
		sj->read_err = 1;
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
	/* After an error, leave each destination holding a clean prefix. */
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
	    (job->flags & KCOPYD_WRITE_SEQ))
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

static void run_chunk(struct kcopyd_client *kc, struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	bool go;

	if (!sj->hole && copy_chunk_range(sj)) {
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
	if (job->flags & KCOPYD_WRITE_SEQ)
		go = wait_turn(kc, sj) && go;
	if (go && sj->hole)
		zero_chunk(sj);
	else if (go)
		write_chunk(kc, sj);
	if (job->progress)
		job->progress(sj->count, job->context);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct kcopyd_client *kc = w->kc;
	struct sub_job *sj = &w->sj;

	engine_thread = kc;
	lock(kc);
	for (;;) {
		switch (take_chunk(kc, sj)) {
		case TAKE_CHUNK:
			unlock(kc);
			run_chunk(kc, sj);
			lock(kc);
			finish_chunk(kc, sj);
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

		if (job->fn)
			job->fn(job->read_err, job->write_err, job->context);

		lock(kc);
		/* Only now is the job gone: destroy waits for this. */
		list_del_init(&job->all);
		kc->stats.jobs_running--;
		if (job->read_err || job->write_err)
			kc->stats.jobs_failed++;
		else
			kc->stats.jobs_done++;
		pth(pthread_cond_broadcast(&kc->idle_cond));
		free(job);
	}
	unlock(kc);
	return NULL;
}

/* --- Clients ---------------------------------------------------------------------- */

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
	}
	free(kc->workers);
	pool_destroy(&kc->pool);
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
	list_init(&kc->ready);
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
		if (!w->sj.pages || !w->sj.iov || !w->sj.zmap)
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

	if (!list_empty(&kc->ready) || !list_empty(&kc->complete) ||
	    kc->pool.nr_free != kc->pool.nr)
		engine_die("destroy: lists not empty", EBUSY, __FILE__,
			   __LINE__);
	free_client(kc);
}

int kcopyd_client_get_stats(struct kcopyd_client *kc, struct kcopyd_stats *st)
{
	if (!kc || !st)
		return -EINVAL;
	lock(kc);
	*st = kc->stats;
	st->pages_in_use = kc->pool.nr - kc->pool.nr_free;
	st->pages_peak = kc->pool.peak;
	unlock(kc);
	return 0;
}

/* --- Submission ------------------------------------------------------------------ */

#define JOB_FLAGS (KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ | KCOPYD_ALLOCATED | \
		   KCOPYD_TARGET_ZERO)

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
	if (from && !from->bdev)
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

int kcopyd_copy_progress(struct kcopyd_client *kc, struct io_region *from,
			 unsigned int num_dests, struct io_region *dests,
			 unsigned int flags, kcopyd_notify_fn fn,
			 kcopyd_progress_fn progress, void *context)
{
	struct kcopyd_job *job;
	bool up = false, down = false;
	int culprit, r;

	if (!kc)
		return -EINVAL;
	r = check_copy(from, num_dests, dests, flags, &culprit);
	if (r)
		return r;

	job = calloc(1, sizeof(*job) + num_dests * sizeof(job->dests[0]));
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
	job->progress = progress;
	job->context = context;
	job->num_dests = num_dests;
	memcpy(job->dests, dests, num_dests * sizeof(dests[0]));
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

	lock(kc);
	if (kc->closing) {
		unlock(kc);
		free(job);
		return -ESHUTDOWN;
	}
	job->seq = kc->next_seq++;
	list_add_tail(&job->all, &kc->jobs);
	kc->stats.jobs_submitted++;
	kc->stats.jobs_running++;
	if (job->total)
		queue_ready(kc, job);
	else
		queue_complete(kc, job);
	unlock(kc);
	return 0;
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
