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
	 * Optional: the name of device index dev, for the error of a results
	 * line; and a line to log for a job that failed or was cancelled
	 * (engine callback thread, no lock held).
	 */
	const char *(*dev_name)(int dev, void *opaque);
	void (*log)(bool failed, const char *line, void *opaque);
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
 * Create a table for the engine client kc.  bdevs[i] is the device that
 * index i of a parsed command means.  keep bounds the finished jobs kept
 * (oldest dropped first); max_queue bounds the unfinished ones.
 * Returns 0 or -ENOMEM.
 */
int kfs_table_create(struct kcopyd_client *kc, struct block_device **bdevs,
		     unsigned int keep, unsigned int max_queue,
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

void kfs_table_counts(struct kfs_table *t, struct kfs_counts *c);

/*
 * The ids of the unfinished jobs, in a fresh array (*ids, *n; free() it),
 * and one job's results line (0, or -ENOENT once it has been dropped).
 */
int kfs_table_unfinished(struct kfs_table *t, uint64_t **ids, size_t *n);
int kfs_table_describe(struct kfs_table *t, uint64_t id, char *buf,
		       size_t len);

#endif /* KCOPYDFS_JOBS_H */
