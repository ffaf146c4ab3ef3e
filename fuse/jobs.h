/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job table of kcopydfs: every job queued through the control file,
 * from submission to its line in MNT/results, and the bounds on both.
 */
#ifndef KCOPYDFS_JOBS_H
#define KCOPYDFS_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kcopyd.h"
#include "parse.h"

struct kfs_job;
struct kfs_table;

/*
 * Sectors in one step of a job under --state: from 1 MiB, doubled after a
 * step that took under a quarter of a second, halved after one that took
 * over a second, at most 64 MiB.
 */
#define KFS_STEP_MIN		(1024ull * 1024 / KCOPYD_SECTOR_SIZE)
#define KFS_STEP_MAX		(64ull * 1024 * 1024 / KCOPYD_SECTOR_SIZE)

struct kfs_table_ops {
	/*
	 * A job's state changed (queued, running, finished).  Called from
	 * any thread, with no table lock held; must not block for long.
	 */
	void (*changed)(void *opaque);
	/*
	 * A job that was given a waiter has finished; failed says whether it
	 * had an error.  Called on the engine's callback thread, no lock held.
	 */
	void (*finished)(void *waiter, bool failed, void *opaque);
	/*
	 * A job has finished: its final results line (no newline), whether
	 * it was cancelled, and, if it failed, the errno of its first
	 * failure.  Called on the engine's callback thread, no lock held,
	 * before its waiters' finished calls.
	 */
	void (*ended)(bool failed, bool cancelled, int err, const char *line,
		      void *opaque);
	/*
	 * The engine's handle of device index dev, held while a job that
	 * names it is queued or running (called with the table's lock
	 * held); unhold ends the hold, on the engine's callback thread with
	 * no table lock held, before the job's waiters are called.
	 */
	struct block_device *(*hold)(void *opaque, int dev);
	void (*unhold)(void *opaque, int dev);
	/* The name of device index dev, while it is held. */
	const char *(*dev_name)(void *opaque, int dev);
	/*
	 * Under --state (all three set, else all NULL): describe gives the
	 * record text of a command being queued (t->lock and the devices
	 * held; NULL when out of memory); save writes job id's record with
	 * `done` sectors finished and returns 0 or -errno; forget removes
	 * it.  Jobs then run in steps, each flushed before its end is
	 * recorded (see kfs_table_create).
	 */
	char *(*describe)(void *opaque, const struct kfs_cmd *c);
	int (*save)(void *opaque, uint64_t id, const char *rec,
		    uint64_t done);
	void (*forget)(void *opaque, uint64_t id);
	void *opaque;
};

/* Counts of the jobs in the table, a consistent snapshot. */
struct kfs_counts {
	uint64_t queued;
	uint64_t running;
	uint64_t done;		/* ever finished without an error */
	uint64_t failed;	/* ever finished with an error */
	uint64_t cancelled;	/* ever cancelled (and not failed) */
};

/*
 * Create a table for the engine client kc; ops->hold says which device an
 * index of a parsed command means.  keep bounds the finished jobs kept
 * (oldest dropped first); max_queue bounds the unfinished ones.
 * next_id is the first id to give.  Returns 0 or -ENOMEM.
 *
 * With ops->save, every job is recorded before kfs_table_submit returns,
 * and runs as a sequence of engine jobs (steps, see KFS_STEP_MIN), each
 * with KCOPYD_FLUSH; when a step ends the
 * finished prefix is recorded, at most once a second - or after every
 * step for a copy whose destination overlaps its source: those steps are
 * at most the distance between them, so a step never overwrites a
 * source sector that a resume from the recorded point would read.
 */
int kfs_table_create(struct kcopyd_client *kc, unsigned int keep,
		     unsigned int max_queue, uint64_t next_id,
		     const struct kfs_table_ops *ops,
		     struct kfs_table **result);
void kfs_table_free(struct kfs_table *t);

/*
 * What the engine would refuse of a command, on these devices (indexed as
 * the command's regions): 0 or a negative errno, *culprit as
 * kcopyd_check_copy(3).  Any thread.
 */
int kfs_cmd_check(struct block_device *const *bdevs, const struct kfs_cmd *c,
		  int *culprit);

/*
 * Queue cmds[0..n) as one batch: either there is room for all of its jobs
 * or none is queued (-EAGAIN).  ids[i] gets the id of cmds[i] (for a
 * cancel, the first job it cancelled; 0 for a throttle).  A command with
 * KFS_SYNC gets `waiter` (ops->finished is called for it).  Cancel and
 * throttle commands take effect in their place in the batch.  If the
 * engine refuses a command, or a cancel finds no unfinished job
 * (-ENOENT), the ones before it stay done: *queued says how many were,
 * and the error is returned.
 */
int kfs_table_submit(struct kfs_table *t, const struct kfs_cmd *cmds,
		     unsigned int n, void *waiter, uint64_t *ids,
		     unsigned int *queued);

/*
 * Call ops->finished(waiter) when job id ends.  Returns 0 when it will,
 * 1 when the job has already ended without an error, 2 when with one (or
 * cancelled),
 * -ENOENT for an id never given, -ESRCH for a job finished and no longer
 * kept, -ENOMEM.
 */
int kfs_table_wait(struct kfs_table *t, uint64_t id, void *waiter);

/*
 * A reader's place in MNT/results, as a seq_file's: the job whose line
 * comes next and how much of it was read, valid for the offset `off`.
 */
struct kfs_results_pos {
	bool valid;
	uint64_t off;
	uint64_t id;
	size_t skip;
};

/*
 * Read MNT/results at byte offset off into buf (at most size bytes),
 * straight from the live table: no copy of the text is kept anywhere.
 * A read at the offset where pos's last read ended goes on from the job
 * after the last whole line it returned, so sequential reads see every
 * kept job once, in id order, and no line torn (if size holds a line);
 * a read at 0 starts over; any other offset is found in the text as it
 * is now.  Returns the bytes read, 0 at the end.
 */
size_t kfs_table_read(struct kfs_table *t, struct kfs_results_pos *pos,
		      uint64_t off, char *buf, size_t size);

/*
 * At mount, under --state: queue job id again, for what is left of
 * command c after `done` sectors (its results show the whole job, and the
 * word `resumed`), with its record text rec (the table takes it).
 * 0 or -errno (the engine's refusal, -ENOMEM).
 */
int kfs_table_resume(struct kfs_table *t, const struct kfs_cmd *c,
		     uint64_t id, uint64_t done, char *rec);

/*
 * At mount, under --state: job id could not be resumed; it gets a failed
 * results line (ops->ended is called) with errno err on device dev_name.
 */
void kfs_table_resume_failed(struct kfs_table *t, uint64_t id,
			     const char *tag, enum kfs_op op,
			     uint64_t sectors, uint64_t done, int err,
			     const char *dev_name);

/*
 * Under --state, at unmount: stop every unfinished job, keeping its
 * record (with what it finished) for the next mount rather than letting
 * it run to its end.  Their ends come through the engine; destroy the
 * client after this to wait for them.
 */
void kfs_table_park(struct kfs_table *t);

void kfs_table_counts(struct kfs_table *t, struct kfs_counts *c);

/* The id the next job will get. */
uint64_t kfs_table_next_id(struct kfs_table *t);

/*
 * The ids of the unfinished jobs, in a fresh array (*ids, *n; free() it),
 * and one job's results line (0, or -ENOENT once it has been dropped).
 */
int kfs_table_unfinished(struct kfs_table *t, uint64_t **ids, size_t *n);
int kfs_table_describe(struct kfs_table *t, uint64_t id, char *buf,
		       size_t len);

#endif /* KCOPYDFS_JOBS_H */
