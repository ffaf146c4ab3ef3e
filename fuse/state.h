/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --state DIR: the jobs of a kcopydfs mount kept on disk, so that a
 * crash, a power cut or an unmount with jobs queued does not lose them.
 *
 * DIR holds `lock` (flock(2)ed by the one daemon that uses DIR), `next`
 * (the next job id, so ids never repeat across mounts) and one record
 * job.ID for every accepted job whose final results line has not been
 * produced.  A record is text:
 *
 *   kcopydfs job 1
 *   id ID
 *   done SECTORS
 *   cmd COMMAND               (the control file's language, devices by name)
 *   dev NAME BYTES IDENTITY   (one per device the command names)
 *
 * IDENTITY is `file DEV:INO` (an image file: st_dev and st_ino),
 * `blk MAJ:MIN` (a block device) or `nbd URI`.  done counts the
 * sectors finished from the start of the regions (from their end for a
 * copy to a higher place that overlaps its source).  Every file is
 * replaced whole (replace_file), so a crash leaves it old or new.
 */
#ifndef KCOPYDFS_STATE_H
#define KCOPYDFS_STATE_H

#include <stdatomic.h>
#include <stdint.h>

#include "parse.h"

struct kfs;

struct kfs_state {
	char *dir;
	int lock_fd;
	atomic_uint_fast64_t next;	/* what `next` holds */
	/* Records resumed, and records that could not be, at mount. */
	unsigned int resumed;
	unsigned int not_resumed;
};

/*
 * Use dir (made if missing) as the state of this mount: 0, or -EBUSY
 * (another live kcopydfs uses it), -ENOTDIR, -errno, with a message.
 */
int kfs_state_open(const char *dir, struct kfs_state **result, char *msg,
		   size_t msglen);
/* The end of the mount; next (if not 0) is the next id to give. */
void kfs_state_close(struct kfs_state *s, uint64_t next);

/* The id `next` holds (1 when there is none yet). */
uint64_t kfs_state_next_id(struct kfs_state *s);

/*
 * Write job id's record: rec (its cmd and dev lines, from
 * kfs_state_describe) and done.  0 or -errno.  Callers never write one
 * id's record from two threads at once.
 */
int kfs_state_save(struct kfs_state *s, uint64_t id, const char *rec,
		   uint64_t done);
/* The job's final line is out: its record goes.  0 or -errno. */
int kfs_state_forget(struct kfs_state *s, uint64_t id);

/*
 * The cmd and dev lines of a command on the devices of fs (fs->dlock
 * held, or the devices held by a job): a malloc'd string, or NULL.
 * Called through the job table's describe hook.
 */
char *kfs_state_describe(void *fs, const struct kfs_cmd *c);

/* The table's save and forget hooks (opaque: the struct kfs). */
int kfs_state_save_job(void *fs, uint64_t id, const char *rec,
		       uint64_t done);
void kfs_state_forget_job(void *fs, uint64_t id);
/*
 * The -errno of the last record the calling thread failed to write
 * through kfs_state_save_job, or 0; cleared.  A control write's queueing
 * saves its jobs' first records on its own thread, so it names the cause.
 */
int kfs_state_take_error(void);

/*
 * At mount, before the session serves: every record of fs->state is
 * queued again for its unfinished part (devices matched by name and
 * identity), or given a failed results line with the reason and
 * removed.  Files of DIR that are no records are left alone, with a
 * warning.  0, or -errno when DIR cannot be read.
 */
int kfs_state_resume(struct kfs *fs);

#endif /* KCOPYDFS_STATE_H */
