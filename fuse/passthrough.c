/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * FUSE passthrough for dev/NAME (see passthrough.h).
 *
 * Thread model
 * ------------
 * kfs_pt_setup, kfs_pt_dev_setup and kfs_pt_session run on the main
 * thread before the session loop; kfs_pt_dev_destroy after it.  Every
 * other function runs on FUSE worker threads: the shim's read and writev
 * hooks for every request and reply, kfs_pt_init for INIT, kfs_pt_open
 * and kfs_pt_release for dev/NAME.  fs->pt's INIT fields are atomics (the
 * INIT request is read, answered and its reply written before the kernel
 * sends anything else, but not necessarily on one thread).  A device's
 * d->pt.lock protects its mode, its open count and its backing id; it is
 * held across the ioctls on the session fd and the open reply, so that an
 * open never races with the release that closes the backing id.
 */
#include <config.h>

#include <errno.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include "kcopydfs.h"
#include "passthrough.h"

/* Protocol 7.40 (kernel 6.9) as far as older <linux/fuse.h> lacks it. */
#ifndef FUSE_PASSTHROUGH
#define FUSE_PASSTHROUGH	(1ULL << 37)
#endif
#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH	(1 << 7)
#endif
#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN	_IOW(229, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE	_IOW(229, 2, uint32_t)
#endif

/*
 * Images on an ordinary file system (stack depth 0); one on overlayfs or
 * another FUSE mount is refused by the kernel (ELOOP) and falls back.
 */
#define KFS_PT_STACK_DEPTH	1

/* fi->fh of a passthrough open of dev/NAME (direct opens keep 0). */


/* CAP_SYS_ADMIN in the effective set: BACKING_OPEN is EPERM without. */
static bool have_sys_admin(void)
{
	struct __user_cap_header_struct h = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct c[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, c))
		return false;
	return c[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32));
}

void kfs_pt_setup(struct kfs *fs, bool disabled)
{
	fs->pt.disabled = disabled;
	fs->pt.sys_admin = have_sys_admin();
}

static void set_direct(struct kfs_pt_dev *p, const char *why, int err)
{
	p->mode = KFS_IO_DIRECT;
	p->decided = true;
	p->why = why;
	p->err = err;
}

void kfs_pt_dev_setup(struct kfs *fs, struct kfs_dev *d, bool has_faults)
{
	struct kfs_pt_dev *p = &d->pt;
	struct stat st;

	pth(pthread_mutex_init(&p->lock, NULL));
	p->mode = KFS_IO_PASSTHROUGH;
	p->backing_id = -1;
	if (fs->pt.disabled)
		set_direct(p, "--no-passthrough", 0);
	else if (has_faults)
		set_direct(p, "fault rules: the daemon must see its I/O", 0);
	else if (d->clone)
		set_direct(p, "a clone: the daemon routes its I/O", 0);
	else if (d->fd < 0)
		set_direct(p, "a remote device: no file to pass through", 0);
	else if (fstat(d->fd, &st) || !S_ISREG(st.st_mode))
		set_direct(p, "not a regular file", 0);
	else if (st.st_size % 512)
		set_direct(p, "size not a whole number of sectors", 0);
	else if (!fs->pt.sys_admin)
		set_direct(p, "no CAP_SYS_ADMIN", 0);
}

/*
 * After INIT, passthrough is had only if it was asked for then (for the
 * devices of the mount); a device attached later goes without otherwise.
 */
void kfs_pt_dev_attach(struct kfs *fs, struct kfs_dev *d)
{
	kfs_pt_dev_setup(fs, d, false);
	pth(pthread_mutex_lock(&d->pt.lock));
	if (d->pt.mode == KFS_IO_PASSTHROUGH && !atomic_load(&fs->pt.requested))
		set_direct(&d->pt, "passthrough was not set up at mount", 0);
	pth(pthread_mutex_unlock(&d->pt.lock));
	d->pt_ready = true;
}

void kfs_pt_dev_destroy(struct kfs_dev *d)
{
	pth(pthread_mutex_destroy(&d->pt.lock));
}

enum kfs_io_mode kfs_pt_mode(struct kfs_dev *d)
{
	enum kfs_io_mode m;

	pth(pthread_mutex_lock(&d->pt.lock));
	m = d->pt.mode;
	pth(pthread_mutex_unlock(&d->pt.lock));
	return m;
}

static bool any_candidate(struct kfs *fs)
{
	bool any = false;

	for (unsigned int i = 0; i < fs->ndevs; i++)
		any |= fs->devs[i] &&
		       kfs_pt_mode(fs->devs[i]) == KFS_IO_PASSTHROUGH;
	return any;
}

static void log_modes(struct kfs *fs)
{
	kfs_log(fs, LOG_INFO, "passthrough: %s (%s)",
		fs->pt.disabled ? "off" :
		atomic_load(&fs->pt.requested) ? "on" :
		atomic_load(&fs->pt.offered) ? "not needed" :
		"not offered by the kernel", kfs_pt_method);
	for (unsigned int i = 0; i < fs->ndevs; i++) {
		struct kfs_dev *d = fs->devs[i];

		if (!d)
			continue;
		pth(pthread_mutex_lock(&d->pt.lock));
		if (d->pt.mode == KFS_IO_PASSTHROUGH)
			kfs_log(fs, LOG_INFO, "dev/%s: passthrough", d->name);
		else
			kfs_log(fs, LOG_INFO, "dev/%s: direct_io (%s)",
				d->name, d->pt.why);
		pth(pthread_mutex_unlock(&d->pt.lock));
	}
}

/* INIT settles the devices that were waiting only for the kernel. */
static void settle_at_init(struct kfs *fs)
{
	bool on = atomic_load(&fs->pt.requested);

	for (unsigned int i = 0; i < fs->ndevs; i++) {
		struct kfs_pt_dev *p;

		if (!fs->devs[i])
			continue;
		p = &fs->devs[i]->pt;
		pth(pthread_mutex_lock(&p->lock));
		if (!on && p->mode == KFS_IO_PASSTHROUGH)
			set_direct(p, "the kernel does not offer passthrough",
				   0);
		pth(pthread_mutex_unlock(&p->lock));
	}
}

/* Answer an open in passthrough mode with backing image id. */
static int reply_passthrough(fuse_req_t req, struct fuse_file_info *fi,
			     int id);
static int backing_open(fuse_req_t req, struct kfs *fs, int fd);
static void backing_close(fuse_req_t req, struct kfs *fs, int id);

#ifdef HAVE_FUSE_PASSTHROUGH_API

/* --- libfuse >= 3.17: the public API ------------------------------------- */

const char kfs_pt_method[] = "libfuse";

int kfs_pt_session(struct kfs *fs)
{
	return 0;
}

void kfs_pt_init(struct kfs *fs, struct fuse_conn_info *conn)
{
	bool offered = conn->capable_ext & FUSE_CAP_PASSTHROUGH;

	atomic_store(&fs->pt.offered, offered);
	if (offered && !fs->pt.disabled && any_candidate(fs)) {
		fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH);
		/* libfuse sends the kernel one more (0 is "stacked under"). */
		conn->max_backing_stack_depth = KFS_PT_STACK_DEPTH - 1;
		atomic_store(&fs->pt.requested, true);
	}
	settle_at_init(fs);
	log_modes(fs);
}

static int backing_open(fuse_req_t req, struct kfs *fs, int fd)
{
	int id;

	errno = 0;
	id = fuse_passthrough_open(req, fd);
	if (id > 0)
		return id;
	return errno ? -errno : -EIO;
}

static void backing_close(fuse_req_t req, struct kfs *fs, int id)
{
	fuse_passthrough_close(req, id);
}

static int reply_passthrough(fuse_req_t req, struct fuse_file_info *fi,
			     int id)
{
	fi->direct_io = 0;
	fi->keep_cache = 0;
	fi->backing_id = id;
	return fuse_reply_open(req, fi);
}

#else

/* --- libfuse < 3.17: a shim on the session's custom I/O ------------------ */

const char kfs_pt_method[] = "compat";

/*
 * struct fuse_init_out of protocol 7.40: max_stack_depth follows flags2,
 * where older headers have unused[0].
 */
_Static_assert(sizeof(struct fuse_init_out) == 64, "fuse_init_out size");
#define INIT_OUT_STACK_DEPTH	(offsetof(struct fuse_init_out, flags2) + 4)

/* struct fuse_open_out of protocol 7.40: backing_id in place of padding. */
struct kfs_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};
_Static_assert(sizeof(struct kfs_open_out) == sizeof(struct fuse_open_out),
	       "fuse_open_out size");

/* Note whether the kernel's INIT offers passthrough (errno kept). */
static ssize_t shim_read(int fd, void *buf, size_t len, void *userdata)
{
	struct kfs *fs = userdata;
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *in = buf;
	const struct fuse_init_in *init = (const void *)(in + 1);
	uint64_t flags;

	if (n < (ssize_t)(sizeof(*in) + offsetof(struct fuse_init_in, flags2) +
			  sizeof(init->flags2)) || in->opcode != FUSE_INIT)
		return n;
	flags = init->flags;
	if (flags & FUSE_INIT_EXT)
		flags |= (uint64_t)init->flags2 << 32;
	atomic_store(&fs->pt.init_unique, in->unique);
	atomic_store(&fs->pt.offered, flags & FUSE_PASSTHROUGH);
	return n;
}

/*
 * The INIT reply asks for passthrough (libfuse 3.14 cannot say it): the
 * flag, in flags2 behind FUSE_INIT_EXT, and how deep the backing files'
 * file systems may stack.
 */
static void amend_init_reply(struct iovec *iov, int count)
{
	const struct fuse_out_header *out = iov[0].iov_base;
	struct fuse_init_out *init;
	uint32_t depth = KFS_PT_STACK_DEPTH;

	if (count < 2 || out->error ||
	    iov[1].iov_len < INIT_OUT_STACK_DEPTH + sizeof(depth))
		return;
	init = iov[1].iov_base;
	init->flags |= FUSE_INIT_EXT;
	init->flags2 |= (uint32_t)(FUSE_PASSTHROUGH >> 32);
	memcpy((char *)init + INIT_OUT_STACK_DEPTH, &depth, sizeof(depth));
}

static ssize_t shim_writev(int fd, struct iovec *iov, int count,
			   void *userdata)
{
	struct kfs *fs = userdata;
	const struct fuse_out_header *out = iov[0].iov_base;
	uint64_t unique = atomic_load(&fs->pt.init_unique);
	bool init = unique && count >= 1 &&
		    iov[0].iov_len >= sizeof(*out) && out->unique == unique;

	if (init) {
		atomic_store(&fs->pt.init_unique, 0);
		if (atomic_load(&fs->pt.requested))
			amend_init_reply(iov, count);
	}
	return writev(fd, iov, count);
}

int kfs_pt_session(struct kfs *fs)
{
	static const struct fuse_custom_io io = {
		.read = shim_read,
		.writev = shim_writev,
	};

	if (fs->pt.disabled)
		return 0;
	return fuse_session_custom_io(fs->se, &io, fuse_session_fd(fs->se));
}

void kfs_pt_init(struct kfs *fs, struct fuse_conn_info *conn)
{
	/* Passthrough and a writeback cache exclude each other. */
	if (atomic_load(&fs->pt.offered) && !fs->pt.disabled &&
	    !(conn->want & FUSE_CAP_WRITEBACK_CACHE) && any_candidate(fs))
		atomic_store(&fs->pt.requested, true);
	settle_at_init(fs);
	log_modes(fs);
}

static int backing_open(fuse_req_t req, struct kfs *fs, int fd)
{
	struct fuse_backing_map map = { .fd = fd };
	int id = ioctl(fuse_session_fd(fs->se), FUSE_DEV_IOC_BACKING_OPEN,
		       &map);

	if (id > 0)
		return id;
	return id < 0 ? -errno : -EIO;
}

static void backing_close(fuse_req_t req, struct kfs *fs, int id)
{
	uint32_t arg = (uint32_t)id;

	ioctl(fuse_session_fd(fs->se), FUSE_DEV_IOC_BACKING_CLOSE, &arg);
}

static int reply_passthrough(fuse_req_t req, struct fuse_file_info *fi,
			     int id)
{
	struct kfs_open_out arg = {
		.fh = fi->fh,
		.open_flags = FOPEN_PASSTHROUGH,
		.backing_id = id,
	};
	struct iovec iov = { .iov_base = &arg, .iov_len = sizeof(arg) };

	return fuse_reply_iov(req, &iov, 1);
}

#endif /* HAVE_FUSE_PASSTHROUGH_API */

/* --- Opens and releases of dev/NAME -------------------------------------- */

bool kfs_pt_open(fuse_req_t req, struct kfs *fs, struct kfs_dev *d,
		 struct fuse_file_info *fi)
{
	struct kfs_pt_dev *p = &d->pt;
	int id, r;

	pth(pthread_mutex_lock(&p->lock));
	if (p->mode != KFS_IO_PASSTHROUGH) {
		pth(pthread_mutex_unlock(&p->lock));
		return false;
	}
	if (!p->opens) {
		id = backing_open(req, fs, d->fd);
		if (id < 0 && !p->decided) {
			set_direct(p, "the kernel refused the image as a "
				   "backing file", -id);
			kfs_log(fs, LOG_WARNING, "dev/%s: direct_io "
				"(passthrough: %s)", d->name, strerror(-id));
			pth(pthread_mutex_unlock(&p->lock));
			return false;
		}
		if (id < 0) {
			/* Passthrough before: never mix modes on one inode. */
			kfs_log(fs, LOG_ERR, "dev/%s: passthrough: %s",
				d->name, strerror(-id));
			pth(pthread_mutex_unlock(&p->lock));
			fuse_reply_err(req, -id);
			return true;
		}
		p->decided = true;
		p->backing_id = id;
	}
	fi->fh = KFS_FH_PASSTHROUGH;
	r = reply_passthrough(req, fi, p->backing_id);
	/* An interrupted open is never released: count only answered ones. */
	if (r == 0)
		p->opens++;
	else if (!p->opens) {
		backing_close(req, fs, p->backing_id);
		p->backing_id = -1;
	}
	pth(pthread_mutex_unlock(&p->lock));
	return true;
}

void kfs_pt_release(fuse_req_t req, struct kfs *fs, struct kfs_dev *d,
		    struct fuse_file_info *fi)
{
	struct kfs_pt_dev *p = &d->pt;

	if (fi->fh != KFS_FH_PASSTHROUGH)
		return;
	pth(pthread_mutex_lock(&p->lock));
	if (p->opens && !--p->opens) {
		backing_close(req, fs, p->backing_id);
		p->backing_id = -1;
	}
	pth(pthread_mutex_unlock(&p->lock));
}
