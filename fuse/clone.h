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
 * Parse "NAME=SOURCE:DEST:META[:region=SIZE][:commit=SECONDS][:paused]".  Returns 0 or
 * -EINVAL with a message naming the offending part.
 */
int kfs_clone_parse(const char *spec, struct kfs_clone_spec *out,
		    char *errmsg, size_t errlen);

/*
 * At mount, before the session runs: set up the clone on slot `d` (its
 * name is set) over the devices of fs->devs named in the spec, reading or
 * creating META.  Prints a message and returns -errno on failure
 * (-EINVAL: a META of another clone or not a clone's; -ENOSPC: DEST or
 * META too small; -EBUSY: a device already under a clone).
 */
int kfs_clone_open(struct kfs *fs, struct kfs_dev *d,
		   const struct kfs_clone_spec *spec);

/* Once the engine runs (after any fork): start hydrating. */
int kfs_clone_start(struct kfs_clone *c);
/* After the session: submit nothing more (jobs in flight finish). */
void kfs_clone_quiesce(struct kfs_clone *c);
/* After the engine is gone: the last commit, then free. */
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

/* Is the device (an index in fs->devs) a clone or under one? */
bool kfs_clone_uses(const struct kfs *fs, int idx);

/*
 * A control write that is a clone command ("clone-pause NAME",
 * "clone-resume NAME"): returns 1 and sets *err (0 or -errno, with msg),
 * or 0 when the line is not one.
 */
int kfs_clone_command(struct kfs *fs, const char *line, size_t len,
		      int *err, char *msg, size_t msglen);

/* Append the clone's stats lines to out (cap bytes); returns the length. */
size_t kfs_clone_stats(struct kfs_clone *c, char *out, size_t cap);

#endif /* KCOPYDFS_CLONE_H */
