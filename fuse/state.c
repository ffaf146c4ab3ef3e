/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --state DIR: job records on disk (state.h), and the resume at mount.
 *
 * Thread model: kfs_state_open, kfs_state_resume and kfs_state_close run
 * on the main thread, before the session serves and after it is over.
 * kfs_state_describe and the first kfs_state_save of a job run in the
 * FUSE worker that queues it, with the job table's lock held (so the
 * `next` file is only ever written there, one writer at a time); later
 * saves and kfs_state_forget run on the engine's callback thread (jobs.c
 * says why one record is never written by two threads at once).  s->next
 * is atomic: the callback thread reads it.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <unistd.h>

#include "kcopydfs.h"
#include "replace.h"
#include "state.h"

#define RECORD_MAGIC	"kcopydfs job 1"
/* Ids taken at a time in `next`: a crash skips at most this many. */
#define ID_BLOCK	64
/* Largest id a record or `next` may hold: ids go on far past it unwrapped. */
#define ID_MAX		(UINT64_MAX / 2)
/* Largest record: a command line and a line per device. */
#define RECORD_MAX	(2 * KFS_MAX_LINE + (KFS_MAX_DESTS + 1) * \
			 (KFS_MAX_LINE + 128))

static char *state_path(const struct kfs_state *s, const char *name)
{
	char *p;

	return asprintf(&p, "%s/%s", s->dir, name) < 0 ? NULL : p;
}

static char *record_path(const struct kfs_state *s, uint64_t id)
{
	char name[32];

	snprintf(name, sizeof(name), "job.%" PRIu64, id);
	return state_path(s, name);
}

/* The whole of a small file, NUL-terminated: 0 or -errno. */
static int read_small(const char *path, size_t max, char **text)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t len = 0;
	char *buf;
	ssize_t n;

	if (fd < 0)
		return -errno;
	buf = malloc(max + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (len < max && (n = read(fd, buf + len, max - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			n = -errno;
			close(fd);
			free(buf);
			return (int)n;
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if (len == max || strlen(buf) != len) {
		free(buf);
		return -EBADMSG;
	}
	*text = buf;
	return 0;
}

static int write_next(struct kfs_state *s, uint64_t next)
{
	char *p = state_path(s, "next"), text[32];
	int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", next), r;

	if (!p)
		return -ENOMEM;
	r = replace_file(p, text, (size_t)n);
	free(p);
	if (!r)
		atomic_store(&s->next, next);
	return r;
}

int kfs_state_open(const char *dir, struct kfs_state **result, char *msg,
		   size_t msglen)
{
	struct kfs_state *s = calloc(1, sizeof(*s));
	char *p = NULL, *text = NULL;
	uint64_t next = 1;
	struct stat st;
	int r;

	if (!s || !(s->dir = strdup(dir))) {
		free(s);
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	s->lock_fd = -1;
	if (mkdir(dir, 0700) && errno != EEXIST) {
		r = -errno;
		snprintf(msg, msglen, "state %s: %s", dir, strerror(-r));
		goto fail;
	}
	r = stat(dir, &st) ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (r) {
		snprintf(msg, msglen, "state %s: %s", dir, strerror(-r));
		goto fail;
	}
	p = state_path(s, "lock");
	if (!p) {
		r = -ENOMEM;
		snprintf(msg, msglen, "out of memory");
		goto fail;
	}
	s->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0) {
		r = -errno;
		snprintf(msg, msglen, "state %s: %s", p, strerror(-r));
		goto fail;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB)) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(msg, msglen, "state %s: %s: another kcopydfs uses "
			 "it", dir, strerror(-r));
		goto fail;
	}
	free(p);
	p = state_path(s, "next");
	r = p ? read_small(p, 64, &text) : -ENOMEM;
	if (!r) {
		char *end;

		errno = 0;
		next = strtoull(text, &end, 10);
		if (errno || end == text || (*end && *end != '\n') || !next ||
		    next > ID_MAX) {
			fprintf(stderr, "kcopydfs: state %s: ignoring a bad "
				"'next' file\n", dir);
			next = 1;
		}
		free(text);
	} else if (r != -ENOENT) {
		fprintf(stderr, "kcopydfs: state %s: ignoring 'next': %s\n",
			dir, strerror(-r));
	}
	atomic_init(&s->next, next);
	free(p);
	*result = s;
	return 0;
fail:
	free(p);
	kfs_state_close(s, 0);
	return r;
}

void kfs_state_close(struct kfs_state *s, uint64_t next)
{
	if (!s)
		return;
	/* A clean end: the next mount goes on from the very next id. */
	if (next && s->lock_fd >= 0)
		write_next(s, next);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s->dir);
	free(s);
}

uint64_t kfs_state_next_id(struct kfs_state *s)
{
	return atomic_load(&s->next);
}

int kfs_state_save(struct kfs_state *s, uint64_t id, const char *rec,
		   uint64_t done)
{
	char *p, *text;
	int n, r;

	/* Never an id at or past `next` on disk: a crash must not reuse it. */
	if (id >= atomic_load(&s->next)) {
		r = write_next(s, id + ID_BLOCK);
		if (r)
			return r;
	}
	n = asprintf(&text, RECORD_MAGIC "\nid %" PRIu64 "\ndone %" PRIu64
		     "\n%s", id, done, rec);
	if (n < 0)
		return -ENOMEM;
	p = record_path(s, id);
	r = p ? replace_file(p, text, (size_t)n) : -ENOMEM;
	free(p);
	free(text);
	return r;
}

int kfs_state_forget(struct kfs_state *s, uint64_t id)
{
	char *p = record_path(s, id);
	int r = p ? remove_file(p) : -ENOMEM;

	free(p);
	return r;
}

/* --- Records ---------------------------------------------------------- */

/* A device's identity, as a record's dev line holds it. */
static int dev_identity(const struct kfs_dev *d, char *buf, size_t len)
{
	struct statx stx;
	struct stat st;

	if (d->fd < 0)
		return snprintf(buf, len, "nbd %s", d->path);
	if (fstat(d->fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode))
		return snprintf(buf, len, "blk %u:%u", major(st.st_rdev),
				minor(st.st_rdev));
	/*
	 * An inode number is reused once its file is deleted (ext4, xfs):
	 * the birth time, where the file system keeps one, tells another
	 * file from the one recorded.
	 */
	if (!statx(d->fd, "", AT_EMPTY_PATH, STATX_BTIME, &stx) &&
	    (stx.stx_mask & STATX_BTIME))
		return snprintf(buf, len, "file %ju:%ju born %lld.%09u",
				(uintmax_t)st.st_dev, (uintmax_t)st.st_ino,
				(long long)stx.stx_btime.tv_sec,
				stx.stx_btime.tv_nsec);
	return snprintf(buf, len, "file %ju:%ju", (uintmax_t)st.st_dev,
			(uintmax_t)st.st_ino);
}

/* A region as the command language writes it. */
static int put_region(FILE *f, const struct kfs *fs, const struct kfs_region *r,
		      bool count)
{
	fprintf(f, " %s:%" PRIu64, fs->devs[r->dev]->name, r->sector);
	if (count)
		fprintf(f, "+%" PRIu64, r->count);
	return 0;
}

static void put_dev(FILE *f, const struct kfs *fs, int dev, int *seen,
		    unsigned int *nseen)
{
	const struct kfs_dev *d = fs->devs[dev];
	char id[KFS_MAX_LINE + 16];

	for (unsigned int i = 0; i < *nseen; i++)
		if (seen[i] == dev)
			return;
	seen[(*nseen)++] = dev;
	if (dev_identity(d, id, sizeof(id)) < 0)
		snprintf(id, sizeof(id), "unknown");
	fprintf(f, "dev %s %" PRIu64 " %s\n", d->name, d->size, id);
}

char *kfs_state_describe(void *opaque, const struct kfs_cmd *c)
{
	const struct kfs *fs = opaque;
	int seen[KFS_MAX_DESTS + 1];
	unsigned int nseen = 0;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return NULL;
	fprintf(f, "cmd %s", c->op == KFS_OP_COPY ? "copy" : "zero");
	if (c->op == KFS_OP_COPY)
		put_region(f, fs, &c->src, true);
	for (unsigned int i = 0; i < c->num_dests; i++)
		put_region(f, fs, &c->dests[i], c->op == KFS_OP_ZERO);
	if (c->flags & KFS_IGNORE_ERRORS)
		fprintf(f, " ignore_errors");
	if (c->flags & KFS_WRITE_SEQ)
		fprintf(f, " write_seq");
	if (c->flags & KFS_VERIFY)
		fprintf(f, " verify");
	if (c->flags & KFS_FLUSH)
		fprintf(f, " flush");
	if (c->tag[0])
		fprintf(f, " tag=%s", c->tag);
	fprintf(f, "\n");
	if (c->op == KFS_OP_COPY)
		put_dev(f, fs, c->src.dev, seen, &nseen);
	for (unsigned int i = 0; i < c->num_dests; i++)
		put_dev(f, fs, c->dests[i].dev, seen, &nseen);
	if (fclose(f)) {
		free(text);
		return NULL;
	}
	return text;
}

/* --- Resume ----------------------------------------------------------- */

/* What a record says, and why it cannot be resumed (err, on dev). */
struct record {
	uint64_t id;
	uint64_t done;
	const char *cmd;		/* its line, in the text */
	size_t cmd_len;
	struct kfs_cmd c;
	char tag[KFS_MAX_NAME + 1];
	uint64_t sectors;
	int err;
	char dev[KFS_MAX_NAME + 1];
	char why[512];
};

static int fail(struct record *rec, int err, const char *dev,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(struct record *rec, int err, const char *dev,
		const char *fmt, ...)
{
	va_list ap;

	rec->err = err;
	snprintf(rec->dev, sizeof(rec->dev), "%s", dev);
	va_start(ap, fmt);
	vsnprintf(rec->why, sizeof(rec->why), fmt, ap);
	va_end(ap);
	return -err;
}

/* A dev line: is the device of that name the very one recorded? */
static int match_dev(struct kfs *fs, struct record *rec, char *line)
{
	char name[KFS_MAX_NAME + 1], id[KFS_MAX_LINE + 16];
	unsigned long long bytes;
	const struct kfs_dev *d;
	int slot, n = 0;

	if (sscanf(line, "dev %64s %llu %n", name, &bytes, &n) != 2 || !n ||
	    !line[n])
		return fail(rec, EBADMSG, "state", "bad device line '%s'",
			    line);
	slot = kfs_dev_find(fs, name, strlen(name));
	if (slot < 0)
		return fail(rec, ENODEV, name, "device %s is gone", name);
	d = fs->devs[slot];
	if (d->size != bytes)
		return fail(rec, ESTALE, name, "device %s changed: %" PRIu64
			    " bytes, %llu when the job was queued", name,
			    d->size, bytes);
	if (dev_identity(d, id, sizeof(id)) < 0 || strcmp(id, line + n))
		return fail(rec, ESTALE, name, "device %s changed: %s, not "
			    "%s as when the job was queued", name, id,
			    line + n);
	return 0;
}

/* Any name is a device of any size: what a command says, devices aside. */
static int any_dev(const struct kfs_devlookup *dl, const char *name,
		   size_t len, uint64_t *sectors)
{
	(void)dl;
	(void)name;
	(void)len;
	*sectors = UINT64_MAX / 2;
	return 0;
}

/* The tag, op and size of a record's command, for its results line. */
static void describe_record(struct record *rec)
{
	struct kfs_devlookup dl = { .find = any_dev };
	struct kfs_cmd *c = &rec->c;
	char msg[256];

	if (kfs_parse_line(rec->cmd, rec->cmd_len, &dl, c, msg, sizeof(msg)) ||
	    (c->op != KFS_OP_COPY && c->op != KFS_OP_ZERO)) {
		memset(c, 0, sizeof(*c));
		return;
	}
	if (c->tag[0])
		snprintf(rec->tag, sizeof(rec->tag), "%s", c->tag);
	rec->sectors = c->op == KFS_OP_COPY ? c->src.count : 0;
	for (unsigned int i = 0; c->op == KFS_OP_ZERO && i < c->num_dests; i++)
		if (c->dests[i].count > rec->sectors)
			rec->sectors = c->dests[i].count;
}

/* Has the record a dev line for device slot dev? */
static bool has_dev_line(const struct kfs *fs, int dev, char *const *devs,
			 unsigned int ndevs)
{
	const char *name = fs->devs[dev]->name;
	size_t len = strlen(name);

	for (unsigned int i = 0; i < ndevs; i++)
		if (!strncmp(devs[i] + 4, name, len) && devs[i][4 + len] == ' ')
			return true;
	return false;
}

/*
 * What the command of a record says against the rest of it: every device
 * it names has its identity recorded, and it is no further than its end.
 */
static int check_cmd(const struct kfs *fs, struct record *rec,
		     char *const *devs, unsigned int ndevs)
{
	const struct kfs_cmd *c = &rec->c;

	if (c->op == KFS_OP_COPY && !has_dev_line(fs, c->src.dev, devs, ndevs))
		return fail(rec, EBADMSG, "state", "no device line for %s",
			    fs->devs[c->src.dev]->name);
	for (unsigned int i = 0; i < c->num_dests; i++)
		if (!has_dev_line(fs, c->dests[i].dev, devs, ndevs))
			return fail(rec, EBADMSG, "state", "no device line "
				    "for %s", fs->devs[c->dests[i].dev]->name);
	if (rec->done > rec->sectors)
		return fail(rec, EBADMSG, "state", "done %" PRIu64 " is past "
			    "its %" PRIu64 " sectors", rec->done,
			    rec->sectors);
	if (c->flags & KFS_CHECKSUM)
		return fail(rec, EBADMSG, "state", "checksum cannot be "
			    "resumed");
	return 0;
}

/* Parse and check one record, devices and all (dlock held). */
static int check_record(struct kfs *fs, char *text, struct record *rec)
{
	struct kfs_devlookup dl;
	char *save = NULL, *line, msg[512];
	char *devs[KFS_MAX_DESTS + 1];
	unsigned int ndevs = 0;
	unsigned long long v;
	int nline = 0, r;
	bool done_seen = false;

	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save), nline++) {
		if (nline == 0 && strcmp(line, RECORD_MAGIC))
			return fail(rec, EBADMSG, "state", "not a job "
				    "record");
		if (nline == 0)
			continue;
		if (sscanf(line, "id %llu", &v) == 1) {
			if (v != rec->id)
				return fail(rec, EBADMSG, "state", "its id "
					    "is %llu", v);
		} else if (sscanf(line, "done %llu", &v) == 1 && !done_seen &&
			   line[5] != '-') {
			rec->done = v;
			done_seen = true;
		} else if (!strncmp(line, "cmd ", 4) && !rec->cmd) {
			rec->cmd = line + 4;
			rec->cmd_len = strlen(line + 4);
			describe_record(rec);
		} else if (!strncmp(line, "dev ", 4) &&
			   ndevs < KFS_MAX_DESTS + 1) {
			devs[ndevs++] = line;
		} else {
			return fail(rec, EBADMSG, "state", "unknown line "
				    "'%.64s'", line);
		}
	}
	if (!rec->cmd)
		return fail(rec, EBADMSG, "state", "no command");
	for (unsigned int i = 0; i < ndevs; i++) {
		r = match_dev(fs, rec, devs[i]);
		if (r)
			return r;
	}
	kfs_devlookup(fs, &dl);
	r = kfs_parse_line(rec->cmd, rec->cmd_len, &dl, &rec->c, msg,
			   sizeof(msg));
	if (!r && rec->c.op != KFS_OP_COPY && rec->c.op != KFS_OP_ZERO) {
		snprintf(msg, sizeof(msg), "not a copy or a zero");
		r = -EINVAL;
	}
	if (r == -ENOENT)
		return fail(rec, ENODEV, "state", "%s", msg);
	if (r == -EROFS || r == -EBUSY)
		return fail(rec, -r, "state", "%s", msg);
	if (r)
		return fail(rec, EBADMSG, "state", "its command: %s", msg);
	return check_cmd(fs, rec, devs, ndevs);
}

static bool record_name(const char *name, uint64_t *id)
{
	char *end;

	if (strncmp(name, "job.", 4) || name[4] < '1' || name[4] > '9')
		return false;
	errno = 0;
	*id = strtoull(name + 4, &end, 10);
	return !errno && !*end && *id <= ID_MAX;
}

static int dir_filter(const struct dirent *e)
{
	return strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
}

/* Records in id order: that is the order of the results. */
static int by_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void resume_one(struct kfs *fs, uint64_t id)
{
	struct kfs_state *s = fs->state;
	struct record *rec = calloc(1, sizeof(*rec));
	char *p = record_path(s, id), *text = NULL, *copy;
	int r;

	if (!rec || !p) {
		free(rec);
		free(p);
		return;
	}
	rec->id = id;
	snprintf(rec->tag, sizeof(rec->tag), "-");
	r = read_small(p, RECORD_MAX, &text);
	if (r) {
		fail(rec, r == -EBADMSG ? EBADMSG : -r, "state",
		     "cannot read it: %s", strerror(-r));
	} else {
		copy = strdup(text);
		pth(pthread_rwlock_rdlock(&fs->dlock));
		r = copy ? check_record(fs, copy, rec) : -ENOMEM;
		if (!r) {
			/* The record text from "cmd" on, as saved. */
			char *cmd = strstr(text, "\ncmd ");
			char *keep = cmd ? strdup(cmd + 1) : NULL;

			r = keep ? kfs_table_resume(fs->table, &rec->c, id,
						    rec->done, keep) : -ENOMEM;
			if (r)
				fail(rec, -r, "state", "the engine refused it: "
				     "%s", strerror(-r));
		}
		pth(pthread_rwlock_unlock(&fs->dlock));
		free(copy);
	}
	if (!r) {
		s->resumed++;
		kfs_log(fs, LOG_NOTICE, "job %" PRIu64 " resumed from state "
			"%s at sector %" PRIu64, id, s->dir, rec->done);
	} else {
		s->not_resumed++;
		kfs_log(fs, LOG_ERR, "job %" PRIu64 " not resumed: %s: %s", id,
			p, rec->why);
		kfs_table_resume_failed(fs->table, id, rec->tag, rec->c.op ?
					rec->c.op : KFS_OP_COPY, rec->sectors,
					rec->done, rec->err, rec->dev);
		kfs_state_forget(s, id);
	}
	free(text);
	free(p);
	free(rec);
}

int kfs_state_resume(struct kfs *fs)
{
	struct kfs_state *s = fs->state;
	struct dirent **list;
	uint64_t *ids, id, next = kfs_state_next_id(s);
	size_t nids = 0;
	int n;

	n = scandir(s->dir, &list, dir_filter, alphasort);
	if (n < 0) {
		kfs_log(fs, LOG_ERR, "state %s: %s", s->dir, strerror(errno));
		return -errno;
	}
	ids = calloc((size_t)n + 1, sizeof(*ids));
	for (int i = 0; i < n; i++) {
		const char *name = list[i]->d_name;
		size_t len = strlen(name);

		if (record_name(name, &id) && ids) {
			ids[nids++] = id;
		} else if (len > 4 && !strcmp(name + len - 4, ".tmp") &&
			   (!strncmp(name, "job.", 4) ||
			    !strcmp(name, "next.tmp"))) {
			/* A write a crash cut short: the old file stands. */
			char *p = state_path(s, name);

			if (p)
				unlink(p);
			free(p);
		} else if (strcmp(name, "lock") && strcmp(name, "next")) {
			kfs_log(fs, LOG_WARNING, "state %s: skipping '%s': "
				"not a job record", s->dir, name);
		}
		free(list[i]);
	}
	free(list);
	if (!ids)
		return -ENOMEM;
	qsort(ids, nids, sizeof(*ids), by_id);
	/* Ids go on past every record, whatever `next` says. */
	if (nids && ids[nids - 1] >= next)
		write_next(s, ids[nids - 1] + ID_BLOCK);
	for (size_t i = 0; i < nids; i++)
		resume_one(fs, ids[i]);
	free(ids);
	return 0;
}

/* --- The job table's hooks -------------------------------------------- */

/* The last record this thread could not write, for its control write. */
static __thread int last_error;

int kfs_state_take_error(void)
{
	int r = last_error;

	last_error = 0;
	return r;
}

int kfs_state_save_job(void *opaque, uint64_t id, const char *rec,
		       uint64_t done)
{
	struct kfs *fs = opaque;
	int r = kfs_state_save(fs->state, id, rec, done);

	if (r) {
		last_error = r;
		kfs_log(fs, LOG_ERR, "state %s: cannot record job %" PRIu64
			": %s", fs->state->dir, id, strerror(-r));
	}
	return r;
}

void kfs_state_forget_job(void *opaque, uint64_t id)
{
	struct kfs *fs = opaque;
	int r = kfs_state_forget(fs->state, id);

	if (r && r != -ENOENT)
		kfs_log(fs, LOG_ERR, "state %s: cannot remove the record of "
			"job %" PRIu64 ": %s", fs->state->dir, id,
			strerror(-r));
}
