/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the arguments of kcopyd_copy(), kcopyd_zero(),
 * kcopyd_copy_progress(), kcopyd_bdev_add_fault() and
 * kcopyd_client_create_opts(), decoded from the input, against small real
 * image files on tmpfs.
 *
 * Each call is checked against the header's contract:
 *   - it returns 0 or one of the errnos documented for it;
 *   - it accepts only what is valid (known flags, 1 to 32 destinations,
 *     regions inside their devices, equal counts for a copy, no
 *     read-only destination, copy destinations apart), and accepts a copy
 *     or zero whose regions do not meet at all;
 *   - an accepted job's callback runs exactly once, with no error, by the
 *     time kcopyd_client_flush() returns, and the images then hold what
 *     memmove(3) would have left (zeros for a zero).
 * A breach aborts, which the fuzzer reports as a crash.
 *
 * Input: a sequence of operations, each an opcode byte and its fields;
 * numbers are little-endian, most 16 bits wide with an escape to 64 bits
 * so that both in-range and overflowing values are easy to reach.
 *
 * Thread model: LLVMFuzzerTestOneInput runs on one thread; the client's
 * callback thread runs notify(), which only counts under `lock`; results
 * are read after kcopyd_client_flush() or kcopyd_client_destroy().
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_NAME "fuzz_region"
#include "fuzz.h"
#include "kcopyd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The images: sizes in sectors, deliberately uneven. */
#define NR_FILES	3
static const unsigned int file_sectors[NR_FILES] = { 129, 64, 16 };

/*
 * Handles: 0 and 2 are two handles on file 0, 1 is file 1 read-write, 3
 * is file 2 read-only, 4 is NULL.
 */
#define NR_HANDLES	5
static const int handle_file[NR_HANDLES] = { 0, 1, 0, 2, -1 };

static struct {
	bool ready;
	char dir[64];
	char path[NR_FILES][96];
	int fd[NR_FILES];		/* for the oracle's reads */
	struct block_device *bdev[NR_HANDLES];
	struct kcopyd_client *kc;
	unsigned char *before[NR_FILES], *want[NR_FILES], *now[NR_FILES];
	uint64_t fill;
} fz;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int calls;
static int last_read_err;
static unsigned int last_write_err;

static void notify(int read_err, unsigned int write_err, void *context)
{
	pthread_mutex_lock(&lock);
	calls++;
	last_read_err = read_err;
	last_write_err = write_err;
	pthread_mutex_unlock(&lock);
}

static void progress(sector_t sectors, void *context)
{
}

/* --- Set-up, once per process --------------------------------------- */

static void fill_file(unsigned int f)
{
	size_t len = (size_t)file_sectors[f] << 9;
	unsigned char *buf = malloc(len);

	check(buf, "malloc");
	for (size_t i = 0; i < len; i++) {
		fz.fill = fz.fill * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (unsigned char)(fz.fill >> 56) | 1;
	}
	check(pwrite(fz.fd[f], buf, len, 0) == (ssize_t)len, "pwrite");
	free(buf);
}

static void setup(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	struct kcopyd_options o = { .threads = 2, .subjob_size = 8192 };

	snprintf(fz.dir, sizeof(fz.dir), "%s/kcopyd-fuzz.XXXXXX", base);
	check(mkdtemp(fz.dir), "mkdtemp %s", fz.dir);
	for (unsigned int f = 0; f < NR_FILES; f++) {
		size_t len = (size_t)file_sectors[f] << 9;

		snprintf(fz.path[f], sizeof(fz.path[f]), "%s/img%u", fz.dir, f);
		fz.fd[f] = open(fz.path[f], O_RDWR | O_CREAT | O_TRUNC, 0600);
		check(fz.fd[f] >= 0, "open %s", fz.path[f]);
		/* Gone from the name space at once: nothing left behind. */
		unlink(fz.path[f]);
		snprintf(fz.path[f], sizeof(fz.path[f]), "/proc/self/fd/%d",
			 fz.fd[f]);
		check(ftruncate(fz.fd[f], len) == 0, "ftruncate");
		fz.before[f] = malloc(len);
		fz.want[f] = malloc(len);
		fz.now[f] = malloc(len);
		check(fz.before[f] && fz.want[f] && fz.now[f], "malloc");
		fill_file(f);
	}
	rmdir(fz.dir);
	for (unsigned int h = 0; h < NR_HANDLES; h++) {
		int f = handle_file[h];

		if (f < 0)
			continue;
		check(kcopyd_bdev_open(fz.path[f], f == 2 ? O_RDONLY : O_RDWR,
				       &fz.bdev[h]) == 0, "bdev_open");
	}
	check(kcopyd_client_create_opts(4, &o, &fz.kc) == 0, "client");
	fz.ready = true;
}

/* --- Decoding ----------------------------------------------------------- */

struct input {
	const uint8_t *p;
	size_t left;
};

static uint64_t get_bytes(struct input *in, unsigned int n)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < n && in->left; i++, in->left--)
		v |= (uint64_t)*in->p++ << (8 * i);
	return v;
}

static uint8_t get8(struct input *in)
{
	return get_bytes(in, 1);
}

/* 16 bits, or with 0xffff as escape, 64. */
static uint64_t get_num(struct input *in)
{
	uint64_t v = get_bytes(in, 2);

	return v == 0xffff ? get_bytes(in, 8) : v;
}

static int handle_of(const struct block_device *b)
{
	for (int h = 0; h < NR_HANDLES; h++)
		if (fz.bdev[h] == b)
			return h;
	return -1;
}

static void get_region(struct input *in, struct io_region *r)
{
	r->bdev = fz.bdev[get8(in) % NR_HANDLES];
	r->sector = get_num(in);
	r->count = get_num(in);
}

/* --- The oracle --------------------------------------------------------- */

static int file_of(const struct io_region *r)
{
	int h = handle_of(r->bdev);

	return h < 0 ? -1 : handle_file[h];
}

static bool inside(const struct io_region *r)
{
	int f = file_of(r);

	return f >= 0 && r->sector <= file_sectors[f] &&
	       r->count <= file_sectors[f] - r->sector;
}

static bool meet(const struct io_region *a, const struct io_region *b)
{
	return file_of(a) == file_of(b) && a->count && b->count &&
	       a->sector < b->sector + b->count &&
	       b->sector < a->sector + a->count;
}

static void read_files(unsigned char **bufs)
{
	for (unsigned int f = 0; f < NR_FILES; f++) {
		size_t len = (size_t)file_sectors[f] << 9;

		check(pread(fz.fd[f], bufs[f], len, 0) == (ssize_t)len,
		      "pread");
	}
}

/* What the images must hold after the job: memmove(3) from `before`. */
static void expect(const struct io_region *from, unsigned int nd,
		   const struct io_region *to)
{
	for (unsigned int f = 0; f < NR_FILES; f++)
		memcpy(fz.want[f], fz.before[f], (size_t)file_sectors[f] << 9);
	for (unsigned int i = 0; i < nd; i++) {
		unsigned char *d = fz.want[file_of(&to[i])] + (to[i].sector << 9);

		if (from)
			memcpy(d, fz.before[file_of(from)] + (from->sector << 9),
			       to[i].count << 9);
		else
			memset(d, 0, to[i].count << 9);
	}
}

static void run_job(struct input *in, unsigned int op)
{
	struct io_region from, to[40];
	bool zero = op == 1, valid, apart;
	unsigned int nd, flags;
	int r;

	nd = get8(in) % 40;
	flags = get8(in);
	if (flags & 0x80)
		flags = get_bytes(in, 4);
	else
		flags &= 7;
	get_region(in, &from);
	for (unsigned int i = 0; i < nd; i++) {
		get_region(in, &to[i]);
		/* Mostly the source's count, or a copy is refused at once. */
		if (!zero && !(get8(in) & 1))
			to[i].count = from.count;
	}

	/* The conditions the header states for acceptance. */
	valid = nd >= 1 && nd <= KCOPYD_MAX_DESTS &&
		!(flags & ~(KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ |
			    KCOPYD_FLUSH)) &&
		(zero || inside(&from));
	apart = true;
	for (unsigned int i = 0; i < nd && valid; i++) {
		valid = inside(&to[i]) && to[i].bdev != fz.bdev[3] &&
			(zero || to[i].count == from.count);
		if (!zero && meet(&to[i], &from))
			apart = false;
		for (unsigned int j = 0; j < i; j++)
			if (meet(&to[i], &to[j])) {
				apart = false;
				if (!zero)
					valid = false;
			}
	}

	read_files(fz.before);
	pthread_mutex_lock(&lock);
	calls = 0;
	pthread_mutex_unlock(&lock);
	if (zero)
		r = kcopyd_zero(fz.kc, nd, to, flags, notify, NULL);
	else if (op == 2)
		r = kcopyd_copy_progress(fz.kc, &from, nd, to, flags, notify,
					 progress, NULL);
	else
		r = kcopyd_copy(fz.kc, &from, nd, to, flags, notify, NULL);
	check(r == 0 || r == -EINVAL || r == -E2BIG || r == -ERANGE ||
	      r == -EROFS || r == -ENOMEM, "returned %d", r);
	check(r || valid, "accepted an invalid job (op %u, %u dests, flags "
	      "%#x)", op, nd, flags);
	check(r == 0 || !valid || !apart || r == -ENOMEM,
	      "refused a valid job whose regions are apart: %d", r);
	if (r == -E2BIG)
		check(nd > KCOPYD_MAX_DESTS, "E2BIG for %u dests", nd);
	check(kcopyd_client_flush(fz.kc) == 0, "flush");

	pthread_mutex_lock(&lock);
	check(calls == (r == 0), "%u callbacks for a job that returned %d",
	      calls, r);
	check(r || (!last_read_err && !last_write_err),
	      "errors %d %#x with no fault", last_read_err, last_write_err);
	pthread_mutex_unlock(&lock);

	if (r == 0)
		expect(zero ? NULL : &from, nd, to);
	else
		expect(NULL, 0, NULL);
	read_files(fz.now);
	for (unsigned int f = 0; f < NR_FILES; f++)
		check(!memcmp(fz.now[f], fz.want[f],
			      (size_t)file_sectors[f] << 9),
		      "file %u differs from the expected result (op %u, "
		      "returned %d)", f, op, r);
}

static void run_fault(struct input *in)
{
	struct kcopyd_fault f = { 0 };
	struct block_device *b = fz.bdev[get8(in) % NR_HANDLES];
	int r;

	f.ops = get8(in);
	f.kind = (enum kcopyd_fault_kind)(int8_t)get8(in);
	f.sector = get_num(in);
	f.count = get_num(in);
	f.error = (int)get_bytes(in, 4);
	f.delay_us = get8(in);
	r = kcopyd_bdev_add_fault(b, &f);
	check(r == 0 || r == -EINVAL || r == -ENOMEM, "add_fault: %d", r);
	if (r == 0) {
		check(b && f.count && f.ops &&
		      !(f.ops & ~(KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE |
				  KCOPYD_FAULT_FLUSH)) &&
		      f.sector + f.count > f.sector && f.error >= 0 &&
		      (f.kind == KCOPYD_FAULT_ERROR ||
		       f.kind == KCOPYD_FAULT_SHORT ||
		       f.kind == KCOPYD_FAULT_DELAY),
		      "add_fault accepted an invalid rule");
	}
	kcopyd_bdev_clear_faults(b);
}

static void run_client(struct input *in)
{
	struct kcopyd_options o;
	struct kcopyd_client *kc = NULL;
	unsigned int pages = get_bytes(in, 2);
	struct io_region from = { fz.bdev[1], 0, 64 };
	struct io_region to = { fz.bdev[0], 0, 64 };
	bool use_opts;
	int r;

	o.threads = get_bytes(in, 4);
	o.subjob_size = get_bytes(in, 4);
	o.max_inflight = get_bytes(in, 4);
	/* Many threads are valid but slow to start: keep a few. */
	if (o.threads > 8 && o.threads <= 256)
		o.threads = o.threads % 8 + 1;
	use_opts = get8(in) & 1;
	r = kcopyd_client_create_opts(pages, use_opts ? &o : NULL, &kc);
	check(r == 0 || r == -EINVAL || r == -ENOMEM || r == -EAGAIN,
	      "create_opts: %d", r);
	if (r) {
		check(kc == NULL, "create_opts failed but set the client");
		return;
	}
	check(pages > 0, "create_opts accepted 0 pages");
	check(!use_opts || o.subjob_size % KCOPYD_PAGE_SIZE == 0,
	      "create_opts accepted a sub-job size of %u", o.subjob_size);
	check(!use_opts || o.subjob_size <= 16u << 20,
	      "create_opts accepted a sub-job size of %u", o.subjob_size);
	pthread_mutex_lock(&lock);
	calls = 0;
	pthread_mutex_unlock(&lock);
	read_files(fz.before);
	check(kcopyd_copy(kc, &from, 1, &to, 0, notify, NULL) == 0, "copy");
	kcopyd_client_destroy(kc);
	pthread_mutex_lock(&lock);
	check(calls == 1, "%u callbacks after destroy", calls);
	pthread_mutex_unlock(&lock);
	expect(&from, 1, &to);
	read_files(fz.now);
	for (unsigned int f = 0; f < NR_FILES; f++)
		check(!memcmp(fz.now[f], fz.want[f],
			      (size_t)file_sectors[f] << 9),
		      "new client: file %u differs", f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	unsigned int ops = 0;

	if (!fz.ready)
		setup();
	while (in.left && ops++ < 16) {
		unsigned int op = get8(&in) % 8;

		switch (op) {
		case 0:
		case 1:
		case 2:
			run_job(&in, op);
			break;
		case 3:
			run_fault(&in);
			break;
		case 4:
			run_client(&in);
			break;
		default:
			/* Fresh contents, so copies move visible data. */
			fill_file(op % NR_FILES);
			break;
		}
	}
	return 0;
}
