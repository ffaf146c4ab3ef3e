/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ctlbench: small jobs through a mounted kcopydfs's control file.
 *
 *   ctlbench MNT SRC DST JOBS PER_WRITE        throughput and latency
 *   ctlbench MNT SRC DST JOBS PER_WRITE rate   throughput alone
 *   ctlbench MNT SRC DST JOBS sync             `sync` write latency
 *
 * The first form writes JOBS copies of 8 sectors ("copy SRC:S+8 DST:S"),
 * PER_WRITE lines per write(2), as fast as the mount takes them, while a
 * second thread polls MNT/results and stamps the moment each job is first
 * seen in state=done.  It prints one line:
 *   jobs=N secs=S jobs_per_sec=R p50_us=A p99_us=B seen=M
 * where S runs from the first write to the last job seen done, and a
 * job's latency runs from the start of the write(2) that carried it (so
 * the write itself counts) to the read of results that first showed it
 * done.  Jobs that left results before the reader saw them (see --keep)
 * are not in the latencies; `seen` says how many were.
 *
 * The rate form writes the same, with no reader, then polls MNT/stats
 * every 100 us until jobs_done + jobs_failed has grown by JOBS, and prints
 *   jobs=N secs=S jobs_per_sec=R
 * so the figure holds no cost of rendering results.
 *
 * The sync form writes one "... sync" line per write, one write at a time,
 * and prints the p50 and p99 of the write(2) durations.
 *
 * Job ids are taken as consecutive from the id the first write reads
 * back, so nothing else may submit to the mount meanwhile.
 *
 * Thread model: the main thread writes; in the first form one reader
 * thread polls results.  The reader alone writes done_at[] and seen; the
 * writer alone writes sent_at[] before it issues the write that carries a
 * job, so a job the reader finds done was stamped before.  `stop` is
 * atomic; the main thread reads done_at[] only after joining the reader.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define JOB_SECTORS	8
#define MAX_PER_WRITE	1000
#define LINE_LEN	128

static uint64_t *sent_at;	/* ns, index = job id - 1 (writer) */
static uint64_t *done_at;	/* ns, 0 until seen done (reader) */
static unsigned long njobs;
static unsigned long seen;	/* reader writes, main reads (atomic) */
static unsigned long first_id;	/* id of job 0, set before the reader looks */
static atomic_bool stop;
static int results_fd;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "ctlbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Read the whole of results from offset 0; returns its length. */
static size_t read_results(char **buf, size_t *cap)
{
	size_t len = 0;
	ssize_t n;

	for (;;) {
		if (len + 65536 > *cap) {
			*cap = *cap * 2 + 65536;
			*buf = realloc(*buf, *cap + 1);
			if (!*buf)
				die("realloc");
		}
		n = pread(results_fd, *buf + len, *cap - len, (off_t)len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read results");
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	(*buf)[len] = '\0';
	return len;
}

/* Stamp every job the text shows done that had no stamp yet. */
static void scan_results(const char *text, uint64_t t)
{
	const char *p = text;

	while ((p = strstr(p, "id=")) != NULL) {
		unsigned long id = strtoul(p + 3, NULL, 10);
		const char *eol = strchr(p, '\n');
		const char *st = strstr(p, " state=done");

		if (st && (!eol || st < eol) && id >= first_id &&
		    id - first_id < njobs && !done_at[id - first_id]) {
			done_at[id - first_id] = t;
			__atomic_add_fetch(&seen, 1, __ATOMIC_RELAXED);
		}
		p = eol ? eol + 1 : p + 3;
	}
}

static void *reader_main(void *arg)
{
	struct pollfd pfd = { .fd = results_fd, .events = POLLIN };
	char *buf = NULL;
	size_t cap = 0;

	(void)arg;
	while (__atomic_load_n(&seen, __ATOMIC_RELAXED) < njobs &&
	       !atomic_load(&stop)) {
		uint64_t t;

		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			die("poll results");
		read_results(&buf, &cap);
		/* After the read: a job shown done was done by now. */
		t = now_ns();
		scan_results(buf, t);
	}
	free(buf);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, unsigned long n, double p)
{
	unsigned long i;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u64);
	i = (unsigned long)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

/*
 * One write of whole lines.  EAGAIN is the mount's queue bound (the whole
 * write was refused): wait for room, as a client would, and write again.
 */
static void write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while ((n = write(fd, buf, len)) < 0 &&
	       (errno == EAGAIN || errno == EINTR))
		usleep(100);
	if (n < 0)
		die("write control");
	if ((size_t)n != len) {
		fprintf(stderr, "ctlbench: short write to control\n");
		exit(1);
	}
}

static size_t job_line(char *out, const char *src, const char *dst,
		       unsigned long i, uint64_t span, const char *extra)
{
	uint64_t s = (uint64_t)i * JOB_SECTORS % span;

	return (size_t)sprintf(out, "copy %s:%llu+%d %s:%llu%s\n", src,
			       (unsigned long long)s, JOB_SECTORS, dst,
			       (unsigned long long)s, extra);
}

/* The id of the first job of the write just made, read back from control. */
static unsigned long read_back_id(int cfd)
{
	char buf[64];
	ssize_t n = pread(cfd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		die("read back control");
	buf[n] = '\0';
	return strtoul(buf, NULL, 10);
}

/* jobs_done + jobs_failed, from MNT/stats. */
static unsigned long finished_jobs(int sfd)
{
	char buf[8192];
	ssize_t n = pread(sfd, buf, sizeof(buf) - 1, 0);
	unsigned long sum = 0;
	const char *p;

	if (n < 0)
		die("read stats");
	buf[n] = '\0';
	p = strstr(buf, "jobs_done=");
	if (p)
		sum += strtoul(p + 10, NULL, 10);
	p = strstr(buf, "jobs_failed=");
	if (p)
		sum += strtoul(p + 12, NULL, 10);
	return sum;
}

static void run_rate(int cfd, int sfd, const char *src, const char *dst,
		     uint64_t span, unsigned long per_write)
{
	char *buf = malloc(per_write * LINE_LEN);
	unsigned long base = finished_jobs(sfd);
	uint64_t t0, t1;
	int w;

	if (!buf)
		die("malloc");
	t0 = now_ns();
	for (unsigned long i = 0; i < njobs; i += per_write) {
		unsigned long k = njobs - i < per_write ? njobs - i : per_write;
		size_t len = 0;

		for (unsigned long j = 0; j < k; j++)
			len += job_line(buf + len, src, dst, i + j, span, "");
		write_all(cfd, buf, len);
	}
	/* At most 30 s for the queue to drain. */
	for (w = 0; w < 300000 && finished_jobs(sfd) - base < njobs; w++)
		usleep(100);
	t1 = now_ns();
	if (finished_jobs(sfd) - base < njobs) {
		fprintf(stderr, "ctlbench: jobs did not finish in 30 s\n");
		exit(1);
	}
	printf("jobs=%lu secs=%.4f jobs_per_sec=%.0f\n", njobs,
	       (double)(t1 - t0) / 1e9,
	       (double)njobs / ((double)(t1 - t0) / 1e9));
	free(buf);
}

static void run_sync(int cfd, const char *src, const char *dst,
		     uint64_t span)
{
	uint64_t *lat = malloc(sizeof(*lat) * njobs);
	char line[LINE_LEN];

	if (!lat)
		die("malloc");
	for (unsigned long i = 0; i < njobs; i++) {
		size_t len = job_line(line, src, dst, i, span, " sync");
		uint64_t t0 = now_ns();

		write_all(cfd, line, len);
		lat[i] = now_ns() - t0;
	}
	printf("jobs=%lu p50_us=%.1f p99_us=%.1f\n", njobs,
	       pct_us(lat, njobs, 0.50), pct_us(lat, njobs, 0.99));
	free(lat);
}

static void run_batched(int cfd, const char *src, const char *dst,
			uint64_t span, unsigned long per_write)
{
	char *buf = malloc(per_write * LINE_LEN);
	uint64_t *lat, t0, last = 0;
	pthread_t reader;
	unsigned long n = 0;
	int r;

	sent_at = calloc(njobs, sizeof(*sent_at));
	done_at = calloc(njobs, sizeof(*done_at));
	lat = malloc(sizeof(*lat) * njobs);
	if (!buf || !sent_at || !done_at || !lat)
		die("malloc");
	t0 = now_ns();
	for (unsigned long i = 0; i < njobs; i += per_write) {
		unsigned long k = njobs - i < per_write ? njobs - i : per_write;
		size_t len = 0;
		uint64_t t = now_ns();

		for (unsigned long j = 0; j < k; j++) {
			len += job_line(buf + len, src, dst, i + j, span, "");
			sent_at[i + j] = t;
		}
		write_all(cfd, buf, len);
		if (i == 0) {
			/* Jobs may finish before this: results keeps them. */
			first_id = read_back_id(cfd);
			r = pthread_create(&reader, NULL, reader_main, NULL);
			if (r) {
				errno = r;
				die("pthread_create");
			}
		}
	}
	/* Every job is queued: give the reader 30 s to see them all. */
	for (int w = 0; w < 3000 && __atomic_load_n(&seen, __ATOMIC_RELAXED)
			< njobs; w++)
		usleep(10000);
	atomic_store(&stop, true);
	pthread_join(reader, NULL);

	for (unsigned long i = 0; i < njobs; i++) {
		if (!done_at[i])
			continue;
		lat[n++] = done_at[i] - sent_at[i];
		if (done_at[i] > last)
			last = done_at[i];
	}
	printf("jobs=%lu secs=%.4f jobs_per_sec=%.0f p50_us=%.1f "
	       "p99_us=%.1f seen=%lu\n", njobs, (double)(last - t0) / 1e9,
	       last > t0 ? (double)njobs / ((double)(last - t0) / 1e9) : 0,
	       pct_us(lat, n, 0.50), pct_us(lat, n, 0.99), n);
	free(lat);
	free(buf);
}

int main(int argc, char **argv)
{
	char path[4096];
	unsigned long per_write = 0;
	uint64_t span;
	int cfd;

	if (argc != 6 && !(argc == 7 && !strcmp(argv[6], "rate"))) {
		fprintf(stderr, "usage: ctlbench MNT SRC DST JOBS "
				"PER_WRITE [rate] | sync\n");
		return 2;
	}
	njobs = strtoul(argv[4], NULL, 10);
	if (strcmp(argv[5], "sync"))
		per_write = strtoul(argv[5], NULL, 10);
	if (!njobs || (strcmp(argv[5], "sync") &&
		       (!per_write || per_write > MAX_PER_WRITE))) {
		fprintf(stderr, "ctlbench: bad JOBS or PER_WRITE\n");
		return 2;
	}
	/* Jobs cycle over the first 64 MiB: every one a real 4 KiB copy. */
	span = 64u * 1024 * 1024 / 512;

	snprintf(path, sizeof(path), "%s/control", argv[1]);
	cfd = open(path, O_RDWR);
	if (cfd < 0)
		die(path);
	if (argc == 7) {
		int sfd;

		snprintf(path, sizeof(path), "%s/stats", argv[1]);
		sfd = open(path, O_RDONLY);
		if (sfd < 0)
			die(path);
		run_rate(cfd, sfd, argv[2], argv[3], span, per_write);
		close(sfd);
	} else if (per_write) {
		snprintf(path, sizeof(path), "%s/results", argv[1]);
		results_fd = open(path, O_RDONLY);
		if (results_fd < 0)
			die(path);
		run_batched(cfd, argv[2], argv[3], span, per_write);
		close(results_fd);
	} else {
		run_sync(cfd, argv[2], argv[3], span);
	}
	close(cfd);
	return 0;
}
