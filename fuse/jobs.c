/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job table: ids, states, progress and timings of the jobs queued
 * through MNT/control, and the text of MNT/results.
 *
 * Thread model
 * ------------
 * Threads that enter here:
 *   - FUSE worker threads: kfs_table_submit (a control write),
 *     kfs_table_render and kfs_table_counts (opening results and stats);
 *   - the engine's worker threads: job_progress, which touches only the
 *     job's atomic `done` counter and so takes no lock;
 *   - the engine's callback thread: job_finished;
 *   - the main thread at unmount: kfs_table_unfinished, kfs_table_describe.
 * t->lock protects the list and every field marked (lock).  A batch is
 * handed to the engine with t->lock held, so the ids of one write are
 * consecutive and the queue bound is checked and taken at once; this is
 * safe because the engine calls back with none of its locks held, and the
 * lock order is always t->lock, then the engine's.  ops->changed and
 * ops->finished are called with no table lock held.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobs.h"

enum job_state {
	JOB_QUEUED,
	JOB_RUNNING,
	JOB_DONE,
	JOB_FAILED,
};

static const char *const state_names[] = {
	[JOB_QUEUED] = "queued",
	[JOB_RUNNING] = "running",
	[JOB_DONE] = "done",
	[JOB_FAILED] = "failed",
};

struct kfs_job {
	struct kfs_table *t;
	struct kfs_job *prev, *next;	/* t->jobs, in id order (lock) */

	/* Set before the job is handed to the engine, then read-only. */
	uint64_t id;
	enum kfs_op op;
	char tag[KFS_MAX_NAME + 1];
	uint64_t sectors;
	struct timespec queued_at;
	void *waiter;

	uint64_t done;			/* sectors so far (atomic) */
	bool finished;			/* (lock) */
	int read_err;			/* (lock) */
	unsigned int write_err;		/* (lock) */
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
	struct block_device **bdevs;
	unsigned int keep;
	unsigned int max_queue;
	struct kfs_table_ops ops;

	struct kfs_job head;		/* list of jobs (lock) */
	uint64_t next_id;		/* (lock) */
	unsigned int nr_unfinished;	/* (lock) */
	unsigned int nr_finished;	/* finished and kept (lock) */
	uint64_t total_done;		/* (lock) */
	uint64_t total_failed;		/* (lock) */
};

static void lock(struct kfs_table *t)
{
	if (pthread_mutex_lock(&t->lock))
		abort();
}

static void unlock(struct kfs_table *t)
{
	if (pthread_mutex_unlock(&t->lock))
		abort();
}

static uint64_t usec_since(const struct timespec *a)
{
	struct timespec now;
	int64_t us;

	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (int64_t)(now.tv_sec - a->tv_sec) * 1000000 +
	     (now.tv_nsec - a->tv_nsec) / 1000;
	return us < 0 ? 0 : (uint64_t)us;
}

static void list_append(struct kfs_job *head, struct kfs_job *j)
{
	j->next = head;
	j->prev = head->prev;
	head->prev->next = j;
	head->prev = j;
}

static void list_remove(struct kfs_job *j)
{
	j->prev->next = j->next;
	j->next->prev = j->prev;
}

int kfs_table_create(struct kcopyd_client *kc, struct block_device **bdevs,
		     unsigned int keep, unsigned int max_queue,
		     const struct kfs_table_ops *ops, struct kfs_table **result)
{
	struct kfs_table *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	if (pthread_mutex_init(&t->lock, NULL))
		abort();
	t->kc = kc;
	t->bdevs = bdevs;
	t->keep = keep;
	t->max_queue = max_queue;
	t->ops = *ops;
	t->head.next = t->head.prev = &t->head;
	t->next_id = 1;
	*result = t;
	return 0;
}

void kfs_table_free(struct kfs_table *t)
{
	struct kfs_job *j, *next;

	if (!t)
		return;
	for (j = t->head.next; j != &t->head; j = next) {
		next = j->next;
		free(j->line);
		free(j);
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Drop the oldest finished jobs beyond the bound (lock held). */
static void trim(struct kfs_table *t)
{
	struct kfs_job *j = t->head.next;

	while (t->nr_finished > t->keep && j != &t->head) {
		struct kfs_job *next = j->next;

		if (j->finished) {
			list_remove(j);
			free(j->line);
			free(j);
			t->nr_finished--;
		}
		j = next;
	}
}

static enum job_state job_state(const struct kfs_job *j)
{
	if (j->finished)
		return j->read_err || j->write_err ? JOB_FAILED : JOB_DONE;
	return __atomic_load_n(&j->done, __ATOMIC_RELAXED) ? JOB_RUNNING :
							     JOB_QUEUED;
}

/* Engine worker thread: more sectors are through. */
static void job_progress(sector_t sectors, void *context)
{
	struct kfs_job *j = context;
	uint64_t before = __atomic_fetch_add(&j->done, sectors,
					     __ATOMIC_RELAXED);

	/* The first progress moves the job from queued to running. */
	if (!before && sectors)
		j->t->ops.changed(j->t->ops.opaque);
}

/* Engine callback thread: the job is over. */
static int format_job(const struct kfs_job *j, char *buf, size_t len);

/* Keep the final line of a job that just finished, if memory allows. */
static void freeze_line(struct kfs_job *j)
{
	char buf[512];
	int n = format_job(j, buf, sizeof(buf));

	if (n <= 0 || (size_t)n >= sizeof(buf))
		return;
	j->line = malloc((size_t)n);
	if (j->line) {
		memcpy(j->line, buf, (size_t)n);
		j->line_len = (size_t)n;
	}
}

static void job_finished(int read_err, unsigned int write_err, void *context)
{
	struct kfs_job *j = context;
	struct kfs_table *t = j->t;
	void *waiter = j->waiter;
	bool failed = read_err || write_err;

	lock(t);
	j->finished = true;
	j->read_err = read_err;
	j->write_err = write_err;
	j->usec = usec_since(&j->queued_at);
	freeze_line(j);
	t->nr_unfinished--;
	t->nr_finished++;
	if (failed)
		t->total_failed++;
	else
		t->total_done++;
	trim(t);	/* may free j */
	unlock(t);

	if (waiter)
		t->ops.finished(waiter, failed, t->ops.opaque);
	t->ops.changed(t->ops.opaque);
}

static int submit_one(struct kfs_table *t, const struct kfs_cmd *c,
		      struct kfs_job *j)
{
	struct io_region src, dests[KFS_MAX_DESTS];
	unsigned int flags = 0;

	for (unsigned int i = 0; i < c->num_dests; i++) {
		dests[i].bdev = t->bdevs[c->dests[i].dev];
		dests[i].sector = c->dests[i].sector;
		dests[i].count = c->dests[i].count;
	}
	if (c->flags & KFS_IGNORE_ERRORS)
		flags |= KCOPYD_IGNORE_ERROR;
	if (c->flags & KFS_WRITE_SEQ)
		flags |= KCOPYD_WRITE_SEQ;
	if (c->op == KFS_OP_COPY) {
		src.bdev = t->bdevs[c->src.dev];
		src.sector = c->src.sector;
		src.count = c->src.count;
	}
	return kcopyd_copy_progress(t->kc, c->op == KFS_OP_COPY ? &src : NULL,
				    c->num_dests, dests, flags, job_finished,
				    job_progress, j);
}

static struct kfs_job *new_job(struct kfs_table *t, const struct kfs_cmd *c,
			       void *waiter)
{
	struct kfs_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
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
	clock_gettime(CLOCK_MONOTONIC, &j->queued_at);
	return j;
}

int kfs_table_submit(struct kfs_table *t, const struct kfs_cmd *cmds,
		     unsigned int n, void *waiter, uint64_t *ids,
		     unsigned int *queued)
{
	int r = 0;

	*queued = 0;
	lock(t);
	if (n > t->max_queue || t->nr_unfinished > t->max_queue - n) {
		unlock(t);
		return -EAGAIN;
	}
	for (unsigned int i = 0; i < n; i++) {
		struct kfs_job *j = new_job(t, &cmds[i], waiter);

		if (!j) {
			r = -ENOMEM;
			break;
		}
		/* In the table before the engine can call back. */
		j->id = t->next_id;
		list_append(&t->head, j);
		t->nr_unfinished++;
		r = submit_one(t, &cmds[i], j);
		if (r) {
			list_remove(j);
			t->nr_unfinished--;
			free(j);
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

/* One results line, without the newline (lock held). */
static int format_job(const struct kfs_job *j, char *buf, size_t len)
{
	uint64_t usec = j->finished ? j->usec : usec_since(&j->queued_at);

	return snprintf(buf, len,
			"id=%llu tag=%s op=%s state=%s read_err=%d "
			"write_err=0x%x sectors=%llu done=%llu usec=%llu",
			(unsigned long long)j->id, j->tag[0] ? j->tag : "-",
			j->op == KFS_OP_COPY ? "copy" : "zero",
			state_names[job_state(j)], j->read_err ? 1 : 0,
			j->write_err, (unsigned long long)j->sectors,
			(unsigned long long)__atomic_load_n(&j->done,
							    __ATOMIC_RELAXED),
			(unsigned long long)usec);
}

/* Longest line: the fixed words, a tag, and eight 20-digit numbers. */
#define LINE_MAX_LEN (128 + KFS_MAX_NAME + 8 * 20)

int kfs_table_render(struct kfs_table *t, char **buf, size_t *len)
{
	struct kfs_job *j;
	size_t cap, used = 0;
	char *out;

	lock(t);
	cap = (size_t)(t->nr_unfinished + t->nr_finished + 1) * LINE_MAX_LEN;
	out = malloc(cap);
	if (!out) {
		unlock(t);
		return -ENOMEM;
	}
	for (j = t->head.next; j != &t->head; j = j->next) {
		if (j->line) {
			memcpy(out + used, j->line, j->line_len);
			used += j->line_len;
		} else {
			used += (size_t)format_job(j, out + used, cap - used);
		}
		out[used++] = '\n';
	}
	unlock(t);
	*buf = out;
	*len = used;
	return 0;
}

void kfs_table_counts(struct kfs_table *t, struct kfs_counts *c)
{
	struct kfs_job *j;

	memset(c, 0, sizeof(*c));
	lock(t);
	for (j = t->head.next; j != &t->head; j = j->next) {
		enum job_state s = job_state(j);

		if (s == JOB_QUEUED)
			c->queued++;
		else if (s == JOB_RUNNING)
			c->running++;
	}
	c->done = t->total_done;
	c->failed = t->total_failed;
	unlock(t);
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
	for (j = t->head.next; j != &t->head; j = j->next)
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
	for (j = t->head.next; j != &t->head; j = j->next) {
		if (j->id == id) {
			format_job(j, buf, len);
			r = 0;
			break;
		}
	}
	unlock(t);
	return r;
}
