/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job table: ids, states, progress and timings of the jobs queued
 * through MNT/control, and the text of MNT/results.
 *
 * Thread model
 * ------------
 * Threads that enter here:
 *   - FUSE worker threads: kfs_table_submit (a control write),
 *     kfs_table_wait (`wait ID`), kfs_table_read (reading results) and
 *     kfs_table_counts (stats);
 *   - the engine's worker threads: job_progress, which touches only the
 *     job's atomic `done` counter and so takes no lock;
 *   - the engine's callback thread: job_finished;
 *   - the main thread at unmount: kfs_table_unfinished, kfs_table_describe.
 * t->lock protects the list and every field marked (lock).  A batch is
 * handed to the engine with t->lock held, so the ids of one write are
 * consecutive and the queue bound is checked and taken at once; this is
 * safe because the engine calls back with none of its locks held, and the
 * lock order is always t->lock, then the engine's.  ops->hold runs with
 * t->lock held (a job takes its devices before the engine sees it);
 * ops->unhold, ops->ended, ops->finished and ops->changed run with no
 * table lock held, in that order when a job ends, so a writer answered
 * for a job finds its devices free.
 *
 * Under --state (ops->save), ops->describe and the first ops->save of a
 * job run with t->lock held, in the FUSE worker that queues it; later
 * saves run on the engine's callback thread, which runs a job's steps one
 * after another (step_finished), with no table lock held.  A cancel
 * removes the record at once, in the FUSE worker that runs it (t->lock
 * held), so that no crash after its answer brings the job back.  Every
 * save and removal of a job's record takes its rec_lock (always after
 * t->lock, never before it), and once removed a record is never written
 * again.  The next step is submitted with t->lock held, as the first is,
 * so a cancel always sees the engine id of the step that runs.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobs.h"
#include "list.h"
#include "pth.h"

enum job_state {
	JOB_QUEUED,
	JOB_RUNNING,
	JOB_DONE,
	JOB_FAILED,
	JOB_CANCELLED,
	JOB_KEPT,		/* stopped at unmount, kept for the next */
};

static const char *const state_names[] = {
	[JOB_QUEUED] = "queued",
	[JOB_RUNNING] = "running",
	[JOB_DONE] = "done",
	[JOB_FAILED] = "failed",
	[JOB_CANCELLED] = "cancelled",
	[JOB_KEPT] = "kept",
};

struct job_wait {
	struct list_head link;		/* on its job's waits (lock) */
	void *waiter;
};

struct kfs_job {
	struct kfs_table *t;
	struct list_head link;		/* on t->jobs, in id order (lock) */

	/* Set before the job is handed to the engine, then read-only. */
	uint64_t id;
	enum kfs_op op;
	char tag[KFS_MAX_NAME + 1];
	uint64_t sectors;
	struct timespec queued_at;
	void *waiter;
	uint64_t eid;			/* the engine's id of the job */
	/* Held devices (see ops->hold): the destinations, then the source. */
	int devs[1 + KFS_MAX_DESTS];
	unsigned int ndevs;
	bool verify;			/* the verify word */
	bool checksum;			/* the checksum word */
	bool resumed;			/* queued again from --state */

	/*
	 * Under --state: the whole command, its record, and its steps.  The
	 * callback thread owns the step fields between steps; a step is
	 * submitted with t->lock held.
	 */
	struct kfs_cmd *cmd;
	char *rec;
	struct block_device *bdevs[1 + KFS_MAX_DESTS];	/* as devs */
	bool backward;			/* steps from the end */
	bool overlap;			/* record after every step */
	uint64_t step;			/* sectors a step takes (see step_len) */
	uint64_t max_step;		/* most sectors in a step */
	struct timespec step_at;	/* when the step in flight began */
	uint64_t pos;			/* sectors finished and flushed */
	struct timespec saved_at;	/* when pos was last recorded */
	bool cancel_req;		/* cancelled between steps (lock) */
	pthread_mutex_t rec_lock;	/* saves and removal of the record */
	bool rec_gone;			/* the record is removed (rec_lock) */
	bool parked;			/* kept for the next mount (lock) */
	/* The errors of the steps so far, as one completion reports them. */
	int a_read_err;
	unsigned int a_write_err;
	int a_read_error;
	sector_t a_read_error_sector;
	struct kcopyd_dest_result a_dests[KFS_MAX_DESTS];
	unsigned int a_verify_err;
	sector_t a_verify_sector[KFS_MAX_DESTS];
	/*
	 * A failure outside the job's I/O: its record could not be kept, or
	 * the engine refused a step (lock).
	 */
	int state_err;

	/* More waiters, from `wait ID` (lock). */
	struct list_head waits;

	atomic_uint_fast64_t done;	/* sectors so far */
	bool finished;			/* (lock) */
	int read_err;			/* (lock) */
	unsigned int write_err;		/* (lock) */
	bool cancelled;			/* (lock) */
	int error;			/* errno of the first failure (lock) */
	uint64_t error_sector;		/* (lock) */
	char error_name[KFS_MAX_NAME + 1]; /* its device (lock) */
	unsigned int verify_err;	/* (lock) */
	char verify_name[KFS_MAX_NAME + 1]; /* the first destination that
					   failed verify (set before finished) */
	uint64_t verify_sector;		/* (lock) */
	bool digest_valid;		/* checksum: the source's (lock) */
	uint64_t digest;		/* (lock) */
	uint64_t usec;			/* queued to finished (lock) */
	/*
	 * A finished job's results line never changes: it is formatted once,
	 * so that rendering results costs a copy per kept job (lock).
	 */
	char *line;
	size_t line_len;
};

struct kfs_table {
	pthread_mutex_t lock;
	struct kcopyd_client *kc;
	unsigned int keep;
	unsigned int max_queue;
	struct kfs_table_ops ops;

	struct list_head jobs;		/* (lock) */
	uint64_t next_id;		/* (lock) */
	unsigned int nr_unfinished;	/* (lock) */
	unsigned int nr_finished;	/* finished and kept (lock) */
	uint64_t total_done;		/* (lock) */
	uint64_t total_failed;		/* (lock) */
	uint64_t total_cancelled;	/* (lock) */
	bool parking;			/* unmount under --state (lock) */
};

static void lock(struct kfs_table *t)
{
	pth(pthread_mutex_lock(&t->lock));
}

static void unlock(struct kfs_table *t)
{
	pth(pthread_mutex_unlock(&t->lock));
}

#define for_each_job(j, t) list_for_each_entry(j, &(t)->jobs, link)

static uint64_t usec_since(const struct timespec *a)
{
	struct timespec now;
	int64_t us;

	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (int64_t)(now.tv_sec - a->tv_sec) * 1000000 +
	     (now.tv_nsec - a->tv_nsec) / 1000;
	return us < 0 ? 0 : (uint64_t)us;
}

int kfs_table_create(struct kcopyd_client *kc, unsigned int keep,
		     unsigned int max_queue, uint64_t next_id,
		     const struct kfs_table_ops *ops, struct kfs_table **result)
{
	struct kfs_table *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	pth(pthread_mutex_init(&t->lock, NULL));
	t->kc = kc;
	t->keep = keep;
	t->max_queue = max_queue;
	t->ops = *ops;
	list_init(&t->jobs);
	t->next_id = next_id ? next_id : 1;
	*result = t;
	return 0;
}

static void free_job(struct kfs_job *j)
{
	pth(pthread_mutex_destroy(&j->rec_lock));
	free(j->line);
	free(j->cmd);
	free(j->rec);
	free(j);
}

void kfs_table_free(struct kfs_table *t)
{
	if (!t)
		return;
	while (!list_empty(&t->jobs)) {
		struct kfs_job *j = list_first_entry(&t->jobs, struct kfs_job,
						     link);

		list_del_init(&j->link);
		free_job(j);
	}
	pth(pthread_mutex_destroy(&t->lock));
	free(t);
}

/* Drop the oldest finished jobs beyond the bound (lock held). */
static void trim(struct kfs_table *t)
{
	struct list_head *pos = t->jobs.next;

	while (t->nr_finished > t->keep && pos != &t->jobs) {
		struct kfs_job *j = list_entry(pos, struct kfs_job, link);

		pos = pos->next;
		if (j->finished) {
			list_del_init(&j->link);
			free_job(j);
			t->nr_finished--;
		}
	}
}

static enum job_state job_state(const struct kfs_job *j)
{
	if (j->finished && j->parked)
		return JOB_KEPT;
	if (j->finished && (j->read_err || j->write_err || j->verify_err ||
			    j->state_err))
		return JOB_FAILED;
	if (j->finished)
		return j->cancelled ? JOB_CANCELLED : JOB_DONE;
	return atomic_load_explicit(&j->done, memory_order_relaxed) ?
	       JOB_RUNNING : JOB_QUEUED;
}

/* Engine worker thread: more sectors are through. */
static void job_progress(sector_t sectors, void *context)
{
	struct kfs_job *j = context;
	uint64_t before = atomic_fetch_add_explicit(&j->done, sectors,
						    memory_order_relaxed);

	/* The first progress moves the job from queued to running. */
	if (!before && sectors)
		j->t->ops.changed(j->t->ops.opaque);
}

/* Engine callback thread: the job is over. */
static int format_job(const struct kfs_job *j, char *buf, size_t len);

/*
 * Keep the final line of a job that just finished, if memory allows; buf
 * gets it too, for the ops->ended call.
 */
static void freeze_line(struct kfs_job *j, char *buf, size_t len)
{
	int n = format_job(j, buf, len);

	if (n <= 0 || (size_t)n >= len)
		return;
	j->line = malloc((size_t)n);
	if (j->line) {
		memcpy(j->line, buf, (size_t)n);
		j->line_len = (size_t)n;
	}
}

/*
 * The failure a results line names: the read's (the source is the last
 * device held), else the first failed destination's.
 */
static void note_error(struct kfs_job *j, const struct kcopyd_completion *c)
{
	struct kfs_table *t = j->t;
	int dev = -1;

	if (c->read_error) {
		j->error = c->read_error;
		j->error_sector = c->read_error_sector;
		dev = j->devs[j->ndevs - 1];
	}
	for (unsigned int i = 0; dev < 0 && i < c->num_dests; i++) {
		if (c->dests[i].error) {
			j->error = c->dests[i].error;
			j->error_sector = c->dests[i].error_sector;
			dev = j->devs[i];
		}
	}
	/* The name, while the job still holds the device. */
	if (dev >= 0)
		snprintf(j->error_name, sizeof(j->error_name), "%s",
			 t->ops.dev_name(t->ops.opaque, dev));
}

/* Remove the job's record, for good. */
static void forget_rec(struct kfs_job *j)
{
	struct kfs_table *t = j->t;

	pth(pthread_mutex_lock(&j->rec_lock));
	if (!j->rec_gone)
		t->ops.forget(t->ops.opaque, j->id);
	j->rec_gone = true;
	pth(pthread_mutex_unlock(&j->rec_lock));
}

/*
 * The job is over (parked: stopped at unmount, its record kept for the
 * next mount, and no results line produced).
 */
static void job_end(struct kfs_job *j, const struct kcopyd_completion *c,
		    bool parked)
{
	struct kfs_table *t = j->t;
	void *waiter = j->waiter;
	bool failed = c->read_err || c->write_err || c->verify_err ||
		      j->state_err;
	/* A waiter learns a cancelled job did not do its work. */
	bool bad = failed || c->cancelled;
	int devs[1 + KFS_MAX_DESTS];
	unsigned int ndevs = j->ndevs;
	struct list_head waits;
	char line[640] = "";
	int err;

	memcpy(devs, j->devs, sizeof(devs));
	/* No record outlives the results line (a rerun could be seen). */
	if (t->ops.forget && !parked)
		forget_rec(j);
	/*
	 * The name, while the device is held (the destinations are held
	 * first, in order); results show it once `finished` is set.
	 */
	for (unsigned int i = 0; i < c->num_dests; i++)
		if (c->verify_err & (1u << i)) {
			snprintf(j->verify_name, sizeof(j->verify_name), "%s",
				 t->ops.dev_name(t->ops.opaque, j->devs[i]));
			j->verify_sector = c->verify_sector[i];
			break;
		}
	lock(t);
	j->finished = true;
	j->parked = parked;
	j->read_err = c->read_err;
	j->write_err = c->write_err;
	j->verify_err = c->verify_err;
	j->cancelled = c->cancelled;
	j->digest_valid = c->digest_valid;
	j->digest = c->digest;
	note_error(j, c);
	err = failed ? (j->error ? j->error : c->verify_err ? EILSEQ : EIO) :
		       0;
	j->usec = usec_since(&j->queued_at);
	freeze_line(j, line, sizeof(line));
	list_init(&waits);
	list_splice_tail_init(&j->waits, &waits);
	t->nr_unfinished--;
	t->nr_finished++;
	if (parked)
		;
	else if (failed)
		t->total_failed++;
	else if (c->cancelled)
		t->total_cancelled++;
	else
		t->total_done++;
	trim(t);	/* may free j */
	unlock(t);

	/* A sync writer or waiter finds its devices free to detach. */
	for (unsigned int i = 0; i < ndevs; i++)
		t->ops.unhold(t->ops.opaque, devs[i]);
	if (!parked)
		t->ops.ended(failed, c->cancelled, err, line, t->ops.opaque);
	if (waiter)
		t->ops.finished(waiter, bad, t->ops.opaque);
	while (!list_empty(&waits)) {
		struct job_wait *w = list_first_entry(&waits, struct job_wait,
						      link);

		list_del_init(&w->link);
		t->ops.finished(w->waiter, bad, t->ops.opaque);
		free(w);
	}
	t->ops.changed(t->ops.opaque);
}

static void job_finished(const struct kcopyd_completion *c, void *context)
{
	job_end(context, c, false);
}

/* --- Steps, under --state --------------------------------------------- */

/* Engine flags of a command. */
static unsigned int engine_flags(const struct kfs_cmd *c)
{
	unsigned int f = 0;

	if (c->flags & KFS_IGNORE_ERRORS)
		f |= KCOPYD_IGNORE_ERROR;
	if (c->flags & KFS_WRITE_SEQ)
		f |= KCOPYD_WRITE_SEQ;
	if (c->flags & KFS_FLUSH)
		f |= KCOPYD_FLUSH;
	if (c->flags & KFS_VERIFY)
		f |= KCOPYD_VERIFY;
	return f;
}

static void step_finished(const struct kcopyd_completion *c, void *context);
static struct block_device *hold(struct kfs_table *t, struct kfs_job *j,
				 int dev);

/* Sectors of the step that starts at j->pos (or is in flight from it). */
static uint64_t step_len(const struct kfs_job *j)
{
	uint64_t rem = j->sectors - j->pos;

	return rem < j->step ? rem : j->step;
}

/* Hand the engine the job's next step (lock held). */
static int submit_step(struct kfs_table *t, struct kfs_job *j)
{
	const struct kfs_cmd *c = j->cmd;
	uint64_t rem = j->sectors - j->pos;
	uint64_t len = step_len(j);
	uint64_t off = j->backward ? rem - len : j->pos;
	struct io_region src, dests[KFS_MAX_DESTS];
	struct kcopyd_job_desc d = {
		.size = sizeof(d),
		.op = c->op == KFS_OP_COPY ? KCOPYD_OP_COPY : KCOPYD_OP_ZERO,
		.flags = engine_flags(c) | KCOPYD_FLUSH,
		.from = c->op == KFS_OP_COPY ? &src : NULL,
		.num_dests = c->num_dests,
		.dests = dests,
		.complete = step_finished,
		.progress = job_progress,
		.context = j,
	};

	for (unsigned int i = 0; i < c->num_dests; i++) {
		const struct kfs_region *r = &c->dests[i];

		/* A zero's destinations may be shorter than the job. */
		dests[i].bdev = j->bdevs[i];
		dests[i].sector = r->sector + (r->count > off ? off : 0);
		dests[i].count = r->count <= off ? 0 :
				 r->count - off < len ? r->count - off : len;
	}
	if (c->op == KFS_OP_COPY) {
		src.bdev = j->bdevs[c->num_dests];
		src.sector = c->src.sector + off;
		src.count = len;
	}
	clock_gettime(CLOCK_MONOTONIC, &j->step_at);
	return kcopyd_submit(t->kc, &d, &j->eid);
}

/* Fold a step's errors into the job's. */
static void add_errors(struct kfs_job *j, const struct kcopyd_completion *c)
{
	if (c->read_err && !j->a_read_err) {
		j->a_read_error = c->read_error;
		j->a_read_error_sector = c->read_error_sector;
	}
	j->a_read_err |= c->read_err;
	j->a_write_err |= c->write_err;
	for (unsigned int i = 0; i < c->num_dests; i++) {
		unsigned int bit = 1u << i;

		if (c->dests[i].error && !j->a_dests[i].error)
			j->a_dests[i] = c->dests[i];
		if ((c->verify_err & bit) && !(j->a_verify_err & bit))
			j->a_verify_sector[i] = c->verify_sector[i];
	}
	j->a_verify_err |= c->verify_err;
}

/* End a stepped job with the errors of all its steps. */
static void end_steps(struct kfs_job *j, const struct kcopyd_completion *last,
		      bool cancelled, bool parked)
{
	struct kcopyd_completion c = *last;

	c.read_err = j->a_read_err;
	c.write_err = j->a_write_err;
	c.read_error = j->a_read_error;
	c.read_error_sector = j->a_read_error_sector;
	c.num_dests = j->cmd->num_dests;
	c.dests = j->a_dests;
	c.verify_err = j->a_verify_err;
	c.verify_sector = j->a_verify_sector;
	c.cancelled = cancelled;
	/* A step's digest is not the job's (checksum is refused here). */
	c.digest_valid = 0;
	c.digest = 0;
	job_end(j, &c, parked);
}

/* Record how far the job is, unless cancelled: 0 or -errno. */
static int save_pos(struct kfs_job *j)
{
	struct kfs_table *t = j->t;
	int r = 0;

	pth(pthread_mutex_lock(&j->rec_lock));
	if (!j->rec_gone)
		r = t->ops.save(t->ops.opaque, j->id, j->rec, j->pos);
	pth(pthread_mutex_unlock(&j->rec_lock));
	clock_gettime(CLOCK_MONOTONIC, &j->saved_at);
	return r;
}

/* Its record could not be kept: the job fails (results name "state"). */
static void state_failed(struct kfs_job *j, int r)
{
	lock(j->t);
	j->state_err = -r;
	j->error = -r;
	j->error_sector = 0;
	snprintf(j->error_name, sizeof(j->error_name), "state");
	unlock(j->t);
}

/* Engine callback thread: a step is over; run the next, or end. */
static void step_finished(const struct kcopyd_completion *c, void *context)
{
	struct kfs_job *j = context;
	struct kfs_table *t = j->t;
	bool failed = c->read_err || c->write_err || c->verify_err;
	bool stop = c->cancelled ||
		    (failed && !(j->cmd->flags & KFS_IGNORE_ERRORS));
	bool parking, cancel;
	int r;

	add_errors(j, c);
	if (!c->cancelled) {
		uint64_t us = usec_since(&j->step_at);

		j->pos += step_len(j);
		/* Steps of about a second: a crash redoes little. */
		if (us < 250000 && j->step <= j->max_step / 2)
			j->step *= 2;
		else if (us > 1000000 && j->step / 2 >= KFS_STEP_MIN)
			j->step /= 2;
	}
	if (!stop && j->pos < j->sectors &&
	    (j->overlap || usec_since(&j->saved_at) >= 1000000)) {
		r = save_pos(j);
		if (r) {
			state_failed(j, r);
			end_steps(j, c, false, false);
			return;
		}
	}
	lock(t);
	parking = t->parking;
	cancel = j->cancel_req;
	if (!stop && j->pos < j->sectors && !parking && !cancel) {
		r = submit_step(t, j);
		if (!r) {
			unlock(t);
			return;
		}
		/* The engine refused the next step: the job fails. */
		j->state_err = -r;
		j->error = -r;
		snprintf(j->error_name, sizeof(j->error_name), "engine");
		stop = true;
		failed = true;
	}
	unlock(t);
	/*
	 * Parked: a job stopped by the unmount keeps its record for the
	 * next mount.  A job that failed, or ran to its end, does not.
	 */
	if (parking && !cancel && !(failed && stop) && j->pos < j->sectors) {
		save_pos(j);
		end_steps(j, c, true, true);
		return;
	}
	end_steps(j, c, c->cancelled || cancel, false);
}

/*
 * Overlap of a copy's destinations with its source: the engine copies in
 * the one safe order (from the end if a destination lies above), and a
 * resume from a recorded point is safe only if no step wrote beyond the
 * point plus the distance: so steps are at most that distance.
 */
static void plan_steps(struct kfs_job *j)
{
	const struct kfs_cmd *c = j->cmd;
	uint64_t step = KFS_STEP_MAX;

	for (unsigned int i = 0; c->op == KFS_OP_COPY && i < c->num_dests;
	     i++) {
		const struct kfs_region *d = &c->dests[i];
		uint64_t shift;

		if (!kcopyd_bdev_same(j->bdevs[i], j->bdevs[c->num_dests]) ||
		    d->sector == c->src.sector ||
		    d->sector >= c->src.sector + c->src.count ||
		    c->src.sector >= d->sector + d->count)
			continue;
		j->overlap = true;
		if (d->sector > c->src.sector) {
			j->backward = true;
			shift = d->sector - c->src.sector;
		} else {
			shift = c->src.sector - d->sector;
		}
		if (shift < step)
			step = shift;
	}
	j->max_step = step;
	j->step = step < KFS_STEP_MIN ? step : KFS_STEP_MIN;
}

/*
 * Queue a job under --state: hold its devices, record it, submit its
 * first step (lock held).
 */
static int submit_stepped_prepare(struct kfs_table *t,
				  const struct kfs_cmd *c, struct kfs_job *j,
				  char *rec)
{
	unsigned int n = 0;

	j->rec = rec;
	j->cmd = malloc(sizeof(*j->cmd));
	if (!j->cmd)
		return -ENOMEM;
	*j->cmd = *c;
	for (unsigned int i = 0; i < c->num_dests; i++)
		j->bdevs[n++] = hold(t, j, c->dests[i].dev);
	if (c->op == KFS_OP_COPY)
		j->bdevs[n++] = hold(t, j, c->src.dev);
	if (!j->rec)
		j->rec = t->ops.describe(t->ops.opaque, c);
	if (!j->rec)
		return -ENOMEM;
	plan_steps(j);
	return 0;
}

static int submit_stepped(struct kfs_table *t, const struct kfs_cmd *c,
			  struct kfs_job *j, char *rec)
{
	int r = submit_stepped_prepare(t, c, j, rec);

	if (r)
		return r;
	r = save_pos(j);
	if (r) {
		/* Half written (renamed, not synced): not to be resumed. */
		forget_rec(j);
		return r;
	}
	r = submit_step(t, j);
	if (r)
		forget_rec(j);
	return r;
}

/* Hold a device the command names (lock held). */
static struct block_device *hold(struct kfs_table *t, struct kfs_job *j,
				 int dev)
{
	j->devs[j->ndevs++] = dev;
	return t->ops.hold(t->ops.opaque, dev);
}

static void unhold_all(struct kfs_table *t, struct kfs_job *j)
{
	for (unsigned int i = 0; i < j->ndevs; i++)
		t->ops.unhold(t->ops.opaque, j->devs[i]);
	j->ndevs = 0;
}

/* The engine's regions and flags of a command. */
static void cmd_regions(struct block_device *const *bdevs,
			const struct kfs_cmd *c, struct io_region *src,
			struct io_region *dests, unsigned int *flags)
{
	for (unsigned int i = 0; i < c->num_dests; i++) {
		dests[i].bdev = bdevs[c->dests[i].dev];
		dests[i].sector = c->dests[i].sector;
		dests[i].count = c->dests[i].count;
	}
	*flags = 0;
	if (c->flags & KFS_IGNORE_ERRORS)
		*flags |= KCOPYD_IGNORE_ERROR;
	if (c->flags & KFS_WRITE_SEQ)
		*flags |= KCOPYD_WRITE_SEQ;
	if (c->flags & KFS_FLUSH)
		*flags |= KCOPYD_FLUSH;
	if (c->op == KFS_OP_COPY) {
		src->bdev = bdevs[c->src.dev];
		src->sector = c->src.sector;
		src->count = c->src.count;
	}
}

int kfs_cmd_check(struct block_device *const *bdevs, const struct kfs_cmd *c,
		  int *culprit)
{
	struct io_region src, dests[KFS_MAX_DESTS];
	unsigned int flags;

	cmd_regions(bdevs, c, &src, dests, &flags);
	return kcopyd_check_copy(c->op == KFS_OP_COPY ? &src : NULL,
				 c->num_dests, dests, flags, culprit);
}

static int submit_one(struct kfs_table *t, const struct kfs_cmd *c,
		      struct kfs_job *j)
{
	struct io_region src, dests[KFS_MAX_DESTS];
	struct kcopyd_job_desc d = {
		.size = sizeof(d),
		.op = c->op == KFS_OP_COPY ? KCOPYD_OP_COPY : KCOPYD_OP_ZERO,
		.from = c->op == KFS_OP_COPY ? &src : NULL,
		.num_dests = c->num_dests,
		.dests = dests,
		.complete = job_finished,
		.progress = job_progress,
		.context = j,
	};

	for (unsigned int i = 0; i < c->num_dests; i++) {
		dests[i].bdev = hold(t, j, c->dests[i].dev);
		dests[i].sector = c->dests[i].sector;
		dests[i].count = c->dests[i].count;
	}
	d.flags = engine_flags(c);
	if (c->flags & KFS_CHECKSUM)
		d.flags |= KCOPYD_DIGEST;
	if (c->op == KFS_OP_COPY) {
		src.bdev = hold(t, j, c->src.dev);
		src.sector = c->src.sector;
		src.count = c->src.count;
	}
	return kcopyd_submit(t->kc, &d, &j->eid);
}

/*
 * Cancel the unfinished job with id c->cancel_id, or every one tagged
 * c->tag (lock held).  Sets *first to the first id cancelled.  Returns 0
 * or -ENOENT if there was none.
 */
static int cancel_jobs(struct kfs_table *t, const struct kfs_cmd *c,
		       uint64_t *first)
{
	struct kfs_job *j;

	*first = 0;
	for_each_job(j, t) {
		if (j->finished ||
		    (c->cancel_id ? j->id != c->cancel_id :
				    strcmp(j->tag, c->tag)))
			continue;
		/*
		 * -ENOENT: its I/O is over, the callback is coming; a job in
		 * steps then runs no more of them.
		 */
		if (j->cmd)
			j->cancel_req = true;
		else if (kcopyd_cancel(t->kc, j->eid))
			continue;
		if (j->cmd) {
			kcopyd_cancel(t->kc, j->eid);
			/* Cancelled now: a crash must not bring it back. */
			forget_rec(j);
		}
		if (!*first)
			*first = j->id;
	}
	return *first ? 0 : -ENOENT;
}

/* Run a cancel or throttle command in its place in a batch (lock held). */
static int control_one(struct kfs_table *t, const struct kfs_cmd *c,
		       uint64_t *id)
{
	*id = 0;
	if (c->op == KFS_OP_CANCEL)
		return cancel_jobs(t, c, id);
	return kcopyd_client_set_throttle(t->kc, c->rate, c->percent);
}

static struct kfs_job *new_job(struct kfs_table *t, const struct kfs_cmd *c,
			       void *waiter)
{
	struct kfs_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	list_init(&j->waits);
	pth(pthread_mutex_init(&j->rec_lock, NULL));
	j->t = t;
	j->op = c->op;
	memcpy(j->tag, c->tag, sizeof(j->tag));
	if (c->op == KFS_OP_COPY) {
		j->sectors = c->src.count;
	} else {
		for (unsigned int i = 0; i < c->num_dests; i++)
			if (c->dests[i].count > j->sectors)
				j->sectors = c->dests[i].count;
	}
	j->waiter = c->flags & KFS_SYNC ? waiter : NULL;
	j->verify = c->flags & KFS_VERIFY;
	j->checksum = c->flags & KFS_CHECKSUM;
	clock_gettime(CLOCK_MONOTONIC, &j->queued_at);
	return j;
}

int kfs_table_submit(struct kfs_table *t, const struct kfs_cmd *cmds,
		     unsigned int n, void *waiter, uint64_t *ids,
		     unsigned int *queued)
{
	unsigned int njobs = 0;
	int r = 0;

	*queued = 0;
	for (unsigned int i = 0; i < n; i++)
		if (cmds[i].op == KFS_OP_COPY || cmds[i].op == KFS_OP_ZERO)
			njobs++;
	lock(t);
	if (njobs > t->max_queue || t->nr_unfinished > t->max_queue - njobs) {
		unlock(t);
		return -EAGAIN;
	}
	for (unsigned int i = 0; i < n; i++) {
		struct kfs_job *j;

		if (cmds[i].op != KFS_OP_COPY && cmds[i].op != KFS_OP_ZERO) {
			r = control_one(t, &cmds[i], &ids[i]);
			if (r)
				break;
			(*queued)++;
			continue;
		}
		j = new_job(t, &cmds[i], waiter);
		if (!j) {
			r = -ENOMEM;
			break;
		}
		/* In the table before the engine can call back. */
		j->id = t->next_id;
		list_add_tail(&j->link, &t->jobs);
		t->nr_unfinished++;
		if (t->ops.save)
			r = submit_stepped(t, &cmds[i], j, NULL);
		else
			r = submit_one(t, &cmds[i], j);
		if (r) {
			unhold_all(t, j);
			list_del_init(&j->link);
			t->nr_unfinished--;
			free_job(j);
			break;
		}
		t->next_id++;
		ids[i] = j->id;
		(*queued)++;
	}
	unlock(t);
	if (*queued)
		t->ops.changed(t->ops.opaque);
	return r;
}

int kfs_table_resume(struct kfs_table *t, const struct kfs_cmd *c,
		     uint64_t id, uint64_t done, char *rec)
{
	struct kcopyd_dest_result dres[KFS_MAX_DESTS] = { { 0 } };
	struct kcopyd_completion none = {
		.size = sizeof(none), .num_dests = c->num_dests, .dests = dres,
	};
	struct kfs_job *j = new_job(t, c, NULL);
	bool finished;
	int r;

	if (!j) {
		free(rec);
		return -ENOMEM;
	}
	lock(t);
	j->id = id;
	j->resumed = true;
	j->pos = done < j->sectors ? done : j->sectors;
	atomic_store(&j->done, j->pos);
	if (id >= t->next_id)
		t->next_id = id + 1;
	list_add_tail(&j->link, &t->jobs);
	t->nr_unfinished++;
	finished = j->pos == j->sectors;
	if (finished) {
		/* Done before the crash: only its line was missing. */
		r = submit_stepped_prepare(t, c, j, rec);
	} else {
		r = submit_stepped(t, c, j, rec);
	}
	if (r) {
		unhold_all(t, j);
		list_del_init(&j->link);
		t->nr_unfinished--;
		free_job(j);
	}
	unlock(t);
	if (!r && finished)
		end_steps(j, &none, false, false);
	t->ops.changed(t->ops.opaque);
	return r;
}

void kfs_table_resume_failed(struct kfs_table *t, uint64_t id,
			     const char *tag, enum kfs_op op,
			     uint64_t sectors, uint64_t done, int err,
			     const char *dev_name)
{
	struct kfs_job *j = calloc(1, sizeof(*j));
	char line[640] = "";

	if (!j)
		return;
	list_init(&j->waits);
	pth(pthread_mutex_init(&j->rec_lock, NULL));
	j->t = t;
	j->id = id;
	j->op = op;
	snprintf(j->tag, sizeof(j->tag), "%s", tag);
	j->sectors = sectors;
	atomic_init(&j->done, done);
	j->resumed = true;
	j->finished = true;
	j->state_err = err;
	j->error = err;
	snprintf(j->error_name, sizeof(j->error_name), "%s", dev_name);
	clock_gettime(CLOCK_MONOTONIC, &j->queued_at);
	lock(t);
	if (id >= t->next_id)
		t->next_id = id + 1;
	freeze_line(j, line, sizeof(line));
	list_add_tail(&j->link, &t->jobs);
	t->nr_finished++;
	t->total_failed++;
	trim(t);
	unlock(t);
	t->ops.ended(true, false, err, line, t->ops.opaque);
	t->ops.changed(t->ops.opaque);
}

void kfs_table_park(struct kfs_table *t)
{
	struct kfs_job *j;

	lock(t);
	t->parking = true;
	for_each_job(j, t)
		if (!j->finished && j->cmd)
			kcopyd_cancel(t->kc, j->eid);
	unlock(t);
}

int kfs_table_wait(struct kfs_table *t, uint64_t id, void *waiter)
{
	struct job_wait *w = malloc(sizeof(*w));
	struct kfs_job *j;
	int r;

	if (!w)
		return -ENOMEM;
	lock(t);
	r = !id || id >= t->next_id ? -ENOENT : -ESRCH;
	for_each_job(j, t) {
		if (j->id != id)
			continue;
		if (j->finished) {
			r = j->read_err || j->write_err || j->verify_err ||
			    j->cancelled ? 2 : 1;
		} else {
			w->waiter = waiter;
			list_add_tail(&w->link, &j->waits);
			w = NULL;
			r = 0;
		}
		break;
	}
	unlock(t);
	free(w);
	return r;
}

/* One results line, without the newline (lock held). */
static int format_job(const struct kfs_job *j, char *buf, size_t len)
{
	uint64_t usec = j->finished ? j->usec : usec_since(&j->queued_at);
	const char *name;
	char ename[16];
	int n;

	n = snprintf(buf, len,
		     "id=%llu tag=%s op=%s state=%s read_err=%d "
		     "write_err=0x%x sectors=%llu done=%llu usec=%llu",
		     (unsigned long long)j->id, j->tag[0] ? j->tag : "-",
		     j->op == KFS_OP_COPY ? "copy" : "zero",
		     state_names[job_state(j)], j->read_err ? 1 : 0,
		     j->write_err, (unsigned long long)j->sectors,
		     (unsigned long long)atomic_load_explicit(
			     &j->done, memory_order_relaxed),
		     (unsigned long long)usec);
	if (n < 0 || (size_t)n >= len)
		return n;
	if (j->resumed) {
		n += snprintf(buf + n, len - (size_t)n, " resumed");
		if ((size_t)n >= len)
			return n;
	}
	/* error=ENOSPC@4096 on sdb: the errno's name, sector and device. */
	if (j->error) {
		name = strerrorname_np(j->error);
		if (!name) {
			snprintf(ename, sizeof(ename), "E%d", j->error);
			name = ename;
		}
		n += snprintf(buf + n, len - (size_t)n, " error=%s@%llu on %s",
			      name, (unsigned long long)j->error_sector,
			      j->error_name);
		if ((size_t)n >= len)
			return n;
	}
	if (!j->finished)
		return n;
	if (j->verify && !j->verify_err)
		n += snprintf(buf + n, len - (size_t)n, " verify=ok");
	else if (j->verify)
		n += snprintf(buf + n, len - (size_t)n,
			      " verify=failed@%llu on %s",
			      (unsigned long long)j->verify_sector,
			      j->verify_name);
	if (!j->checksum || (size_t)n >= len)
		return n;
	/* The source's digest, or none when it was not all read. */
	if (!j->digest_valid)
		return n + snprintf(buf + n, len - (size_t)n, " digest=none");
	return n + snprintf(buf + n, len - (size_t)n,
			    " digest=%016llx",
			    (unsigned long long)j->digest);
}

/*
 * Longest line: the fixed words, a tag, eight 20-digit numbers, an error
 * with its name, sector and device name, a verify failure and a digest
 * (at most 639 bytes: see job_finished()).
 */
#define LINE_MAX_LEN (240 + 3 * KFS_MAX_NAME + 10 * 20)

/* A job's results line with its newline, into buf (lock held). */
static size_t job_line(const struct kfs_job *j, char *buf)
{
	size_t n;

	if (j->line) {
		memcpy(buf, j->line, j->line_len);
		n = j->line_len;
	} else {
		n = (size_t)format_job(j, buf, LINE_MAX_LEN);
	}
	buf[n++] = '\n';
	return n;
}

/*
 * Where a read at off starts in the text as it is now: the job holding
 * byte off, and how far into its line (lock held).  Costs a walk over
 * the table; sequential reads never need it.
 */
static void seek_text(struct kfs_table *t, uint64_t off,
		      struct kfs_results_pos *pos)
{
	char line[LINE_MAX_LEN + 1];
	uint64_t at = 0;
	struct kfs_job *j;

	pos->id = 0;
	pos->skip = 0;
	for_each_job(j, t) {
		size_t n = job_line(j, line);

		if (off < at + n) {
			pos->id = j->id;
			pos->skip = (size_t)(off - at);
			return;
		}
		at += n;
	}
	/* Past the end: only jobs queued from now on follow. */
	pos->id = t->next_id;
}

size_t kfs_table_read(struct kfs_table *t, struct kfs_results_pos *pos,
		      uint64_t off, char *buf, size_t size)
{
	char line[LINE_MAX_LEN + 1];
	struct kfs_job *j;
	size_t used = 0;

	lock(t);
	if (off == 0) {
		pos->id = 0;
		pos->skip = 0;
	} else if (!pos->valid || pos->off != off) {
		seek_text(t, off, pos);
	}
	for_each_job(j, t) {
		size_t n, take;

		if (j->id < pos->id)
			continue;
		if (j->id > pos->id)
			pos->skip = 0;
		n = job_line(j, line);
		if (pos->skip >= n) {
			/* The line shrank under a reader that cut it. */
			pos->skip = 0;
			continue;
		}
		take = n - pos->skip;
		if (take > size - used)
			take = size - used;
		memcpy(buf + used, line + pos->skip, take);
		used += take;
		pos->id = j->id;
		pos->skip += take;
		if (pos->skip < n)
			break;
		pos->id = j->id + 1;
		pos->skip = 0;
		if (used == size)
			break;
	}
	unlock(t);
	pos->off = off + used;
	pos->valid = true;
	return used;
}

void kfs_table_counts(struct kfs_table *t, struct kfs_counts *c)
{
	struct kfs_job *j;

	memset(c, 0, sizeof(*c));
	lock(t);
	for_each_job(j, t) {
		enum job_state s = job_state(j);

		if (s == JOB_QUEUED)
			c->queued++;
		else if (s == JOB_RUNNING)
			c->running++;
	}
	c->done = t->total_done;
	c->failed = t->total_failed;
	c->cancelled = t->total_cancelled;
	unlock(t);
}

uint64_t kfs_table_next_id(struct kfs_table *t)
{
	uint64_t id;

	lock(t);
	id = t->next_id;
	unlock(t);
	return id;
}

int kfs_table_unfinished(struct kfs_table *t, uint64_t **ids, size_t *n)
{
	struct kfs_job *j;
	uint64_t *out;

	lock(t);
	out = calloc(t->nr_unfinished + 1, sizeof(*out));
	if (!out) {
		unlock(t);
		return -ENOMEM;
	}
	*n = 0;
	for_each_job(j, t)
		if (!j->finished)
			out[(*n)++] = j->id;
	unlock(t);
	*ids = out;
	return 0;
}

int kfs_table_describe(struct kfs_table *t, uint64_t id, char *buf,
		       size_t len)
{
	struct kfs_job *j;
	int r = -ENOENT;

	lock(t);
	for_each_job(j, t) {
		if (j->id == id) {
			format_job(j, buf, len);
			r = 0;
			break;
		}
	}
	unlock(t);
	return r;
}
