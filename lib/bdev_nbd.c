/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD backend: a remote export named by an NBD URI, reached with
 * libnbd's asynchronous API.
 *
 * A device has one to KCOPYD_NBD_MAX_CONNS connections to one export
 * (more than one only when the server offers multi-conn, which promises
 * that a flush on any of them covers writes done on all).  Every calling
 * thread issues its commands itself (nbd_aio_pread and friends) on the
 * next connection in turn and waits for their completion; so the number
 * of requests in flight is what the callers ask at once, not one per
 * connection.  Each connection has a thread of its own, started on first
 * use (after any fork of the opening process), that polls the socket and
 * drives libnbd (nbd_aio_notify_read/write): completion callbacks run in
 * it.
 *
 * A request that is not answered within the device's timeout stops its
 * connection: the connection thread leaves its loop, so that no buffer of
 * an abandoned request is written afterwards, and every request on that
 * connection then fails at once.  A server that dies fails its requests
 * as libnbd reports it (ENOTCONN and the like).
 *
 * Thread model: any number of threads call the ops concurrently.  libnbd
 * serialises calls on a handle with a lock of its own.  conn->lock
 * protects the batches' counts and errors (updated by callbacks in the
 * connection thread) and the connection's state (started, stop,
 * stopped, err); waiters sleep on conn->cond, which every completion and
 * the connection's stop broadcast.  d->cache.lock protects the extent
 * cache; d->gen, bumped by every write and zeroing, is atomic.  Nothing
 * else is mutable after open.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "internal.h"

#define KCOPYD_NBD_MAX_CONNS		16
#define NBD_DEFAULT_CONNS		4
#define NBD_DEFAULT_TIMEOUT		60	/* seconds */
#define NBD_MAX_TIMEOUT			86400
/* Largest payload when the server does not say (the protocol's safe one). */
#define NBD_DEFAULT_MAX_REQUEST		(32u * 1024 * 1024)
/* Longest zero or block status request: well inside 32 bits. */
#define NBD_MAX_EFFECT			(1u << 30)
/* Runs of one kind (data or zeros) kept from a block status reply. */
#define NBD_EXT_RUNS			256

struct ext_run {
	uint64_t len;
	bool zero;
};

/*
 * The runs of the last block status reply, from `start`: the engine asks
 * one extent at a time, and a reply describes many.  Valid while no write
 * or zeroing went to the device since (gen).
 */
struct ext_cache {
	pthread_mutex_t lock;
	uint64_t start;			/* (lock) */
	uint64_t gen;			/* (lock) d->gen when filled */
	unsigned int nr;		/* (lock) 0: empty */
	struct ext_run runs[NBD_EXT_RUNS];	/* (lock) */
};

struct nbd_conn {
	struct nbd_handle *h;
	int kick;			/* eventfd: wakes the thread's poll */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started;			/* (lock) */
	bool stop;			/* (lock) asked to leave its loop */
	bool stopped;			/* (lock) no libnbd call any more */
	int err;			/* (lock) why it stopped, -errno */
};

struct nbd_dev {
	struct block_device b;		/* first: the generic part */
	char *uri;			/* as given to libnbd */
	unsigned int nr_conns;
	atomic_uint next;		/* round-robin over conns */
	unsigned int timeout;		/* seconds */
	uint32_t write_flags;		/* FUA for O_SYNC/O_DSYNC */
	uint64_t max_request;
	bool can_zero, can_flush, have_extents;
	atomic_uint_fast64_t gen;	/* writes and zeroings issued */
	struct ext_cache cache;
	struct nbd_conn conns[];
};

/*
 * The commands of one call, all on one connection.  refs: one for the
 * waiter and one per issued closure; the last drop frees it (conn->lock).
 */
struct nbd_batch {
	struct nbd_conn *c;
	unsigned int refs;
	unsigned int pending;
	int err;
	/* Block status: see extent_cb(). */
	bool ext_seen, ext_zero, ext_run;
	uint64_t ext_len, ext_total, ext_alloc;
	unsigned int nr_runs;
	bool runs_full;
	struct ext_run runs[NBD_EXT_RUNS];
};

static struct nbd_dev *ndev(const struct block_device *b)
{
	return (struct nbd_dev *)b;
}

/* --- Connections ------------------------------------------------------------ */

static void kick(struct nbd_conn *c)
{
	uint64_t one = 1;

	if (write(c->kick, &one, sizeof(one)) < 0) {
		/* The counter is full: the thread has a wake-up pending. */
	}
}

/* Leave the loop: no libnbd call touches a buffer after this. */
static void conn_stopped(struct nbd_conn *c, int err)
{
	pth(pthread_mutex_lock(&c->lock));
	c->stopped = true;
	if (!c->err)
		c->err = err;
	pth(pthread_cond_broadcast(&c->cond));
	pth(pthread_mutex_unlock(&c->lock));
}

static int remote_err(void)
{
	int e = nbd_get_errno();

	return e ? -e : -EIO;
}

static void *conn_main(void *arg)
{
	struct nbd_conn *c = arg;
	int fd = nbd_aio_get_fd(c->h);

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = fd },
			{ .fd = c->kick, .events = POLLIN },
		};
		unsigned int dir;
		bool stop;
		int r;

		pth(pthread_mutex_lock(&c->lock));
		stop = c->stop;
		pth(pthread_mutex_unlock(&c->lock));
		if (stop) {
			conn_stopped(c, -ETIMEDOUT);
			break;
		}
		if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
			conn_stopped(c, -ENOTCONN);
			break;
		}
		dir = nbd_aio_get_direction(c->h);
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			pfd[0].events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			pfd[0].events |= POLLOUT;
		r = poll(pfd, 2, 1000);
		if (r < 0)
			continue;
		if (pfd[1].revents & POLLIN) {
			uint64_t n;

			if (read(c->kick, &n, sizeof(n)) < 0) {
				/* Drained by an earlier read. */
			}
		}
		/* An error on the socket shows as the read that fails. */
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			r = nbd_aio_notify_read(c->h);
		else if (pfd[0].revents & POLLOUT)
			r = nbd_aio_notify_write(c->h);
		else
			r = 0;
		if (r == -1 && !nbd_aio_is_dead(c->h) &&
		    !nbd_aio_is_closed(c->h)) {
			conn_stopped(c, remote_err());
			break;
		}
	}
	return NULL;
}

/*
 * Start the connection's thread on first use; an error if stopped, or if
 * libnbd knows the connection is gone (no command is then handed to it).
 */
static int conn_get(struct nbd_conn *c)
{
	int r = 0;

	if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h))
		return -ENOTCONN;
	pth(pthread_mutex_lock(&c->lock));
	if (c->stopped || c->stop) {
		r = c->err ? c->err : -ENOTCONN;
	} else if (!c->started) {
		r = -pthread_create(&c->thread, NULL, conn_main, c);
		c->started = r == 0;
	}
	pth(pthread_mutex_unlock(&c->lock));
	return r;
}

static struct nbd_conn *pick_conn(struct nbd_dev *d)
{
	return &d->conns[atomic_fetch_add(&d->next, 1) % d->nr_conns];
}

/* --- Batches of commands ------------------------------------------------------ */

static void batch_put_locked(struct nbd_batch *bt)
{
	if (--bt->refs == 0)
		free(bt);
}

static void batch_free_cb(void *opaque)
{
	struct nbd_batch *bt = opaque;
	struct nbd_conn *c = bt->c;

	pth(pthread_mutex_lock(&c->lock));
	batch_put_locked(bt);
	pth(pthread_mutex_unlock(&c->lock));
}

static int batch_done_cb(void *opaque, int *error)
{
	struct nbd_batch *bt = opaque;
	struct nbd_conn *c = bt->c;

	pth(pthread_mutex_lock(&c->lock));
	if (*error && !bt->err)
		bt->err = -*error;
	bt->pending--;
	pth(pthread_cond_broadcast(&c->cond));
	pth(pthread_mutex_unlock(&c->lock));
	/* Retire the command: nobody asks for it by cookie. */
	return 1;
}

static struct nbd_batch *batch_new(struct nbd_conn *c)
{
	struct nbd_batch *bt = calloc(1, sizeof(*bt));

	if (bt) {
		bt->c = c;
		bt->refs = 1;
	}
	return bt;
}

/* A batch on connection c, whose thread is started if it was not yet. */
static int batch_start(struct nbd_conn *c, struct nbd_batch **btp)
{
	int r = conn_get(c);

	if (r)
		return r;
	*btp = batch_new(c);
	return *btp ? 0 : -ENOMEM;
}

/* Account for one closure about to be handed to libnbd. */
static nbd_completion_callback batch_closure(struct nbd_batch *bt)
{
	pth(pthread_mutex_lock(&bt->c->lock));
	bt->refs++;
	bt->pending++;
	pth(pthread_mutex_unlock(&bt->c->lock));
	return (nbd_completion_callback) {
		.callback = batch_done_cb,
		.user_data = bt,
		.free = batch_free_cb,
	};
}

/* A command that was never issued: its completion will not come. */
static void batch_not_issued(struct nbd_batch *bt, int err)
{
	pth(pthread_mutex_lock(&bt->c->lock));
	bt->pending--;
	if (!bt->err)
		bt->err = err;
	pth(pthread_mutex_unlock(&bt->c->lock));
}

/* After issuing: let the thread poll for writing if libnbd has to. */
static void batch_issued(struct nbd_conn *c)
{
	if (nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE)
		kick(c);
}

/*
 * Wait for every command of the batch, at most the device's timeout;
 * then stop the connection, and wait until its thread has left libnbd
 * (bounded: it polls with a kick to wake it).  Drops the waiter's
 * reference.  Returns 0 or the first error.
 */
static int batch_wait(struct nbd_dev *d, struct nbd_batch *bt)
{
	struct nbd_conn *c = bt->c;
	struct timespec deadline;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += d->timeout;
	pth(pthread_mutex_lock(&c->lock));
	while (bt->pending && !c->stopped) {
		r = pthread_cond_timedwait(&c->cond, &c->lock, &deadline);
		if (r == ETIMEDOUT && bt->pending) {
			c->stop = true;
			if (!c->err)
				c->err = -ETIMEDOUT;
			kick(c);
			while (!c->stopped)
				pth(pthread_cond_wait(&c->cond, &c->lock));
		} else if (r && r != ETIMEDOUT) {
			engine_die("pthread_cond_timedwait", r, __FILE__,
				   __LINE__);
		}
	}
	r = bt->pending ? (c->err ? c->err : -ENOTCONN) : bt->err;
	batch_put_locked(bt);
	pth(pthread_mutex_unlock(&c->lock));
	return r;
}

/* --- Operations ------------------------------------------------------------------ */

static ssize_t remote_rw(struct block_device *b, const struct iovec *iov,
		      int iovcnt, uint64_t off, bool write)
{
	struct nbd_dev *d = ndev(b);
	struct nbd_conn *c = pick_conn(d);
	struct nbd_batch *bt;
	size_t total = 0;
	int r;

	r = batch_start(c, &bt);
	if (r)
		return r;
	if (write)
		atomic_fetch_add(&d->gen, 1);
	for (int i = 0; i < iovcnt; i++) {
		char *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left) {
			size_t n = left < d->max_request ? left :
							   d->max_request;
			int64_t cookie;

			if (write)
				cookie = nbd_aio_pwrite(c->h, p, n, off,
							batch_closure(bt),
							d->write_flags);
			else
				cookie = nbd_aio_pread(c->h, p, n, off,
						       batch_closure(bt), 0);
			if (cookie == -1) {
				batch_not_issued(bt, remote_err());
				goto wait;
			}
			p += n;
			left -= n;
			off += n;
			total += n;
		}
	}
wait:
	batch_issued(c);
	r = batch_wait(d, bt);
	return r ? r : (ssize_t)total;
}

static ssize_t remote_preadv(struct block_device *b, const struct iovec *iov,
			  int iovcnt, uint64_t off)
{
	return remote_rw(b, iov, iovcnt, off, false);
}

static ssize_t remote_pwritev(struct block_device *b, const struct iovec *iov,
			   int iovcnt, uint64_t off)
{
	return remote_rw(b, iov, iovcnt, off, true);
}

/*
 * NBD_CMD_WRITE_ZEROES: without NO_HOLE the server may deallocate (a
 * punched hole reads as zeros), with it the blocks stay allocated.  Trim
 * is never used to zero: what a trimmed range reads back is undefined.
 */
static int remote_zero_op(struct block_device *b, uint64_t off, uint64_t len,
		       enum bdev_zero_method m)
{
	struct nbd_dev *d = ndev(b);
	uint32_t flags = d->write_flags;
	struct nbd_conn *c;
	struct nbd_batch *bt;
	int r;

	if (!d->can_zero)
		return -EOPNOTSUPP;
	if (m == BDEV_ZERO_RANGE)
		flags |= LIBNBD_CMD_FLAG_NO_HOLE;
	c = pick_conn(d);
	r = batch_start(c, &bt);
	if (r)
		return r;
	atomic_fetch_add(&d->gen, 1);
	while (len) {
		uint64_t n = len < NBD_MAX_EFFECT ? len : NBD_MAX_EFFECT;

		if (nbd_aio_zero(c->h, n, off, batch_closure(bt),
				 flags) == -1) {
			batch_not_issued(bt, remote_err());
			break;
		}
		off += n;
		len -= n;
	}
	batch_issued(c);
	r = batch_wait(d, bt);
	/* A server may refuse a flag it did not announce. */
	return r == -ENOTSUP || r == -EINVAL ? -EOPNOTSUPP : r;
}

/*
 * base:allocation.  What reads as zeros (NBD_STATE_ZERO) is a hole to
 * the engine; an unallocated range not known to read as zeros is data.
 * The batch gathers the run of extents of the first one's kind, all the
 * bytes described, and those allocated (not NBD_STATE_HOLE).
 */
static int extent_cb(void *opaque, const char *context, uint64_t offset,
		     uint32_t *entries, size_t nr, int *error)
{
	struct nbd_batch *bt = opaque;

	if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION))
		return 0;
	pth(pthread_mutex_lock(&bt->c->lock));
	for (size_t i = 0; i + 1 < nr; i += 2) {
		bool zero = entries[i + 1] & LIBNBD_STATE_ZERO;

		if (!bt->ext_seen) {
			bt->ext_seen = true;
			bt->ext_zero = zero;
			bt->ext_run = true;
		} else if (zero != bt->ext_zero) {
			bt->ext_run = false;
		}
		if (bt->ext_run)
			bt->ext_len += entries[i];
		if (bt->runs_full)
			;
		else if (bt->nr_runs && bt->runs[bt->nr_runs - 1].zero == zero)
			bt->runs[bt->nr_runs - 1].len += entries[i];
		else if (bt->nr_runs == NBD_EXT_RUNS)
			bt->runs_full = true;
		else
			bt->runs[bt->nr_runs++] = (struct ext_run){
				.len = entries[i], .zero = zero };
		bt->ext_total += entries[i];
		if (!(entries[i + 1] & LIBNBD_STATE_HOLE))
			bt->ext_alloc += entries[i];
	}
	pth(pthread_mutex_unlock(&bt->c->lock));
	return 0;
}

/* One block status request at off, of at most len bytes. */
static int block_status(struct nbd_dev *d, uint64_t off, uint64_t len,
			struct nbd_batch *res)
{
	struct nbd_conn *c = pick_conn(d);
	struct nbd_batch *bt;
	uint64_t n = len < NBD_MAX_EFFECT ? len : NBD_MAX_EFFECT;
	int r;

	r = batch_start(c, &bt);
	if (r)
		return r;
	/* One for the extent closure, one to read the results after. */
	pth(pthread_mutex_lock(&c->lock));
	bt->refs += 2;
	pth(pthread_mutex_unlock(&c->lock));
	if (nbd_aio_block_status(c->h, n, off,
				 (nbd_extent_callback) {
					 .callback = extent_cb,
					 .user_data = bt,
					 .free = batch_free_cb,
				 },
				 batch_closure(bt), 0) == -1)
		batch_not_issued(bt, remote_err());
	batch_issued(c);
	r = batch_wait(d, bt);
	pth(pthread_mutex_lock(&c->lock));
	*res = *bt;
	batch_put_locked(bt);
	pth(pthread_mutex_unlock(&c->lock));
	if (!r && !res->ext_seen)
		r = -EPROTO;	/* a reply with no extent */
	return r;
}

/* The run holding off, from the cache; false if it does not know. */
static bool cache_lookup(struct nbd_dev *d, uint64_t off, bool *hole,
			 uint64_t *count)
{
	struct ext_cache *c = &d->cache;
	bool found = false;

	pth(pthread_mutex_lock(&c->lock));
	if (c->nr && c->gen == atomic_load(&d->gen) && off >= c->start) {
		uint64_t at = c->start;

		for (unsigned int i = 0; i < c->nr; i++) {
			if (off < at + c->runs[i].len) {
				*hole = c->runs[i].zero;
				*count = at + c->runs[i].len - off;
				found = true;
				break;
			}
			at += c->runs[i].len;
		}
	}
	pth(pthread_mutex_unlock(&c->lock));
	return found;
}

static void cache_fill(struct nbd_dev *d, uint64_t off, uint64_t gen,
		       const struct nbd_batch *res)
{
	struct ext_cache *c = &d->cache;

	pth(pthread_mutex_lock(&c->lock));
	c->start = off;
	c->gen = gen;
	c->nr = res->nr_runs;
	memcpy(c->runs, res->runs, res->nr_runs * sizeof(res->runs[0]));
	pth(pthread_mutex_unlock(&c->lock));
}

static int remote_extent(struct block_device *b, uint64_t off, uint64_t len,
			 bool *hole, uint64_t *count)
{
	struct nbd_dev *d = ndev(b);
	struct nbd_batch *res;
	uint64_t gen;
	int r;

	*hole = false;
	*count = len;
	if (!d->have_extents)
		return 0;
	if (cache_lookup(d, off, hole, count)) {
		if (*count > len)
			*count = len;
		return 0;
	}
	res = malloc(sizeof(*res));
	if (!res)
		return -ENOMEM;
	/* Ask for all that is left: one reply then answers many calls. */
	gen = atomic_load(&d->gen);
	r = block_status(d, off, b->size - off, res);
	if (!r) {
		cache_fill(d, off, gen, res);
		*hole = res->ext_zero;
		*count = res->ext_len < len ? res->ext_len : len;
	}
	free(res);
	return r;
}

static int remote_allocated(struct block_device *b, uint64_t *bytes)
{
	struct nbd_dev *d = ndev(b);
	uint64_t off = 0, sum = 0;
	struct nbd_batch *res;
	int r = 0;

	if (!d->have_extents) {
		*bytes = b->size;
		return 0;
	}
	res = malloc(sizeof(*res));
	if (!res)
		return -ENOMEM;
	while (off < b->size) {
		r = block_status(d, off, b->size - off, res);
		if (!r && !res->ext_total)
			r = -EPROTO;
		if (r)
			break;
		sum += res->ext_alloc;
		off += res->ext_total;
	}
	free(res);
	*bytes = sum < b->size ? sum : b->size;
	return r;
}

static int remote_flush(struct block_device *b)
{
	struct nbd_dev *d = ndev(b);
	unsigned int n = d->nr_conns;
	int err = 0;

	if (!d->can_flush)
		return 0;
	/* With multi-conn one flush covers all; flushing each is cheap. */
	for (unsigned int i = 0; i < n; i++) {
		struct nbd_conn *c = &d->conns[i];
		struct nbd_batch *bt;
		int r = batch_start(c, &bt);

		if (!r) {
			if (nbd_aio_flush(c->h, batch_closure(bt), 0) == -1)
				batch_not_issued(bt, remote_err());
			batch_issued(c);
			r = batch_wait(d, bt);
		}
		if (r && !err)
			err = r;
	}
	return err;
}

static bool remote_same(const struct block_device *a,
		     const struct block_device *b)
{
	return !strcmp(ndev(a)->uri, ndev(b)->uri);
}

static void conn_close(struct nbd_conn *c)
{
	bool started;

	pth(pthread_mutex_lock(&c->lock));
	c->stop = true;
	started = c->started;
	pth(pthread_mutex_unlock(&c->lock));
	if (started) {
		kick(c);
		pth(pthread_join(c->thread, NULL));
	}
	/* Frees the closures still held: they take c->lock. */
	if (c->h)
		nbd_close(c->h);
	if (c->kick >= 0)
		close(c->kick);
	pth(pthread_cond_destroy(&c->cond));
	pth(pthread_mutex_destroy(&c->lock));
}

static void free_dev(struct nbd_dev *d, unsigned int nr)
{
	for (unsigned int i = 0; i < nr; i++)
		conn_close(&d->conns[i]);
	pth(pthread_mutex_destroy(&d->cache.lock));
	free(d->uri);
	free(d);
}

static void remote_close_op(struct block_device *b)
{
	struct nbd_dev *d = ndev(b);

	free_dev(d, d->nr_conns);
}

static const struct bdev_ops nbd_ops = {
	.name = "nbd",
	.preadv = remote_preadv,
	.pwritev = remote_pwritev,
	.zero = remote_zero_op,
	.extent = remote_extent,
	.flush = remote_flush,
	.same = remote_same,
	.allocated = remote_allocated,
	.close = remote_close_op,
};

/* --- Open --------------------------------------------------------------------- */

/*
 * Take kcopyd's own query parameters (timeout=SECONDS, connections=N)
 * out of the URI; the rest is libnbd's.  Returns 0 or -EINVAL.
 */
static int take_params(char *uri, unsigned int *timeout, unsigned int *conns)
{
	char *q = strchr(uri, '?'), *in, *out;

	if (!q)
		return 0;
	in = out = q + 1;
	while (*in) {
		size_t len = strcspn(in, "&");
		char *end, *val = NULL;
		unsigned long v;
		unsigned int *dst = NULL, max = 0;

		if (!strncmp(in, "timeout=", 8)) {
			val = in + 8;
			dst = timeout;
			max = NBD_MAX_TIMEOUT;
		} else if (!strncmp(in, "connections=", 12)) {
			val = in + 12;
			dst = conns;
			max = KCOPYD_NBD_MAX_CONNS;
		}
		if (dst) {
			errno = 0;
			v = strtoul(val, &end, 10);
			if (errno || end == val || end != in + len || !v ||
			    v > max || *val == '-')
				return -EINVAL;
			*dst = (unsigned int)v;
		} else {
			if (out != q + 1)
				*out++ = '&';
			memmove(out, in, len);
			out += len;
		}
		in += len;
		if (*in == '&')
			in++;
	}
	*out = '\0';
	if (out == q + 1)
		*q = '\0';
	return 0;
}

/* Connect one handle, bounded by the timeout; the handshake included. */
static int conn_open(struct nbd_dev *d, struct nbd_conn *c)
{
	struct timespec now, deadline;
	int r;

	c->kick = -1;
	pth(pthread_mutex_init(&c->lock, NULL));
	{
		pthread_condattr_t attr;

		pth(pthread_condattr_init(&attr));
		pth(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC));
		pth(pthread_cond_init(&c->cond, &attr));
		pth(pthread_condattr_destroy(&attr));
	}
	c->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->kick < 0)
		return -errno;
	c->h = nbd_create();
	if (!c->h)
		return remote_err();
	/* tls-psk-file and tls-certificates in the query name local files. */
	if (nbd_set_uri_allow_local_file(c->h, true) == -1 ||
	    nbd_add_meta_context(c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
	    nbd_set_pread_initialize(c->h, false) == -1 ||
	    nbd_aio_connect_uri(c->h, d->uri) == -1)
		return remote_err();

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += d->timeout;
	while (!nbd_aio_is_ready(c->h)) {
		struct pollfd pfd = { .fd = nbd_aio_get_fd(c->h) };
		unsigned int dir = nbd_aio_get_direction(c->h);
		long ms;

		if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h) ||
		    pfd.fd < 0)
			return remote_err();
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (deadline.tv_sec - now.tv_sec) * 1000 +
		     (deadline.tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0)
			return -ETIMEDOUT;
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			pfd.events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			pfd.events |= POLLOUT;
		r = poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
			r = nbd_aio_notify_read(c->h);
		else
			r = nbd_aio_notify_write(c->h);
		if (r == -1)
			return remote_err();
	}
	return 0;
}

/* Learn size, limits and capabilities from the first connection. */
static int probe_export(struct nbd_dev *d, struct nbd_handle *h, int acc,
			int flags, uint64_t *size, unsigned int *bsize)
{
	int64_t sz = nbd_get_size(h), min, max;
	int ro = nbd_is_read_only(h);

	if (sz < 0 || ro < 0)
		return remote_err();
	if (ro && acc == O_RDWR)
		return -EROFS;
	*size = (uint64_t)sz;
	min = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
	max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	*bsize = min >= KCOPYD_SECTOR_SIZE && min <= KCOPYD_PAGE_SIZE ?
		 (unsigned int)min : KCOPYD_SECTOR_SIZE;
	d->max_request = max > 0 && max < NBD_DEFAULT_MAX_REQUEST ?
			 (uint64_t)max : NBD_DEFAULT_MAX_REQUEST;
	d->can_zero = nbd_can_zero(h) == 1;
	d->can_flush = nbd_can_flush(h) == 1;
	d->have_extents = nbd_can_meta_context(h,
				LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
	if ((flags & (O_SYNC | O_DSYNC)) && nbd_can_fua(h) == 1)
		d->write_flags = LIBNBD_CMD_FLAG_FUA;
	return 0;
}

int bdev_nbd_open(const char *uri, int flags, struct block_device **result)
{
	unsigned int timeout = NBD_DEFAULT_TIMEOUT;
	unsigned int want = NBD_DEFAULT_CONNS, opened = 0;
	int acc = flags & O_ACCMODE;
	unsigned int bsize;
	struct nbd_dev *d;
	uint64_t size;
	char *u;
	int r;

	if (!uri || !result ||
	    (flags & ~(O_ACCMODE | O_DIRECT | O_SYNC | O_DSYNC)) ||
	    (acc != O_RDONLY && acc != O_RDWR))
		return -EINVAL;
	u = strdup(uri);
	if (!u)
		return -ENOMEM;
	r = take_params(u, &timeout, &want);
	if (r) {
		free(u);
		return r;
	}
	d = calloc(1, sizeof(*d) + want * sizeof(d->conns[0]));
	if (!d) {
		free(u);
		return -ENOMEM;
	}
	d->uri = u;
	pth(pthread_mutex_init(&d->cache.lock, NULL));
	d->timeout = timeout;
	d->nr_conns = want;

	r = conn_open(d, &d->conns[opened++]);
	if (r)
		goto fail;
	r = probe_export(d, d->conns[0].h, acc, flags, &size, &bsize);
	if (r)
		goto fail;
	/* More connections only where the server says they are coherent. */
	if (nbd_can_multi_conn(d->conns[0].h) != 1)
		want = 1;
	while (opened < want) {
		r = conn_open(d, &d->conns[opened++]);
		if (r)
			goto fail;
	}
	d->nr_conns = opened;
	r = bdev_init(&d->b, &nbd_ops, uri, size, acc == O_RDONLY, bsize);
	if (r)
		goto fail;
	*result = &d->b;
	return 0;

fail:
	free_dev(d, opened);
	return r;
}
