/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The FUSE operations of kcopydfs, on the low-level API.
 *
 * Thread model
 * ------------
 * Threads that enter here:
 *   - FUSE worker threads (fuse_session_loop_mt): every kfs_* operation.
 *     None of them ever blocks on a job: a `sync` write keeps its request
 *     in a struct waiter and returns; the answer comes later.
 *   - the engine's callback thread: kfs_sync_finished answers a waiting
 *     write (or `wait ID`); kfs_job_ended logs a job and appends it to
 *     MNT/finished; kfs_changed.
 *   - the engine's worker threads: kfs_changed (first progress of a job),
 *     which takes no lock: an atomic count and a semaphore post.
 *   - the notifier thread: sends poll notifications.  It is the only
 *     thread that notifies, so no FUSE request handler ever writes a
 *     notification, and stopping it before the session is destroyed
 *     guarantees none is sent afterwards.
 *   - the stopper thread: after a stop signal, waits for the sync jobs,
 *     then ends the session loop.
 *   - the main thread: signal handlers, and teardown after the loop.
 * Locks, outermost first:
 *   control_fh.wlock: one control handle's unfinished line and its
 *     record of the last sync write; held while a write is parsed and
 *     queued (the job table's lock nests inside), never in a libfuse
 *     call.
 *   fs->dlock (devices.c): the set of devices; read-held from the parse
 *     of a write to its queueing, and by lookups; write-held by attach,
 *     detach and the freeing of a device.  Never in a libfuse call.
 *   fs->reply_lock: the list of sync waiters and the stop flags; held
 *     while a sync write is answered (fuse_reply_write/_err and clearing
 *     its interrupt callback), so no answer races with the session's end.
 *   waiter.lock: one sync write's counts and request.
 * and, each alone and never in a libfuse call: fs->plock (the poll
 * handles waiting; the notifier takes them, then notifies without it),
 * control_fh.lock (a read-back), kfs_poller.lock (a status handle's place
 * or text; MNT/finished's lock nests inside), fs->hlock (the list of open
 * handles).
 * libfuse runs the interrupt callback (waiter_interrupted, which answers
 * EINTR) with the request's lock held; it takes only waiter.lock, which
 * is therefore never held while calling fuse_req_interrupt_func().  When
 * fuse_req_interrupt_func() runs the callback itself (the request was
 * interrupted already), the answer is left to its caller.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "kcopydfs.h"

enum {
	INO_ROOT = FUSE_ROOT_ID,
	INO_DEVDIR,
	INO_CONTROL,
	INO_RESULTS,
	INO_STATS,
	INO_FINISHED,
	INO_DEV0 = KFS_INO_DEV0,	/* dev/NAME, one number per attach */
};

/* Attributes never change but sizes of status files: 1 s is plenty. */
#define ATTR_TIMEOUT 1.0

static struct kfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

void kfs_log(const struct kfs *fs, int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (fs->foreground) {
		fputs("kcopydfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	} else {
		vsyslog(prio, fmt, ap);
	}
	va_end(ap);
}

/* --- Inodes and attributes ------------------------------------------------ */

/*
 * The device of an inode, attached or not.  Its open files hold it, so
 * a request on an open file may go on using it after the lock is gone.
 */
static struct kfs_dev *dev_of(struct kfs *fs, fuse_ino_t ino)
{
	struct kfs_dev *d;

	if (ino < INO_DEV0)
		return NULL;
	pth(pthread_rwlock_rdlock(&fs->dlock));
	d = kfs_dev_by_ino(fs, ino);
	pth(pthread_rwlock_unlock(&fs->dlock));
	return d;
}

static int fill_attr(struct kfs *fs, fuse_ino_t ino, struct stat *st)
{
	struct kfs_dev *d;
	uint64_t alloc;

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_nlink = 1;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mounted;
	switch (ino) {
	case INO_ROOT:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 3;
		return 0;
	case INO_DEVDIR:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	case INO_CONTROL:
		/* Reading gives back what the last write of a handle did. */
		st->st_mode = S_IFREG | 0600;
		/* stdio then hands a whole command batch to one write. */
		st->st_blksize = KFS_MAX_WRITE;
		return 0;
	case INO_RESULTS:
	case INO_STATS:
		st->st_mode = S_IFREG | 0444;
		return 0;
	case INO_FINISHED:
		/* It only grows: the size is what `tail -f` watches. */
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off_t)kfs_finished_size(fs->finished);
		return 0;
	}
	pth(pthread_rwlock_rdlock(&fs->dlock));
	d = kfs_dev_by_ino(fs, ino);
	if (d) {
		st->st_mode = S_IFREG | fs->dev_mode;
		if (kcopyd_bdev_is_read_only(d->bdev))
			st->st_mode &= ~(mode_t)0222;
		st->st_size = (off_t)d->size;
		/* The image's allocation, so du and cp --sparse see holes. */
		if (kcopyd_bdev_allocated(d->bdev, &alloc) || alloc > d->size)
			alloc = d->size;
		st->st_blocks = (blkcnt_t)(alloc / 512);
	}
	pth(pthread_rwlock_unlock(&fs->dlock));
	return d ? 0 : -ENOENT;
}

/* finished's size changes with every job: never cached. */
static double attr_timeout(fuse_ino_t ino)
{
	return ino == INO_FINISHED ? 0 : ATTR_TIMEOUT;
}

static void reply_attr(fuse_req_t req, fuse_ino_t ino)
{
	struct stat st;
	int r = fill_attr(fs_of(req), ino, &st);

	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, attr_timeout(ino));
}

static fuse_ino_t child_ino(struct kfs *fs, fuse_ino_t parent,
			    const char *name)
{
	if (parent == INO_ROOT) {
		if (!strcmp(name, "dev"))
			return INO_DEVDIR;
		if (!strcmp(name, "control"))
			return INO_CONTROL;
		if (!strcmp(name, "results"))
			return INO_RESULTS;
		if (!strcmp(name, "stats"))
			return INO_STATS;
		if (!strcmp(name, "finished"))
			return INO_FINISHED;
	} else if (parent == INO_DEVDIR) {
		fuse_ino_t ino = 0;
		int slot;

		pth(pthread_rwlock_rdlock(&fs->dlock));
		slot = kfs_dev_find(fs, name, strlen(name));
		if (slot >= 0)
			ino = fs->devs[slot]->ino;
		pth(pthread_rwlock_unlock(&fs->dlock));
		return ino;
	}
	return 0;
}

static void kfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kfs *fs = fs_of(req);
	struct fuse_entry_param e;
	fuse_ino_t ino = child_ino(fs, parent, name);

	if (!ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.attr_timeout = attr_timeout(ino);
	/*
	 * dev/NAME comes and goes (attach, detach): the kernel asks again at
	 * every path lookup, so a detached name is gone at once.
	 */
	e.entry_timeout = parent == INO_DEVDIR ? 0 : ATTR_TIMEOUT;
	/* Detached since child_ino()? */
	if (fill_attr(fs, ino, &e.attr)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_reply_entry(req, &e);
}

static void kfs_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	reply_attr(req, ino);
}

/*
 * Sizes are fixed: a device keeps its size (as a block device does), and
 * the O_TRUNC of `echo > control` has nothing to cut.
 */
static void kfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	struct kfs *fs = fs_of(req);
	struct kfs_dev *d = dev_of(fs, ino);

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (ino == INO_RESULTS || ino == INO_STATS ||
		    ino == INO_FINISHED) {
			fuse_reply_err(req, EACCES);
			return;
		}
		if (d && (uint64_t)attr->st_size != d->size) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		if (ino == INO_ROOT || ino == INO_DEVDIR) {
			fuse_reply_err(req, EISDIR);
			return;
		}
	}
	reply_attr(req, ino);
}

/* --- Directories ---------------------------------------------------------- */

static void add_entry(fuse_req_t req, char *buf, size_t size, size_t *used,
		      const char *name, fuse_ino_t ino, off_t next)
{
	struct stat st = { .st_ino = ino };
	size_t n;

	st.st_mode = ino == INO_ROOT || ino == INO_DEVDIR ? S_IFDIR : S_IFREG;
	n = fuse_add_direntry(req, buf + *used, size - *used, name, &st, next);
	if (n <= size - *used)
		*used += n;
	else
		*used = size + 1;	/* full: stop */
}

static void kfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	static const struct {
		const char *name;
		fuse_ino_t ino;
	} root[] = {
		{ ".", INO_ROOT }, { "..", INO_ROOT }, { "dev", INO_DEVDIR },
		{ "control", INO_CONTROL }, { "results", INO_RESULTS },
		{ "stats", INO_STATS }, { "finished", INO_FINISHED },
	};
	struct kfs *fs = fs_of(req);
	size_t used = 0, n;
	char *buf;

	if (ino != INO_ROOT && ino != INO_DEVDIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* A device's offset is its slot's: attach and detach move none. */
	pth(pthread_rwlock_rdlock(&fs->dlock));
	n = ino == INO_ROOT ? sizeof(root) / sizeof(root[0]) : fs->ndevs + 2;
	for (size_t i = (size_t)off; i < n && used <= size; i++) {
		size_t before = used;
		struct kfs_dev *d = ino == INO_DEVDIR && i >= 2 ?
				    fs->devs[i - 2] : NULL;

		if (ino == INO_ROOT)
			add_entry(req, buf, size, &used, root[i].name,
				  root[i].ino, (off_t)i + 1);
		else if (i < 2)
			add_entry(req, buf, size, &used, i ? ".." : ".",
				  i ? INO_ROOT : INO_DEVDIR, (off_t)i + 1);
		else if (d && d->attached)
			add_entry(req, buf, size, &used, d->name, d->ino,
				  (off_t)i + 1);
		if (used > size) {
			used = before;
			break;
		}
	}
	pth(pthread_rwlock_unlock(&fs->dlock));
	fuse_reply_buf(req, buf, used);
	free(buf);
}

/* --- Status files: results and stats -------------------------------------- */

/* Every open control and status handle is on fs->open. */
static void handle_add(struct kfs *fs, struct kfs_open *h,
		       void (*release)(struct kfs *, struct kfs_open *))
{
	h->release = release;
	pth(pthread_mutex_lock(&fs->hlock));
	list_add(&h->link, &fs->open);
	pth(pthread_mutex_unlock(&fs->hlock));
}

static void handle_del(struct kfs *fs, struct kfs_open *h)
{
	pth(pthread_mutex_lock(&fs->hlock));
	list_del_init(&h->link);
	pth(pthread_mutex_unlock(&fs->hlock));
}

void kfs_release_all(struct kfs *fs)
{
	struct kfs_open *h;

	pth(pthread_mutex_lock(&fs->hlock));
	while (!list_empty(&fs->open)) {
		h = list_first_entry(&fs->open, struct kfs_open, link);
		pth(pthread_mutex_unlock(&fs->hlock));
		h->release(fs, h);	/* takes itself off the list */
		pth(pthread_mutex_lock(&fs->hlock));
	}
	pth(pthread_mutex_unlock(&fs->hlock));
}

/*
 * An open results or stats file.  results keeps no text: each read is
 * served from the live job table at its offset, so what a reader costs
 * does not grow with the table (many readers holding descriptors cost a
 * few dozen bytes each).  stats is small and rendered per handle, at open
 * and by a read at 0, so one descriptor reads consistent counters.
 */
struct kfs_poller {
	struct kfs_open h;		/* first: a handle on fs->open */
	fuse_ino_t ino;
	pthread_mutex_t lock;
	struct kfs_results_pos pos;	/* results (lock) */
	struct kfs_finished_pos fpos;	/* finished (lock) */
	char *buf;			/* stats (lock) */
	size_t len;			/* stats (lock) */
	uint64_t gen;			/* changes seen at the last read at 0 */
	struct fuse_pollhandle *ph;	/* waiting poll (plock) */
	struct list_head link;		/* on fs->pollers while ph is set
					   (plock) */
};

static int render_stats(struct kfs *fs, char **buf, size_t *len)
{
	struct kcopyd_stats ks;
	struct kfs_counts c;
	size_t cap, n = 0;
	char *out;

	pth(pthread_rwlock_rdlock(&fs->dlock));
	cap = 512 + (size_t)fs->ndevs * (22 * (KFS_MAX_NAME + 64));
	out = malloc(cap);
	if (!out) {
		pth(pthread_rwlock_unlock(&fs->dlock));
		return -ENOMEM;
	}
	kfs_table_counts(fs->table, &c);
	kcopyd_client_get_stats(fs->kc, &ks);
	n += (size_t)snprintf(out + n, cap - n,
		"jobs_queued=%llu\njobs_running=%llu\njobs_done=%llu\n"
		"jobs_failed=%llu\njobs_cancelled=%llu\npages_in_use=%u\n"
		"pages_total=%u\nbytes_read=%llu\nbytes_written=%llu\n",
		(unsigned long long)c.queued, (unsigned long long)c.running,
		(unsigned long long)c.done, (unsigned long long)c.failed,
		(unsigned long long)c.cancelled,
		ks.pages_in_use, ks.pages_total,
		(unsigned long long)ks.bytes_read,
		(unsigned long long)ks.bytes_written);
	/* Read-only once the session serves. */
	if (fs->state)
		n += (size_t)snprintf(out + n, cap - n,
			"state_resumed=%u\nstate_not_resumed=%u\n",
			fs->state->resumed, fs->state->not_resumed);
	for (unsigned int i = 0; i < fs->ndevs; i++) {
		struct kfs_dev *d = fs->devs[i];
		struct kcopyd_bdev_stats bs;

		if (!d || !d->attached)
			continue;
		if (d->clone)
			n += kfs_clone_stats(d->clone, out + n, cap - n);
		kcopyd_bdev_get_stats2(d->bdev, &bs, sizeof(bs));
		n += (size_t)snprintf(out + n, cap - n,
			"dev.%s.reads=%llu\ndev.%s.writes=%llu\n"
			"dev.%s.bytes_read=%llu\ndev.%s.bytes_written=%llu\n"
			"dev.%s.errors=%llu\ndev.%s.flushes=%llu\n",
			d->name, (unsigned long long)bs.reads,
			d->name, (unsigned long long)bs.writes,
			d->name, (unsigned long long)bs.bytes_read,
			d->name, (unsigned long long)bs.bytes_written,
			d->name, (unsigned long long)bs.errors,
			d->name, (unsigned long long)bs.flushes);
		/* The daemon sees no I/O of a passthrough device: no counts. */
		if (kfs_pt_mode(d) == KFS_IO_PASSTHROUGH) {
			n += (size_t)snprintf(out + n, cap - n,
				"dev.%s.mode=passthrough\n", d->name);
			continue;
		}
		n += (size_t)snprintf(out + n, cap - n,
			"dev.%s.mode=direct_io\n"
			"dev.%s.fuse_reads=%llu\ndev.%s.fuse_writes=%llu\n"
			"dev.%s.fuse_bytes_read=%llu\n"
			"dev.%s.fuse_bytes_written=%llu\n"
			"dev.%s.fuse_errors=%llu\n",
			d->name,
			d->name, (unsigned long long)atomic_load(&d->reads),
			d->name, (unsigned long long)atomic_load(&d->writes),
			d->name, (unsigned long long)
				atomic_load(&d->bytes_read),
			d->name, (unsigned long long)
				atomic_load(&d->bytes_written),
			d->name, (unsigned long long)atomic_load(&d->errors));
	}
	pth(pthread_rwlock_unlock(&fs->dlock));
	*buf = out;
	*len = n;
	return 0;
}

/*
 * A read at 0 starts a fresh pass: it is what poll compares with.  The
 * change count is read before the text, so a change racing with the read
 * wakes a later poll rather than being lost.
 */
static void start_pass(struct kfs *fs, struct kfs_poller *p)
{
	uint64_t gen = atomic_load(&fs->gen);

	pth(pthread_mutex_lock(&fs->plock));
	p->gen = gen;
	pth(pthread_mutex_unlock(&fs->plock));
}

static int render_stats_into(struct kfs *fs, struct kfs_poller *p)
{
	char *buf;
	size_t len;
	int r;

	start_pass(fs, p);
	r = render_stats(fs, &buf, &len);
	if (r)
		return r;
	pth(pthread_mutex_lock(&p->lock));
	free(p->buf);
	p->buf = buf;
	p->len = len;
	pth(pthread_mutex_unlock(&p->lock));
	return 0;
}

static void release_status(struct kfs *fs, struct kfs_poller *p);

static void release_status_handle(struct kfs *fs, struct kfs_open *h)
{
	release_status(fs, (struct kfs_poller *)h);
}

static void open_status(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct kfs *fs = fs_of(req);
	struct kfs_poller *p;

	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p->ino = ino;
	list_init(&p->link);
	pth(pthread_mutex_init(&p->lock, NULL));
	if (ino == INO_STATS && render_stats_into(fs, p)) {
		pth(pthread_mutex_destroy(&p->lock));
		free(p);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (ino == INO_RESULTS)
		start_pass(fs, p);
	fi->fh = (uint64_t)(uintptr_t)p;
	/* The size is 0: only direct I/O makes the kernel ask us. */
	fi->direct_io = 1;
	handle_add(fs, &p->h, release_status_handle);
	if (fuse_reply_open(req, fi) == -ENOENT)
		release_status(fs, p);
}

/*
 * MNT/results (the job table, a read at 0 starting a new pass) or
 * MNT/finished (the kept lines), by p's inode.  The reply goes out only
 * after p->lock is dropped: once the kernel has its answer the file may
 * be closed, and its release frees p.
 */
static void read_stream(fuse_req_t req, struct kfs_poller *p, size_t size,
			off_t off)
{
	struct kfs *fs = fs_of(req);
	char *buf;
	size_t n;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (p->ino == INO_RESULTS && off == 0)
		start_pass(fs, p);
	pth(pthread_mutex_lock(&p->lock));
	if (p->ino == INO_RESULTS)
		n = kfs_table_read(fs->table, &p->pos, (uint64_t)off, buf,
				   size);
	else
		n = kfs_finished_read(fs->finished, &p->fpos, (uint64_t)off,
				      buf, size);
	pth(pthread_mutex_unlock(&p->lock));
	fuse_reply_buf(req, buf, n);
	free(buf);
}

static void read_stats(fuse_req_t req, struct kfs_poller *p, size_t size,
		       off_t off)
{
	char *copy = NULL;
	size_t n = 0;

	/* A read at 0 starts over with fresh counters. */
	if (off == 0 && render_stats_into(fs_of(req), p)) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pth(pthread_mutex_lock(&p->lock));
	if (off >= 0 && (uint64_t)off < p->len) {
		n = p->len - (size_t)off < size ? p->len - (size_t)off : size;
		copy = malloc(n);
		if (copy)
			memcpy(copy, p->buf + off, n);
	}
	pth(pthread_mutex_unlock(&p->lock));
	if (n && !copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_buf(req, copy, n);
	free(copy);
}

/* Take p's poll handle, if it has one (plock held). */
static struct fuse_pollhandle *poller_take(struct kfs_poller *p)
{
	struct fuse_pollhandle *ph = p->ph;

	p->ph = NULL;
	list_del_init(&p->link);
	return ph;
}

static void release_status(struct kfs *fs, struct kfs_poller *p)
{
	struct fuse_pollhandle *ph;

	handle_del(fs, &p->h);
	pth(pthread_mutex_lock(&fs->plock));
	ph = poller_take(p);
	pth(pthread_mutex_unlock(&fs->plock));
	if (ph)
		fuse_pollhandle_destroy(ph);
	pth(pthread_mutex_destroy(&p->lock));
	free(p->buf);
	free(p);
}

/*
 * results is readable again (POLLIN) once a job changed state since the
 * handle's last read at 0; otherwise keep ph and wake it on the next
 * change.
 */
static void poll_results(fuse_req_t req, struct kfs_poller *p,
			 struct fuse_pollhandle *ph)
{
	struct kfs *fs = fs_of(req);
	struct fuse_pollhandle *old = NULL;
	unsigned int revents = 0;

	pth(pthread_mutex_lock(&fs->plock));
	if (p->gen != atomic_load(&fs->gen)) {
		revents = POLLIN | POLLRDNORM;
		old = ph;
	} else if (ph) {
		old = poller_take(p);
		p->ph = ph;
		list_add_tail(&p->link, &fs->pollers);
	}
	pth(pthread_mutex_unlock(&fs->plock));
	if (old)
		fuse_pollhandle_destroy(old);
	fuse_reply_poll(req, revents);
}

/*
 * A job changed state.  Called on engine threads, workers included, so it
 * takes no lock and makes no system call but the notifier's wake-up (a
 * semaphore post); the notifier does the rest.
 */
void kfs_changed(void *opaque)
{
	struct kfs *fs = opaque;

	atomic_fetch_add(&fs->gen, 1);
	if (!atomic_exchange(&fs->kicked, true))
		pth(sem_post(&fs->kick) ? errno : 0);
}

/* Poll handles taken off the list per round, notified with no lock held. */
#define NOTIFY_BATCH 64

static void notify_pollers(struct kfs *fs)
{
	struct fuse_pollhandle *phs[NOTIFY_BATCH];
	unsigned int n;

	do {
		n = 0;
		pth(pthread_mutex_lock(&fs->plock));
		while (n < NOTIFY_BATCH && !list_empty(&fs->pollers))
			phs[n++] = poller_take(list_first_entry(
				&fs->pollers, struct kfs_poller, link));
		pth(pthread_mutex_unlock(&fs->plock));
		for (unsigned int i = 0; i < n; i++) {
			fuse_lowlevel_notify_poll(phs[i]);
			fuse_pollhandle_destroy(phs[i]);
		}
	} while (n == NOTIFY_BATCH);
}

void kfs_job_ended(bool failed, bool cancelled, int err, const char *line,
		   void *opaque)
{
	struct kfs *fs = opaque;

	kfs_finished_add(fs->finished, line);
	if (failed)
		kfs_log(fs, LOG_ERR, "job failed: %s (errno %d: %s)", line,
			err, strerror(err));
	else if (cancelled)
		kfs_log(fs, LOG_NOTICE, "job cancelled: %s", line);
	else if (fs->verbose)
		kfs_log(fs, LOG_INFO, "job done: %s", line);
}

static void *notifier_main(void *arg)
{
	struct kfs *fs = arg;

	for (;;) {
		while (sem_wait(&fs->kick))
			pth(errno == EINTR ? 0 : errno);
		/* Cleared before the round: a change during it kicks again. */
		atomic_store(&fs->kicked, false);
		if (atomic_load(&fs->notifier_quit))
			break;
		notify_pollers(fs);
	}
	return NULL;
}

int kfs_notifier_start(struct kfs *fs)
{
	int r = pthread_create(&fs->notifier, NULL, notifier_main, fs);

	if (r)
		return -r;
	fs->notifier_running = true;
	return 0;
}

void kfs_notifier_stop(struct kfs *fs)
{
	struct fuse_pollhandle *ph;

	if (!fs->notifier_running)
		return;
	atomic_store(&fs->notifier_quit, true);
	pth(sem_post(&fs->kick) ? errno : 0);
	pth(pthread_join(fs->notifier, NULL));
	fs->notifier_running = false;

	/* Handles still waiting are dropped without a notification. */
	pth(pthread_mutex_lock(&fs->plock));
	while (!list_empty(&fs->pollers)) {
		ph = poller_take(list_first_entry(&fs->pollers,
						  struct kfs_poller, link));
		fuse_pollhandle_destroy(ph);
	}
	pth(pthread_mutex_unlock(&fs->plock));
}

/* --- Device files --------------------------------------------------------- */

/* An open file holds its device: a detach leaves it readable. */
static void open_dev(fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi)
{
	struct kfs *fs = fs_of(req);
	struct kfs_dev *d;

	pth(pthread_rwlock_rdlock(&fs->dlock));
	d = kfs_dev_by_ino(fs, ino);
	if (d && d->attached)
		kfs_dev_get(d);
	else
		d = NULL;
	pth(pthread_rwlock_unlock(&fs->dlock));
	if (!d) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY &&
	    kcopyd_bdev_is_read_only(d->bdev)) {
		kfs_dev_put(fs, d);
		fuse_reply_err(req, EROFS);
		return;
	}
	/* A clone's devices are written by the clone alone. */
	if ((fi->flags & O_ACCMODE) != O_RDONLY &&
	    atomic_load(&d->under_clone)) {
		kfs_dev_put(fs, d);
		fuse_reply_err(req, EBUSY);
		return;
	}
	if (d->clone) {
		fi->fh = 0;
		fi->direct_io = 1;
		fi->keep_cache = 0;
		if (fuse_reply_open(req, fi) == -ENOENT)
			kfs_dev_put(fs, d);
		return;
	}
	/* The kernel's I/O on the image itself shares the image's cache. */
	fi->fh = 0;
	if (kfs_pt_open(req, fs, d, fi)) {
		/* Refused: no release will come. */
		if (fi->fh != KFS_FH_PASSTHROUGH)
			kfs_dev_put(fs, d);
		return;
	}
	/*
	 * Direct I/O: the engine writes the images behind the kernel's
	 * back, so a page cache here could serve stale data, or write
	 * stale data back over a copy.
	 */
	fi->fh = 0;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	if (fuse_reply_open(req, fi) == -ENOENT)
		kfs_dev_put(fs, d);
}

static void read_dev(fuse_req_t req, struct kfs_dev *d, size_t size,
		     off_t off)
{
	char *buf;
	int r;

	/* As a block device: nothing to read at or past the end. */
	if (off < 0 || (uint64_t)off >= d->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > d->size - (uint64_t)off)
		size = (size_t)(d->size - (uint64_t)off);
	if (d->clone) {
		kfs_clone_read(d->clone, req, size, (uint64_t)off);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = kcopyd_bdev_pread(d->bdev, buf, size, (uint64_t)off);
	if (r) {
		atomic_fetch_add(&d->errors, 1);
		fuse_reply_err(req, -r);
	} else {
		atomic_fetch_add(&d->reads, 1);
		atomic_fetch_add(&d->bytes_read, (uint64_t)size);
		fuse_reply_buf(req, buf, size);
	}
	free(buf);
}

static void write_dev(fuse_req_t req, struct kfs_dev *d, const char *buf,
		      size_t size, off_t off)
{
	int r;

	/* As a block device: ENOSPC at the end, a short write across it. */
	if (off < 0 || (uint64_t)off >= d->size) {
		fuse_reply_err(req, size ? ENOSPC : 0);
		return;
	}
	if (size > d->size - (uint64_t)off)
		size = (size_t)(d->size - (uint64_t)off);
	if (d->clone) {
		kfs_clone_write(d->clone, req, buf, size, (uint64_t)off);
		return;
	}
	r = kcopyd_bdev_pwrite(d->bdev, buf, size, (uint64_t)off);
	if (r) {
		atomic_fetch_add(&d->errors, 1);
		fuse_reply_err(req, -r);
		return;
	}
	atomic_fetch_add(&d->writes, 1);
	atomic_fetch_add(&d->bytes_written, (uint64_t)size);
	fuse_reply_write(req, size);
}

/*
 * SEEK_DATA and SEEK_HOLE from the image's allocation, as lseek(2) on the
 * image would answer (the end of the device is a hole).
 */
static void lseek_dev(fuse_req_t req, struct kfs_dev *d, off_t off,
		      int whence)
{
	uint64_t at = (uint64_t)off, count;
	unsigned int type;
	int r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0 || at >= d->size) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	/* A clone is data throughout, as a disk without holes. */
	if (d->clone) {
		fuse_reply_lseek(req, whence == SEEK_DATA ? off :
				 (off_t)d->size);
		return;
	}
	while (at < d->size) {
		r = kcopyd_bdev_extent(d->bdev, at, d->size - at, &type,
				       &count);
		if (r) {
			fuse_reply_err(req, -r);
			return;
		}
		if ((type == KCOPYD_EXTENT_HOLE) == (whence == SEEK_HOLE))
			break;
		at += count;
	}
	if (at >= d->size && whence == SEEK_DATA) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	fuse_reply_lseek(req, (off_t)(at < d->size ? at : d->size));
}

/*
 * fallocate(2) on a device file: punch a hole or zero a range (through
 * the engine's zeroing, with its fault rules); the size never changes.
 */
static void fallocate_dev(fuse_req_t req, struct kfs_dev *d, int mode,
			  off_t off, off_t len)
{
	uint64_t at = (uint64_t)off, n = (uint64_t)len;
	int r;

	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
		     FALLOC_FL_ZERO_RANGE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (kcopyd_bdev_is_read_only(d->bdev)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* As a block device: the end cannot move. */
	if (at >= d->size || n > d->size - at) {
		if (!(mode & FALLOC_FL_KEEP_SIZE)) {
			fuse_reply_err(req, ENOSPC);
			return;
		}
		n = at >= d->size ? 0 : d->size - at;
	}
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) || !n) {
		/* Preallocation: a device has every byte already. */
		fuse_reply_err(req, 0);
		return;
	}
	if (d->clone) {
		kfs_clone_zero(d->clone, req, at, n,
			       mode & FALLOC_FL_PUNCH_HOLE);
		return;
	}
	r = kcopyd_bdev_zero(d->bdev, at, n,
			     mode & FALLOC_FL_PUNCH_HOLE ? 0 :
							   KCOPYD_ALLOCATED);
	if (r)
		atomic_fetch_add(&d->errors, 1);
	fuse_reply_err(req, -r);
}

/* --- The control file ----------------------------------------------------- */

/*
 * One open control file.  Its read-back text answers the handle's last
 * write; reads at base + i give byte i, so a shell's `read` (which reads
 * ahead, then seeks back) sees the lines one after the other.
 */
struct control_fh {
	struct kfs_open link;		/* first: a handle on fs->open */
	pthread_mutex_t lock;
	char *reply;			/* (lock) */
	size_t len;			/* (lock) */
	uint64_t base;			/* (lock) */

	/* The line a write left without its newline (wlock). */
	pthread_mutex_t wlock;
	char partial[KFS_MAX_LINE];
	size_t plen;
	/* The last sync write, to know its retry (wlock). */
	struct waiter *rec;
	char *rec_buf;
	size_t rec_size;
	off_t rec_off;
};

/*
 * A write with `sync` commands.  Its jobs outlive the request that queued
 * them: a signal ends the request with EINTR, and since EINTR tells the
 * caller that nothing happened, the caller (dash, Python) writes the same
 * bytes again.  The handle keeps the waiter as its record of the write, so
 * that retry waits for the same jobs instead of queueing them twice.
 */
struct waiter {
	struct list_head link;	/* on fs->waiters while jobs run (reply_lock) */
	struct kfs *fs;
	pthread_mutex_t lock;
	fuse_req_t req;		/* the write waiting for the outcome (lock) */
	size_t size;		/* what a success answers */
	/*
	 * Sync jobs not finished, plus one for each thread setting up a
	 * request's interrupt callback, which must not meet the answer
	 * (lock).
	 */
	unsigned int pending;
	/* One while pending, one for the handle's record (lock). */
	unsigned int refs;
	bool failed;		/* (lock) */
	bool interrupted;	/* answered EINTR; a retry may follow (lock) */
	/*
	 * A thread is in fuse_req_interrupt_func() for req, which calls the
	 * callback at once if req was already interrupted: the callback then
	 * leaves the EINTR answer to that thread (intr_pending), as
	 * answering there would free req under its own lock (lock).
	 */
	bool setting_up;
	bool intr_pending;
};

static void set_reply(struct control_fh *c, char *text, size_t len,
		      uint64_t base)
{
	pth(pthread_mutex_lock(&c->lock));
	free(c->reply);
	c->reply = text;
	c->len = len;
	c->base = base;
	pth(pthread_mutex_unlock(&c->lock));
}

static void drop_record(struct control_fh *c);

static void release_control(struct kfs *fs, struct control_fh *c)
{
	handle_del(fs, &c->link);
	/* No newline will ever come: the unfinished line does not run. */
	if (c->plen)
		kfs_log(fs, LOG_WARNING, "control: closed with an unfinished "
			"line of %zu bytes (no newline); it was discarded",
			c->plen);
	drop_record(c);
	pth(pthread_mutex_destroy(&c->wlock));
	pth(pthread_mutex_destroy(&c->lock));
	free(c->reply);
	free(c);
}

static void release_control_handle(struct kfs *fs, struct kfs_open *h)
{
	release_control(fs, (struct control_fh *)h);
}

static void open_control(fuse_req_t req, struct fuse_file_info *fi)
{
	struct kfs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct control_fh *c;

	/* Commands are the mount owner's alone, whatever the mount options. */
	if (ctx->uid != fs->uid && ctx->uid != 0) {
		fuse_reply_err(req, EACCES);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pth(pthread_mutex_init(&c->lock, NULL));
	pth(pthread_mutex_init(&c->wlock, NULL));
	fi->fh = (uint64_t)(uintptr_t)c;
	fi->direct_io = 1;
	handle_add(fs, &c->link, release_control_handle);
	if (fuse_reply_open(req, fi) == -ENOENT)
		release_control(fs, c);
}

/*
 * The reply goes out only after c->lock is dropped: once the kernel has
 * its answer the file may be closed, and its release frees c.
 */
static void read_control(fuse_req_t req, struct control_fh *c, size_t size,
			 off_t off)
{
	char *copy = NULL;
	size_t i, n = 0;

	pth(pthread_mutex_lock(&c->lock));
	i = (uint64_t)off > c->base ? (size_t)((uint64_t)off - c->base) : 0;
	if (i < c->len) {
		n = size < c->len - i ? size : c->len - i;
		copy = malloc(n);
		if (copy)
			memcpy(copy, c->reply + i, n);
	}
	pth(pthread_mutex_unlock(&c->lock));
	if (n && !copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_buf(req, copy, n);
	free(copy);
}

static int find_dev(const struct kfs_devlookup *dl, const char *name,
		    size_t len, uint64_t *sectors)
{
	const struct kfs *fs = dl->opaque;
	int slot = kfs_dev_find(fs, name, len);	/* dlock held */

	if (slot >= 0)
		*sectors = kcopyd_bdev_sectors(fs->devs[slot]->bdev);
	return slot;
}

static int check_cmd(const struct kfs_devlookup *dl, const struct kfs_cmd *c,
		     int *culprit)
{
	const struct kfs *fs = dl->opaque;
	/* Indexed as the command's regions; dlock held: the slots stay. */
	struct block_device *bdevs[KFS_MAX_DEVS];

	/*
	 * A clone is no device for jobs, and those under it are written by
	 * it alone (its source and dest may still be read).
	 */
	if (c->op == KFS_OP_COPY && fs->devs[c->src.dev]->clone) {
		*culprit = -1;
		return -EBUSY;
	}
	for (unsigned int i = 0; i < c->num_dests; i++)
		if (fs->devs[c->dests[i].dev]->clone ||
		    atomic_load(&fs->devs[c->dests[i].dev]->under_clone)) {
			*culprit = (int)i;
			return -EBUSY;
		}
	for (unsigned int i = 0; i < c->num_dests; i++)
		bdevs[c->dests[i].dev] = fs->devs[c->dests[i].dev]->bdev;
	if (c->op == KFS_OP_COPY)
		bdevs[c->src.dev] = fs->devs[c->src.dev]->bdev;
	return kfs_cmd_check(bdevs, c, culprit);
}

void kfs_devlookup(struct kfs *fs, struct kfs_devlookup *dl)
{
	dl->find = find_dev;
	dl->check = check_cmd;
	dl->opaque = fs;
}

/* A failed write: the read-back line, the log line, the errno. */
static void control_error(fuse_req_t req, struct control_fh *c, int err,
			  const char *msg, uint64_t base)
{
	struct kfs *fs = fs_of(req);
	char *text;
	int n;

	n = asprintf(&text, "error: %s: %s\n", strerror(err), msg);
	kfs_log(fs, LOG_WARNING, "control: %s: %s", strerror(err), msg);
	if (n < 0)
		set_reply(c, NULL, 0, base);
	else
		set_reply(c, text, (size_t)n, base);
	fuse_reply_err(req, err);
}

static int ids_text(const uint64_t *ids, unsigned int n, char **text,
		    size_t *len)
{
	char *out = malloc((size_t)n * 21 + 1);
	size_t used = 0;

	if (!out)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++)
		used += (size_t)sprintf(out + used, "%llu\n",
					(unsigned long long)ids[i]);
	*text = out;
	*len = used;
	return 0;
}

static unsigned int count_lines(const char *buf, size_t size)
{
	unsigned int n = 1;

	for (size_t i = 0; i < size && n <= KFS_MAX_CMDS; i++)
		if (buf[i] == '\n')
			n++;
	return n;
}

static bool kfs_is_stopping(struct kfs *fs)
{
	bool stopping;

	pth(pthread_mutex_lock(&fs->reply_lock));
	stopping = fs->stopping;
	pth(pthread_mutex_unlock(&fs->reply_lock));
	return stopping;
}

static void waiter_unref(struct waiter *w)
{
	bool last;

	pth(pthread_mutex_lock(&w->lock));
	last = --w->refs == 0;
	pth(pthread_mutex_unlock(&w->lock));
	if (!last)
		return;
	pth(pthread_mutex_destroy(&w->lock));
	free(w);
}

static void answer_outcome(fuse_req_t req, bool failed, size_t size)
{
	if (failed)
		fuse_reply_err(req, EIO);
	else
		fuse_reply_write(req, size);
}

/*
 * One pending count less: a sync job finished (failed says how), or a
 * thread finished setting up a request.  The last one answers the request
 * waiting, if any: first clearing its interrupt callback, which waits for
 * a callback running right now, and no other can start.  Replies go out
 * under reply_lock, so that none is sent once the session is over.
 */
static void waiter_put(struct waiter *w, bool failed)
{
	struct kfs *fs = w->fs;
	fuse_req_t req = NULL;
	bool last;

	pth(pthread_mutex_lock(&fs->reply_lock));
	pth(pthread_mutex_lock(&w->lock));
	w->failed |= failed;
	last = --w->pending == 0;
	if (last) {
		req = w->req;
		w->req = NULL;
	}
	failed = w->failed;
	pth(pthread_mutex_unlock(&w->lock));
	if (req && !fs->session_over) {
		fuse_req_interrupt_func(req, NULL, NULL);
		answer_outcome(req, failed, w->size);
	}
	if (last) {
		list_del_init(&w->link);
		/* The stopper waits for the last sync job. */
		if (fs->stopping)
			pth(pthread_cond_signal(&fs->stop_cond));
	}
	pth(pthread_mutex_unlock(&fs->reply_lock));
	if (last)
		waiter_unref(w);
}

void kfs_sync_finished(void *waiter, bool failed, void *opaque)
{
	waiter_put(waiter, failed);
}

/*
 * libfuse's interrupt callback, run with the request's lock held: stop
 * waiting (EINTR), the jobs go on, and the handle's record now expects a
 * retry.
 */
static void waiter_interrupted(fuse_req_t req, void *data)
{
	struct waiter *w = data;
	bool mine;

	pth(pthread_mutex_lock(&w->lock));
	mine = w->req == req;
	if (mine) {
		w->req = NULL;
		w->interrupted = true;
		if (w->setting_up) {
			w->intr_pending = true;
			mine = false;
		}
	}
	pth(pthread_mutex_unlock(&w->lock));
	if (mine)
		fuse_reply_err(req, EINTR);
}

/*
 * req waits on w: set its interrupt callback (at once answering EINTR if
 * it is already interrupted), then drop the set-up count, which answers it
 * if the jobs are over.  The caller took that count with w->req = req.
 */
static void waiter_wait(struct waiter *w, fuse_req_t req)
{
	bool intr;

	pth(pthread_mutex_lock(&w->lock));
	w->setting_up = true;
	pth(pthread_mutex_unlock(&w->lock));
	fuse_req_interrupt_func(req, waiter_interrupted, w);
	pth(pthread_mutex_lock(&w->lock));
	w->setting_up = false;
	intr = w->intr_pending;
	w->intr_pending = false;
	pth(pthread_mutex_unlock(&w->lock));
	if (intr)
		fuse_reply_err(req, EINTR);
	waiter_put(w, false);
}

/* A waiter if any command is `sync` (else *result is NULL). */
static int alloc_waiter(fuse_req_t req, unsigned int jobs, size_t size,
			struct waiter **result);

static int new_waiter(fuse_req_t req, const struct kfs_cmd *cmds,
		      unsigned int n, size_t size, struct waiter **result)
{
	unsigned int nsync = 0;

	*result = NULL;
	for (unsigned int i = 0; i < n; i++)
		if (cmds[i].flags & KFS_SYNC)
			nsync++;
	return nsync ? alloc_waiter(req, nsync, size, result) : 0;
}

/* A waiter for `jobs` jobs, on fs->waiters. */
static int alloc_waiter(fuse_req_t req, unsigned int jobs, size_t size,
			struct waiter **result)
{
	struct kfs *fs = fs_of(req);
	struct waiter *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	pth(pthread_mutex_init(&w->lock, NULL));
	w->fs = fs;
	w->req = req;
	w->size = size;
	w->pending = jobs + 1;
	w->refs = 1;
	pth(pthread_mutex_lock(&fs->reply_lock));
	list_add_tail(&w->link, &fs->waiters);
	pth(pthread_mutex_unlock(&fs->reply_lock));
	*result = w;
	return 0;
}

/* Sync commands the table did not queue never call back: drop them. */
static void waiter_drop_unqueued(struct waiter *w, const struct kfs_cmd *cmds,
				 unsigned int n, unsigned int queued)
{
	pth(pthread_mutex_lock(&w->lock));
	for (unsigned int i = queued; i < n; i++)
		if (cmds[i].flags & KFS_SYNC)
			w->pending--;
	w->req = NULL;
	pth(pthread_mutex_unlock(&w->lock));
}

/* Forget the handle's record of its last sync write (wlock held). */
static void drop_record(struct control_fh *c)
{
	if (!c->rec)
		return;
	waiter_unref(c->rec);
	c->rec = NULL;
	free(c->rec_buf);
	c->rec_buf = NULL;
}

/* Keep w as the handle's record of this write (wlock held). */
static void keep_record(struct control_fh *c, struct waiter *w,
			const char *buf, size_t size, off_t off)
{
	char *copy = malloc(size ? size : 1);

	drop_record(c);
	/* Without memory for the record, a retry is not recognised. */
	if (!copy)
		return;
	memcpy(copy, buf, size);
	pth(pthread_mutex_lock(&w->lock));
	w->refs++;
	pth(pthread_mutex_unlock(&w->lock));
	c->rec = w;
	c->rec_buf = copy;
	c->rec_size = size;
	c->rec_off = off;
}

/*
 * Is this write the retry of the handle's last sync write, which a signal
 * ended after its jobs were queued: the same bytes at the same offset?
 * Then it queues nothing: it waits for those jobs, or at once gets their
 * outcome if they are over.  Returns true if it took the request
 * (wlock held; no libfuse call under it, so the answer is left to the
 * caller through *w_wait or *answer).
 */
static bool take_retry(struct control_fh *c, fuse_req_t req, const char *buf,
		       size_t size, off_t off, struct waiter **w_wait,
		       int *answer)
{
	struct waiter *w = c->rec;
	bool taken = false;

	*w_wait = NULL;
	if (!w || c->rec_size != size || c->rec_off != off ||
	    memcmp(c->rec_buf, buf, size))
		return false;
	pth(pthread_mutex_lock(&w->lock));
	if (w->interrupted && !w->req) {
		taken = true;
		w->interrupted = false;
		if (w->pending) {
			w->pending++;		/* set-up count */
			w->req = req;
			*w_wait = w;
		} else {
			*answer = w->failed ? -EIO : 0;
		}
	}
	pth(pthread_mutex_unlock(&w->lock));
	return taken;
}

/*
 * Stopping
 * --------
 * SIGTERM, SIGINT and SIGHUP do not end the session loop at once, as
 * libfuse's handlers would: a sync writer would then get an error for a
 * job that goes on, and requests read meanwhile would be dropped.  The
 * first signal wakes the stopper thread, which refuses new commands and
 * waits for the sync writes' jobs (each writer gets its outcome while the
 * loop still serves, interrupts and retries included), then ends the
 * loop.  A second signal ends it at once.
 */
static struct kfs *signal_fs;

static void stop_signal(int sig)
{
	struct kfs *fs = signal_fs;
	int saved = errno;

	if (!atomic_exchange(&fs->stop_requested, true))
		sem_post(&fs->stop_sem);
	else
		fuse_session_exit(fs->se);
	errno = saved;
}

static const int stop_signals[] = { SIGTERM, SIGINT, SIGHUP };

int kfs_signals_install(struct kfs *fs)
{
	struct sigaction sa = { .sa_handler = stop_signal };

	signal_fs = fs;
	/* Without SA_RESTART, so that the loop's wait sees the signal. */
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(stop_signals) / sizeof(int); i++)
		if (sigaction(stop_signals[i], &sa, NULL))
			return -errno;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return -errno;
	return 0;
}

void kfs_signals_remove(void)
{
	for (size_t i = 0; i < sizeof(stop_signals) / sizeof(int); i++)
		signal(stop_signals[i], SIG_DFL);
}

static void *stopper_main(void *arg)
{
	struct kfs *fs = arg;
	bool logged = false, quit;

	while (sem_wait(&fs->stop_sem))
		pth(errno == EINTR ? 0 : errno);
	pth(pthread_mutex_lock(&fs->reply_lock));
	fs->stopping = true;
	while (!fs->stopper_quit && !list_empty(&fs->waiters)) {
		if (!logged) {
			struct waiter *w;
			unsigned int n = 0;

			list_for_each_entry(w, &fs->waiters, link)
				n++;
			kfs_log(fs, LOG_NOTICE, "stopping: waiting for %u sync "
				"write%s to learn the outcome of their jobs",
				n, n == 1 ? "" : "s");
			logged = true;
		}
		pth(pthread_cond_wait(&fs->stop_cond, &fs->reply_lock));
	}
	quit = fs->stopper_quit;
	pth(pthread_mutex_unlock(&fs->reply_lock));
	if (!quit) {
		/* The signal wakes the loop's wait on the main thread. */
		fuse_session_exit(fs->se);
		pth(pthread_kill(fs->main_thread, SIGTERM));
	}
	return NULL;
}

int kfs_stopper_start(struct kfs *fs)
{
	int r;

	/* The thread that will run the loop (the child's, after a fork). */
	fs->main_thread = pthread_self();
	r = pthread_create(&fs->stopper, NULL, stopper_main, fs);
	if (r)
		return -r;
	fs->stopper_running = true;
	return 0;
}

void kfs_stopper_stop(struct kfs *fs)
{
	if (!fs->stopper_running)
		return;
	pth(pthread_mutex_lock(&fs->reply_lock));
	fs->stopper_quit = true;
	pth(pthread_cond_signal(&fs->stop_cond));
	pth(pthread_mutex_unlock(&fs->reply_lock));
	pth(sem_post(&fs->stop_sem) ? errno : 0);
	pth(pthread_join(fs->stopper, NULL));
	fs->stopper_running = false;
}

void kfs_session_over(struct kfs *fs)
{
	struct waiter *w;

	pth(pthread_mutex_lock(&fs->reply_lock));
	/*
	 * Only if stopped at once (a second signal, a lost connection):
	 * a sync write still waiting learns that the daemon went away.
	 */
	list_for_each_entry(w, &fs->waiters, link) {
		fuse_req_t req;

		pth(pthread_mutex_lock(&w->lock));
		req = w->req;
		w->req = NULL;
		pth(pthread_mutex_unlock(&w->lock));
		if (req) {
			fuse_req_interrupt_func(req, NULL, NULL);
			fuse_reply_err(req, ENOTCONN);
		}
	}
	fs->session_over = true;
	pth(pthread_mutex_unlock(&fs->reply_lock));
}

/*
 * The batch a write completes: the line an earlier write left unfinished,
 * then this write up to its last newline.  What follows that newline is
 * the new unfinished line (*tail).  Returns 0, or -errno with a message;
 * *batch is NULL when the write completes no line.
 */
static int join_batch(const struct control_fh *c, const char *buf,
		      size_t size, char **batch, size_t *blen,
		      const char **tail, size_t *tlen, char *msg,
		      size_t msglen)
{
	const char *nl = memrchr(buf, '\n', size);
	size_t head = nl ? (size_t)(nl - buf) + 1 : 0;

	*batch = NULL;
	*blen = 0;
	*tail = buf + head;
	*tlen = size - head;
	if ((nl ? 0 : c->plen) + *tlen > KFS_MAX_LINE) {
		snprintf(msg, msglen, "unfinished line of %zu bytes is longer "
			 "than %d", (nl ? 0 : c->plen) + *tlen, KFS_MAX_LINE);
		return -EFBIG;
	}
	if (!nl) {
		/* Bytes no line may hold are refused now, not at its end. */
		return kfs_check_bytes(buf, size, msg, msglen);
	}
	*batch = malloc(c->plen + head);
	if (!*batch) {
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	memcpy(*batch, c->partial, c->plen);
	memcpy(*batch + c->plen, buf, head);
	*blen = c->plen + head;
	return 0;
}

/* Keep the unfinished line: appended to, or replacing, the old one. */
static void keep_tail(struct control_fh *c, const char *tail, size_t tlen,
		      bool append)
{
	if (!append)
		c->plen = 0;
	memcpy(c->partial + c->plen, tail, tlen);
	c->plen += tlen;
}

/*
 * `wait ID`: the write is answered when the job ends, as a sync write is
 * (EIO if it failed), or at once if it has ended already.  This part
 * registers the waiter and calls no libfuse function: 0 when the job will
 * call back, 1 or 2 when it has ended (without or with an error), or
 * -errno with a message (and no waiter left).
 */
static int wait_register(fuse_req_t req, uint64_t id, size_t size,
			 struct waiter **wp, char *msg, size_t msglen)
{
	struct kfs *fs = fs_of(req);
	struct waiter *w;
	int r;

	if (alloc_waiter(req, 1, size, &w)) {
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	r = kfs_table_wait(fs->table, id, w);
	if (r) {
		/* The table will not call back: drop the job's count. */
		pth(pthread_mutex_lock(&w->lock));
		w->pending--;
		if (r < 0)
			w->req = NULL;	/* and nobody answers */
		pth(pthread_mutex_unlock(&w->lock));
	}
	if (r < 0) {
		waiter_put(w, false);	/* the last count: frees it */
		w = NULL;
		if (r == -ENOENT)
			snprintf(msg, msglen, "no job %llu",
				 (unsigned long long)id);
		else if (r == -ESRCH)
			snprintf(msg, msglen, "job %llu has finished and is "
				 "no longer kept (--keep %u)",
				 (unsigned long long)id, fs->keep);
		else
			snprintf(msg, msglen, "out of memory");
	}
	*wp = w;
	return r;
}

/*
 * attach, detach and wait: alone in a write, under the handle's wlock,
 * which this drops when it succeeds.  Returns 0 when the request has
 * been answered (or will be), or -errno with a message: the caller then
 * refuses the write, and nothing has changed.
 */
static int run_admin(fuse_req_t req, struct control_fh *c,
		     const struct kfs_admin *a, size_t size, uint64_t base,
		     const char *tail, size_t tlen, char *msg, size_t msglen)
{
	struct kfs *fs = fs_of(req);
	struct waiter *w = NULL;
	int r;

	if (a->op == KFS_ADMIN_ATTACH)
		r = kfs_attach(fs, a->name, a->path, a->ro, msg, msglen);
	else if (a->op == KFS_ADMIN_DETACH)
		r = kfs_detach(fs, a->name, msg, msglen);
	else
		r = wait_register(req, a->id, size, &w, msg, msglen);
	if (r < 0)
		return r;
	keep_tail(c, tail, tlen, false);
	pth(pthread_mutex_unlock(&c->wlock));
	set_reply(c, NULL, 0, base);
	if (!w) {
		fuse_reply_write(req, size);
	} else if (r == 0) {
		waiter_wait(w, req);
	} else {
		waiter_put(w, r == 2);
	}
	return 0;
}

/*
 * Under --state a job runs in steps that a later mount may resume, so it
 * never reads its whole source in one pass: the checksum word, whose
 * digest needs that, is refused for the whole batch.
 */
static int check_state_words(const struct kfs *fs,
			     const struct kfs_cmd *cmds, unsigned int n,
			     char *msg, size_t len)
{
	if (!fs->state)
		return 0;
	for (unsigned int i = 0; i < n; i++)
		if (cmds[i].flags & KFS_CHECKSUM) {
			snprintf(msg, len, "command %u: checksum cannot go "
				 "with --state: a resumed job reads only what "
				 "is left of its source", i + 1);
			return -EINVAL;
		}
	return 0;
}

/*
 * A write to control.  Commands end at a newline: the handle keeps an
 * unfinished last line and joins it to the next write, so a command cut
 * into pieces by dd, stdio or the kernel runs whole, once.  The lines a
 * write completes form its batch, accepted or refused as a whole; a
 * refused write changes nothing, not even the unfinished line.
 * c->wlock serialises the writes of one handle (no libfuse call under it).
 */
static void write_control(fuse_req_t req, struct control_fh *c,
			  const char *buf, size_t size, off_t off)
{
	struct kfs *fs = fs_of(req);
	struct kfs_devlookup dl = {
		.find = find_dev, .check = check_cmd, .opaque = fs,
	};
	/* A failed write leaves the file position where it was. */
	uint64_t base = (uint64_t)off + size, failed_base = (uint64_t)off;
	unsigned int max_cmds, n = 0, queued;
	struct kfs_cmd *cmds = NULL;
	struct waiter *w = NULL;
	uint64_t *ids = NULL;
	const char *tail;
	size_t blen, tlen;
	char *batch = NULL;
	struct kfs_admin admin;
	bool dlocked = false;
	char msg[640];
	char *text;
	size_t len;
	int r = 0;

	pth(pthread_mutex_lock(&c->wlock));
	if (take_retry(c, req, buf, size, off, &w, &r)) {
		pth(pthread_mutex_unlock(&c->wlock));
		if (w)
			waiter_wait(w, req);
		else if (r)
			fuse_reply_err(req, -r);
		else
			fuse_reply_write(req, size);
		return;
	}
	drop_record(c);
	if (kfs_is_stopping(fs)) {
		snprintf(msg, sizeof(msg), "the daemon is stopping");
		r = -ESHUTDOWN;
		goto refuse;
	}
	if (size > KFS_MAX_WRITE) {
		snprintf(msg, sizeof(msg), "write of %zu bytes is larger "
			 "than %d", size, KFS_MAX_WRITE);
		r = -EFBIG;
		goto refuse;
	}
	r = join_batch(c, buf, size, &batch, &blen, &tail, &tlen, msg,
		       sizeof(msg));
	if (r)
		goto refuse;
	if (!batch) {
		/* No newline: nothing to run yet. */
		keep_tail(c, tail, tlen, true);
		pth(pthread_mutex_unlock(&c->wlock));
		set_reply(c, NULL, 0, base);
		fuse_reply_write(req, size);
		return;
	}
	if (kfs_clone_command(fs, batch, blen, &r, msg, sizeof(msg))) {
		if (r)
			goto refuse;
		keep_tail(c, tail, tlen, false);
		pth(pthread_mutex_unlock(&c->wlock));
		set_reply(c, NULL, 0, base);
		fuse_reply_write(req, size);
		goto out;
	}
	r = kfs_parse_admin(batch, blen, &admin, msg, sizeof(msg));
	if (!r && admin.op)
		r = run_admin(req, c, &admin, size, base, tail, tlen, msg,
			      sizeof(msg));
	if (r)
		goto refuse;
	if (admin.op)
		goto out;
	max_cmds = count_lines(batch, blen);
	if (max_cmds > KFS_MAX_CMDS)
		max_cmds = KFS_MAX_CMDS;
	cmds = malloc(sizeof(*cmds) * max_cmds);
	ids = malloc(sizeof(*ids) * max_cmds);
	if (!cmds || !ids) {
		snprintf(msg, sizeof(msg), "out of memory");
		r = -ENOMEM;
		goto refuse;
	}
	/* No device may come or go between lookup and queueing. */
	pth(pthread_rwlock_rdlock(&fs->dlock));
	dlocked = true;
	r = kfs_parse_write(batch, blen, &dl, cmds, max_cmds, &n, msg,
			    sizeof(msg));
	if (r)
		goto refuse;
	r = check_state_words(fs, cmds, n, msg, sizeof(msg));
	if (r)
		goto refuse;
	if (new_waiter(req, cmds, n, size, &w)) {
		snprintf(msg, sizeof(msg), "out of memory");
		r = -ENOMEM;
		goto refuse;
	}
	kfs_state_take_error();
	r = kfs_table_submit(fs->table, cmds, n, w, ids, &queued);
	pth(pthread_rwlock_unlock(&fs->dlock));
	dlocked = false;
	if (r) {
		int serr = kfs_state_take_error();

		if (serr)
			snprintf(msg, sizeof(msg),
				 "command %u: cannot record it in state %s: "
				 "%s (%u of %u queued before it)", queued + 1,
				 fs->state->dir, strerror(-serr), queued, n);
		else if (r == -EAGAIN)
			snprintf(msg, sizeof(msg),
				 "queue full: no room for %u more job%s "
				 "(--max-queue %u)", n, n == 1 ? "" : "s",
				 fs->max_queue);
		else if (cmds[queued].op == KFS_OP_CANCEL &&
			 cmds[queued].cancel_id)
			snprintf(msg, sizeof(msg),
				 "cancel %llu: no unfinished job with that id",
				 (unsigned long long)cmds[queued].cancel_id);
		else if (cmds[queued].op == KFS_OP_CANCEL)
			snprintf(msg, sizeof(msg),
				 "cancel tag=%s: no unfinished job with that "
				 "tag", cmds[queued].tag);
		else
			snprintf(msg, sizeof(msg),
				 "the engine refused command %u (%u of %u "
				 "queued before it)", queued + 1, queued, n);
		if (w)
			waiter_drop_unqueued(w, cmds, n, queued);
		pth(pthread_mutex_unlock(&c->wlock));
		control_error(req, c, -r, msg, failed_base);
		if (w)
			waiter_put(w, false);
		goto out;
	}
	keep_tail(c, tail, tlen, false);
	if (w)
		keep_record(c, w, buf, size, off);
	pth(pthread_mutex_unlock(&c->wlock));

	if (ids_text(ids, n, &text, &len))
		set_reply(c, NULL, 0, base);
	else
		set_reply(c, text, len, base);
	if (w)
		waiter_wait(w, req);
	else
		fuse_reply_write(req, size);
	goto out;

refuse:
	if (dlocked)
		pth(pthread_rwlock_unlock(&fs->dlock));
	pth(pthread_mutex_unlock(&c->wlock));
	control_error(req, c, -r, msg, failed_base);
out:
	free(batch);
	free(cmds);
	free(ids);
}

/* --- Dispatch ------------------------------------------------------------- */

static void kfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	switch (ino) {
	case INO_ROOT:
	case INO_DEVDIR:
		fuse_reply_err(req, EISDIR);
		return;
	case INO_CONTROL:
		open_control(req, fi);
		return;
	case INO_RESULTS:
	case INO_STATS:
	case INO_FINISHED:
		open_status(req, ino, fi);
		return;
	}
	open_dev(req, ino, fi);
}

static void kfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct kfs *fs = fs_of(req);

	switch (ino) {
	case INO_CONTROL:
		read_control(req, (struct control_fh *)(uintptr_t)fi->fh, size,
			     off);
		return;
	case INO_FINISHED:
	case INO_RESULTS:
		read_stream(req, (struct kfs_poller *)(uintptr_t)fi->fh, size,
			    off);
		return;
	case INO_STATS:
		read_stats(req, (struct kfs_poller *)(uintptr_t)fi->fh, size,
			   off);
		return;
	}
	if (!dev_of(fs, ino)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	read_dev(req, dev_of(fs, ino), size, off);
}

static void kfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	struct kfs *fs = fs_of(req);

	if (ino == INO_CONTROL) {
		write_control(req, (struct control_fh *)(uintptr_t)fi->fh, buf,
			      size, off);
		return;
	}
	if (!dev_of(fs, ino)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	write_dev(req, dev_of(fs, ino), buf, size, off);
}

static void kfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	struct kfs_dev *d = dev_of(fs_of(req), ino);

	if (d && d->clone)
		fuse_reply_err(req, -kfs_clone_fsync(d->clone));
	else
		fuse_reply_err(req, d ? -kcopyd_bdev_flush(d->bdev) : 0);
}

static void kfs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	struct kfs_dev *d = dev_of(fs_of(req), ino);

	if (!d) {
		fuse_reply_err(req, ESPIPE);
		return;
	}
	lseek_dev(req, d, off, whence);
}

static void kfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			  off_t off, off_t len, struct fuse_file_info *fi)
{
	struct kfs_dev *d = dev_of(fs_of(req), ino);

	if (!d) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	fallocate_dev(req, d, mode, off, len);
}

static void kfs_flush(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void kfs_release(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct kfs_dev *d = dev_of(fs_of(req), ino);

	if (d) {
		kfs_pt_release(req, fs_of(req), d, fi);
		kfs_dev_put(fs_of(req), d);
	}
	switch (ino) {
	case INO_CONTROL:
		release_control(fs_of(req),
				(struct control_fh *)(uintptr_t)fi->fh);
		break;
	case INO_RESULTS:
	case INO_STATS:
	case INO_FINISHED:
		release_status(fs_of(req),
			       (struct kfs_poller *)(uintptr_t)fi->fh);
		break;
	}
	fuse_reply_err(req, 0);
}

/* Never ENOSYS: that would turn poll off for the whole mount. */
static void kfs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct fuse_pollhandle *ph)
{
	if (ino == INO_RESULTS) {
		poll_results(req, (struct kfs_poller *)(uintptr_t)fi->fh, ph);
		return;
	}
	/* Other files are always ready, as regular files are. */
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, ino == INO_STATS || ino == INO_FINISHED ?
			POLLIN | POLLRDNORM :
			POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
}

static void kfs_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Dirty kernel pages could later overwrite what a copy wrote. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	conn->max_read = KFS_MAX_READ;
	kfs_pt_init(userdata, conn);
}

const struct fuse_lowlevel_ops kfs_ops = {
	.init = kfs_init,
	.lookup = kfs_lookup,
	.getattr = kfs_getattr,
	.setattr = kfs_setattr,
	.readdir = kfs_readdir,
	.open = kfs_open,
	.read = kfs_read,
	.write = kfs_write,
	.flush = kfs_flush,
	.release = kfs_release,
	.fsync = kfs_fsync,
	.poll = kfs_poll,
	.lseek = kfs_lseek,
	.fallocate = kfs_fallocate,
};
