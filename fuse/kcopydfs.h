/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopydfs: the state shared by the FUSE operations (kcopydfs.c) and the
 * program's setup and teardown (main.c).
 */
#ifndef KCOPYDFS_H
#define KCOPYDFS_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "kcopyd.h"
#include "list.h"
#include "pth.h"
#include "jobs.h"
#include "parse.h"
#include "passthrough.h"
#include "finished.h"
#include "clone.h"
#include "state.h"

/* Largest read or write one FUSE request carries (mount option too). */
#define KFS_MAX_READ	(1024 * 1024)
/* Most commands one control write may hold. */
#define KFS_MAX_CMDS	4096
/* Most devices, attached or detached and still open. */
#define KFS_MAX_DEVS	1024
/* dev/NAME's inode numbers count up from here, one per attach. */
#define KFS_INO_DEV0	16

/*
 * One device: the engine's handle, through which the daemon does all of
 * dev/NAME's I/O; fd is only the backing file the kernel is given for
 * passthrough, where the daemon sees no I/O.
 * Devices are attached at mount or by `attach`, and live until they are
 * detached and the last open dev/NAME is closed (devices.c).
 */
struct kfs_dev {
	char name[KFS_MAX_NAME + 1];
	char *path;
	struct block_device *bdev;
	int fd;
	uint64_t size;			/* bytes, whole sectors */
	fuse_ino_t ino;			/* never reused within a mount */
	bool attached;			/* listed in dev/ (dlock) */
	unsigned int slot;		/* its index in fs->devs */
	/* The listing and each open dev/NAME (atomic). */
	atomic_uint refs;
	/* Queued and running jobs that name it: detach refuses (atomic). */
	atomic_uint busy;
	/* I/O through dev/NAME. */
	atomic_uint_fast64_t reads, writes, bytes_read, bytes_written, errors;
	struct kfs_pt_dev pt;		/* passthrough or direct I/O */
	bool pt_ready;			/* pt set up (main thread) */
	/* A clone device (bdev is its DEST's, not its own): set before
	 * it is attached. */
	struct kfs_clone *clone;
	/* Under a clone: jobs do not write it, it is not detached. */
	atomic_bool under_clone;
};

struct kfs;
struct kfs_poller;
struct waiter;

/*
 * An open control or status file.  The kernel sends no release for files
 * still open when the session ends, so every open handle is on a list and
 * whatever is left there is freed at exit.
 */
struct kfs_open {
	struct list_head link;		/* on fs->open (hlock) */
	void (*release)(struct kfs *fs, struct kfs_open *h);
};

struct kfs {
	/*
	 * The devices, attached or still open after a detach; a slot is
	 * NULL once its device is freed, and a device keeps its slot for
	 * its life, so a job's device index stays valid.  dlock is taken
	 * before a table's lock: commands are parsed and queued under it
	 * (read), attach and detach change the set under it (write).
	 */
	pthread_rwlock_t dlock;
	struct kfs_dev **devs;		/* (dlock) */
	unsigned int ndevs;		/* slots in use or free (dlock) */
	unsigned int cap;		/* slots allocated (dlock) */
	uint64_t next_ino;		/* (dlock) */
	/* Where attach may open images: the image directory, or -1. */
	int image_dirfd;
	const char *image_dir;

	/* Read-only once the session runs. */
	struct kcopyd_client *kc;
	struct kfs_table *table;
	struct kfs_finished *finished;	/* MNT/finished */
	struct kfs_state *state;	/* --state, or NULL */
	struct fuse_session *se;
	uid_t uid;
	gid_t gid;
	struct timespec mounted;	/* every file's times */
	mode_t dev_mode;
	bool foreground;
	bool verbose;			/* log jobs that succeed too */
	unsigned int keep;
	unsigned int max_queue;
	struct kfs_pt pt;

	/*
	 * Change notification for poll on results: `gen` counts changes;
	 * a change posts `kick` (once until the notifier takes it), and the
	 * notifier thread wakes the poll handles waiting in `pollers`.
	 * Engine threads touch only the atomics and the semaphore.
	 */
	atomic_uint_fast64_t gen;
	atomic_bool kicked;
	atomic_bool notifier_quit;
	sem_t kick;
	pthread_mutex_t plock;
	struct list_head pollers;	/* struct kfs_poller (plock) */
	pthread_t notifier;
	bool notifier_running;

	/*
	 * Sync writes (struct waiter) whose jobs run, and the stop: once
	 * `stopping`, new commands are refused and the stopper thread waits
	 * (stop_cond) for the last sync job before it ends the session
	 * loop; once `session_over`, no request is answered, as the
	 * session's fd is about to be closed (and its number reused).
	 */
	pthread_mutex_t reply_lock;
	struct list_head waiters;	/* (reply_lock) */
	bool stopping;			/* (reply_lock) */
	bool stopper_quit;		/* (reply_lock) */
	bool session_over;		/* (reply_lock) */
	pthread_cond_t stop_cond;
	atomic_bool stop_requested;	/* a stop signal came */
	sem_t stop_sem;			/* posted by the first stop signal */
	pthread_t stopper;
	bool stopper_running;
	pthread_t main_thread;

	pthread_mutex_t hlock;
	struct list_head open;		/* struct kfs_open (hlock) */
};

extern const struct fuse_lowlevel_ops kfs_ops;

/* The table's hooks: poll wake-ups, sync writers and the log. */
void kfs_changed(void *opaque);
void kfs_job_ended(bool failed, bool cancelled, int err, const char *line,
		   void *opaque);
void kfs_sync_finished(void *waiter, bool failed, void *opaque);

/* The thread that sends poll notifications; stop it before the session
 * is destroyed. */
int kfs_notifier_start(struct kfs *fs);
void kfs_notifier_stop(struct kfs *fs);

/*
 * SIGTERM, SIGINT, SIGHUP: the first stops once every sync write has its
 * jobs' outcome (new commands are then refused), a second at once.
 * Install on the thread that runs the session loop, before it runs; the
 * stopper thread does the waiting (start it after any fork, stop it
 * before teardown).
 */
int kfs_signals_install(struct kfs *fs);
void kfs_signals_remove(void);
int kfs_stopper_start(struct kfs *fs);
void kfs_stopper_stop(struct kfs *fs);

/*
 * The session is over: a sync write still waiting is answered ENOTCONN
 * (its jobs go on and are finished before exit), and no request is
 * answered after this.
 */
void kfs_session_over(struct kfs *fs);

/*
 * Devices (devices.c).  kfs_dev_new opens open_path (if not NULL) or
 * path, falling back to read-only if it must (or takes fd, if >= 0)
 * and makes a device of it, not yet attached; kfs_dev_attach lists it in
 * dev/.  Both return 0 or -errno with a message.  kfs_dev_find and
 * kfs_dev_by_ino want dlock held; kfs_dev_get and kfs_dev_put count the
 * open files of a device, the last put of a detached one frees it.
 */
int kfs_devs_init(struct kfs *fs);
int kfs_dev_new(struct kfs *fs, const char *name, const char *path,
		const char *open_path, int fd, bool ro,
		struct kfs_dev **result, char *msg, size_t msglen);
int kfs_dev_attach(struct kfs *fs, struct kfs_dev *d, char *msg,
		   size_t msglen);
void kfs_dev_free(struct kfs_dev *d);
/*
 * List d in dev/ in old's place, at once (old is no longer listed; its
 * listing reference is the caller's to put).  0, or -ENOENT (old is not
 * listed), -EBUSY (jobs name old) or -ENOSPC, with a message.
 */
int kfs_dev_replace(struct kfs *fs, struct kfs_dev *old, struct kfs_dev *d,
		    char *msg, size_t msglen);
int kfs_dev_find(const struct kfs *fs, const char *name, size_t len);
struct kfs_dev *kfs_dev_by_ino(const struct kfs *fs, fuse_ino_t ino);
void kfs_dev_get(struct kfs_dev *d);
void kfs_dev_put(struct kfs *fs, struct kfs_dev *d);
void kfs_devs_free(struct kfs *fs);

/*
 * Open an image of the image directory, never a file outside it: an fd,
 * or -EXDEV (outside), -EINVAL (not a file or block device) or the
 * errno of the open, with a message.
 */
int kfs_open_image(const struct kfs *fs, const char *path, bool ro,
		   char *msg, size_t msglen);

/* The control file's attach and detach: 0 or -errno with a message. */
int kfs_attach(struct kfs *fs, const char *name, const char *path, bool ro,
	       char *msg, size_t msglen);
int kfs_detach(struct kfs *fs, const char *name, char *msg, size_t msglen);

/* The table's device hooks: a job's hold on device index dev. */
struct block_device *kfs_dev_hold(void *opaque, int dev);
void kfs_dev_unhold(void *opaque, int dev);
/* The name of a held device (a job holds it, so its slot stays). */
const char *kfs_dev_name(void *opaque, int dev);

/* The lookup of the control file's commands (dlock held while used). */
void kfs_devlookup(struct kfs *fs, struct kfs_devlookup *dl);

/* Free the control and status handles still open at exit. */
void kfs_release_all(struct kfs *fs);

/* Log a line: stderr in the foreground, syslog once daemonized. */
void kfs_log(const struct kfs *fs, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif /* KCOPYDFS_H */
