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
	int read_err;
	unsigned int write_err;

	unsigned int num_dests;
	struct io_region dests[];
};

/* One chunk of a job, owned by the worker running it. */
struct sub_job {
	struct kcopyd_job *job;
	sector_t offset;		/* relative to the regions' starts */
	sector_t count;
	unsigned int nr_pages;
	int read_err;
	unsigned int write_err;
	uint64_t bytes_read;		/* what really went through */
	uint64_t bytes_written;
};

struct worker {
	struct kcopyd_client *kc;
	pthread_t thread;
	unsigned int *pages;		/* max_pages indices */
	struct iovec *iov;		/* max_pages iovecs */
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

/*
 * Carve the next chunk off the job at the head of the ready list.
 * Returns false if there is no job, or if the head job's chunk needs more
 * pages than are free: then the caller waits, and the head keeps its place.
 */
static bool take_chunk(struct kcopyd_client *kc, struct worker *w,
		       struct sub_job *sj)
{
	struct kcopyd_job *job;
	sector_t n;

	if (list_empty(&kc->ready))
		return false;
	job = list_entry(kc->ready.next, struct kcopyd_job, ready);

	n = min_sector(kc->subjob_sectors, job->total - job->issued);
	sj->nr_pages = (n + SECTORS_PER_PAGE - 1) / SECTORS_PER_PAGE;
	if (sj->nr_pages > kc->pool.nr_free)
		return false;

	pool_get(&kc->pool, w->pages, sj->nr_pages);
	sj->job = job;
	sj->count = n;
	sj->offset = job->backward ? job->total - job->issued - n :
				     job->issued;
	sj->read_err = 0;
	sj->write_err = 0;
	sj->bytes_read = 0;
	sj->bytes_written = 0;
	job->issued += n;
	job->inflight++;
	kc->stats.subjobs++;

	/* Round robin: the job goes to the back, if it has more to issue. */
	list_del_init(&job->ready);
	queue_ready(kc, job);
	return true;
}

/* The chunk's I/O is over: give back its pages and account for it. */
static void finish_chunk(struct kcopyd_client *kc, struct worker *w,
			 struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;

	pool_put(&kc->pool, w->pages, sj->nr_pages);
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

/* The address of byte `off` of the chunk, in its pool pages. */
static char *chunk_byte(struct kcopyd_client *kc, struct worker *w, size_t off)
{
	return kc->pool.mem +
	       (size_t)w->pages[off / KCOPYD_PAGE_SIZE] * KCOPYD_PAGE_SIZE +
	       off % KCOPYD_PAGE_SIZE;
}

/*
 * One transfer of `bytes` of the chunk's pages, starting at byte `skip` of
 * the chunk, at byte offset `at` of the device.
 */
static int chunk_io(struct kcopyd_client *kc, struct worker *w,
		    struct sub_job *sj, struct block_device *bdev, bool write,
		    size_t skip, size_t bytes, off_t at)
{
	struct iovec one;
	int cnt;

	/*
	 * From the chunk's start, across its pages: the whole chunk, or a
	 * destination shorter than it (a zero's regions may differ).
	 */
	if (skip == 0) {
		cnt = pool_iov(&kc->pool, w->pages, sj->nr_pages, bytes,
			       w->iov);
		return write ? bdev_write_full(bdev, w->iov, cnt, at) :
			       bdev_read_full(bdev, w->iov, cnt, at);
	}
	/* A piece: never crosses a page, as block sizes divide a page. */
	one.iov_base = chunk_byte(kc, w, skip);
	one.iov_len = bytes;
	return write ? bdev_write_full(bdev, &one, 1, at) :
		       bdev_read_full(bdev, &one, 1, at);
}

/*
 * A transfer of the whole chunk failed and the job goes on after errors:
 * retry it one block at a time, as a rescue copy does, so that only the
 * blocks that really fail are lost.  A block that cannot be read becomes
 * zeros; one that cannot be written is left as it was.  Returns the bytes
 * that went through.
 */
static uint64_t salvage(struct kcopyd_client *kc, struct worker *w,
			struct sub_job *sj, struct block_device *bdev,
			bool write, size_t len, off_t at)
{
	size_t bs = bdev->block_size;
	uint64_t good = 0;

	for (size_t off = 0; off < len; off += bs) {
		size_t n = len - off < bs ? len - off : bs;

		if (!chunk_io(kc, w, sj, bdev, write, off, n, at + off))
			good += n;
		else if (!write)
			memset(chunk_byte(kc, w, off), 0, n);
	}
	return good;
}

static void zero_pages(struct kcopyd_client *kc, struct worker *w,
		       struct sub_job *sj)
{
	size_t bytes = sj->count << KCOPYD_SECTOR_SHIFT;
	int cnt = pool_iov(&kc->pool, w->pages, sj->nr_pages, bytes, w->iov);

	for (int i = 0; i < cnt; i++)
		memset(w->iov[i].iov_base, 0, w->iov[i].iov_len);
}

static void read_chunk(struct kcopyd_client *kc, struct worker *w,
		       struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	size_t bytes = sj->count << KCOPYD_SECTOR_SHIFT;
	off_t at = (off_t)((job->src.sector + sj->offset)
			   << KCOPYD_SECTOR_SHIFT);

	if (job->zero) {
		zero_pages(kc, w, sj);
		return;
	}
	if (!chunk_io(kc, w, sj, job->src.bdev, false, 0, bytes, at)) {
		sj->bytes_read = bytes;
		return;
	}
	sj->read_err = 1;
	if (job->flags & KCOPYD_IGNORE_ERROR)
		sj->bytes_read = salvage(kc, w, sj, job->src.bdev, false,
					 bytes, at);
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

static void write_chunk(struct kcopyd_client *kc, struct worker *w,
			struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;

	for (unsigned int i = 0; i < job->num_dests; i++) {
		const struct io_region *d = &job->dests[i];
		size_t len = dest_len(d, sj) << KCOPYD_SECTOR_SHIFT;
		off_t at = (off_t)((d->sector + sj->offset)
				   << KCOPYD_SECTOR_SHIFT);

		if (!len)
			continue;
		if (!chunk_io(kc, w, sj, d->bdev, true, 0, len, at)) {
			sj->bytes_written += len;
			continue;
		}
		sj->write_err |= 1u << i;
		if (job->flags & KCOPYD_IGNORE_ERROR)
			sj->bytes_written += salvage(kc, w, sj, d->bdev, true,
						     len, at);
	}
}

/*
 * A plain file with nothing that copy_file_range(2) would bypass: no fault
 * rule, no O_DIRECT, no O_SYNC or O_DSYNC.
 */
static bool range_copyable(struct block_device *bdev)
{
	return !bdev->is_blockdev && !atomic_load(&bdev->nr_faults) &&
	       !(bdev->open_flags & (O_DIRECT | O_SYNC | O_DSYNC));
}

/*
 * A chunk of a copy to one destination goes file to file with
 * copy_file_range(2): the kernel moves each byte once, where preadv into
 * the pool and pwritev out of it move it twice (on tmpfs a fifth less CPU
 * than dd; see bench/README.md).  With several destinations, reading once
 * into the pool and writing from there moves fewer bytes, so they keep
 * that path.  The chunk holds its pool pages all the same, so scheduling
 * and the page cap do not change.  Returns false, with nothing counted,
 * if the chunk must take the ordinary path: that path then redoes the
 * whole chunk and tells a read error from a write error, which
 * copy_file_range cannot.
 */
static bool copy_chunk_range(struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	struct block_device *in = job->src.bdev, *out = job->dests[0].bdev;
	loff_t in_off = (loff_t)((job->src.sector + sj->offset)
				 << KCOPYD_SECTOR_SHIFT);
	loff_t out_off = (loff_t)((job->dests[0].sector + sj->offset)
				  << KCOPYD_SECTOR_SHIFT);
	size_t bytes = sj->count << KCOPYD_SECTOR_SHIFT, left = bytes;

	if (job->zero || job->num_dests != 1 ||
	    (job->flags & KCOPYD_WRITE_SEQ) ||
	    !range_copyable(in) || !range_copyable(out))
		return false;
	while (left) {
		ssize_t n = copy_file_range(in->fd, &in_off, out->fd, &out_off,
					    left, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		left -= (size_t)n;
	}
	atomic_fetch_add(&in->reads, 1);
	atomic_fetch_add(&in->bytes_read, bytes);
	atomic_fetch_add(&out->writes, 1);
	atomic_fetch_add(&out->bytes_written, bytes);
	sj->bytes_read = bytes;
	sj->bytes_written = bytes;
	return true;
}

static void run_chunk(struct kcopyd_client *kc, struct worker *w,
		      struct sub_job *sj)
{
	struct kcopyd_job *job = sj->job;
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	bool go;

	if (copy_chunk_range(sj)) {
		if (job->progress)
			job->progress(sj->count, job->context);
		return;
	}
	read_chunk(kc, w, sj);
	go = !sj->read_err || ignore;
	if (job->flags & KCOPYD_WRITE_SEQ)
		go = wait_turn(kc, sj) && go;
	if (go)
		write_chunk(kc, w, sj);
	if (job->progress)
		job->progress(sj->count, job->context);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct kcopyd_client *kc = w->kc;
	struct sub_job sj;

	engine_thread = kc;
	lock(kc);
	for (;;) {
		if (!take_chunk(kc, w, &sj)) {
			if (kc->quit)
				break;
			pth(pthread_cond_wait(&kc->work_cond, &kc->lock));
			continue;
		}
		unlock(kc);
		run_chunk(kc, w, &sj);
		lock(kc);
		kc->stats.bytes_read += sj.bytes_read;
		kc->stats.bytes_written += sj.bytes_written;
		finish_chunk(kc, w, &sj);
	}
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
	if (o->threads > 256 || o->max_inflight > KCOPYD_MAX_INFLIGHT)
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
		free(kc->workers[i].pages);
		free(kc->workers[i].iov);
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
		w->pages = malloc(sizeof(*w->pages) * kc->max_pages);
		w->iov = malloc(sizeof(*w->iov) * kc->max_pages);
		if (!w->pages || !w->iov)
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
static int plan_overlap(struct kcopyd_job *job)
{
	bool up = false, down = false;

	for (unsigned int i = 0; i < job->num_dests; i++) {
		const struct io_region *d = &job->dests[i];

		if (!regions_overlap(d, &job->src) ||
		    d->sector == job->src.sector)
			continue;
		if (d->sector > job->src.sector)
			up = true;
		else
			down = true;
	}
	if (up && down)
		return -EINVAL;
	if (up && (job->flags & KCOPYD_WRITE_SEQ))
		return -EINVAL;
	if (up || down)
		job->max_inflight = 1;
	job->backward = up;
	return 0;
}

static int check_regions(const struct io_region *from, unsigned int num_dests,
			 const struct io_region *dests)
{
	if (from && (!from->bdev))
		return -EINVAL;
	for (unsigned int i = 0; i < num_dests; i++) {
		if (!dests[i].bdev)
			return -EINVAL;
		if (from && dests[i].count != from->count)
			return -EINVAL;
	}
	if (from && region_past_end(from))
		return -ERANGE;
	for (unsigned int i = 0; i < num_dests; i++)
		if (region_past_end(&dests[i]))
			return -ERANGE;
	for (unsigned int i = 0; i < num_dests; i++)
		if (dests[i].bdev->read_only)
			return -EROFS;
	/* Two copies into one place have no single right answer. */
	for (unsigned int i = 0; from && i < num_dests; i++)
		for (unsigned int j = i + 1; j < num_dests; j++)
			if (regions_overlap(&dests[i], &dests[j]))
				return -EINVAL;
	return 0;
}

int kcopyd_copy_progress(struct kcopyd_client *kc, struct io_region *from,
			 unsigned int num_dests, struct io_region *dests,
			 unsigned int flags, kcopyd_notify_fn fn,
			 kcopyd_progress_fn progress, void *context)
{
	struct kcopyd_job *job;
	int r;

	if (!kc || !dests || !num_dests ||
	    (flags & ~(KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ)))
		return -EINVAL;
	if (num_dests > KCOPYD_MAX_DESTS)
		return -E2BIG;
	r = check_regions(from, num_dests, dests);
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
	job->fn = fn;
	job->progress = progress;
	job->context = context;
	job->num_dests = num_dests;
	memcpy(job->dests, dests, num_dests * sizeof(dests[0]));
	job->max_inflight = kc->max_inflight;
	for (unsigned int i = 0; i < num_dests; i++)
		if (dests[i].count > job->total)
			job->total = dests[i].count;
	if (from) {
		r = plan_overlap(job);
		if (r) {
			free(job);
			return r;
		}
	}

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
