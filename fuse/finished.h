/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MNT/finished: the final results line of every job, appended as the job
 * ends, so that the file only grows and `tail -f` follows it.  The last
 * `keep` lines are kept; the size counts every byte ever appended.
 */
#ifndef KCOPYDFS_FINISHED_H
#define KCOPYDFS_FINISHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kfs_finished;

/* A reader's place: the line that comes next and how much of it was read,
 * valid for the offset `off`. */
struct kfs_finished_pos {
	bool valid;
	uint64_t off;
	uint64_t seq;
	size_t skip;
};

/* Returns 0 or -ENOMEM. */
int kfs_finished_create(unsigned int keep, struct kfs_finished **result);
void kfs_finished_free(struct kfs_finished *f);

/* Append line (no newline; one is added).  Any thread. */
void kfs_finished_add(struct kfs_finished *f, const char *line);

/* Bytes ever appended: the file's size. */
uint64_t kfs_finished_size(struct kfs_finished *f);

/*
 * Read at byte offset off into buf.  A read where pos's last one ended
 * goes on with the next line even if older lines were dropped meanwhile,
 * so a reader that falls more than `keep` lines behind skips lines but
 * never gets a torn one; another offset is found among the kept lines
 * (one before them reads from the oldest kept).  Returns the bytes read,
 * 0 at the end.
 */
size_t kfs_finished_read(struct kfs_finished *f, struct kfs_finished_pos *pos,
			 uint64_t off, char *buf, size_t size);

#endif /* KCOPYDFS_FINISHED_H */
