/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * FUSE passthrough for dev/NAME: the kernel reads and writes the image
 * itself, and the daemon sees only open, release, getattr and fsync.
 *
 * With libfuse >= 3.17 this uses its public API (FUSE_CAP_PASSTHROUGH,
 * fuse_passthrough_open); with older libfuse, a shim on the session's
 * custom I/O asks for passthrough in the INIT reply and sends the open
 * reply itself.  configure chooses (HAVE_FUSE_PASSTHROUGH_API).
 *
 * Every device has one mode for the life of the mount: passthrough, or
 * direct I/O through the daemon (the kernel fails an open that would mix
 * passthrough with cached opens of one inode, and the daemon cannot keep
 * its promises for I/O it does not see).  What rules passthrough out is
 * known at mount (an option, fault rules, not a regular file, a partial
 * last sector, no CAP_SYS_ADMIN), at INIT (the kernel does not offer it)
 * or, at the latest, at the device's first open (the kernel refuses the
 * image as a backing file).
 */
#ifndef KCOPYDFS_PASSTHROUGH_H
#define KCOPYDFS_PASSTHROUGH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct kfs;
struct kfs_dev;
struct fuse_conn_info;
struct fuse_file_info;
struct fuse_req;

enum kfs_io_mode {
	KFS_IO_DIRECT,		/* every read and write through the daemon */
	KFS_IO_PASSTHROUGH,	/* the kernel does the I/O on the image */
};

/* fi->fh of a dev/NAME opened for passthrough. */
#define KFS_FH_PASSTHROUGH	1

/* A device's side of passthrough. */
struct kfs_pt_dev {
	pthread_mutex_t lock;
	enum kfs_io_mode mode;	/* (lock) */
	bool decided;		/* mode can no longer change (lock) */
	const char *why;	/* why direct I/O, when it is (lock) */
	int err;		/* the kernel's errno behind why, or 0 (lock) */
	unsigned int opens;	/* passthrough opens not released (lock) */
	int backing_id;		/* while opens > 0 (lock) */
};

/* The connection's side: set before the session runs, then at INIT. */
struct kfs_pt {
	bool disabled;		/* --no-passthrough */
	bool sys_admin;		/* CAP_SYS_ADMIN at mount */
	/* Written at INIT, read by any FUSE thread. */
	atomic_bool offered;	/* the kernel offered passthrough */
	atomic_bool requested;	/* ... and the INIT reply asks for it */
	atomic_uint_fast64_t init_unique; /* shim: the INIT request being
					     answered */
};

/* How passthrough is had: "libfuse" or "compat" (the custom I/O shim). */
extern const char kfs_pt_method[];

/*
 * At mount, before the session runs: fs->pt from the options and this
 * process's capabilities, and each device's mode as far as is known.
 */
void kfs_pt_setup(struct kfs *fs, bool disabled);
void kfs_pt_dev_setup(struct kfs *fs, struct kfs_dev *d, bool has_faults);
void kfs_pt_dev_destroy(struct kfs_dev *d);
/* A device attached while the session runs. */
void kfs_pt_dev_attach(struct kfs *fs, struct kfs_dev *d);

/*
 * After fuse_session_mount(): install the shim's custom I/O on the
 * session (nothing with the public API).  Returns 0 or -errno.
 */
int kfs_pt_session(struct kfs *fs);

/* From the init callback: ask for passthrough if offered; log modes. */
void kfs_pt_init(struct kfs *fs, struct fuse_conn_info *conn);

/*
 * Open dev/NAME in passthrough mode if that is its mode, deciding it at
 * the first open.  Returns true when the request has been answered
 * (passthrough, or an error), false when the caller is to open it for
 * direct I/O.
 */
bool kfs_pt_open(struct fuse_req *req, struct kfs *fs, struct kfs_dev *d,
		 struct fuse_file_info *fi);

/* A release of dev/NAME: the last passthrough open drops the backing id. */
void kfs_pt_release(struct fuse_req *req, struct kfs *fs, struct kfs_dev *d,
		    struct fuse_file_info *fi);

/* The device's mode now ("passthrough" or "direct_io"). */
enum kfs_io_mode kfs_pt_mode(struct kfs_dev *d);

#endif /* KCOPYDFS_PASSTHROUGH_H */
