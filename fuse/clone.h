/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Clone devices: dev/NAME over a read-only SOURCE, a DEST at least as
 * large and a small META image, as the kernel's dm-clone.  Every byte of
 * dev/NAME reads as SOURCE's until written; the engine copies SOURCE to
 * DEST region by region in the background (hydration), and a region once
 * copied (or wholly written, or discarded) is served from DEST.  META
 * holds a header and the bitmap of hydrated regions, committed on fsync of
 * dev/NAME and every second, always after a flush of DEST.
 */
#ifndef KCOPYDFS_CLONE_H
#define KCOPYDFS_CLONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parse.h"

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

struct kfs;
struct kfs_dev;
struct kfs_clone;

/* Region sizes: a power of two in this range; the default. */
#define KFS_CLONE_MIN_REGION	(4096ull)
#define KFS_CLONE_MAX_REGION	(1ull << 30)
#define KFS_CLONE_DEF_REGION	(64ull * 1024)

/*
 * A clone as given at mount: --clone NAME=SOURCE:DEST:META[:OPTS], OPTS
 * region=SIZE, commit=SECONDS, paused.
 */
struct kfs_clone_spec {
	char name[KFS_MAX_NAME + 1];
	char source[KFS_MAX_NAME + 1];
	char dest[KFS_MAX_NAME + 1];
	char meta[KFS_MAX_NAME + 1];
	uint64_t region;		/* 0: the META's, or the default */
	unsigned int interval;		/* commit=SECONDS; 0: 1 */
	bool paused;			/* background hydration paused */
};

/*
 * Parse "NAME=SOURCE:DEST:META[:region=SIZE][:commit=SECONDS][:paused]".
 * Returns 0 or -EINVAL with a message naming the offending part.
 */
int kfs_clone_parse(const char *spec, struct kfs_clone_spec *out,
		    char *errmsg, size_t errlen);

/*
 * Make the clone dev/NAME over the attached devices the spec names,
 * reading or creating META, and attach it; it hydrates once the engine
 * runs (at once, after mount).  Returns 0 or -errno with a message:
 * -EINVAL (a META of another clone, or not a clone's; a bad spec),
 * -ENOSPC (DEST or META too small), -ENOENT (no such device), -EBUSY (a
 * device already a clone or under one), -EEXIST (the name is taken),
 * -EROFS (DEST or META read-only).
 */
int kfs_clone_create(struct kfs *fs, const struct kfs_clone_spec *spec,
		     char *msg, size_t msglen);

/* Once the engine runs (after any fork): start hydrating. */
int kfs_clone_start(struct kfs_clone *c);
/* After the session: submit nothing more (jobs in flight finish). */
void kfs_clone_quiesce(struct kfs_clone *c);
/*
 * The last commit, then free (from kfs_dev_free of its device, once the
 * engine has no job of it).
 */
void kfs_clone_close(struct kfs_clone *c);

/* dev/NAME's I/O; each answers req, now or from a hydration. */
void kfs_clone_read(struct kfs_clone *c, fuse_req_t req, size_t size,
		    uint64_t off);
void kfs_clone_write(struct kfs_clone *c, fuse_req_t req, const char *buf,
		     size_t size, uint64_t off);
void kfs_clone_zero(struct kfs_clone *c, fuse_req_t req, uint64_t off,
		    uint64_t len, bool punch);
/* fsync: flush DEST and commit the bitmap.  Returns 0 or -errno. */
int kfs_clone_fsync(struct kfs_clone *c);

/* Has `remove` taken it away (so a detach may free it)? */
bool kfs_clone_removable(struct kfs_clone *c);

/*
 * A control write that is a clone command, alone in its write: "clone
 * NAME SOURCE DEST META [region=SIZE] [commit=SECONDS] [paused]",
 * "remove NAME", "clone-pause NAME", "clone-resume NAME",
 * "clone-finish NAME".  Returns 1 and
 * sets *err (0 or -errno, with msg), or 0 when the line is not one.
 */
int kfs_clone_command(struct kfs *fs, const char *line, size_t len,
		      int *err, char *msg, size_t msglen);

/* Append the clone's stats lines to out (cap bytes); returns the length. */
size_t kfs_clone_stats(struct kfs_clone *c, char *out, size_t cap);

#endif /* KCOPYDFS_CLONE_H */
