/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Clone devices (see clone.h): dev/NAME over SOURCE, DEST and META.
 *
 * Thread model
 * ------------
 * Threads that enter here:
 *   - FUSE worker threads: kfs_clone_read/write/zero/fsync, the control
 *     commands and the stats.  A read or write never waits for a
 *     hydration on its thread: a write that must wait is copied into a
 *     struct clone_op on c->waiting and answered later.  An fsync does
 *     its commit on its own thread (two flushes and a write of the
 *     bitmap: bounded I/O, as the fsync of an image would be).
 *   - the engine's callback thread: hydrated(), the end of a hydration
 *     job.  It marks the regions, submits the next jobs and does the I/O
 *     of the writes that were waiting for those regions, then answers
 *     them (bounded I/O on DEST; it blocks no other clone's progress for
 *     longer than that), under fs->reply_lock, so that no answer goes
 *     out once the session is over.
 *   - one thread per clone (clone_main): commits the bitmap every
 *     `commit` seconds (1 by default) when it changed, and every second
 *     asks again for the hydration of regions a waiting write needs,
 *     should the queue have been full when it was asked for.
 *   - the main thread: open, start, quiesce and close.
 * Locks, outermost first:
 *   c->commit_lock: one commit at a time (held across the flush of DEST
 *     and the write of META, never in a libfuse call).
 *   fs->reply_lock (kcopydfs.c): taken alone, around an answer.
 *   c->lock: every region's state, the bitmap, the queues, the waiting
 *     writes and the counters; the end of hydration appends to
 *     MNT/finished under it (finished.c's lock nests inside).  Held
 *     while jobs are submitted to the engine (the engine never calls
 *     back with its own lock held), never across device I/O or a libfuse
 *     call.
 *
 * Regions move UNHYD -> INFLIGHT (a hydration job) -> VALID, or UNHYD ->
 * BUSY (a write or discard covering it wholly, done directly on DEST) ->
 * VALID.  A write touching a region partly waits while that region is
 * not VALID, and a whole-region write waits while it is INFLIGHT, so
 * no hydration ever lands over newer data.  A region whose hydration
 * failed KFS_CLONE_TRIES times is FAILED: it is read from SOURCE, and
 * only a write covering it wholly makes it VALID.
 *
 * Crash safety: bits only ever go from 0 to 1, and a bit is set in
 * memory only after its data is written to DEST; a commit snapshots the
 * bitmap, flushes DEST, then writes the snapshot to META and flushes it.
 * A torn write of the bitmap mixes an old and a newer snapshot, each of
 * whose bits has its data already durable on DEST.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "kcopydfs.h"
#include "clone.h"

#define KFS_CLONE_MAGIC		"KCPDCLON"
#define KFS_CLONE_VERSION	1u
#define KFS_CLONE_HDR		4096u	/* header; the bitmap follows */
#define KFS_CLONE_TRIES		3	/* hydrations of a region, at most */
/*
 * Bytes hydrating at once, and in one job: little, so that a region a
 * read or write asks for waits behind little background work (dm-clone's
 * hydration threshold is 1 MiB too).
 */
#define KFS_CLONE_INFLIGHT	(1u << 20)
#define KFS_CLONE_BATCH		(256u << 10)
#define KFS_CLONE_FP_BYTES	65536u	/* SOURCE bytes in its fingerprint */

enum region_state {
	R_UNHYD,
	R_INFLIGHT,
	R_BUSY,
	R_VALID,
	R_FAILED,
};

/* A write or zeroing waiting for a region (on c->waiting). */
struct clone_op {
	struct list_head link;
	fuse_req_t req;
	uint64_t off, len;
	char *buf;			/* NULL: zero (punch or not) */
	bool punch;
	uint64_t wait;			/* the region it waits for */
};

/* One hydration job: regions [first, first + n). */
struct clone_job {
	struct kfs_clone *c;
	uint64_t first, n;
};

struct kfs_clone {
	struct kfs *fs;
	struct kfs_dev *dev;
	struct block_device *src, *dst, *meta;
	/* The devices under it: not detached while the clone lives. */
	struct kfs_dev *src_dev, *dst_dev, *meta_dev;
	uint64_t size;			/* bytes of dev/NAME: SOURCE's */
	unsigned int shift;		/* log2 of the region size */
	uint64_t nr;			/* regions */
	uint64_t max_inflight, max_batch;	/* regions */

	pthread_mutex_t commit_lock;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* clone_main's sleep (lock) */
	uint8_t *state;			/* enum region_state (lock) */
	uint8_t *tries;			/* failed hydrations (lock) */
	uint8_t *bitmap;		/* VALID bits (lock) */
	size_t bm_bytes;
	bool dirty;			/* bitmap not committed (lock) */
	uint64_t *prio;			/* ring of regions asked for (lock) */
	uint64_t prio_cap, prio_head, prio_len;
	uint64_t cursor;		/* background sweep (lock) */
	uint64_t inflight;		/* regions (lock) */
	unsigned int jobs;		/* jobs not yet completed (lock) */
	struct list_head waiting;	/* struct clone_op (lock) */
	bool paused, stopping, quit, ended;	/* (lock) */
	bool failed_end;		/* ended with failed regions (lock) */
	bool removed;			/* by `remove` (lock) */
	/*
	 * After clone-finish: DEST, held for the files of dev/NAME still
	 * open, put at close; SOURCE and META are released.
	 */
	struct kfs_dev *dst_ref;
	/* Counters (lock). */
	uint64_t nr_valid, nr_failed, nr_skipped, hydrated_bytes;
	uint64_t commits, retries;
	struct timespec started, finished;
	int commit_err;			/* last commit's error (lock) */

	unsigned int interval;		/* seconds between commits */
	pthread_t thread;
	bool thread_running;
};

static uint64_t region_start(const struct kfs_clone *c, uint64_t r)
{
	return r << c->shift;
}

static uint64_t region_end(const struct kfs_clone *c, uint64_t r)
{
	uint64_t e = (r + 1) << c->shift;

	return e < c->size ? e : c->size;
}

static void set_valid(struct kfs_clone *c, uint64_t r)
{
	c->state[r] = R_VALID;
	c->bitmap[r >> 3] |= (uint8_t)(1u << (r & 7));
	c->nr_valid++;
	c->dirty = true;
}

static double since(const struct timespec *t0, const struct timespec *t1)
{
	return (double)(t1->tv_sec - t0->tv_sec) +
	       (double)(t1->tv_nsec - t0->tv_nsec) / 1e9;
}

/* --- Spec and META -------------------------------------------------------- */

static int copy_name(char *dst, const char *s, size_t len, const char *what,
		     char *errmsg, size_t errlen)
{
	if (!len || len > KFS_MAX_NAME || !kfs_valid_name(s, len)) {
		snprintf(errmsg, errlen, "clone: bad %s name '%.*s'", what,
			 (int)len, s);
		return -EINVAL;
	}
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

int kfs_clone_parse(const char *spec, struct kfs_clone_spec *out,
		    char *errmsg, size_t errlen)
{
	static const char *const what[] = { "source", "dest", "meta" };
	char *fields[3] = { out->source, out->dest, out->meta };
	const char *eq = strchr(spec, '='), *p, *e;
	int r;

	memset(out, 0, sizeof(*out));
	if (!eq) {
		snprintf(errmsg, errlen, "clone: '%s': expected "
			 "NAME=SOURCE:DEST:META[:region=SIZE][:commit=SECONDS]"
			 "[:paused]", spec);
		return -EINVAL;
	}
	r = copy_name(out->name, spec, (size_t)(eq - spec), "clone", errmsg,
		      errlen);
	p = eq + 1;
	for (int i = 0; !r && i < 3; i++) {
		e = strchr(p, ':');
		if (!e)
			e = p + strlen(p);
		if (e == p && !*p) {
			snprintf(errmsg, errlen, "clone %s: no %s device",
				 out->name, what[i]);
			return -EINVAL;
		}
		r = copy_name(fields[i], p, (size_t)(e - p), what[i], errmsg,
			      errlen);
		p = *e ? e + 1 : e;
	}
	while (!r && *p) {
		char opt[64];
		size_t n;

		e = strchr(p, ':');
		if (!e)
			e = p + strlen(p);
		n = (size_t)(e - p);
		snprintf(opt, sizeof(opt), "%.*s", (int)n, p);
		if (!strcmp(opt, "paused")) {
			out->paused = true;
		} else if (!strncmp(opt, "commit=", 7)) {
			char *end;
			unsigned long v = strtoul(opt + 7, &end, 10);

			if (opt[7] < '0' || opt[7] > '9' || *end || !v ||
			    v > 3600) {
				snprintf(errmsg, errlen, "clone %s: commit "
					 "interval '%s': seconds from 1 to "
					 "3600", out->name, opt + 7);
				return -EINVAL;
			}
			out->interval = (unsigned int)v;
		} else if (!strncmp(opt, "region=", 7)) {
			uint64_t v;

			if (kfs_parse_size(opt + 7, &v) || v <
			    KFS_CLONE_MIN_REGION || v > KFS_CLONE_MAX_REGION ||
			    (v & (v - 1))) {
				snprintf(errmsg, errlen, "clone %s: region "
					 "size '%s': a power of two from 4K "
					 "to 1G", out->name, opt + 7);
				return -EINVAL;
			}
			out->region = v;
		} else {
			snprintf(errmsg, errlen, "clone %s: unknown option "
				 "'%s'", out->name, opt);
			return -EINVAL;
		}
		p = *e ? e + 1 : e;
	}
	return r;
}

static uint64_t fnv(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *s = buf;

	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* The identity of SOURCE: its size and a hash of its first bytes. */
static int source_fingerprint(struct block_device *src, uint64_t size,
			      uint64_t *fp)
{
	size_t n = size < KFS_CLONE_FP_BYTES ? (size_t)size :
					       KFS_CLONE_FP_BYTES;
	char *buf = malloc(n ? n : 1);
	int r;

	if (!buf)
		return -ENOMEM;
	r = kcopyd_bdev_pread(src, buf, n, 0);
	if (!r)
		*fp = fnv(fnv(0xcbf29ce484222325ull, &size, sizeof(size)),
			  buf, n);
	free(buf);
	return r;
}

struct clone_hdr {
	char magic[8];
	uint32_t version;
	uint32_t shift;
	uint64_t source_size;
	uint64_t dest_size;
	uint64_t nr;
	uint64_t source_fp;
	uint64_t sum;			/* fnv of the fields above */
};

static void hdr_encode(const struct kfs_clone *c, uint64_t fp,
		       struct clone_hdr *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, KFS_CLONE_MAGIC, 8);
	h->version = htole32(KFS_CLONE_VERSION);
	h->shift = htole32(c->shift);
	h->source_size = htole64(c->size);
	h->dest_size = htole64(kcopyd_bdev_size(c->dst));
	h->nr = htole64(c->nr);
	h->source_fp = htole64(fp);
	h->sum = htole64(fnv(0xcbf29ce484222325ull, h,
			     offsetof(struct clone_hdr, sum)));
}

static bool all_zero(const void *buf, size_t len)
{
	const unsigned char *s = buf;

	for (size_t i = 0; i < len; i++)
		if (s[i])
			return false;
	return true;
}

/*
 * Read META's header: a fresh (all-zero) one is written, a matching one
 * resumes, any other is refused.  Sets c->shift from it or the spec.
 */
static int load_meta(struct kfs_clone *c, const struct kfs_clone_spec *s,
		     const char *name, char *msg, size_t msglen)
{
	char raw[KFS_CLONE_HDR];
	struct clone_hdr h, want;
	uint64_t fp, msize = kcopyd_bdev_size(c->meta);
	unsigned int shift;
	int r;

	r = kcopyd_bdev_pread(c->meta, raw, sizeof(raw), 0);
	if (r == -ERANGE)
		goto small;
	if (r) {
		snprintf(msg, msglen, "clone %s: reading meta %s: %s",
			name, s->meta, strerror(-r));
		return r;
	}
	r = source_fingerprint(c->src, c->size, &fp);
	if (r) {
		snprintf(msg, msglen, "clone %s: reading source %s: %s",
			name, s->source, strerror(-r));
		return r;
	}
	memcpy(&h, raw, sizeof(h));
	if (all_zero(raw, sizeof(raw))) {
		shift = (unsigned int)__builtin_ctzll(s->region ? s->region :
						      KFS_CLONE_DEF_REGION);
	} else if (memcmp(h.magic, KFS_CLONE_MAGIC, 8) ||
		   le64toh(h.sum) != fnv(0xcbf29ce484222325ull, &h,
					 offsetof(struct clone_hdr, sum)) ||
		   le32toh(h.version) != KFS_CLONE_VERSION) {
		snprintf(msg, msglen, "clone %s: meta %s holds no clone "
			"metadata of version %u (not all zeros either)",
			name, s->meta, KFS_CLONE_VERSION);
		return -EINVAL;
	} else {
		shift = le32toh(h.shift);
		if (s->region && s->region != 1ull << shift) {
			snprintf(msg, msglen, "clone %s: meta %s has "
				"region=%llu, not %llu", name, s->meta,
				1ull << shift,
				(unsigned long long)s->region);
			return -EINVAL;
		}
	}
	c->shift = shift;
	c->nr = (c->size + (1ull << shift) - 1) >> shift;
	c->bm_bytes = (size_t)((c->nr + 7) / 8);
	if (msize < KFS_CLONE_HDR + c->bm_bytes) {
small:
		snprintf(msg, msglen, "clone %s: meta %s is too small: "
			"%llu bytes, needs %llu", name, s->meta,
			(unsigned long long)msize,
			(unsigned long long)(KFS_CLONE_HDR + c->bm_bytes));
		return -ENOSPC;
	}
	hdr_encode(c, fp, &want);
	if (all_zero(raw, sizeof(raw))) {
		/* A fresh map: zeros first, the header last. */
		c->bitmap = calloc(1, c->bm_bytes);
		if (!c->bitmap)
			return -ENOMEM;
		r = kcopyd_bdev_pwrite(c->meta, c->bitmap, c->bm_bytes,
				       KFS_CLONE_HDR);
		if (!r)
			r = kcopyd_bdev_flush(c->meta);
		memset(raw, 0, sizeof(raw));
		memcpy(raw, &want, sizeof(want));
		if (!r)
			r = kcopyd_bdev_pwrite(c->meta, raw, sizeof(raw), 0);
		if (!r)
			r = kcopyd_bdev_flush(c->meta);
		if (r)
			snprintf(msg, msglen, "clone %s: writing meta "
				"%s: %s", name, s->meta, strerror(-r));
		return r;
	}
	if (h.source_size != want.source_size || h.source_fp !=
	    want.source_fp) {
		snprintf(msg, msglen, "clone %s: meta %s belongs to "
			"another source than %s", name, s->meta, s->source);
		return -EINVAL;
	}
	if (h.dest_size != want.dest_size) {
		snprintf(msg, msglen, "clone %s: meta %s belongs to a "
			"dest of %llu bytes, %s has %llu", name, s->meta,
			(unsigned long long)le64toh(h.dest_size), s->dest,
			(unsigned long long)kcopyd_bdev_size(c->dst));
		return -EINVAL;
	}
	c->bitmap = malloc(c->bm_bytes);
	if (!c->bitmap)
		return -ENOMEM;
	r = kcopyd_bdev_pread(c->meta, c->bitmap, c->bm_bytes,
			      KFS_CLONE_HDR);
	if (r)
		snprintf(msg, msglen, "clone %s: reading meta %s: %s",
			name, s->meta, strerror(-r));
	return r;
}

/*
 * Take the device called name for the clone (dlock held): not a clone,
 * not under one, and from now on not detachable.
 */
static struct kfs_dev *claim_dev(struct kfs *fs, const char *name,
				 const char *what, const char *clone,
				 char *msg, size_t msglen)
{
	int slot = kfs_dev_find(fs, name, strlen(name));
	struct kfs_dev *d;

	if (slot < 0) {
		snprintf(msg, msglen, "clone %s: no %s device '%s'", clone,
			 what, name);
		return NULL;
	}
	d = fs->devs[slot];
	if (d->clone || atomic_exchange(&d->under_clone, true)) {
		snprintf(msg, msglen, "clone %s: %s device '%s' is a clone or "
			 "under one", clone, what, name);
		return NULL;
	}
	return d;
}

static void unclaim(struct kfs_clone *c)
{
	if (c->src_dev)
		atomic_store(&c->src_dev->under_clone, false);
	if (c->dst_dev)
		atomic_store(&c->dst_dev->under_clone, false);
	if (c->meta_dev)
		atomic_store(&c->meta_dev->under_clone, false);
}

static void clone_free(struct kfs_clone *c)
{
	if (!c)
		return;
	free(c->state);
	free(c->tries);
	free(c->bitmap);
	free(c->prio);
	pth(pthread_mutex_destroy(&c->lock));
	pth(pthread_mutex_destroy(&c->commit_lock));
	pth(pthread_cond_destroy(&c->cond));
	free(c);
}

static int clone_open(struct kfs *fs, struct kfs_clone *c,
		      const struct kfs_clone_spec *s, char *msg, size_t msglen)
{
	uint64_t rbytes;
	int r;

	pth(pthread_rwlock_rdlock(&fs->dlock));
	/* Checked again at attach; here, before META is written. */
	if (kfs_dev_find(fs, s->name, strlen(s->name)) >= 0) {
		pth(pthread_rwlock_unlock(&fs->dlock));
		snprintf(msg, msglen, "device '%s' exists", s->name);
		return -EEXIST;
	}
	c->src_dev = claim_dev(fs, s->source, "source", s->name, msg, msglen);
	c->dst_dev = c->src_dev ? claim_dev(fs, s->dest, "dest", s->name,
					    msg, msglen) : NULL;
	c->meta_dev = c->dst_dev ? claim_dev(fs, s->meta, "meta", s->name,
					     msg, msglen) : NULL;
	pth(pthread_rwlock_unlock(&fs->dlock));
	if (!c->meta_dev)
		return strstr(msg, "no ") ? -ENOENT : -EBUSY;
	c->src = c->src_dev->bdev;
	c->dst = c->dst_dev->bdev;
	c->meta = c->meta_dev->bdev;
	if (kcopyd_bdev_same(c->src, c->dst) ||
	    kcopyd_bdev_same(c->src, c->meta) ||
	    kcopyd_bdev_same(c->dst, c->meta)) {
		snprintf(msg, msglen, "clone %s: source, dest and meta are "
			 "not three distinct images", s->name);
		return -EINVAL;
	}
	if (kcopyd_bdev_is_read_only(c->dst) ||
	    kcopyd_bdev_is_read_only(c->meta)) {
		snprintf(msg, msglen, "clone %s: %s is read-only", s->name,
			 kcopyd_bdev_is_read_only(c->dst) ? s->dest : s->meta);
		return -EROFS;
	}
	c->size = kcopyd_bdev_size(c->src);
	if (!c->size || kcopyd_bdev_size(c->dst) < c->size) {
		snprintf(msg, msglen, "clone %s: dest %s (%llu bytes) is "
			 "smaller than source %s (%llu bytes)", s->name,
			 s->dest, (unsigned long long)kcopyd_bdev_size(c->dst),
			 s->source, (unsigned long long)c->size);
		return c->size ? -ENOSPC : -EINVAL;
	}
	r = load_meta(c, s, s->name, msg, msglen);
	if (r)
		return r;
	rbytes = 1ull << c->shift;
	c->max_inflight = KFS_CLONE_INFLIGHT / rbytes;
	if (c->max_inflight < 2)
		c->max_inflight = 2;
	c->max_batch = KFS_CLONE_BATCH / rbytes;
	if (!c->max_batch)
		c->max_batch = 1;
	c->prio_cap = c->nr < 4096 ? c->nr : 4096;
	c->state = malloc(c->nr);
	c->tries = calloc(1, c->nr);
	c->prio = malloc(sizeof(*c->prio) * c->prio_cap);
	if (!c->state || !c->tries || !c->prio) {
		snprintf(msg, msglen, "clone %s: out of memory", s->name);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < c->nr; i++) {
		bool v = c->bitmap[i >> 3] & (1u << (i & 7));

		c->state[i] = v ? R_VALID : R_UNHYD;
		c->nr_valid += v;
	}
	return 0;
}

int kfs_clone_create(struct kfs *fs, const struct kfs_clone_spec *s,
		     char *msg, size_t msglen)
{
	struct kfs_clone *c = calloc(1, sizeof(*c));
	struct kfs_dev *d = calloc(1, sizeof(*d));
	int r;

	if (!c || !d || !(d->path = strdup("clone"))) {
		free(c);
		free(d);
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	pth(pthread_mutex_init(&c->lock, NULL));
	pth(pthread_mutex_init(&c->commit_lock, NULL));
	pth(pthread_cond_init(&c->cond, NULL));
	list_init(&c->waiting);
	c->fs = fs;
	c->dev = d;
	c->paused = s->paused;
	c->interval = s->interval ? s->interval : 1;
	snprintf(d->name, sizeof(d->name), "%s", s->name);
	d->fd = -1;
	atomic_init(&d->refs, 1);
	atomic_init(&d->busy, 0);
	r = clone_open(fs, c, s, msg, msglen);
	if (r) {
		unclaim(c);
		clone_free(c);
		free(d->path);
		free(d);
		return r;
	}
	d->size = c->size;
	d->bdev = c->dst;
	d->clone = c;
	kfs_pt_dev_setup(fs, d, false);
	d->pt_ready = true;
	r = kfs_dev_attach(fs, d, msg, msglen);
	if (r) {
		kfs_dev_free(d);
		return r;
	}
	if (fs->kc)
		r = kfs_clone_start(c);
	if (r)
		snprintf(msg, msglen, "clone %s: thread: %s", s->name,
			 strerror(-r));
	return r;
}

/* --- Commit --------------------------------------------------------------- */

/*
 * Flush DEST, then write the bitmap as it was before the flush.  Always
 * flushes DEST (an fsync of dev/NAME asks for the data too).
 */
static int commit(struct kfs_clone *c, bool force)
{
	uint8_t *snap = malloc(c->bm_bytes);
	bool dirty;
	int r;

	if (!snap)
		return -ENOMEM;
	pth(pthread_mutex_lock(&c->commit_lock));
	pth(pthread_mutex_lock(&c->lock));
	memcpy(snap, c->bitmap, c->bm_bytes);
	dirty = c->dirty;
	c->dirty = false;
	pth(pthread_mutex_unlock(&c->lock));
	r = force || dirty ? kcopyd_bdev_flush(c->dst) : 0;
	if (!r && dirty)
		r = kcopyd_bdev_pwrite(c->meta, snap, c->bm_bytes,
				       KFS_CLONE_HDR);
	if (!r && dirty)
		r = kcopyd_bdev_flush(c->meta);
	pth(pthread_mutex_lock(&c->lock));
	if (r && dirty)
		c->dirty = true;
	if (!r && dirty)
		c->commits++;
	if (r != c->commit_err && r)
		kfs_log(c->fs, LOG_ERR, "clone %s: commit: %s", c->dev->name,
			strerror(-r));
	c->commit_err = r;
	pth(pthread_mutex_unlock(&c->lock));
	pth(pthread_mutex_unlock(&c->commit_lock));
	free(snap);
	return r;
}

int kfs_clone_fsync(struct kfs_clone *c)
{
	return commit(c, true);
}

/* --- Hydration ------------------------------------------------------------ */

static void hydrated(const struct kcopyd_completion *done, void *context);

/* Ask for region r first (lock). */
static void prio_push(struct kfs_clone *c, uint64_t r)
{
	if (c->prio_len == c->prio_cap)
		return;
	c->prio_head = (c->prio_head + c->prio_cap - 1) % c->prio_cap;
	c->prio[c->prio_head] = r;
	c->prio_len++;
}

static bool prio_pop(struct kfs_clone *c, uint64_t *r)
{
	if (!c->prio_len)
		return false;
	*r = c->prio[c->prio_head];
	c->prio_head = (c->prio_head + 1) % c->prio_cap;
	c->prio_len--;
	return true;
}

/* The next region the background sweep hydrates, if any (lock). */
static bool sweep_next(struct kfs_clone *c, uint64_t *r)
{
	for (uint64_t i = 0; i < c->nr; i++) {
		uint64_t x = (c->cursor + i) % c->nr;

		if (c->state[x] == R_UNHYD) {
			*r = x;
			return true;
		}
	}
	return false;
}

/* Paused: only a region a write waits for is hydrated (lock). */
static bool waited_region(struct kfs_clone *c, uint64_t *r)
{
	struct clone_op *op;

	list_for_each_entry(op, &c->waiting, link)
		if (c->state[op->wait] == R_UNHYD) {
			*r = op->wait;
			return true;
		}
	return false;
}

/* The end of hydration in MNT/finished, as a job's line is (lock). */
static void end_line(struct kfs_clone *c)
{
	char line[512];
	double secs = since(&c->started, &c->finished);

	snprintf(line, sizeof(line), "clone=%s state=%s regions=%llu "
		 "hydrated=%llu skipped=%llu failed=%llu bytes=%llu usec=%.0f",
		 c->dev->name, c->nr_failed ? "failed" : "hydrated",
		 (unsigned long long)c->nr, (unsigned long long)c->nr_valid,
		 (unsigned long long)c->nr_skipped,
		 (unsigned long long)c->nr_failed,
		 (unsigned long long)c->hydrated_bytes, secs * 1e6);
	if (c->fs->finished)
		kfs_finished_add(c->fs->finished, line);
}

/* Log the end of hydration once nothing is left to do (lock). */
static void check_end(struct kfs_clone *c)
{
	/* Failed regions later written in full: hydrated after all. */
	if (c->ended && c->nr_failed == 0 && c->nr_valid == c->nr &&
	    c->failed_end) {
		c->failed_end = false;
		kfs_log(c->fs, LOG_NOTICE, "clone %s: hydrated, its failed "
			"regions written over", c->dev->name);
	}
	if (c->ended || c->jobs || c->nr_valid + c->nr_failed < c->nr)
		return;
	for (uint64_t i = 0; i < c->nr; i++)
		if (c->state[i] != R_VALID && c->state[i] != R_FAILED)
			return;
	c->ended = true;
	c->failed_end = c->nr_failed > 0;
	clock_gettime(CLOCK_MONOTONIC, &c->finished);
	end_line(c);
	if (c->nr_failed)
		kfs_log(c->fs, LOG_ERR, "clone %s: hydration ended with %llu "
			"of %llu regions failed; they are read from the "
			"source", c->dev->name,
			(unsigned long long)c->nr_failed,
			(unsigned long long)c->nr);
	else
		kfs_log(c->fs, LOG_NOTICE, "clone %s: hydrated, %llu regions "
			"(%llu copied, %llu written or discarded); reads and "
			"writes go to the dest only", c->dev->name,
			(unsigned long long)c->nr,
			(unsigned long long)(c->nr - c->nr_skipped),
			(unsigned long long)c->nr_skipped);
	pth(pthread_cond_signal(&c->cond));
}

/*
 * Submit hydration jobs up to the in-flight limit: regions asked for
 * first, then the sweep; contiguous regions in one job.  Paused, only
 * the regions waiting writes need (lock).
 */
static void pump(struct kfs_clone *c)
{
	while (!c->stopping && c->fs->kc && c->inflight < c->max_inflight) {
		struct kcopyd_job_desc desc = { .size = sizeof(desc) };
		struct io_region from, to;
		struct clone_job *j;
		uint64_t r, n, room;
		bool found = false;
		int err;

		if (c->paused)
			found = waited_region(c, &r);
		else
			while (prio_pop(c, &r))
				if (c->state[r] == R_UNHYD) {
					found = true;
					break;
				}
		if (!found && (c->paused || !sweep_next(c, &r)))
			break;
		room = c->max_inflight - c->inflight;
		if (room > c->max_batch)
			room = c->max_batch;
		/*
		 * A region that failed goes alone, so faults stay apart; so
		 * does one a write needs while paused.
		 */
		n = 1;
		while (!c->paused && !c->tries[r] && n < room &&
		       r + n < c->nr && c->state[r + n] == R_UNHYD &&
		       !c->tries[r + n])
			n++;
		j = malloc(sizeof(*j));
		if (!j)
			break;
		j->c = c;
		j->first = r;
		j->n = n;
		from.bdev = c->src;
		from.sector = region_start(c, r) >> KCOPYD_SECTOR_SHIFT;
		from.count = (region_end(c, r + n - 1) - region_start(c, r)) >>
			     KCOPYD_SECTOR_SHIFT;
		to = from;
		to.bdev = c->dst;
		desc.op = KCOPYD_OP_COPY;
		desc.from = &from;
		desc.num_dests = 1;
		desc.dests = &to;
		desc.complete = hydrated;
		desc.context = j;
		err = kcopyd_submit(c->fs->kc, &desc, NULL);
		if (err) {
			/* The queue is full: clone_main asks again. */
			free(j);
			if (found && !c->paused)
				prio_push(c, r);
			break;
		}
		for (uint64_t i = r; i < r + n; i++)
			c->state[i] = R_INFLIGHT;
		c->inflight += n;
		c->jobs++;
		if (!found)
			c->cursor = (r + n) % c->nr;
	}
}

static void run_op(struct kfs_clone *c, struct clone_op *op);

/* Take the waiting ops that waited for regions [first, last] (lock). */
static void take_waiters(struct kfs_clone *c, uint64_t first, uint64_t last,
			 struct list_head *out)
{
	struct list_head *p = c->waiting.next, *next;

	for (; p != &c->waiting; p = next) {
		struct clone_op *op = list_entry(p, struct clone_op, link);

		next = p->next;
		if (op->wait >= first && op->wait <= last) {
			list_del_init(&op->link);
			list_add_tail(&op->link, out);
		}
	}
}

static void run_ops(struct kfs_clone *c, struct list_head *ops)
{
	while (!list_empty(ops)) {
		struct clone_op *op = list_first_entry(ops, struct clone_op,
						       link);

		list_del_init(&op->link);
		run_op(c, op);
	}
}

static void hydrated(const struct kcopyd_completion *done, void *context)
{
	struct clone_job *j = context;
	struct kfs_clone *c = j->c;
	bool ok = !done->read_err && !done->write_err && !done->cancelled;
	struct list_head ops;

	list_init(&ops);
	pth(pthread_mutex_lock(&c->lock));
	for (uint64_t r = j->first; r < j->first + j->n; r++) {
		if (ok) {
			set_valid(c, r);
			c->hydrated_bytes += region_end(c, r) -
					     region_start(c, r);
			continue;
		}
		c->retries++;
		if (++c->tries[r] < KFS_CLONE_TRIES) {
			c->state[r] = R_UNHYD;
			continue;
		}
		c->state[r] = R_FAILED;
		c->nr_failed++;
		kfs_log(c->fs, LOG_ERR, "clone %s: region %llu (bytes "
			"%llu+%llu) failed to hydrate %d times: %s; it is "
			"read from the source", c->dev->name,
			(unsigned long long)r,
			(unsigned long long)region_start(c, r),
			(unsigned long long)(region_end(c, r) -
					     region_start(c, r)),
			KFS_CLONE_TRIES, strerror(done->read_error ?
				done->read_error : done->dests[0].error ?
				done->dests[0].error : EIO));
	}
	c->inflight -= j->n;
	c->jobs--;
	take_waiters(c, j->first, j->first + j->n - 1, &ops);
	pump(c);
	check_end(c);
	pth(pthread_mutex_unlock(&c->lock));
	free(j);
	run_ops(c, &ops);
	kfs_changed(c->fs);
}

/* --- I/O ------------------------------------------------------------------ */

static void reply_err(struct kfs_clone *c, fuse_req_t req, int err)
{
	if (err)
		atomic_fetch_add(&c->dev->errors, 1);
	fuse_reply_err(req, err);
}

/*
 * Can op run now?  Every region it touches must be VALID, or not in
 * flight and wholly covered (then it is taken: BUSY).  Else the op waits
 * for the first region in its way, whose hydration is asked for (lock).
 * Returns 1 to run, 0 waiting, or -EIO (a region that cannot hydrate).
 */
static int claim(struct kfs_clone *c, struct clone_op *op)
{
	uint64_t first = op->off >> c->shift;
	uint64_t last = (op->off + op->len - 1) >> c->shift;
	bool wait = false;

	for (uint64_t r = first; r <= last; r++) {
		bool whole = op->off <= region_start(c, r) &&
			     op->off + op->len >= region_end(c, r);

		switch (c->state[r]) {
		case R_VALID:
			break;
		case R_UNHYD:
			if (whole)
				break;
			prio_push(c, r);
			/* fall through */
		case R_INFLIGHT:
		case R_BUSY:
			if (!wait)
				op->wait = r;
			wait = true;
			break;
		case R_FAILED:
			if (!whole)
				return -EIO;
			break;
		}
	}
	if (wait)
		return 0;
	for (uint64_t r = first; r <= last; r++)
		if (c->state[r] != R_VALID)
			c->state[r] = R_BUSY;
	return 1;
}

static int op_io(struct kfs_clone *c, struct clone_op *op)
{
	if (op->buf)
		return kcopyd_bdev_pwrite(c->dst, op->buf, op->len, op->off);
	return kcopyd_bdev_zero(c->dst, op->off, op->len,
				op->punch ? 0 : KCOPYD_ALLOCATED);
}

/* After op's I/O: its BUSY regions are VALID, or UNHYD again (lock). */
static void release(struct kfs_clone *c, struct clone_op *op, bool ok,
		    struct list_head *woken)
{
	uint64_t first = op->off >> c->shift;
	uint64_t last = (op->off + op->len - 1) >> c->shift;

	for (uint64_t r = first; r <= last; r++) {
		if (c->state[r] != R_BUSY)
			continue;
		if (ok) {
			if (c->tries[r] >= KFS_CLONE_TRIES)
				c->nr_failed--;
			set_valid(c, r);
			c->nr_skipped++;
		} else {
			c->state[r] = c->tries[r] >= KFS_CLONE_TRIES ?
				      R_FAILED : R_UNHYD;
		}
	}
	take_waiters(c, first, last, woken);
}

/*
 * Run op or queue it; if it runs, do its I/O on this thread and answer
 * it, then run the ops its regions let go.
 */
static void run_op(struct kfs_clone *c, struct clone_op *op)
{
	struct list_head woken;
	int r;

	list_init(&woken);
	pth(pthread_mutex_lock(&c->lock));
	r = claim(c, op);
	/* Removed: no region is hydrated any more. */
	if (!r && c->removed)
		r = -ENODEV;
	if (!r) {
		list_add_tail(&op->link, &c->waiting);
		pump(c);
		pth(pthread_mutex_unlock(&c->lock));
		return;
	}
	pth(pthread_mutex_unlock(&c->lock));
	if (r > 0)
		r = op_io(c, op);
	pth(pthread_mutex_lock(&c->lock));
	release(c, op, r >= 0, &woken);
	check_end(c);
	pump(c);
	pth(pthread_mutex_unlock(&c->lock));
	/* From the engine's thread, the session may be over: no answer. */
	pth(pthread_mutex_lock(&c->fs->reply_lock));
	if (c->fs->session_over)
		;
	else if (r < 0)
		reply_err(c, op->req, -r);
	else if (op->buf)
		fuse_reply_write(op->req, op->len);
	else
		fuse_reply_err(op->req, 0);
	pth(pthread_mutex_unlock(&c->fs->reply_lock));
	if (r >= 0 && op->buf) {
		atomic_fetch_add(&c->dev->writes, 1);
		atomic_fetch_add(&c->dev->bytes_written, op->len);
	}
	free(op->buf);
	free(op);
	run_ops(c, &woken);
}

static bool is_ended(struct kfs_clone *c)
{
	bool e;

	pth(pthread_mutex_lock(&c->lock));
	e = c->ended && !c->nr_failed;
	pth(pthread_mutex_unlock(&c->lock));
	return e;
}

void kfs_clone_read(struct kfs_clone *c, fuse_req_t req, size_t size,
		    uint64_t off)
{
	uint64_t first, last, at, end;
	char *buf;
	int r = 0;

	if (off >= c->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > c->size - off)
		size = (size_t)(c->size - off);
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Hydrated in full: DEST only, no bookkeeping. */
	if (!size || is_ended(c)) {
		r = size ? kcopyd_bdev_pread(c->dst, buf, size, off) : 0;
		goto out;
	}
	first = off >> c->shift;
	last = (off + size - 1) >> c->shift;
	/* Each run of regions from one device in one read. */
	for (uint64_t rg = first; !r && rg <= last; ) {
		bool valid;
		uint64_t n = rg;

		pth(pthread_mutex_lock(&c->lock));
		valid = c->state[rg] == R_VALID;
		while (n + 1 <= last && (c->state[n + 1] == R_VALID) == valid)
			n++;
		if (!valid && !c->paused) {
			for (uint64_t x = n + 1; x-- > rg; )
				if (c->state[x] == R_UNHYD)
					prio_push(c, x);
			pump(c);
		}
		pth(pthread_mutex_unlock(&c->lock));
		at = rg == first ? off : region_start(c, rg);
		end = region_end(c, n) < off + size ? region_end(c, n) :
						      off + size;
		r = kcopyd_bdev_pread(valid ? c->dst : c->src, buf + (at - off),
				      (size_t)(end - at), at);
		rg = n + 1;
	}
out:
	if (r) {
		reply_err(c, req, -r);
	} else {
		atomic_fetch_add(&c->dev->reads, 1);
		atomic_fetch_add(&c->dev->bytes_read, (uint64_t)size);
		fuse_reply_buf(req, buf, size);
	}
	free(buf);
}

static void start_op(struct kfs_clone *c, fuse_req_t req, const char *buf,
		     uint64_t off, uint64_t len, bool punch)
{
	struct clone_op *op = calloc(1, sizeof(*op));

	if (!op || (buf && !(op->buf = malloc(len)))) {
		free(op);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (buf)
		memcpy(op->buf, buf, len);
	op->req = req;
	op->off = off;
	op->len = len;
	op->punch = punch;
	run_op(c, op);
}

void kfs_clone_write(struct kfs_clone *c, fuse_req_t req, const char *buf,
		     size_t size, uint64_t off)
{
	int r;

	if (off >= c->size) {
		fuse_reply_err(req, size ? ENOSPC : 0);
		return;
	}
	if (size > c->size - off)
		size = (size_t)(c->size - off);
	if (!size) {
		fuse_reply_write(req, 0);
		return;
	}
	/* Hydrated in full: DEST only, no bookkeeping. */
	if (is_ended(c)) {
		r = kcopyd_bdev_pwrite(c->dst, buf, size, off);
		if (r) {
			reply_err(c, req, -r);
			return;
		}
		atomic_fetch_add(&c->dev->writes, 1);
		atomic_fetch_add(&c->dev->bytes_written, size);
		fuse_reply_write(req, size);
		return;
	}
	start_op(c, req, buf, off, size, false);
}

void kfs_clone_zero(struct kfs_clone *c, fuse_req_t req, uint64_t off,
		    uint64_t len, bool punch)
{
	if (off >= c->size || !len) {
		fuse_reply_err(req, 0);
		return;
	}
	if (len > c->size - off)
		len = c->size - off;
	start_op(c, req, NULL, off, len, punch);
}

/* --- The clone's thread, start and stop ----------------------------------- */

static void *clone_main(void *arg)
{
	struct kfs_clone *c = arg;
	unsigned int ticks = 0;
	struct timespec t;
	bool quit, ended;

	for (;;) {
		struct clone_op *op;

		/* Every second: the queue may have been full at submission. */
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_sec++;
		pth(pthread_mutex_lock(&c->lock));
		if (!c->quit) {
			int e = pthread_cond_timedwait(&c->cond, &c->lock, &t);

			if (e && e != ETIMEDOUT)
				pth(e);
		}
		quit = c->quit;
		ended = c->ended;
		/* What waiting writes need, should the ring have been full. */
		list_for_each_entry(op, &c->waiting, link)
			if (c->state[op->wait] == R_UNHYD)
				prio_push(c, op->wait);
		pump(c);
		pth(pthread_mutex_unlock(&c->lock));
		if (quit)
			break;
		/* At the interval, and at once at the end of hydration. */
		if (++ticks >= c->interval || ended) {
			commit(c, false);
			ticks = 0;
		}
	}
	return NULL;
}

int kfs_clone_start(struct kfs_clone *c)
{
	int r;

	clock_gettime(CLOCK_MONOTONIC, &c->started);
	pth(pthread_mutex_lock(&c->lock));
	kfs_log(c->fs, LOG_INFO, "clone %s: %llu of %llu regions of %llu "
		"bytes hydrated%s", c->dev->name,
		(unsigned long long)c->nr_valid, (unsigned long long)c->nr,
		1ull << c->shift, c->paused ? "; paused" : "");
	check_end(c);
	pump(c);
	pth(pthread_mutex_unlock(&c->lock));
	r = pthread_create(&c->thread, NULL, clone_main, c);
	if (r)
		return -r;
	c->thread_running = true;
	return 0;
}

void kfs_clone_quiesce(struct kfs_clone *c)
{
	pth(pthread_mutex_lock(&c->lock));
	c->stopping = true;
	pth(pthread_mutex_unlock(&c->lock));
}

void kfs_clone_close(struct kfs_clone *c)
{
	if (!c)
		return;
	pth(pthread_mutex_lock(&c->lock));
	c->stopping = true;
	c->quit = true;
	pth(pthread_cond_signal(&c->cond));
	pth(pthread_mutex_unlock(&c->lock));
	if (c->thread_running)
		pth(pthread_join(c->thread, NULL));
	commit(c, false);
	unclaim(c);
	if (c->dst_ref)
		kfs_dev_put(c->fs, c->dst_ref);
	/* The session is over: waiting writes get no answer. */
	while (!list_empty(&c->waiting)) {
		struct clone_op *op = list_first_entry(&c->waiting,
						       struct clone_op, link);

		list_del_init(&op->link);
		free(op->buf);
		free(op);
	}
	clone_free(c);
}

/* --- Control and stats ---------------------------------------------------- */

bool kfs_clone_removable(struct kfs_clone *c)
{
	bool r;

	pth(pthread_mutex_lock(&c->lock));
	r = c->removed;
	pth(pthread_mutex_unlock(&c->lock));
	return r;
}

/* The clone called name, held (dlock taken here), or NULL. */
static struct kfs_dev *clone_get(struct kfs *fs, const char *name, size_t len)
{
	struct kfs_dev *d = NULL;
	int slot;

	pth(pthread_rwlock_rdlock(&fs->dlock));
	slot = kfs_dev_find(fs, name, len);
	if (slot >= 0 && fs->devs[slot]->clone) {
		d = fs->devs[slot];
		kfs_dev_get(d);
	}
	pth(pthread_rwlock_unlock(&fs->dlock));
	return d;
}

/*
 * The checks remove and clone-finish share (c->lock held): the clone is
 * still listed (else ENOENT) and has no hydration or write in flight
 * (else EBUSY, the message ending with hint).
 */
static int end_check(struct kfs_clone *c, const char *hint, char *msg,
		     size_t msglen)
{
	const char *name = c->dev->name;

	if (c->removed) {
		snprintf(msg, msglen, "no clone named '%s'", name);
		return -ENOENT;
	}
	if (c->jobs || !list_empty(&c->waiting)) {
		snprintf(msg, msglen, "clone %s: %u hydration job%s in flight%s"
			 "; %s", name, c->jobs, c->jobs == 1 ? "" : "s",
			 list_empty(&c->waiting) ? "" : ", writes waiting",
			 hint);
		return -EBUSY;
	}
	return 0;
}

/* A remove or clone-finish that failed after its checks: go on hydrating. */
static void end_undo(struct kfs_clone *c)
{
	pth(pthread_mutex_lock(&c->lock));
	c->stopping = false;
	c->removed = false;
	pump(c);
	pth(pthread_mutex_unlock(&c->lock));
}

/*
 * remove: no hydration in flight and no write waiting (else EBUSY), then
 * nothing more is hydrated and dev/NAME goes; open files of it still
 * read, and write where the region is hydrated.
 */
static int clone_remove(struct kfs *fs, struct kfs_clone *c, char *msg,
			size_t msglen)
{
	const char *name = c->dev->name;
	int r;

	pth(pthread_mutex_lock(&c->lock));
	r = end_check(c, "clone-pause it, then remove", msg, msglen);
	if (!r) {
		c->stopping = true;
		c->removed = true;
	}
	pth(pthread_mutex_unlock(&c->lock));
	if (r)
		return r;
	commit(c, true);
	r = kfs_detach(fs, name, msg, msglen);
	if (r)
		end_undo(c);
	return r;
}

/*
 * clone-finish: every region hydrated (else EAGAIN), no job or write of
 * it in flight (else EBUSY).  The map is committed after a flush of
 * DEST, then dev/NAME is a plain device over DEST (a new file, as an
 * attach makes); files still open on the clone go on reading and writing
 * DEST through it until closed.  SOURCE and META are released.
 */
static int clone_finish(struct kfs *fs, struct kfs_dev *d, char *msg,
			size_t msglen)
{
	struct kfs_clone *c = d->clone;
	struct kfs_dev *dst = c->dst_dev, *nd;
	const char *name = d->name;
	int r = 0, fd = -1;

	pth(pthread_mutex_lock(&c->lock));
	r = end_check(c, "finish it once hydrated", msg, msglen);
	if (!r && c->nr_failed) {
		snprintf(msg, msglen, "clone %s: %llu of %llu regions failed "
			 "to hydrate; write them over in full, or remove the "
			 "clone", name, (unsigned long long)c->nr_failed,
			 (unsigned long long)c->nr);
		r = -EAGAIN;
	} else if (!r && (!c->ended || c->nr_valid < c->nr)) {
		snprintf(msg, msglen, "clone %s: %llu of %llu regions not "
			 "hydrated yet%s", name,
			 (unsigned long long)(c->nr - c->nr_valid),
			 (unsigned long long)c->nr,
			 c->paused ? " (paused: clone-resume it)" : "");
		r = -EAGAIN;
	} else if (!r) {
		c->stopping = true;
		c->removed = true;
	}
	pth(pthread_mutex_unlock(&c->lock));
	if (r)
		return r;
	r = commit(c, true);
	if (r) {
		snprintf(msg, msglen, "clone %s: committing the map: %s",
			 name, strerror(-r));
		goto undo;
	}
	if (dst->fd >= 0) {
		fd = fcntl(dst->fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			snprintf(msg, msglen, "clone %s: %s: %s", name,
				 dst->path, strerror(errno));
			goto undo;
		}
	}
	r = kfs_dev_new(fs, name, dst->path, NULL, fd, false, &nd, msg,
			msglen);
	if (r)
		goto undo;
	kfs_pt_dev_attach(fs, nd);
	/* DEST stays for the files still open on the clone. */
	kfs_dev_get(dst);
	r = kfs_dev_replace(fs, d, nd, msg, msglen);
	if (r) {
		kfs_dev_put(fs, dst);
		kfs_dev_free(nd);
		goto undo;
	}
	c->dst_ref = dst;
	unclaim(c);
	c->src_dev = c->dst_dev = c->meta_dev = NULL;
	kfs_log(fs, LOG_INFO, "clone %s: finished: dev/%s is %s, %llu bytes",
		name, name, dst->path, (unsigned long long)nd->size);
	/* The listing's reference: the clone goes with its last open file. */
	kfs_dev_put(fs, d);
	return 0;
undo:
	end_undo(c);
	return r;
}

/* The next word of line, from *pos: its start and length (0 at the end). */
static size_t word(const char *line, size_t len, size_t *pos,
		   const char **w)
{
	size_t n = 0;

	while (*pos < len && (line[*pos] == ' ' || line[*pos] == '\t'))
		(*pos)++;
	*w = line + *pos;
	while (*pos < len && line[*pos] != ' ' && line[*pos] != '\t') {
		(*pos)++;
		n++;
	}
	return n;
}

int kfs_clone_command(struct kfs *fs, const char *line, size_t len,
		      int *err, char *msg, size_t msglen)
{
	static const char *const verbs[] = {
		"clone", "remove", "clone-pause", "clone-resume",
		"clone-finish",
	};
	const unsigned int nverbs = sizeof(verbs) / sizeof(verbs[0]);
	const char *w, *name;
	size_t pos = 0, n, nlen;
	struct kfs_dev *d;
	unsigned int v;

	while (len && (line[len - 1] == '\n' || line[len - 1] == ' '))
		len--;
	n = word(line, len, &pos, &w);
	for (v = 0; v < nverbs; v++)
		if (n == strlen(verbs[v]) && !memcmp(w, verbs[v], n))
			break;
	if (v == nverbs)
		return 0;
	*err = -EINVAL;
	if (memchr(line, '\n', len)) {
		snprintf(msg, msglen, "%s must be alone in a write", verbs[v]);
		return 1;
	}
	if (v == 0) {
		struct kfs_clone_spec spec;
		char text[KFS_MAX_LINE + 8];
		size_t tl = 0;
		/* NAME=SOURCE:DEST:META[:OPT]..., as --clone takes it. */
		for (unsigned int i = 0; (n = word(line, len, &pos, &w)); i++)
			tl += (size_t)snprintf(text + tl, sizeof(text) - tl,
					       "%s%.*s", !i ? "" : i == 1 ?
					       "=" : ":", (int)n, w);
		*err = kfs_clone_parse(text, &spec, msg, msglen);
		if (!*err)
			*err = kfs_clone_create(fs, &spec, msg, msglen);
		if (!*err)
			kfs_log(fs, LOG_INFO, "clone %s: made over %s, %s, %s",
				spec.name, spec.source, spec.dest, spec.meta);
		return 1;
	}
	nlen = word(line, len, &pos, &name);
	if (!nlen || word(line, len, &pos, &w)) {
		snprintf(msg, msglen, "usage: %s NAME", verbs[v]);
		return 1;
	}
	d = clone_get(fs, name, nlen);
	if (!d) {
		snprintf(msg, msglen, "no clone named '%.*s'", (int)nlen, name);
		*err = -ENOENT;
		return 1;
	}
	if (v == 1) {
		*err = clone_remove(fs, d->clone, msg, msglen);
		if (!*err)
			kfs_log(fs, LOG_INFO, "clone %s: removed", d->name);
	} else if (v == 4) {
		/* d stays held here: its name outlives the finish. */
		*err = clone_finish(fs, d, msg, msglen);
		if (!*err)
			kfs_changed(fs);
	} else {
		struct kfs_clone *c = d->clone;

		pth(pthread_mutex_lock(&c->lock));
		c->paused = v == 2;
		pump(c);
		pth(pthread_mutex_unlock(&c->lock));
		kfs_log(fs, LOG_INFO, "clone %s: %s", d->name,
			v == 2 ? "paused" : "resumed");
		kfs_changed(fs);
		*err = 0;
	}
	kfs_dev_put(fs, d);
	return 1;
}

size_t kfs_clone_stats(struct kfs_clone *c, char *out, size_t cap)
{
	const char *n = c->dev->name, *state;
	struct timespec now;
	double secs, rate;
	int len;

	pth(pthread_mutex_lock(&c->lock));
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = since(&c->started, c->ended ? &c->finished : &now);
	rate = secs > 0 ? (double)c->hydrated_bytes / secs : 0;
	state = c->ended ? (c->nr_failed ? "failed" : "hydrated") :
		c->paused ? "paused" : "hydrating";
	len = snprintf(out, cap,
		"clone.%s.state=%s\nclone.%s.region_size=%llu\n"
		"clone.%s.regions=%llu\nclone.%s.hydrated=%llu\n"
		"clone.%s.inflight=%llu\nclone.%s.skipped=%llu\n"
		"clone.%s.failed=%llu\nclone.%s.retries=%llu\n"
		"clone.%s.bytes_copied=%llu\nclone.%s.rate=%.0f\n"
		"clone.%s.commits=%llu\n",
		n, state, n, 1ull << c->shift,
		n, (unsigned long long)c->nr,
		n, (unsigned long long)c->nr_valid,
		n, (unsigned long long)c->inflight,
		n, (unsigned long long)c->nr_skipped,
		n, (unsigned long long)c->nr_failed,
		n, (unsigned long long)c->retries,
		n, (unsigned long long)c->hydrated_bytes, n, rate,
		n, (unsigned long long)c->commits);
	pth(pthread_mutex_unlock(&c->lock));
	return len < 0 ? 0 : (size_t)len >= cap ? cap - 1 : (size_t)len;
}
