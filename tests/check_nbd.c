/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of NBD devices (lib/bdev_nbd.c) against real nbdkit servers
 * on Unix sockets: opening by URI and its refusals, I/O from many
 * threads at once, extents and zeroing from the server, fault rules, and
 * a copy job that fans out to a file and an export.  A server that dies
 * is tested with kcopy (kcopy-nbd.sh): libnbd 1.14 reads a command it has
 * freed when the connection dies while the command is being sent, which
 * valgrind, running these programs, would report.
 *
 * Thread model: each test runs in a forked child; nbdkit is its child in
 * turn (--exit-with-parent), killed at the end of the test.  The I/O test
 * starts threads that share one device and check only their own ranges.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"


struct server {
	pid_t pid;
	char uri[PATH_MAX + 64];
};

/*
 * Serve `args` (plugin and its parameters, NULL-terminated) on a socket
 * named for `name`; returns once nbdkit has written its pidfile, which
 * it does when it listens.
 */
static void start_server(struct server *s, const char *name,
			 const char *const *args)
{
	char sock[PATH_MAX], pidfile[PATH_MAX];
	const char *argv[32] = { "nbdkit", "-f", "--exit-with-parent", "-U",
				 sock, "-P", pidfile };
	unsigned int n = 7;
	struct stat st;

	snprintf(sock, sizeof(sock), "%s/%s.sock", test_dir(), name);
	snprintf(pidfile, sizeof(pidfile), "%s/%s.pid", test_dir(), name);
	unlink(sock);
	unlink(pidfile);
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		execvp("nbdkit", (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 600; i++) {
		int status;

		if (stat(pidfile, &st) == 0 && st.st_size > 0)
			break;
		ck_assert_msg(waitpid(s->pid, &status, WNOHANG) == 0,
			      "nbdkit %s exited", args[-1]);
		usleep(50000);
	}
	ck_assert_msg(stat(pidfile, &st) == 0, "nbdkit did not start");
	snprintf(s->uri, sizeof(s->uri), "nbd+unix:///?socket=%s", sock);
}

static void stop_server(struct server *s)
{
	kill(s->pid, SIGTERM);
	waitpid(s->pid, NULL, 0);
}

START_TEST(test_open)
{
	static const char *const mem[] = { "memory", "8M", NULL };
	static const char *const ro[] = { "-r", "memory", "8M", NULL };
	struct server a, r;
	struct block_device *b = NULL;
	char uri[PATH_MAX + 128];

	start_server(&a, "open", mem);
	start_server(&r, "ro", ro);
	ck_assert_int_eq(kcopyd_bdev_is_uri(a.uri), 1);
	ck_assert_int_eq(kcopyd_bdev_is_uri("nbd://host/x"), 1);
	ck_assert_int_eq(kcopyd_bdev_is_uri("nbds+unix:///x"), 1);
	ck_assert_int_eq(kcopyd_bdev_is_uri("./nbd://x"), 0);
	ck_assert_int_eq(kcopyd_bdev_is_uri("disk.img"), 0);

	ck_assert_int_eq(kcopyd_bdev_open(a.uri, O_RDWR, &b), 0);
	ck_assert_uint_eq(kcopyd_bdev_size(b), 8 * MiB);
	ck_assert_int_eq(kcopyd_bdev_is_read_only(b), 0);
	kcopyd_bdev_close(b);

	/* A read-only export: read-only opens only. */
	ck_assert_int_eq(kcopyd_bdev_open(r.uri, O_RDWR, &b), -EROFS);
	ck_assert_int_eq(kcopyd_bdev_open(r.uri, O_RDONLY, &b), 0);
	ck_assert_int_eq(kcopyd_bdev_is_read_only(b), 1);
	ck_assert_int_eq(kcopyd_bdev_pwrite(b, "x", 1, 0), -EROFS);
	kcopyd_bdev_close(b);

	/* kcopyd's own query parameters are checked. */
	b = NULL;
	snprintf(uri, sizeof(uri), "%s&timeout=0", a.uri);
	ck_assert_int_eq(kcopyd_bdev_open(uri, O_RDWR, &b), -EINVAL);
	snprintf(uri, sizeof(uri), "%s&connections=99", a.uri);
	ck_assert_int_eq(kcopyd_bdev_open(uri, O_RDWR, &b), -EINVAL);
	snprintf(uri, sizeof(uri), "%s&timeout=5s", a.uri);
	ck_assert_int_eq(kcopyd_bdev_open(uri, O_RDWR, &b), -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_open(a.uri, O_RDWR | O_CREAT, &b),
			 -EINVAL);
	ck_assert_ptr_null(b);
	snprintf(uri, sizeof(uri), "%s&connections=1&timeout=30", a.uri);
	ck_assert_int_eq(kcopyd_bdev_open(uri, O_RDWR, &b), 0);
	kcopyd_bdev_close(b);

	/* Nobody listening. */
	b = NULL;
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s/none.sock",
		 test_dir());
	ck_assert_int_lt(kcopyd_bdev_open(uri, O_RDWR, &b), 0);
	ck_assert_ptr_null(b);
	stop_server(&a);
	stop_server(&r);
}
END_TEST

/* Many threads on one device: each writes, then reads back, its range. */
#define IO_THREADS	8
#define IO_SPAN		(2 * MiB)

struct io_arg {
	struct block_device *b;
	unsigned int seed;
	int err;
};

static void *io_thread(void *p)
{
	struct io_arg *a = p;
	unsigned char *buf = malloc(IO_SPAN), *back = malloc(IO_SPAN);
	uint64_t base = (uint64_t)a->seed * IO_SPAN;

	if (!buf || !back) {
		a->err = -ENOMEM;
		goto out;
	}
	fill_pattern(buf, IO_SPAN, a->seed + 1);
	/* Pieces of assorted sizes, so requests of many lengths overlap. */
	for (size_t off = 0, n; off < IO_SPAN; off += n) {
		n = (size_t)4096 << (off / 4096 % 6);
		if (n > IO_SPAN - off)
			n = IO_SPAN - off;
		a->err = kcopyd_bdev_pwrite(a->b, buf + off, n, base + off);
		if (a->err)
			goto out;
	}
	a->err = kcopyd_bdev_pread(a->b, back, IO_SPAN, base);
	if (!a->err && memcmp(buf, back, IO_SPAN))
		a->err = -EILSEQ;
out:
	free(buf);
	free(back);
	return NULL;
}

START_TEST(test_threads)
{
	static const char *const mem[] = { "memory", "16M", NULL };
	struct io_arg args[IO_THREADS];
	pthread_t t[IO_THREADS];
	struct kcopyd_bdev_stats st;
	struct block_device *b;
	struct server s;

	start_server(&s, "threads", mem);
	ck_assert_int_eq(kcopyd_bdev_open(s.uri, O_RDWR, &b), 0);
	for (unsigned int i = 0; i < IO_THREADS; i++) {
		args[i] = (struct io_arg){ .b = b, .seed = i };
		ck_assert_int_eq(pthread_create(&t[i], NULL, io_thread,
						&args[i]), 0);
	}
	for (unsigned int i = 0; i < IO_THREADS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(args[i].err == 0, "thread %u: %s", i,
			      strerror(-args[i].err));
	}
	ck_assert_int_eq(kcopyd_bdev_get_stats2(b, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.bytes_written, (uint64_t)IO_THREADS * IO_SPAN);
	ck_assert_uint_eq(st.bytes_read, (uint64_t)IO_THREADS * IO_SPAN);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_int_eq(kcopyd_bdev_flush(b), 0);
	kcopyd_bdev_close(b);
	stop_server(&s);
}
END_TEST

/* Extents from base:allocation; zeroing by write-zeroes, NO_HOLE or not. */
START_TEST(test_extents_and_zero)
{
	static const char *const mem[] = { "memory", "64M", NULL };
	unsigned char *buf = malloc(MiB), *back = malloc(MiB);
	struct kcopyd_bdev_stats st;
	struct block_device *b;
	unsigned int type;
	uint64_t count, bytes;
	struct server s;

	start_server(&s, "extents", mem);
	ck_assert_int_eq(kcopyd_bdev_open(s.uri, O_RDWR, &b), 0);
	/* Empty: one hole, all of it, and nothing allocated. */
	ck_assert_int_eq(kcopyd_bdev_extent(b, 0, 64 * MiB, &type, &count), 0);
	ck_assert_uint_eq(type, KCOPYD_EXTENT_HOLE);
	ck_assert_uint_eq(count, 64 * MiB);
	ck_assert_int_eq(kcopyd_bdev_allocated(b, &bytes), 0);
	ck_assert_uint_eq(bytes, 0);

	fill_pattern(buf, MiB, 7);
	ck_assert_int_eq(kcopyd_bdev_pwrite(b, buf, MiB, 8 * MiB), 0);
	ck_assert_int_eq(kcopyd_bdev_extent(b, 0, 64 * MiB, &type, &count), 0);
	ck_assert_uint_eq(type, KCOPYD_EXTENT_HOLE);
	ck_assert_uint_eq(count, 8 * MiB);
	ck_assert_int_eq(kcopyd_bdev_extent(b, 8 * MiB, 64 * MiB, &type,
					    &count), 0);
	ck_assert_uint_eq(type, KCOPYD_EXTENT_DATA);
	ck_assert_uint_eq(count, MiB);
	ck_assert_int_eq(kcopyd_bdev_allocated(b, &bytes), 0);
	ck_assert_uint_eq(bytes, MiB);

	/* May deallocate: the range becomes a hole again. */
	ck_assert_int_eq(kcopyd_bdev_zero(b, 8 * MiB, MiB / 2, 0), 0);
	ck_assert_int_eq(kcopyd_bdev_pread(b, back, MiB, 8 * MiB), 0);
	for (size_t i = 0; i < MiB / 2; i++)
		ck_assert_uint_eq(back[i], 0);
	ck_assert_mem_eq(back + MiB / 2, buf + MiB / 2, MiB / 2);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(b, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.zeroed_punch, MiB / 2);
	ck_assert_uint_eq(st.zeroed_write, 0);
	ck_assert_int_eq(kcopyd_bdev_extent(b, 8 * MiB, 64 * MiB, &type,
					    &count), 0);
	ck_assert_uint_eq(type, KCOPYD_EXTENT_HOLE);
	ck_assert_uint_eq(count, MiB / 2);
	ck_assert_int_eq(kcopyd_bdev_allocated(b, &bytes), 0);
	ck_assert_uint_eq(bytes, MiB / 2);

	/* Must stay allocated: zeros, by NO_HOLE, never written. */
	ck_assert_int_eq(kcopyd_bdev_zero(b, 8 * MiB + MiB / 2, MiB / 2,
					  KCOPYD_ALLOCATED), 0);
	ck_assert_int_eq(kcopyd_bdev_pread(b, back, MiB, 8 * MiB), 0);
	for (size_t i = 0; i < MiB; i++)
		ck_assert_uint_eq(back[i], 0);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(b, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.zeroed_range, MiB / 2);
	ck_assert_uint_eq(st.zeroed_write, 0);
	ck_assert_uint_eq(st.bytes_written, MiB);

	/* Past the end. */
	ck_assert_int_eq(kcopyd_bdev_pread(b, back, 1, 64 * MiB), -ERANGE);
	kcopyd_bdev_close(b);
	stop_server(&s);
	free(buf);
	free(back);
}
END_TEST

/* A server without zeroing: zeros are written, and still read as zeros. */
START_TEST(test_zero_fallback)
{
	static const char *const args[] = { "--filter=nozero", "memory", "8M",
					    NULL };
	unsigned char *buf = malloc(MiB);
	struct kcopyd_bdev_stats st;
	struct block_device *b;
	struct server s;

	start_server(&s, "nozero", args);
	ck_assert_int_eq(kcopyd_bdev_open(s.uri, O_RDWR, &b), 0);
	fill_pattern(buf, MiB, 3);
	ck_assert_int_eq(kcopyd_bdev_pwrite(b, buf, MiB, 0), 0);
	ck_assert_int_eq(kcopyd_bdev_zero(b, 0, MiB, KCOPYD_ALLOCATED), 0);
	ck_assert_int_eq(kcopyd_bdev_pread(b, buf, MiB, 0), 0);
	for (size_t i = 0; i < MiB; i++)
		ck_assert_uint_eq(buf[i], 0);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(b, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.zeroed_write, MiB);
	kcopyd_bdev_close(b);
	stop_server(&s);
	free(buf);
}
END_TEST

/* The server's error is the caller's errno. */
START_TEST(test_server_errors)
{
	static const char *const args[] = { "--filter=error", "memory", "8M",
					    "error=ENOSPC",
					    "error-pwrite-rate=100%", NULL };
	unsigned char buf[4096] = { 1 };
	struct kcopyd_bdev_stats st;
	struct block_device *b;
	struct server s;

	start_server(&s, "errors", args);
	ck_assert_int_eq(kcopyd_bdev_open(s.uri, O_RDWR, &b), 0);
	ck_assert_int_eq(kcopyd_bdev_pwrite(b, buf, sizeof(buf), 0), -ENOSPC);
	ck_assert_int_eq(kcopyd_bdev_pread(b, buf, sizeof(buf), 0), 0);
	/* The refused write left nothing behind. */
	for (size_t i = 0; i < sizeof(buf); i++)
		ck_assert_uint_eq(buf[i], 0);
	ck_assert_int_eq(kcopyd_bdev_get_stats2(b, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.errors, 1);
	kcopyd_bdev_close(b);
	stop_server(&s);
}
END_TEST

/*
 * A copy job to a file and two exports, one with a write fault rule:
 * only that destination's bit is set, the others hold the source.
 */
START_TEST(test_copy_faults)
{
	static const char *const mem[] = { "memory", "16M", NULL };
	const size_t size = 16 * MiB;
	struct kcopyd_fault f = {
		.ops = KCOPYD_FAULT_WRITE,
		.kind = KCOPYD_FAULT_ERROR,
		.sector = 4096,
		.count = 8,
		.error = EIO,
	};
	struct block_device *src, *dst[3];
	struct io_region from, to[3];
	struct server s1, s2;
	struct kcopyd_client *kc;
	struct done_count done;
	unsigned char *want, *got;
	char *spath = make_image("copy-src", size, 11);
	char *fpath = make_image("copy-dst", size, 0);
	size_t len;

	start_server(&s1, "copy1", mem);
	start_server(&s2, "copy2", mem);
	src = open_bdev(spath, O_RDONLY);
	dst[0] = open_bdev(fpath, O_RDWR);
	ck_assert_int_eq(kcopyd_bdev_open(s1.uri, O_RDWR, &dst[1]), 0);
	ck_assert_int_eq(kcopyd_bdev_open(s2.uri, O_RDWR, &dst[2]), 0);
	ck_assert_int_eq(kcopyd_bdev_add_fault(dst[2], &f), 0);

	ck_assert_int_eq(kcopyd_client_create(256, &kc), 0);
	done_init(&done);
	from = (struct io_region){ src, 0, size >> 9 };
	for (int i = 0; i < 3; i++)
		to[i] = (struct io_region){ dst[i], 0, size >> 9 };
	ck_assert_int_eq(kcopyd_copy(kc, &from, 3, to, KCOPYD_IGNORE_ERROR,
				     done_cb, &done), 0);
	done_wait(&done, 1);
	ck_assert_int_eq(done.read_err, 0);
	ck_assert_uint_eq(done.write_err, 1u << 2);
	kcopyd_client_destroy(kc);

	want = read_file(spath, &len);
	got = read_file(fpath, &len);
	ck_assert_mem_eq(want, got, size);
	free(got);
	got = malloc(size);
	ck_assert_int_eq(kcopyd_bdev_pread(dst[1], got, size, 0), 0);
	ck_assert_mem_eq(want, got, size);
	/* Outside the faulty sectors the third has the data too. */
	ck_assert_int_eq(kcopyd_bdev_pread(dst[2], got, 2 * MiB, 0), 0);
	ck_assert_mem_eq(want, got, 2 * MiB);

	for (int i = 0; i < 3; i++)
		kcopyd_bdev_close(dst[i]);
	kcopyd_bdev_close(src);
	stop_server(&s1);
	stop_server(&s2);
	free(want);
	free(got);
	free(spath);
	free(fpath);
}
END_TEST

/* What a completion said, copied out under the lock for the test. */
struct seen {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int read_err, read_error;
	unsigned int write_err;
	int dest_error[2];
};

static void seen_cb(const struct kcopyd_completion *c, void *context)
{
	struct seen *s = context;

	pthread_mutex_lock(&s->lock);
	s->read_err = c->read_err;
	s->read_error = c->read_error;
	s->write_err = c->write_err;
	for (unsigned int i = 0; i < c->num_dests && i < 2; i++)
		s->dest_error[i] = c->dests[i].error;
	s->done = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void seen_wait(struct seen *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->done)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/*
 * The server's errno reaches the job's completion: ENOSPC for the export
 * that fails writes (and only for it), EIO for a source that fails reads.
 */
START_TEST(test_completion_errno)
{
	static const char *const full[] = { "--filter=error", "memory", "8M",
					    "error=ENOSPC",
					    "error-pwrite-rate=100%", NULL };
	static const char *const bad[] = { "--filter=error", "pattern", "8M",
					   "error=EIO",
					   "error-pread-rate=100%", NULL };
	static const char *const mem[] = { "memory", "8M", NULL };
	struct seen s1 = { .lock = PTHREAD_MUTEX_INITIALIZER,
			   .cond = PTHREAD_COND_INITIALIZER },
		    s2 = { .lock = PTHREAD_MUTEX_INITIALIZER,
			   .cond = PTHREAD_COND_INITIALIZER };
	struct block_device *src, *bsrc, *dst[2];
	struct server sf, sb, sm;
	struct io_region from, to[2];
	struct kcopyd_job_desc desc = {
		.size = sizeof(desc),
		.op = KCOPYD_OP_COPY,
		.flags = KCOPYD_IGNORE_ERROR,
		.from = &from,
		.num_dests = 2,
		.dests = to,
		.complete = seen_cb,
	};
	struct kcopyd_client *kc;
	char *spath = make_image("errno-src", 8 * MiB, 5);

	start_server(&sf, "full", full);
	start_server(&sb, "bad", bad);
	start_server(&sm, "good", mem);
	src = open_bdev(spath, O_RDONLY);
	ck_assert_int_eq(kcopyd_bdev_open(sb.uri, O_RDONLY, &bsrc), 0);
	ck_assert_int_eq(kcopyd_bdev_open(sf.uri, O_RDWR, &dst[0]), 0);
	ck_assert_int_eq(kcopyd_bdev_open(sm.uri, O_RDWR, &dst[1]), 0);
	ck_assert_int_eq(kcopyd_client_create(256, &kc), 0);

	from = (struct io_region){ src, 0, 8 * MiB >> 9 };
	for (int i = 0; i < 2; i++)
		to[i] = (struct io_region){ dst[i], 0, 8 * MiB >> 9 };
	desc.context = &s1;
	ck_assert_int_eq(kcopyd_submit(kc, &desc, NULL), 0);
	seen_wait(&s1);
	ck_assert_int_eq(s1.read_err, 0);
	ck_assert_uint_eq(s1.write_err, 1u);
	ck_assert_int_eq(s1.dest_error[0], ENOSPC);
	ck_assert_int_eq(s1.dest_error[1], 0);

	from = (struct io_region){ bsrc, 0, 8 * MiB >> 9 };
	desc.num_dests = 1;
	to[0] = to[1];
	desc.context = &s2;
	ck_assert_int_eq(kcopyd_submit(kc, &desc, NULL), 0);
	seen_wait(&s2);
	ck_assert_int_ne(s2.read_err, 0);
	ck_assert_int_eq(s2.read_error, EIO);

	kcopyd_client_destroy(kc);
	kcopyd_bdev_close(dst[0]);
	kcopyd_bdev_close(dst[1]);
	kcopyd_bdev_close(bsrc);
	kcopyd_bdev_close(src);
	stop_server(&sf);
	stop_server(&sb);
	stop_server(&sm);
	free(spath);
}
END_TEST

static Suite *nbd_suite(void)
{
	Suite *s = suite_create("nbd");
	TCase *tc;

	tc = tcase_create("open");
	tcase_add_test(tc, test_open);
	suite_add_tcase(s, tc);

	tc = tcase_create("io");
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_server_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("sparse");
	tcase_add_test(tc, test_extents_and_zero);
	tcase_add_test(tc, test_zero_fallback);
	suite_add_tcase(s, tc);

	tc = tcase_create("engine");
	tcase_add_test(tc, test_copy_faults);
	tcase_add_test(tc, test_completion_errno);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (system("nbdkit --version >/dev/null 2>&1") != 0) {
		printf("check_nbd: SKIP: nbdkit not found\n");
		return 77;
	}
	return run_suite(nbd_suite());
}
