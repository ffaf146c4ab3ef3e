/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kcopydfs command language: what a write to MNT/control may say.
 *
 * START and COUNT are sectors, or sizes with a unit (s, B, k, K, M, G,
 * T, KiB..TiB) that are whole sectors.
 *
 *   copy SRC:START+COUNT DST:START [DST:START ...] [ignore_errors]
 *        [write_seq] [verify] [checksum] [flush] [sync] [tag=WORD]
 *   zero DST:START+COUNT [DST:START+COUNT ...] [flush] [sync] [tag=WORD]
 *   cancel ID | cancel tag=WORD
 *   throttle RATE | throttle PCT% | throttle off
 *
 * Pure functions: no FUSE, no I/O, no global state.  Device names are
 * resolved through the caller's kfs_devlookup, so the parser can be unit
 * tested and fuzzed without any device.  Every function returns 0 or a
 * negative errno value and, on error, writes a one-line message naming the
 * offending token into errmsg (always NUL-terminated when errlen > 0).
 */
#ifndef KCOPYDFS_PARSE_H
#define KCOPYDFS_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kcopyd.h"

/*
 * Limits: destinations of a copy; bytes in one write to control; bytes in
 * one line, newline excluded; bytes in one batch (a write's complete lines
 * joined to the line an earlier write left unfinished); bytes in a device
 * name or a tag.
 */
#define KFS_MAX_DESTS	KCOPYD_MAX_DESTS
#define KFS_MAX_WRITE	65536
#define KFS_MAX_LINE	4096
#define KFS_MAX_BATCH	(KFS_MAX_WRITE + KFS_MAX_LINE)
#define KFS_MAX_NAME	64

/* Flags of a command. */
#define KFS_IGNORE_ERRORS	(1u << 0)
#define KFS_WRITE_SEQ		(1u << 1)
#define KFS_SYNC		(1u << 2)
#define KFS_VERIFY		(1u << 3)
#define KFS_FLUSH		(1u << 4)
#define KFS_CHECKSUM		(1u << 5)

enum kfs_op {
	KFS_OP_NONE = 0,	/* a blank line */
	KFS_OP_COPY,
	KFS_OP_ZERO,
	KFS_OP_CANCEL,		/* cancel_id, or every job tagged tag */
	KFS_OP_THROTTLE,	/* rate and percent, 0: none */
};

struct kfs_region {
	int dev;		/* index the lookup returned */
	uint64_t sector;
	uint64_t count;
};

struct kfs_cmd {
	enum kfs_op op;
	struct kfs_region src;	/* copy only */
	unsigned int num_dests;
	struct kfs_region dests[KFS_MAX_DESTS];
	unsigned int flags;	/* KFS_* above */
	char tag[KFS_MAX_NAME + 1];	/* "" when none */
	uint64_t cancel_id;	/* cancel ID; 0 for cancel tag=WORD */
	uint64_t rate;		/* throttle: bytes per second */
	unsigned int percent;	/* throttle: share of time, 1..99 */
};

/*
 * Resolve a device name (not NUL-terminated, `len` bytes): return its index
 * (>= 0) and set *sectors to its size, or return -ENOENT.
 */
struct kfs_devlookup {
	int (*find)(const struct kfs_devlookup *dl, const char *name,
		    size_t len, uint64_t *sectors);
	/*
	 * Optional: what the engine would refuse of a parsed command
	 * (kcopyd_check_copy): 0 or a negative errno, with *culprit the
	 * index of the destination at fault or -1.  Without it, overlaps
	 * and read-only devices are left to the submission.
	 */
	int (*check)(const struct kfs_devlookup *dl, const struct kfs_cmd *c,
		     int *culprit);
	void *opaque;
};

/*
 * Parse one line (without its newline; `len` bytes, not NUL-terminated).
 * A blank line gives op KFS_OP_NONE.  Errors:
 *   -EINVAL  syntax, unknown word, bad number (sign, overflow), bad name,
 *            NUL or non-printable byte, overlapping regions the engine
 *            would refuse (by the lookup's check)
 *   -EROFS   a destination on a read-only device (by the lookup's check)
 *   -ENOENT  unknown device
 *   -ERANGE  a region past its device's end
 *   -E2BIG   more than KFS_MAX_DESTS destinations
 *   -EFBIG   a line longer than KFS_MAX_LINE bytes
 */
int kfs_parse_line(const char *line, size_t len,
		   const struct kfs_devlookup *dl, struct kfs_cmd *out,
		   char *errmsg, size_t errlen);

/*
 * Parse a whole batch: lines separated by '\n', the last newline optional.
 * Fills cmds[0..*ncmds) with the non-blank lines, at most max_cmds of them.
 * Errors as kfs_parse_line() (the message then starts "line N: " when the
 * batch has several lines), plus -EFBIG for a batch longer than
 * KFS_MAX_BATCH bytes or holding more than max_cmds commands.
 */
int kfs_parse_write(const char *buf, size_t len,
		    const struct kfs_devlookup *dl, struct kfs_cmd *cmds,
		    unsigned int max_cmds, unsigned int *ncmds,
		    char *errmsg, size_t errlen);

/*
 * Only bytes a command may hold: printable ASCII, tab and newline.
 * Returns 0 or -EINVAL with a message naming the byte and its offset.
 */
int kfs_check_bytes(const char *s, size_t len, char *errmsg, size_t errlen);

/*
 * The commands that change the mount rather than queue a job, each alone
 * in its write:
 *   attach NAME PATH [ro]   a new device dev/NAME
 *   detach NAME             remove dev/NAME
 *   wait ID                 return when job ID has finished
 */
enum kfs_admin_op {
	KFS_ADMIN_NONE = 0,
	KFS_ADMIN_ATTACH,
	KFS_ADMIN_DETACH,
	KFS_ADMIN_WAIT,
};

struct kfs_admin {
	enum kfs_admin_op op;
	char name[KFS_MAX_NAME + 1];
	char path[KFS_MAX_LINE + 1];
	bool ro;
	uint64_t id;
};

/*
 * If a write (buf, len bytes: whole lines) holds one of the commands
 * above, parse it into out; else set out->op to KFS_ADMIN_NONE and return
 * 0.  Errors: -EINVAL (not alone in the write, a bad name or id, a
 * missing or extra word, a non-printable byte), -EFBIG (a line longer
 * than KFS_MAX_LINE), with a message naming the problem.
 */
int kfs_parse_admin(const char *buf, size_t len, struct kfs_admin *out,
		    char *errmsg, size_t errlen);

/*
 * A size in the grammar of every kcopyd program (size.h: s, B, k, K, M,
 * G, T, KiB..TiB; a bare number is bytes), into *bytes.  Returns 0 or
 * -EINVAL (not a size, overflow).
 */
int kfs_parse_size(const char *s, uint64_t *bytes);

/*
 * A --fault spec: NAME:read|write|rw:START+COUNT[:KIND] where KIND is an
 * errno name (EIO, ENOSPC, ...), an errno number, "short" or
 * "delay=USEC"; the default is EIO.  The device name is copied into name
 * (namelen bytes with the NUL).  Returns 0 or -EINVAL with a message.
 */
int kfs_parse_fault(const char *spec, char *name, size_t namelen,
		    struct kcopyd_fault *out, char *errmsg, size_t errlen);

/*
 * A device name: 1 to KFS_MAX_NAME bytes of [A-Za-z0-9_.-], and neither
 * "." nor "..", which would shadow the directory entries of dev/.
 */
int kfs_valid_name(const char *name, size_t len);

#endif /* KCOPYDFS_PARSE_H */
