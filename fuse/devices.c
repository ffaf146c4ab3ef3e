/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The devices of a kcopydfs mount, as dm's tables: attached at mount or
 * by `attach NAME PATH [ro]` on the control file, detached by
 * `detach NAME` when no queued or running job names them.
 *
 * Thread model
 * ------------
 * Threads that enter here:
 *   - the main thread at mount and exit (kfs_dev_new, kfs_dev_attach,
 *     kfs_devs_free), before and after the session runs;
 *   - FUSE worker threads: attach and detach (control writes), lookups,
 *     opens and releases of dev/NAME, and kfs_dev_hold while a control
 *     write queues jobs;
 *   - the engine's callback thread: kfs_dev_unhold when a job ends.
 * fs->dlock (a rwlock) guards the slots, their count and each device's
 * `attached` flag: readers are lookups and the queueing of jobs, writers
 * attach, detach and the freeing of a device.  A device keeps its slot
 * until it is freed, which needs it detached (no job holds it) and closed
 * (no open file), so a job's device index stays valid without the lock:
 * kfs_dev_unhold only touches the device's atomic count.  The slot array
 * never moves (KFS_MAX_DEVS slots, allocated at mount) for that reason.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>

#include "kcopydfs.h"

int kfs_devs_init(struct kfs *fs)
{
	pth(pthread_rwlock_init(&fs->dlock, NULL));
	fs->devs = calloc(KFS_MAX_DEVS, sizeof(*fs->devs));
	fs->next_ino = KFS_INO_DEV0;
	return fs->devs ? 0 : -ENOMEM;
}

void kfs_dev_free(struct kfs_dev *d)
{
	/* A clone's bdev is its dest's, closed with the dest. */
	if (d->clone)
		kfs_clone_close(d->clone);
	else if (d->bdev)
		kcopyd_bdev_close(d->bdev);
	if (d->fd >= 0)
		close(d->fd);
	if (d->pt_ready)
		kfs_pt_dev_destroy(d);
	free(d->path);
	free(d);
}

void kfs_devs_free(struct kfs *fs)
{
	if (!fs->devs)
		return;
	/* Clones first: their last commit needs the devices under them. */
	for (unsigned int i = 0; i < fs->ndevs; i++)
		if (fs->devs[i] && fs->devs[i]->clone) {
			kfs_dev_free(fs->devs[i]);
			fs->devs[i] = NULL;
		}
	for (unsigned int i = 0; i < fs->ndevs; i++)
		if (fs->devs[i])
			kfs_dev_free(fs->devs[i]);
	free(fs->devs);
	pth(pthread_rwlock_destroy(&fs->dlock));
}

int kfs_dev_new(struct kfs *fs, const char *name, const char *path,
		const char *open_path, int fd, bool ro,
		struct kfs_dev **result, char *msg, size_t msglen)
{
	struct kfs_dev *d = calloc(1, sizeof(*d));
	char proc[64];
	int r;

	if (!d || !(d->path = strdup(path))) {
		free(d);
		if (fd >= 0)
			close(fd);
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	snprintf(d->name, sizeof(d->name), "%s", name);
	if (!open_path)
		open_path = path;
	d->fd = fd;
	if (fd < 0 && kcopyd_bdev_is_uri(path)) {
		/* A remote device: no descriptor, I/O through the daemon. */
		r = kcopyd_bdev_open(path, ro ? O_RDONLY : O_RDWR, &d->bdev);
		if (r == -EROFS && !ro) {
			fprintf(stderr, "kcopydfs: %s: %s: device %s is "
				"read-only\n", path, strerror(-r), name);
			r = kcopyd_bdev_open(path, O_RDONLY, &d->bdev);
		}
		if (r)
			goto fail;
		goto opened;
	}
	if (fd < 0 && !ro) {
		/*
		 * A write-protected image (the classic source of a rescue
		 * copy) serves reads and copies from it, and refuses writes.
		 */
		d->fd = open(open_path, O_RDWR | O_CLOEXEC);
		if (d->fd < 0 && (errno == EACCES || errno == EROFS ||
				  errno == EPERM)) {
			fprintf(stderr, "kcopydfs: %s: %s: device %s is "
				"read-only\n", path, strerror(errno), name);
			ro = true;
		}
	}
	if (d->fd < 0 && ro)
		d->fd = open(open_path, O_RDONLY | O_CLOEXEC);
	if (d->fd < 0) {
		r = -errno;
		goto fail;
	}
	/* The file already opened, not the path again: it may have moved. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", d->fd);
	r = kcopyd_bdev_open(proc, ro ? O_RDONLY : O_RDWR, &d->bdev);
	if (r)
		goto fail;
opened:
	d->size = kcopyd_bdev_sectors(d->bdev) << KCOPYD_SECTOR_SHIFT;
	atomic_init(&d->refs, 1);
	atomic_init(&d->busy, 0);
	*result = d;
	return 0;
fail:
	snprintf(msg, msglen, "%s: %s", path, strerror(-r));
	kfs_dev_free(d);
	return r;
}

/* The slot of the attached device called name (dlock held), or -ENOENT. */
int kfs_dev_find(const struct kfs *fs, const char *name, size_t len)
{
	for (unsigned int i = 0; i < fs->ndevs; i++) {
		const struct kfs_dev *d = fs->devs[i];

		if (d && d->attached && strlen(d->name) == len &&
		    !memcmp(d->name, name, len))
			return (int)i;
	}
	return -ENOENT;
}

/* Attached or not, as long as it lives (dlock held). */
struct kfs_dev *kfs_dev_by_ino(const struct kfs *fs, fuse_ino_t ino)
{
	for (unsigned int i = 0; i < fs->ndevs; i++)
		if (fs->devs[i] && fs->devs[i]->ino == ino)
			return fs->devs[i];
	return NULL;
}

/* -EBUSY with a message if jobs hold d (dlock held), else 0. */
static int check_idle(const struct kfs_dev *d, char *msg, size_t msglen)
{
	unsigned int busy = atomic_load(&d->busy);

	if (!busy)
		return 0;
	snprintf(msg, msglen, "device '%s' is in use by %u queued or running "
		 "job%s", d->name, busy, busy == 1 ? "" : "s");
	return -EBUSY;
}

/*
 * Lists d in a free slot, with a new inode: a name attached again is not
 * the old file.  With old, d takes old's name in the listing, so old must
 * still be listed and no job may hold it; else d's name must be free.
 */
static int dev_install(struct kfs *fs, struct kfs_dev *old, struct kfs_dev *d,
		       char *msg, size_t msglen)
{
	unsigned int slot;
	int r = 0;

	pth(pthread_rwlock_wrlock(&fs->dlock));
	for (slot = 0; slot < fs->ndevs && fs->devs[slot]; slot++)
		;
	if (!old && kfs_dev_find(fs, d->name, strlen(d->name)) >= 0) {
		snprintf(msg, msglen, "device '%s' exists", d->name);
		r = -EEXIST;
		goto out;
	}
	if (old && !old->attached) {
		snprintf(msg, msglen, "no device '%s'", old->name);
		r = -ENOENT;
		goto out;
	}
	if (old) {
		r = check_idle(old, msg, msglen);
		if (r)
			goto out;
	}
	if (slot == KFS_MAX_DEVS) {
		snprintf(msg, msglen, "no room for device '%s': %d devices "
			 "at most, open ones included", d->name, KFS_MAX_DEVS);
		r = -ENOSPC;
		goto out;
	}
	if (old)
		old->attached = false;
	if (slot == fs->ndevs)
		fs->ndevs++;
	d->slot = slot;
	d->ino = fs->next_ino++;
	d->attached = true;
	fs->devs[slot] = d;
out:
	pth(pthread_rwlock_unlock(&fs->dlock));
	return r;
}

int kfs_dev_attach(struct kfs *fs, struct kfs_dev *d, char *msg,
		   size_t msglen)
{
	return dev_install(fs, NULL, d, msg, msglen);
}

int kfs_dev_replace(struct kfs *fs, struct kfs_dev *old, struct kfs_dev *d,
		    char *msg, size_t msglen)
{
	return dev_install(fs, old, d, msg, msglen);
}

void kfs_dev_get(struct kfs_dev *d)
{
	atomic_fetch_add(&d->refs, 1);
}

/* The last reference, the listing's or an open file's, frees it. */
void kfs_dev_put(struct kfs *fs, struct kfs_dev *d)
{
	if (atomic_fetch_sub(&d->refs, 1) != 1)
		return;
	pth(pthread_rwlock_wrlock(&fs->dlock));
	fs->devs[d->slot] = NULL;
	while (fs->ndevs && !fs->devs[fs->ndevs - 1])
		fs->ndevs--;
	pth(pthread_rwlock_unlock(&fs->dlock));
	kfs_dev_free(d);
}

struct block_device *kfs_dev_hold(void *opaque, int dev)
{
	struct kfs *fs = opaque;
	struct kfs_dev *d = fs->devs[dev];

	atomic_fetch_add(&d->busy, 1);
	return d->bdev;
}

const char *kfs_dev_name(void *opaque, int dev)
{
	struct kfs *fs = opaque;

	return fs->devs[dev]->name;
}

void kfs_dev_unhold(void *opaque, int dev)
{
	struct kfs *fs = opaque;

	atomic_fetch_sub(&fs->devs[dev]->busy, 1);
}

/*
 * Open path beneath the image directory, never outside it: not by "..",
 * an absolute symbolic link, a link that climbs out or a /proc magic
 * link.  An absolute path is taken if it names a place in the directory.
 */
static int open_beneath(const struct kfs *fs, const char *path, bool ro,
			char *msg, size_t msglen)
{
	struct open_how how = {
		.flags = (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	size_t dlen = strlen(fs->image_dir);
	const char *rel = path;
	long fd;

	if (path[0] == '/') {
		if (strncmp(path, fs->image_dir, dlen) || path[dlen] != '/') {
			snprintf(msg, msglen, "'%s' is not in the image "
				 "directory %s", path, fs->image_dir);
			return -EXDEV;
		}
		rel = path + dlen + 1;
	}
	fd = syscall(SYS_openat2, fs->image_dirfd, rel, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	if (errno == EXDEV || errno == ELOOP) {
		snprintf(msg, msglen, "'%s' leads out of the image directory "
			 "%s", path, fs->image_dir);
		return -EXDEV;
	}
	snprintf(msg, msglen, "%s: %s", path, strerror(errno));
	return -errno;
}

int kfs_open_image(const struct kfs *fs, const char *path, bool ro,
		   char *msg, size_t msglen)
{
	struct stat st;
	int fd = open_beneath(fs, path, ro, msg, msglen);

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		snprintf(msg, msglen, "'%s' is not a regular file or a block "
			 "device", path);
		close(fd);
		return -EINVAL;
	}
	return fd;
}

int kfs_attach(struct kfs *fs, const char *name, const char *path, bool ro,
	       char *msg, size_t msglen)
{
	struct kfs_dev *d;
	int fd, r;

	if (fs->image_dirfd < 0) {
		snprintf(msg, msglen, "attach %s: no image directory to take "
			 "images from (mount with IMAGE_DIR)", name);
		return -EACCES;
	}
	fd = kfs_open_image(fs, path, ro, msg, msglen);
	if (fd < 0)
		return fd == -EXDEV ? -EACCES : fd;
	r = kfs_dev_new(fs, name, path, NULL, fd, ro, &d, msg, msglen);
	if (r)
		return r;
	kfs_pt_dev_attach(fs, d);
	r = kfs_dev_attach(fs, d, msg, msglen);
	if (r) {
		kfs_dev_free(d);
		return r;
	}
	kfs_log(fs, LOG_INFO, "attached dev/%s: %s, %llu bytes%s", name, path,
		(unsigned long long)d->size, ro ? ", read-only" : "");
	return 0;
}

int kfs_detach(struct kfs *fs, const char *name, char *msg, size_t msglen)
{
	struct kfs_dev *d = NULL;
	int slot, r = 0;

	pth(pthread_rwlock_wrlock(&fs->dlock));
	slot = kfs_dev_find(fs, name, strlen(name));
	if (slot < 0) {
		snprintf(msg, msglen, "no device '%s'", name);
		r = -ENOENT;
	} else {
		d = fs->devs[slot];
		if (atomic_load(&d->under_clone)) {
			snprintf(msg, msglen, "device '%s' is under a clone",
				 name);
			r = -EBUSY;
		} else if (d->clone && !kfs_clone_removable(d->clone)) {
			snprintf(msg, msglen, "clone '%s': use remove", name);
			r = -EBUSY;
		} else {
			/* Jobs are queued under dlock too: none can start now. */
			r = check_idle(d, msg, msglen);
			if (!r)
				d->attached = false;
		}
	}
	pth(pthread_rwlock_unlock(&fs->dlock));
	if (r)
		return r;
	kfs_log(fs, LOG_INFO, "detached dev/%s", name);
	kfs_dev_put(fs, d);
	return 0;
}
