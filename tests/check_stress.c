/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Stress: several submitter threads run thousands of random copies and
 * zeros (num_pages down to 1, random thread counts and sub-job sizes) on
 * two clients at once, some as chains whose callbacks submit the next
 * link, and the images are compared byte for byte with a reference model
 * kept in memory.  Then a client is destroyed with a thousand jobs in
 * flight.  A watchdog fails the run if any job stays unfinished longer
 * than a bound, so a deadlock is reported, not waited for.
 *
 * It prints its seed; KCOPYD_SEED=N re-runs it.  KCOPYD_STRESS_SECONDS
 * (default 2) is how long the random phase runs at least.
 *
 * Thread model
 * ------------
 * Submitter thread t owns stripe t of every image: it writes only there,
 * and reads there or from the read-only image.  It submits a batch of
 * chains whose ranges do not conflict with each other (no write meets
 * another chain's read or write), applies each accepted job to the model
 * at once, and waits for the batch (sub->lock, sub->cond, sub->left).  A
 * chain's later links are submitted, and applied to the model, by the
 * client's callback thread; they stay inside the chain's claimed ranges,
 * so model updates of different threads never touch the same bytes.
 * chain->since is atomic: the watchdog thread reads it to age the link in
 * flight.  Failures seen off the test thread go to report(), under
 * report_lock, and are asserted by the test thread at the end.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"

#define NR_IMG		4		/* writable images */
#define RO		NR_IMG		/* index of the read-only image */
#define IMG_SECTORS	8192		/* 4 MiB */
#define MAX_SUB		6
#define MAX_DESTS	8
#define MAX_LINKS	64
#define MAX_BATCH	600
#define NR_CLIENTS	2

/* A job older than this fails the test (KCOPYD_STRESS_BOUND seconds). */
#define DEFAULT_BOUND	60

struct link {
	bool zero;
	unsigned int flags;
	unsigned int nd;
	unsigned int src_img;
	unsigned int dst_img[MAX_DESTS];
	struct io_region from;
	struct io_region to[MAX_DESTS];
};

struct submitter;

struct chain {
	struct submitter *sub;
	struct kcopyd_client *kc;
	unsigned int nlinks;
	unsigned int cur;		/* link in flight */
	unsigned int accepted;		/* links kcopyd_copy took */
	atomic_uint calls;		/* callbacks that ran */
	atomic_uint_fast64_t since;	/* ns the current link was submitted,
					   0 when none is in flight */
	struct link links[MAX_LINKS];
};

/* A range claimed by a chain of the current batch. */
struct claim {
	unsigned int img;
	sector_t start, end;
	bool write;
};

struct mix {
	unsigned int chain_pct;		/* chance of a chain, percent */
	unsigned int max_links;
	unsigned int max_batch;
	sector_t max_count;		/* largest region, sectors */
	bool wait;			/* wait for each batch, else submit
					   one batch of max_batch chains */
};

struct submitter {
	unsigned int id;
	pthread_t thread;
	uint64_t rng;
	struct mix mix;
	struct kcopyd_client **kc;	/* pick one per chain */
	unsigned int nkc;
	uint64_t min_batches;
	uint64_t deadline_ns;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int left;		/* chains of the batch not done (lock) */

	struct chain *batch;		/* MAX_BATCH chains */
	struct claim *claims;
	unsigned int nclaims, claims_size;

	/* Counted by the submitter alone, read after join. */
	uint64_t zeros, chains;
};

/* The whole run. */
static struct {
	uint64_t seed;
	unsigned int nsub;
	sector_t stripe;
	char *path[NR_IMG + 1];
	struct block_device *bdev[NR_IMG + 1];
	unsigned char *model[NR_IMG + 1];
	struct submitter sub[MAX_SUB];
	unsigned int bound_s;

	atomic_uint_fast64_t accepted;	/* jobs kcopyd_copy/zero took */
	atomic_uint_fast64_t callbacks;	/* every job's callback */
	atomic_uint_fast64_t refused;	/* overlaps refused with -EINVAL */
	atomic_uint_fast64_t shutdowns;	/* links refused with -ESHUTDOWN */
	atomic_bool watchdog_stop;
	uint64_t phase_deadline_ns;	/* the whole test phase */
	pthread_t watchdog;
	struct kcopyd_client *watch_kc[NR_CLIENTS];
} st;

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_failure[512];

/* Record the first failure seen off the test thread. */
static void report(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&report_lock);
	if (!first_failure[0]) {
		va_start(ap, fmt);
		vsnprintf(first_failure, sizeof(first_failure), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&report_lock);
}

static void assert_no_failure(void)
{
	pthread_mutex_lock(&report_lock);
	ck_assert_msg(!first_failure[0], "%s (seed %" PRIu64 ")",
		      first_failure, st.seed);
	pthread_mutex_unlock(&report_lock);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static uint64_t below(uint64_t *x, uint64_t n)
{
	return n ? next_rand(x) % n : 0;
}

static unsigned long env_ulong(const char *name, unsigned long def)
{
	const char *v = getenv(name);

	return v && *v ? strtoul(v, NULL, 0) : def;
}

/* --- The reference model ---------------------------------------------- */

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

/*
 * What the engine promises: every destination ends up with the source's
 * contents from before the job, as memmove(3) would leave them.  The
 * model is updated before the job is submitted (its callback may submit
 * the next link at once); the returned copy of the old destination
 * bytes undoes it if the job is refused.
 */
static unsigned char *model_apply(const struct link *l)
{
	size_t len = l->from.count << 9, total = 0;
	unsigned char *tmp = NULL, *undo, *u;

	for (unsigned int i = 0; i < l->nd; i++)
		total += l->to[i].count << 9;
	undo = u = xmalloc(total);
	for (unsigned int i = 0; i < l->nd; i++) {
		memcpy(u, st.model[l->dst_img[i]] + (l->to[i].sector << 9),
		       l->to[i].count << 9);
		u += l->to[i].count << 9;
	}
	if (!l->zero) {
		tmp = xmalloc(len);
		memcpy(tmp, st.model[l->src_img] + (l->from.sector << 9), len);
	}
	for (unsigned int i = 0; i < l->nd; i++) {
		unsigned char *p = st.model[l->dst_img[i]] +
				   (l->to[i].sector << 9);

		if (l->zero)
			memset(p, 0, l->to[i].count << 9);
		else
			memcpy(p, tmp, len);
	}
	free(tmp);
	return undo;
}

/* Put back what model_apply() changed, last destination first. */
static void model_undo(const struct link *l, unsigned char *undo)
{
	size_t total = 0;

	for (unsigned int i = 0; i < l->nd; i++)
		total += l->to[i].count << 9;
	for (unsigned int i = l->nd; i-- > 0;) {
		total -= l->to[i].count << 9;
		memcpy(st.model[l->dst_img[i]] + (l->to[i].sector << 9),
		       undo + total, l->to[i].count << 9);
	}
}

static void model_check(void)
{
	for (unsigned int i = 0; i <= NR_IMG; i++) {
		size_t len, off;
		unsigned char *now = read_file(st.path[i], &len);

		ck_assert_uint_eq(len, IMG_SECTORS << 9);
		if (memcmp(now, st.model[i], len)) {
			for (off = 0; now[off] == st.model[i][off]; off++)
				;
			ck_abort_msg("image %u differs from the model at "
				     "sector %zu (seed %" PRIu64 ")", i,
				     off >> 9, st.seed);
		}
		free(now);
	}
}

/* --- Generating chains ------------------------------------------------ */

/* Does c meet a claim of the chains before, claims [0, upto)? */
static bool claim_conflicts(const struct submitter *s, const struct claim *c,
			    unsigned int upto)
{
	for (unsigned int i = 0; i < upto; i++) {
		const struct claim *o = &s->claims[i];

		if (o->img == c->img && o->start < c->end &&
		    c->start < o->end && (o->write || c->write))
			return true;
	}
	return false;
}

/* A region size: mostly small, now and then up to max. */
static sector_t rand_count(uint64_t *x, sector_t max)
{
	unsigned int r = below(x, 10);

	if (r < 3)
		return 1 + below(x, 8 < max ? 8 : max);
	if (r < 8)
		return 1 + below(x, 128 < max ? 128 : max);
	return 1 + below(x, max);
}

/* A random range of `count` sectors inside stripe `t` of an image. */
static sector_t rand_in_stripe(uint64_t *x, unsigned int t, sector_t count)
{
	return t * st.stripe + below(x, st.stripe - count + 1);
}

static bool overlap(unsigned int ia, const struct io_region *a,
		    unsigned int ib, const struct io_region *b)
{
	return ia == ib && a->count && b->count && a->sector < b->sector +
	       b->count && b->sector < a->sector + a->count;
}

/*
 * Make destination i overlap the source, shifted by up to its length
 * either way, inside the stripe.
 */
static void move_near(uint64_t *x, unsigned int t, struct link *l,
		      unsigned int i)
{
	sector_t lo = t * st.stripe, hi = lo + st.stripe - l->from.count;
	int64_t at = (int64_t)l->from.sector + (int64_t)below(x,
			2 * l->from.count + 1) - (int64_t)l->from.count;

	l->dst_img[i] = l->src_img;
	l->to[i].bdev = st.bdev[l->src_img];
	l->to[i].sector = at < (int64_t)lo ? lo : (sector_t)at > hi ? hi :
						  (sector_t)at;
}

/*
 * Fill l with a random job of submitter s.  A link after the first reads
 * what the link before it wrote, so a chain carries data along.
 */
static void gen_link(struct submitter *s, struct link *l,
		     const struct link *prev)
{
	uint64_t *x = &s->rng;
	sector_t count;

	memset(l, 0, sizeof(*l));
	l->zero = !prev && below(x, 5) == 0;
	l->flags = below(x, 4);
	l->nd = 1 + (below(x, 4) ? below(x, 3) : below(x, MAX_DESTS));
	if (prev && !prev->zero) {
		l->src_img = prev->dst_img[0];
		l->from = prev->to[0];
		count = l->from.count;
	} else {
		count = rand_count(x, s->mix.max_count);
		if (!l->zero && below(x, 3) == 0) {
			l->src_img = RO;
			l->from.sector = below(x, IMG_SECTORS - count + 1);
		} else if (!l->zero) {
			l->src_img = below(x, NR_IMG);
			l->from.sector = rand_in_stripe(x, s->id, count);
		}
		l->from.count = count;
	}
	l->from.bdev = st.bdev[l->src_img];

	for (unsigned int i = 0; i < l->nd; i++) {
		unsigned int tries = 0;
		bool bad;

		do {
			sector_t c = count;

			/* Destinations of a zero may differ in size. */
			if (l->zero && below(x, 2))
				c = rand_count(x, s->mix.max_count);
			l->dst_img[i] = below(x, NR_IMG);
			l->to[i].bdev = st.bdev[l->dst_img[i]];
			l->to[i].count = c;
			l->to[i].sector = rand_in_stripe(x, s->id, c);
			/* Now and then a move within one device. */
			if (!l->zero && l->src_img != RO && below(x, 6) == 0)
				move_near(x, s->id, l, i);
			bad = false;
			for (unsigned int j = 0; j < i && !bad; j++)
				bad = overlap(l->dst_img[i], &l->to[i],
					      l->dst_img[j], &l->to[j]);
			/* A chain must not clobber what it reads next. */
			if (prev && overlap(l->dst_img[i], &l->to[i],
					    l->src_img, &l->from))
				bad = true;
		} while (bad && ++tries < 16);
		if (bad) {
			l->nd = i;
			break;
		}
	}
	if (!l->nd) {
		/* Could not place one: copy onto the source itself. */
		l->nd = 1;
		l->dst_img[0] = l->src_img == RO ? 0 : l->src_img;
		l->to[0] = l->from;
		l->to[0].bdev = st.bdev[l->dst_img[0]];
		if (l->src_img == RO || l->zero)
			l->to[0].sector = rand_in_stripe(x, s->id, count);
	}
}

static void add_claim(struct submitter *s, const struct claim *c)
{
	if (s->nclaims == s->claims_size) {
		s->claims_size = s->claims_size ? 2 * s->claims_size : 256;
		s->claims = realloc(s->claims,
				    s->claims_size * sizeof(*s->claims));
		if (!s->claims)
			abort();
	}
	s->claims[s->nclaims++] = *c;
}

/*
 * Claim every range the chain touches; false (nothing claimed) if one
 * conflicts with an earlier chain of the batch.  The links of one chain
 * run one after the other, so they may meet each other.
 */
static bool claim_chain(struct submitter *s, const struct chain *ch)
{
	unsigned int first = s->nclaims;

	for (unsigned int k = 0; k < ch->nlinks; k++) {
		const struct link *l = &ch->links[k];
		struct claim c;

		if (!l->zero) {
			c = (struct claim){ l->src_img, l->from.sector,
					    l->from.sector + l->from.count,
					    false };
			if (claim_conflicts(s, &c, first))
				goto undo;
			add_claim(s, &c);
		}
		for (unsigned int i = 0; i < l->nd; i++) {
			c = (struct claim){ l->dst_img[i], l->to[i].sector,
					    l->to[i].sector + l->to[i].count,
					    true };
			if (claim_conflicts(s, &c, first))
				goto undo;
			add_claim(s, &c);
		}
	}
	return true;
undo:
	s->nclaims = first;
	return false;
}

/*
 * The engine refuses a copy whose overlap with its source no order can
 * satisfy.  Refusing a job that does not overlap its source is a bug.
 */
static bool may_refuse(const struct link *l)
{
	for (unsigned int i = 0; i < l->nd; i++)
		if (overlap(l->dst_img[i], &l->to[i], l->src_img, &l->from) &&
		    l->to[i].sector != l->from.sector)
			return true;
	return false;
}

/* --- Submitting ------------------------------------------------------------ */

static void chain_cb(int read_err, unsigned int write_err, void *context);

static void chain_finished(struct chain *ch)
{
	struct submitter *s = ch->sub;

	atomic_store(&ch->since, 0);
	pthread_mutex_lock(&s->lock);
	s->left--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/*
 * Submit the chain's current link.  Returns the engine's answer; an
 * accepted link is applied to the model.
 */
static int submit_link(struct chain *ch)
{
	struct link *l = &ch->links[ch->cur];
	unsigned char *undo = model_apply(l);
	int r;

	/* Once accepted, the chain belongs to the callback thread. */
	ch->accepted++;
	atomic_store(&ch->since, now_ns());
	if (l->zero)
		r = kcopyd_zero(ch->kc, l->nd, l->to, l->flags, chain_cb, ch);
	else
		r = kcopyd_copy(ch->kc, &l->from, l->nd, l->to, l->flags,
				chain_cb, ch);
	if (r == 0) {
		atomic_fetch_add(&st.accepted, 1);
	} else {
		atomic_store(&ch->since, 0);
		ch->accepted--;
		model_undo(l, undo);
	}
	free(undo);
	return r;
}

static void chain_cb(int read_err, unsigned int write_err, void *context)
{
	struct chain *ch = context;
	int r;

	atomic_fetch_add(&st.callbacks, 1);
	atomic_fetch_add(&ch->calls, 1);
	if (read_err || write_err)
		report("thread %u: job failed: read_err %d write_err %#x",
		       ch->sub->id, read_err, write_err);
	while (++ch->cur < ch->nlinks) {
		r = submit_link(ch);
		if (r == 0)
			return;
		if (r == -ESHUTDOWN) {
			atomic_fetch_add(&st.shutdowns, 1);
			break;
		}
		if (r != -EINVAL || !may_refuse(&ch->links[ch->cur]))
			report("thread %u: link %u refused: %s", ch->sub->id,
			       ch->cur, strerror(-r));
		atomic_fetch_add(&st.refused, 1);
	}
	chain_finished(ch);
}

static void wait_batch(struct submitter *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->left)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/*
 * Generate, claim and submit up to n chains; a chain that finds no room
 * after a few tries is left out.
 */
static void run_batch(struct submitter *s, unsigned int n)
{
	uint64_t *x = &s->rng;
	unsigned int b = 0;

	s->nclaims = 0;
	for (unsigned int tries = 0; b < n && tries < 2 * n; tries++) {
		struct chain *ch = &s->batch[b];
		int r;

		ch->nlinks = 1;
		if (below(x, 100) < s->mix.chain_pct)
			ch->nlinks = 2 + below(x, s->mix.max_links - 1);
		for (unsigned int k = 0; k < ch->nlinks; k++)
			gen_link(s, &ch->links[k],
				 k ? &ch->links[k - 1] : NULL);
		if (!claim_chain(s, ch))
			continue;
		b++;

		ch->sub = s;
		ch->kc = s->kc[below(x, s->nkc)];
		ch->cur = 0;
		ch->accepted = 0;
		atomic_store(&ch->calls, 0);
		s->chains += ch->nlinks > 1;
		s->zeros += ch->links[0].zero;

		pthread_mutex_lock(&s->lock);
		s->left++;
		pthread_mutex_unlock(&s->lock);
		while ((r = submit_link(ch)) != 0) {
			if (r != -EINVAL || !may_refuse(&ch->links[ch->cur]))
				report("thread %u: job refused: %s", s->id,
				       strerror(-r));
			atomic_fetch_add(&st.refused, 1);
			if (++ch->cur == ch->nlinks) {
				chain_finished(ch);
				break;
			}
		}
	}
}

static void *submitter_main(void *arg)
{
	struct submitter *s = arg;
	uint64_t batches = 0;

	if (!s->mix.wait) {
		run_batch(s, s->mix.max_batch < MAX_BATCH ? s->mix.max_batch :
							    MAX_BATCH);
		return NULL;
	}
	do {
		run_batch(s, 1 + below(&s->rng, s->mix.max_batch));
		wait_batch(s);
		batches++;
	} while (batches < s->min_batches || now_ns() < s->deadline_ns);
	return NULL;
}

/* --- Watchdog ---------------------------------------------------------------- */

/*
 * Every 100 ms: no link in flight may be older than the bound, the phase
 * (submitting, flushing, destroying) may not outlast its time by more
 * than the bound, and no client may hold more pages than it was given.  A stall is fatal at
 * once: the threads that should report it may be the ones stuck.
 */
static void *watchdog_main(void *arg)
{
	const uint64_t bound = (uint64_t)st.bound_s * 1000000000u;

	while (!atomic_load(&st.watchdog_stop)) {
		uint64_t now = now_ns();

		if (now > st.phase_deadline_ns) {
			fprintf(stderr, "check_stress: still running %u s "
				"after its time: deadlock (seed %" PRIu64
				")\n", st.bound_s, st.seed);
			abort();
		}
		for (unsigned int t = 0; t < st.nsub; t++)
			for (unsigned int b = 0; b < MAX_BATCH; b++) {
				struct chain *ch = &st.sub[t].batch[b];
				uint64_t since = atomic_load(&ch->since);

				if (!since || now < since || now - since < bound)
					continue;
				fprintf(stderr, "check_stress: thread %u, "
					"chain %u: a job has been in flight "
					"for %u s: deadlock (seed %" PRIu64
					")\n", t, b, st.bound_s, st.seed);
				abort();
			}
		for (unsigned int c = 0; c < NR_CLIENTS; c++) {
			struct kcopyd_stats ks;

			if (!st.watch_kc[c] ||
			    kcopyd_client_get_stats(st.watch_kc[c], &ks))
				continue;
			if (ks.pages_in_use > ks.pages_total)
				report("client %u holds %u of %u pages", c,
				       ks.pages_in_use, ks.pages_total);
		}
		usleep(100000);
	}
	return NULL;
}

static void watchdog_start(unsigned int seconds)
{
	st.phase_deadline_ns = now_ns() +
			       (uint64_t)(seconds + st.bound_s) * 1000000000u;
	atomic_store(&st.watchdog_stop, false);
	ck_assert_int_eq(pthread_create(&st.watchdog, NULL, watchdog_main,
					NULL), 0);
}

static void watchdog_stop(void)
{
	atomic_store(&st.watchdog_stop, true);
	ck_assert_int_eq(pthread_join(st.watchdog, NULL), 0);
	memset(st.watch_kc, 0, sizeof(st.watch_kc));
}

/* --- Set-up ------------------------------------------------------------------ */

/* One seed for the whole run, chosen before Check forks. */
static uint64_t run_seed;

static void setup(void)
{
	uint64_t x;

	memset(&st, 0, sizeof(st));
	first_failure[0] = 0;
	st.seed = run_seed;
	x = st.seed | 1;
	st.nsub = 2 + below(&x, MAX_SUB - 1);
	st.stripe = IMG_SECTORS / st.nsub;
	st.bound_s = env_ulong("KCOPYD_STRESS_BOUND", DEFAULT_BOUND);

	for (unsigned int i = 0; i <= NR_IMG; i++) {
		char name[16];

		snprintf(name, sizeof(name), "stress%u", i);
		st.path[i] = make_image(name, IMG_SECTORS << 9, 1 + i);
		st.model[i] = malloc(IMG_SECTORS << 9);
		ck_assert_ptr_nonnull(st.model[i]);
		fill_pattern(st.model[i], IMG_SECTORS << 9, 1 + i);
		st.bdev[i] = open_bdev(st.path[i],
				       i == RO ? O_RDONLY : O_RDWR);
	}
	for (unsigned int t = 0; t < st.nsub; t++) {
		struct submitter *s = &st.sub[t];

		s->id = t;
		s->rng = (st.seed + t + 1) * 0x9E3779B97F4A7C15ull | 1;
		pthread_mutex_init(&s->lock, NULL);
		pthread_cond_init(&s->cond, NULL);
		s->batch = calloc(MAX_BATCH, sizeof(*s->batch));
		s->claims = calloc(MAX_BATCH * MAX_LINKS * (MAX_DESTS + 1),
				   sizeof(*s->claims));
		ck_assert_ptr_nonnull(s->batch);
		ck_assert_ptr_nonnull(s->claims);
	}
}

static void teardown(void)
{
	for (unsigned int t = 0; t < st.nsub; t++) {
		free(st.sub[t].batch);
		free(st.sub[t].claims);
		pthread_mutex_destroy(&st.sub[t].lock);
		pthread_cond_destroy(&st.sub[t].cond);
	}
	for (unsigned int i = 0; i <= NR_IMG; i++) {
		kcopyd_bdev_close(st.bdev[i]);
		unlink(st.path[i]);
		free(st.path[i]);
		free(st.model[i]);
	}
}

/* A client of random shape, drawn from the seed. */
static struct kcopyd_client *random_client(uint64_t *x, const char *what)
{
	static const unsigned int pages[] = { 1, 2, 3, 5, 16, 64, 256 };
	struct kcopyd_options o = {
		.threads = 1 + below(x, 6),
		.subjob_size = 4096 * (1 + below(x, 64)),
		.max_inflight = 1 + below(x, 16),
	};
	unsigned int n = pages[below(x, 7)];
	struct kcopyd_client *kc = NULL;

	ck_assert_int_eq(kcopyd_client_create_opts(n, &o, &kc), 0);
	printf("check_stress: %s: %u pages, %u threads, sub-jobs of %u KiB, "
	       "%u in flight\n", what, n, o.threads, o.subjob_size / 1024,
	       o.max_inflight);
	return kc;
}

static void start_submitters(struct kcopyd_client **kc, unsigned int nkc,
			     const struct mix *mix, uint64_t min_batches,
			     unsigned int seconds)
{
	uint64_t deadline = now_ns() + (uint64_t)seconds * 1000000000u;

	for (unsigned int t = 0; t < st.nsub; t++) {
		struct submitter *s = &st.sub[t];

		s->mix = *mix;
		s->kc = kc;
		s->nkc = nkc;
		s->min_batches = min_batches;
		s->deadline_ns = deadline;
		ck_assert_int_eq(pthread_create(&s->thread, NULL,
						submitter_main, s), 0);
	}
}

static void join_submitters(void)
{
	for (unsigned int t = 0; t < st.nsub; t++)
		ck_assert_int_eq(pthread_join(st.sub[t].thread, NULL), 0);
}

static void print_totals(const char *what)
{
	uint64_t zeros = 0, chains = 0;

	for (unsigned int t = 0; t < st.nsub; t++) {
		zeros += st.sub[t].zeros;
		chains += st.sub[t].chains;
	}
	printf("check_stress: %s: %u submitters, %" PRIu64 " jobs (%" PRIu64
	       " zeros, %" PRIu64 " chains; %" PRIu64 " overlaps and %" PRIu64
	       " links after shutdown refused), %" PRIu64 " callbacks\n",
	       what, st.nsub, (uint64_t)atomic_load(&st.accepted), zeros,
	       chains, (uint64_t)atomic_load(&st.refused),
	       (uint64_t)atomic_load(&st.shutdowns),
	       (uint64_t)atomic_load(&st.callbacks));
	fflush(stdout);
}

/* Every accepted job had exactly one callback. */
static void check_chains(void)
{
	ck_assert_msg(atomic_load(&st.callbacks) == atomic_load(&st.accepted),
		      "%" PRIu64 " callbacks for %" PRIu64 " jobs (seed %"
		      PRIu64 ")", (uint64_t)atomic_load(&st.callbacks),
		      (uint64_t)atomic_load(&st.accepted), st.seed);
	for (unsigned int t = 0; t < st.nsub; t++)
		for (unsigned int b = 0; b < MAX_BATCH; b++) {
			struct chain *ch = &st.sub[t].batch[b];

			ck_assert_msg(atomic_load(&ch->calls) == ch->accepted,
				      "thread %u chain %u: %u callbacks for "
				      "%u jobs (seed %" PRIu64 ")", t, b,
				      atomic_load(&ch->calls), ch->accepted,
				      st.seed);
		}
}

static void check_client_idle(struct kcopyd_client *kc)
{
	struct kcopyd_stats ks;

	ck_assert_int_eq(kcopyd_client_get_stats(kc, &ks), 0);
	ck_assert_uint_eq(ks.jobs_running, 0);
	ck_assert_uint_eq(ks.jobs_failed, 0);
	ck_assert_uint_eq(ks.pages_in_use, 0);
	ck_assert_uint_le(ks.pages_peak, ks.pages_total);
	ck_assert_uint_eq(ks.jobs_submitted, ks.jobs_done);
}

/* --- Tests ---------------------------------------------------------------------- */

/* Random batches from every submitter, on two clients at once. */
START_TEST(test_random_load)
{
	const struct mix mix = { 10, 6, 24, st.stripe / 4, true };
	unsigned int seconds = env_ulong("KCOPYD_STRESS_SECONDS", 2);
	struct kcopyd_client *kc[NR_CLIENTS];
	uint64_t x = st.seed * 31 + 7;

	for (unsigned int c = 0; c < NR_CLIENTS; c++)
		st.watch_kc[c] = kc[c] = random_client(&x, "client");
	watchdog_start(seconds);
	start_submitters(kc, NR_CLIENTS, &mix, 20, seconds);
	join_submitters();
	watchdog_stop();
	print_totals("random load");
	assert_no_failure();
	check_chains();
	for (unsigned int c = 0; c < NR_CLIENTS; c++) {
		ck_assert_int_eq(kcopyd_client_flush(kc[c]), 0);
		check_client_idle(kc[c]);
		kcopyd_client_destroy(kc[c]);
	}
	model_check();
}
END_TEST

/* Long chains: every callback submits the next job, up to 64 deep. */
START_TEST(test_chains)
{
	const struct mix mix = { 100, MAX_LINKS, 6, 256, true };
	uint64_t x = st.seed * 17 + 3;
	struct kcopyd_client *kc = random_client(&x, "chains");

	st.watch_kc[0] = kc;
	watchdog_start(0);
	start_submitters(&kc, 1, &mix, 8, 0);
	join_submitters();
	watchdog_stop();
	print_totals("chains");
	assert_no_failure();
	check_chains();
	ck_assert_int_eq(kcopyd_client_flush(kc), 0);
	check_client_idle(kc);
	kcopyd_client_destroy(kc);
	model_check();
}
END_TEST

/* --- Destroy with jobs in flight ------------------------------------------------ */

struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	struct kcopyd_client *kc;
	atomic_uint calls;
	unsigned int probes;		/* accepted by the prober */
	atomic_uint probe_calls;
};

/* The first job's callback holds the callback thread until opened. */
static void gate_cb(int read_err, unsigned int write_err, void *context)
{
	struct gate *g = context;

	pthread_mutex_lock(&g->lock);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	atomic_fetch_add(&g->calls, 1);
}

static void probe_cb(int read_err, unsigned int write_err, void *context)
{
	struct gate *g = context;

	atomic_fetch_add(&g->probe_calls, 1);
}

/*
 * Opens the gate once the client refuses new jobs, that is once destroy
 * has begun; until then the client cannot go away, since the gate's job
 * is still running, so probing it is safe.
 */
static void *prober_main(void *arg)
{
	struct gate *g = arg;
	struct io_region none = { st.bdev[0], 0, 0 };
	int r;

	for (;;) {
		r = kcopyd_zero(g->kc, 1, &none, 0, probe_cb, g);
		if (r == -ESHUTDOWN)
			break;
		if (r)
			report("probe refused: %s", strerror(-r));
		else
			g->probes++;
		usleep(1000);
	}
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/*
 * Every submitter queues a batch of chains without waiting, behind a job
 * whose callback blocks; destroy then starts with all of them still
 * running.  It must wait for every one, run each callback once, refuse
 * the links that callbacks try to add, and leave the data as the model.
 */
START_TEST(test_destroy_in_flight)
{
	const struct mix mix = { 10, 4, (1100 + st.nsub - 1) / st.nsub, 4,
				 false };
	uint64_t x = st.seed * 13 + 5;
	struct kcopyd_client *kc = random_client(&x, "destroy");
	struct io_region none = { st.bdev[0], 0, 0 };
	struct kcopyd_stats ks;
	struct gate g = { .kc = kc };
	pthread_t prober;

	pthread_mutex_init(&g.lock, NULL);
	pthread_cond_init(&g.cond, NULL);
	ck_assert_int_eq(kcopyd_zero(kc, 1, &none, 0, gate_cb, &g), 0);
	watchdog_start(0);
	start_submitters(&kc, 1, &mix, 1, 0);
	join_submitters();
	/* Nothing can have finished: the gate holds every callback. */
	ck_assert_int_eq(kcopyd_client_get_stats(kc, &ks), 0);
	printf("check_stress: destroy with %" PRIu64 " jobs in flight\n",
	       (uint64_t)ks.jobs_running);
	ck_assert_uint_eq(ks.jobs_running, atomic_load(&st.accepted) + 1);
	ck_assert_uint_ge(ks.jobs_running, 1000);

	ck_assert_int_eq(pthread_create(&prober, NULL, prober_main, &g), 0);
	kcopyd_client_destroy(kc);
	ck_assert_int_eq(pthread_join(prober, NULL), 0);
	watchdog_stop();
	print_totals("destroy in flight");
	assert_no_failure();

	ck_assert_uint_eq(atomic_load(&g.calls), 1);
	ck_assert_uint_eq(atomic_load(&g.probe_calls), g.probes);
	check_chains();
	model_check();
	pthread_mutex_destroy(&g.lock);
	pthread_cond_destroy(&g.cond);
}
END_TEST

static Suite *stress_suite(void)
{
	Suite *s = suite_create("stress");
	TCase *tc;

	tc = tcase_create("random load");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 0);
	tcase_add_test(tc, test_random_load);
	suite_add_tcase(s, tc);

	tc = tcase_create("chains");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 0);
	tcase_add_test(tc, test_chains);
	suite_add_tcase(s, tc);

	tc = tcase_create("destroy");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 0);
	tcase_add_test(tc, test_destroy_in_flight);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("KCOPYD_SEED");

	run_seed = env && *env ? strtoull(env, NULL, 0) :
		   (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	printf("check_stress: seed %" PRIu64 " (re-run with KCOPYD_SEED=%"
	       PRIu64 ")\n", run_seed, run_seed);
	fflush(stdout);
	return run_suite(stress_suite());
}
