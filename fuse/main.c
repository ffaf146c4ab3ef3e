/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopydfs: options, devices, the mount, and the order of teardown.
 *
 * Thread model: main() runs on the main thread, which mounts, runs the
 * FUSE session loop (its workers are other threads) and, once the loop
 * has returned, tears everything down in an order that lets jobs finish
 * and never writes to a dead session: stop answering sync writes and stop
 * the notifier, unmount (which closes the session's fd), wait for the jobs
 * (kcopyd_client_destroy; under --state the jobs are first stopped, their
 * records kept), destroy the session.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "kcopydfs.h"

struct dev_spec {
	char *name;
	char *path;
	int fd;			/* an O_PATH fd of an image directory's file,
				   or -1 */
	bool read_only;			/* NAME:ro=PATH */
};

struct fault_spec {
	char name[KFS_MAX_NAME + 1];
	struct kcopyd_fault fault;
};

struct options {
	struct dev_spec *devs;
	unsigned int ndevs;
	struct fault_spec *faults;
	unsigned int nfaults;
	struct kfs_clone_spec *clones;
	unsigned int nclones;
	char *image_dir;
	char *pidfile;
	char *state_dir;
	char *args[2];			/* [IMAGE_DIR] MOUNTPOINT */
	unsigned int nargs;
	unsigned int pages;
	unsigned int keep;
	unsigned int max_queue;
	struct kcopyd_options engine;
	struct kfs_cmd throttle;	/* --throttle, as the command */
	bool allow_other;
	bool fsname;			/* the user gave -o fsname= */
	bool verbose;
	bool no_passthrough;
	bool read_only;			/* -o ro, -r: every image */
	bool bad;
};

/*
 * Every kcopydfs option has three spellings: "--name VALUE",
 * "--name=VALUE" and "-o name=VALUE" (for fstab and mount units).
 */
enum {
	KEY_DEV,
	KEY_IMAGE_DIR,
	KEY_PAGES,
	KEY_THREADS,
	KEY_SUBJOB,
	KEY_KEEP,
	KEY_MAX_QUEUE,
	KEY_FAULT,
	KEY_PIDFILE,
	KEY_THROTTLE,
	KEY_CLONE,
	KEY_STATE,
	KEY_VALUED_END,
	KEY_ALLOW_OTHER = KEY_VALUED_END,
	KEY_FSNAME,
	KEY_VERBOSE,
	KEY_DEFAULTS,
	KEY_NO_PASSTHROUGH,
	KEY_RO,
};

#define OPT3(name, key) \
	FUSE_OPT_KEY("--" name "=", key), FUSE_OPT_KEY("--" name " ", key), \
	FUSE_OPT_KEY(name "=", key)

static const struct fuse_opt opt_spec[] = {
	OPT3("dev", KEY_DEV),
	OPT3("image-dir", KEY_IMAGE_DIR),
	OPT3("pages", KEY_PAGES),
	OPT3("threads", KEY_THREADS),
	OPT3("subjob-size", KEY_SUBJOB),
	OPT3("keep", KEY_KEEP),
	OPT3("max-queue", KEY_MAX_QUEUE),
	OPT3("fault", KEY_FAULT),
	OPT3("clone", KEY_CLONE),
	OPT3("pidfile", KEY_PIDFILE),
	OPT3("throttle", KEY_THROTTLE),
	OPT3("state", KEY_STATE),
	FUSE_OPT_KEY("-P ", KEY_PIDFILE),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("fsname=", KEY_FSNAME),
	FUSE_OPT_KEY("verbose", KEY_VERBOSE),
	FUSE_OPT_KEY("--verbose", KEY_VERBOSE),
	/* mount.fuse3 may pass it on; it means nothing here. */
	FUSE_OPT_KEY("defaults", KEY_DEFAULTS),
	FUSE_OPT_KEY("--no-passthrough", KEY_NO_PASSTHROUGH),
	FUSE_OPT_KEY("no-passthrough", KEY_NO_PASSTHROUGH),
	/* Not the kernel's ro: control must stay writable. */
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("-r", KEY_RO),
	FUSE_OPT_KEY("--read-only", KEY_RO),
	FUSE_OPT_END
};

static const char *const opt_names[] = {
	[KEY_DEV] = "dev", [KEY_IMAGE_DIR] = "image-dir",
	[KEY_PAGES] = "pages", [KEY_THREADS] = "threads",
	[KEY_SUBJOB] = "subjob-size", [KEY_KEEP] = "keep",
	[KEY_MAX_QUEUE] = "max-queue", [KEY_FAULT] = "fault",
	[KEY_PIDFILE] = "pidfile", [KEY_THROTTLE] = "throttle",
	[KEY_CLONE] = "clone", [KEY_STATE] = "state",
};

/* --throttle V: the control file's "throttle V". */
static int parse_throttle_option(const char *v, struct kfs_cmd *cmd)
{
	char line[128], msg[256];
	int n = snprintf(line, sizeof(line), "throttle %s", v);

	if (n < 0 || (size_t)n >= sizeof(line) || strchr(v, ' '))
		return -EINVAL;
	return kfs_parse_line(line, (size_t)n, NULL, cmd, msg, sizeof(msg));
}

static void usage(const char *prog)
{
	printf("usage: %s [options] [IMAGE_DIR] MOUNTPOINT\n\n"
	       "Every file of IMAGE_DIR is a device; attach takes images\n"
	       "from there.  Each --name VALUE is also -o name=VALUE.\n\n"
	       "kcopydfs options:\n"
	       "    --dev NAME[:ro]=PATH   a device (repeatable); :ro opens\n"
	       "                           it read-only\n"
	       "    -r, -o ro              every device read-only\n"
	       "    --image-dir DIR        the image directory (as IMAGE_DIR)\n"
	       "    --pages N              copy buffer pages of 4 KiB (1024)\n"
	       "    --threads N            engine I/O threads (2)\n"
	       "    --subjob-size SIZE     bytes per sub-job, K/M (512K)\n"
	       "    --keep N               finished jobs kept (1000)\n"
	       "    --max-queue N          queued and running jobs (4096)\n"
	       "    --throttle RATE|PCT%%   limit the engine: bytes per second\n"
	       "                           (64M) or a share of the time (50%%)\n"
	       "    --fault NAME:OP:START+COUNT[:KIND]\n"
	       "                           OP read|write|rw; KIND an errno,\n"
	       "                           short, corrupt or delay=USEC (EIO)\n"
	       "    --clone NAME=SOURCE:DEST:META[:OPT]...\n"
	       "                           dev/NAME reads as SOURCE at once,\n"
	       "                           copied to DEST in the background;\n"
	       "                           META holds its map; OPT\n"
	       "                           region=SIZE (64K), commit=SECONDS\n"
	       "                           (1) or paused\n"
	       "    --state DIR            keep the jobs in DIR: they survive\n"
	       "                           a crash or an unmount, and the\n"
	       "                           next mount with DIR resumes them\n"
	       "    --no-passthrough       dev/NAME I/O through the daemon\n"
	       "    -P, --pidfile PIDFILE  write the pid once serving\n"
	       "    --verbose              log every job, not failures only\n"
	       "\n",
	       prog);
}

/*
 * The value of "--name=VALUE", "--nameVALUE" (fuse_opt's form of
 * "--name VALUE"), "-PVALUE" or "name=VALUE".
 */
static const char *opt_value(const char *arg, int key)
{
	const char *v;

	if (!strncmp(arg, "--", 2))
		v = arg + 2 + strlen(opt_names[key]);
	else if (!strncmp(arg, "-P", 2))
		v = arg + 2;
	else
		v = arg + strlen(opt_names[key]);
	return *v == '=' ? v + 1 : v;
}

static int parse_uint(const char *s, unsigned int min, unsigned int max,
		      unsigned int *out)
{
	uint64_t v;

	if (kfs_parse_size(s, &v) || v < min || v > max)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

static int add_dev_spec(struct options *o, const char *name, size_t len,
			const char *path, int fd, bool ro)
{
	struct dev_spec *n;

	n = realloc(o->devs, sizeof(*n) * (o->ndevs + 1));
	if (!n)
		return -ENOMEM;
	o->devs = n;
	n[o->ndevs].name = strndup(name, len);
	n[o->ndevs].path = strdup(path);
	n[o->ndevs].fd = fd;
	n[o->ndevs].read_only = ro;
	o->ndevs++;
	if (!n[o->ndevs - 1].name || !n[o->ndevs - 1].path)
		return -ENOMEM;
	return 0;
}

static int add_dev(struct options *o, const char *spec)
{
	const char *eq = strchr(spec, '=');
	size_t name_len = eq ? (size_t)(eq - spec) : 0;
	bool ro = name_len > 3 && !memcmp(eq - 3, ":ro", 3);

	if (ro)
		name_len -= 3;
	if (!eq || !kfs_valid_name(spec, name_len) || !eq[1]) {
		fprintf(stderr, "kcopydfs: dev '%s' is not NAME[:ro]=PATH with "
				"NAME 1 to %d of [A-Za-z0-9_.-], not . or ..\n",
			spec, KFS_MAX_NAME);
		return -EINVAL;
	}
	return add_dev_spec(o, spec, name_len, eq + 1, -1, ro);
}

static int add_fault(struct options *o, const char *spec)
{
	struct fault_spec *n;
	char msg[256];

	n = realloc(o->faults, sizeof(*n) * (o->nfaults + 1));
	if (!n)
		return -ENOMEM;
	o->faults = n;
	if (kfs_parse_fault(spec, n[o->nfaults].name,
			    sizeof(n[o->nfaults].name), &n[o->nfaults].fault,
			    msg, sizeof(msg))) {
		fprintf(stderr, "kcopydfs: fault: %s\n", msg);
		return -EINVAL;
	}
	o->nfaults++;
	return 0;
}

static int add_clone(struct options *o, const char *spec)
{
	struct kfs_clone_spec *n;
	char msg[256];

	n = realloc(o->clones, sizeof(*n) * (o->nclones + 1));
	if (!n)
		return -ENOMEM;
	o->clones = n;
	if (kfs_clone_parse(spec, &n[o->nclones], msg, sizeof(msg))) {
		fprintf(stderr, "kcopydfs: %s\n", msg);
		return -EINVAL;
	}
	o->nclones++;
	return 0;
}

static int set_string(char **s, const char *v)
{
	free(*s);
	*s = strdup(v);
	return *s ? 0 : -ENOMEM;
}

/* [IMAGE_DIR] MOUNTPOINT: kept here, handed to libfuse after parsing. */
static int add_nonopt(struct options *o, const char *arg)
{
	if (o->nargs == 2) {
		fprintf(stderr, "kcopydfs: extra argument '%s' (usage: "
			"kcopydfs [options] [IMAGE_DIR] MOUNTPOINT)\n", arg);
		return -EINVAL;
	}
	o->args[o->nargs] = strdup(arg);
	if (!o->args[o->nargs])
		return -ENOMEM;
	o->nargs++;
	return 0;
}

/* Returns 1 to hand the argument on to libfuse, 0 when it is ours. */
static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct options *o = data;
	const char *v;
	uint64_t size;
	int r = 0;

	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (add_nonopt(o, arg))
			o->bad = true;
		return 0;
	case KEY_ALLOW_OTHER:
		o->allow_other = true;
		return 1;
	case KEY_FSNAME:
		o->fsname = true;
		return 1;
	case KEY_VERBOSE:
		o->verbose = true;
		return 0;
	case KEY_NO_PASSTHROUGH:
		o->no_passthrough = true;
		return 0;
	case KEY_RO:
		o->read_only = true;
		return 0;
	case KEY_DEFAULTS:
		return 0;
	}
	if (key < 0 || key >= KEY_VALUED_END)
		return 1;
	v = opt_value(arg, key);
	switch (key) {
	case KEY_DEV:
		r = add_dev(o, v);
		break;
	case KEY_IMAGE_DIR:
		r = set_string(&o->image_dir, v);
		break;
	case KEY_PAGES:
		r = parse_uint(v, 1, 1u << 24, &o->pages);
		break;
	case KEY_THREADS:
		r = parse_uint(v, 1, 256, &o->engine.threads);
		break;
	case KEY_SUBJOB:
		r = kfs_parse_size(v, &size);
		if (!r && (!size || size % KCOPYD_PAGE_SIZE ||
			   size > 16 * 1024 * 1024))
			r = -EINVAL;
		o->engine.subjob_size = (unsigned int)size;
		break;
	case KEY_KEEP:
		r = parse_uint(v, 0, UINT_MAX, &o->keep);
		break;
	case KEY_MAX_QUEUE:
		r = parse_uint(v, 1, 1u << 20, &o->max_queue);
		break;
	case KEY_FAULT:
		r = add_fault(o, v);
		break;
	case KEY_PIDFILE:
		r = set_string(&o->pidfile, v);
		break;
	case KEY_THROTTLE:
		r = parse_throttle_option(v, &o->throttle);
		break;
	case KEY_CLONE:
		r = add_clone(o, v);
		break;
	case KEY_STATE:
		r = *v ? set_string(&o->state_dir, v) : -EINVAL;
		break;
	}
	if (r) {
		if (key != KEY_DEV && key != KEY_FAULT && key != KEY_CLONE)
			fprintf(stderr, "kcopydfs: bad value '%s' for %s\n", v,
				opt_names[key]);
		o->bad = true;
	}
	return 0;
}

/*
 * Two arguments are IMAGE_DIR MOUNTPOINT (the source and target that
 * mount(8) and mount.fuse3 pass); the mount point goes on to libfuse.
 */
static int place_args(struct fuse_args *args, struct options *o)
{
	if (o->nargs == 2) {
		if (o->image_dir) {
			fprintf(stderr, "kcopydfs: image directory given "
				"twice: '%s' and image-dir=%s\n", o->args[0],
				o->image_dir);
			return -EINVAL;
		}
		o->image_dir = o->args[0];
		o->args[0] = NULL;
	}
	if (o->nargs && fuse_opt_add_arg(args, o->args[o->nargs - 1]))
		return -ENOMEM;
	return 0;
}

static int image_filter(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

/* Make a device of a spec and attach it. */
static int add_one(struct kfs *fs, const struct options *o,
		   const struct dev_spec *spec)
{
	const char *name = spec->name;
	struct kfs_dev *d;
	bool faults = false;
	char msg[512], proc[64];
	int r;

	/* An image directory's file: the very file checked there. */
	if (spec->fd >= 0)
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", spec->fd);
	r = kfs_dev_new(fs, name, spec->path, spec->fd >= 0 ? proc : NULL,
			-1, o->read_only || spec->read_only, &d, msg,
			sizeof(msg));
	if (!r) {
		for (unsigned int j = 0; j < o->nfaults; j++)
			faults |= !strcmp(o->faults[j].name, d->name);
		kfs_pt_dev_setup(fs, d, faults);
		d->pt_ready = true;
		r = kfs_dev_attach(fs, d, msg, sizeof(msg));
		if (r)
			kfs_dev_free(d);
	}
	if (r)
		fprintf(stderr, "kcopydfs: %s\n", msg);
	return r;
}

/*
 * name in the directory dfd, as an O_PATH fd, never by a path that leaves
 * the directory: a symbolic link may point at another file of it, not at
 * /etc/passwd (which a root daemon would then serve, writable).  Without
 * openat2(2), no symbolic link is followed at all.
 */
static int open_beneath(int dfd, const char *name)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dfd, name, &how, sizeof(how));

	if (fd < 0 && (errno == ENOSYS || errno == EPERM))
		fd = openat(dfd, name, O_PATH | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : (int)fd;
}

static void skip_image(const char *dir, const char *name, const char *why)
{
	fprintf(stderr, "kcopydfs: image directory %s: skipping '%s': %s\n",
		dir, name, why);
}

/*
 * One entry of the image directory: a device if it is a regular file,
 * inside the directory, with a usable name; anything else is skipped,
 * with a warning when it looks meant to be an image.
 */
static int add_image(struct options *o, const char *dir, int dfd,
		     const char *name)
{
	char *path;
	struct stat st;
	int fd, r;

	if (!kfs_valid_name(name, strlen(name))) {
		skip_image(dir, name, "not a device name (1 to 64 of "
			   "[A-Za-z0-9_.-])");
		return 0;
	}
	fd = open_beneath(dfd, name);
	if (fd == -EXDEV || fd == -ELOOP) {
		skip_image(dir, name, "a symbolic link out of the directory");
		return 0;
	}
	if (fd < 0) {
		skip_image(dir, name, strerror(-fd));
		return 0;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		if (S_ISLNK(st.st_mode))
			skip_image(dir, name, "a symbolic link");
		close(fd);
		return 0;
	}
	if (asprintf(&path, "%s/%s", dir, name) < 0) {
		close(fd);
		return -ENOMEM;
	}
	r = add_dev_spec(o, name, strlen(name), path, fd, false);
	free(path);
	if (r)
		close(fd);
	return r;
}

/* Every regular file of the directory, in name order. */
static int add_image_dir(struct options *o, const char *dir)
{
	struct dirent **list;
	int dfd, n, r = 0;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	n = dfd < 0 ? -1 : scandir(dir, &list, image_filter, alphasort);
	if (n < 0) {
		r = -errno;
		fprintf(stderr, "kcopydfs: image directory %s: %s\n", dir,
			strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return r;
	}
	for (int i = 0; i < n; i++) {
		if (!r)
			r = add_image(o, dir, dfd, list[i]->d_name);
		free(list[i]);
	}
	free(list);
	close(dfd);
	return r;
}

/*
 * The devices of the command line, then the image directory's, attached
 * before the session runs.
 */
static int open_devs(struct kfs *fs, const struct options *o)
{
	int r;

	r = kfs_devs_init(fs);
	if (r)
		return r;
	kfs_pt_setup(fs, o->no_passthrough);
	for (unsigned int i = 0; i < o->ndevs && !r; i++)
		r = add_one(fs, o, &o->devs[i]);
	if (r)
		return r;
	if (!fs->ndevs && !fs->image_dir) {
		fprintf(stderr, "kcopydfs: no device: give IMAGE_DIR or "
				"dev=NAME=PATH\n");
		return -EINVAL;
	}
	for (unsigned int i = 0; i < o->nfaults; i++) {
		const char *name = o->faults[i].name;
		int slot = kfs_dev_find(fs, name, strlen(name));

		if (slot < 0) {
			fprintf(stderr, "kcopydfs: fault: unknown device "
				"'%s'\n", name);
			return -ENOENT;
		}
		r = kcopyd_bdev_add_fault(fs->devs[slot]->bdev,
					  &o->faults[i].fault);
		if (r) {
			fprintf(stderr, "kcopydfs: fault: %s\n",
				strerror(-r));
			return r;
		}
	}
	/* Clones last: they are made over the devices above. */
	for (unsigned int i = 0; i < o->nclones; i++) {
		char msg[512];

		r = kfs_clone_create(fs, &o->clones[i], msg, sizeof(msg));
		if (r) {
			fprintf(stderr, "kcopydfs: %s\n", msg);
			return r;
		}
	}
	return 0;
}

/* Each clone, hydrating (after any fork) or no more (at the end). */
static int clones_start(struct kfs *fs)
{
	int r = 0;

	for (unsigned int i = 0; !r && i < fs->ndevs; i++)
		if (fs->devs[i] && fs->devs[i]->clone)
			r = kfs_clone_start(fs->devs[i]->clone);
	return r;
}

static void clones_quiesce(struct kfs *fs)
{
	for (unsigned int i = 0; fs->devs && i < fs->ndevs; i++)
		if (fs->devs[i] && fs->devs[i]->clone)
			kfs_clone_quiesce(fs->devs[i]->clone);
}

/* attach opens images beneath the image directory, by this fd. */
static int open_image_dir(struct kfs *fs, const char *dir)
{
	fs->image_dirfd = -1;
	if (!dir)
		return 0;
	fs->image_dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fs->image_dirfd < 0) {
		fprintf(stderr, "kcopydfs: image directory %s: %s\n", dir,
			strerror(errno));
		return -errno;
	}
	fs->image_dir = dir;
	return 0;
}

static int write_pidfile(const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f)) {
		fprintf(stderr, "kcopydfs: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Jobs still running at unmount are let finish, and each is logged; under
 * --state they are stopped instead, their records kept for the next
 * mount.
 */
static void finish_jobs(struct kfs *fs)
{
	uint64_t *ids = NULL;
	size_t n = 0;
	char line[512];

	if (kfs_table_unfinished(fs->table, &ids, &n))
		n = 0;
	for (size_t i = 0; i < n; i++)
		kfs_log(fs, LOG_NOTICE, fs->state ?
			"job %llu not finished at unmount; stopping it" :
			"job %llu not finished at unmount; waiting for it",
			(unsigned long long)ids[i]);
	if (fs->state)
		kfs_table_park(fs->table);
	kcopyd_client_destroy(fs->kc);
	fs->kc = NULL;
	for (size_t i = 0; i < n; i++) {
		if (kfs_table_describe(fs->table, ids[i], line, sizeof(line)))
			snprintf(line, sizeof(line), "id=%llu (dropped)",
				 (unsigned long long)ids[i]);
		kfs_log(fs, LOG_NOTICE, fs->state ?
			"kept in state %s for the next mount: %s" :
			"finished after unmount: %s%s",
			fs->state ? fs->state->dir : "", line);
	}
	free(ids);
}

/* fsname: the user's, else the image directory, as mount(8) shows it. */
static int add_mount_opts(struct fuse_args *args, const struct options *o)
{
	char *esc = NULL, *opt = NULL;
	int r;

	if (asprintf(&opt, "-omax_read=%d,subtype=kcopydfs", KFS_MAX_READ) < 0)
		return -ENOMEM;
	r = fuse_opt_add_arg(args, opt);
	free(opt);
	if (r)
		return -ENOMEM;
	if (!o->fsname) {
		/* A comma in the directory's name must not split the option. */
		if (fuse_opt_add_opt_escaped(&esc, o->image_dir ?
					     o->image_dir : "kcopydfs"))
			return -ENOMEM;
		if (asprintf(&opt, "-ofsname=%s", esc) < 0)
			opt = NULL;
		free(esc);
		r = opt ? fuse_opt_add_arg(args, opt) : -ENOMEM;
		free(opt);
		if (r)
			return -ENOMEM;
	}
	/* Mode bits are checked only with default_permissions. */
	if (o->allow_other && fuse_opt_add_arg(args, "-odefault_permissions"))
		return -ENOMEM;
	if (geteuid() == 0 && fuse_opt_add_arg(args, "-onosuid,nodev"))
		return -ENOMEM;
	return 0;
}

/*
 * The engine's threads are started here, after any fork, and the pidfile
 * is written once they run and the mount is there: so whoever waits for
 * the pidfile finds a mount that serves.
 */
static int start_serving(struct kfs *fs, const struct options *o)
{
	struct kfs_table_ops tops = {
		.changed = kfs_changed,
		.finished = kfs_sync_finished,
		.ended = kfs_job_ended,
		.hold = kfs_dev_hold,
		.unhold = kfs_dev_unhold,
		.dev_name = kfs_dev_name,
		.opaque = fs,
	};
	int r;

	r = kcopyd_client_create_opts(o->pages, &o->engine, &fs->kc);
	if (r) {
		fprintf(stderr, "kcopydfs: engine: %s\n", strerror(-r));
		return r;
	}
	kcopyd_client_set_throttle(fs->kc, o->throttle.rate,
				   o->throttle.percent);
	if (fs->state) {
		tops.describe = kfs_state_describe;
		tops.save = kfs_state_save_job;
		tops.forget = kfs_state_forget_job;
	}
	r = kfs_table_create(fs->kc, o->keep, o->max_queue,
			     fs->state ? kfs_state_next_id(fs->state) : 1,
			     &tops, &fs->table);
	/* Resumed jobs are queued before the mount serves. */
	if (!r && fs->state)
		r = kfs_state_resume(fs);
	if (!r)
		r = clones_start(fs);
	if (!r)
		r = kfs_notifier_start(fs);
	if (!r)
		r = kfs_stopper_start(fs);
	if (!r && o->pidfile && write_pidfile(o->pidfile))
		r = -EIO;
	return r;
}

/* The daemon runs in /: a relative path must not change meaning. */
static int absolute_path(char **path)
{
	char cwd[PATH_MAX], *abs;

	if ((*path)[0] == '/')
		return 0;
	if (!getcwd(cwd, sizeof(cwd)) ||
	    asprintf(&abs, "%s/%s", cwd, *path) < 0) {
		fprintf(stderr, "kcopydfs: %s: %s\n", *path, strerror(errno));
		return -1;
	}
	free(*path);
	*path = abs;
	return 0;
}

/* The image directory, absolute and without symbolic links. */
static int real_path(char **path)
{
	char *real = realpath(*path, NULL);

	if (!real) {
		fprintf(stderr, "kcopydfs: image directory %s: %s\n", *path,
			strerror(errno));
		return -1;
	}
	free(*path);
	*path = real;
	return 0;
}

static void null_stdio(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/*
 * Go to the background as fuse_daemonize() does, but let the parent exit
 * only once the child serves (or has failed: then the parent exits 1).
 * Returns 0 in the child, or -errno.
 */
static int daemonize_and_serve(struct kfs *fs, const struct options *o)
{
	int pfd[2];
	char status = 1;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(pfd[1]);
		if (read(pfd[0], &status, 1) != 1)
			status = 1;
		_exit(status);
	}
	close(pfd[0]);
	setsid();
	status = start_serving(fs, o) ? 1 : 0;
	if (chdir("/"))
		status = 1;
	if (!status) {
		openlog("kcopydfs", LOG_PID, LOG_DAEMON);
		null_stdio();
	}
	if (write(pfd[1], &status, 1) != 1)
		status = 1;
	close(pfd[1]);
	return status ? -EIO : 0;
}

/* The start line: what serves where, and how dev/NAME's I/O may go. */
static void log_start(struct kfs *fs, const char *mnt)
{
	char names[1024] = "";
	size_t n = 0;

	for (unsigned int i = 0; i < fs->ndevs && n < sizeof(names); i++)
		n += (size_t)snprintf(names + n, sizeof(names) - n, " %s",
				      fs->devs[i]->name);
	if (n >= sizeof(names))
		strcpy(names + sizeof(names) - 5, " ...");
	kfs_log(fs, LOG_INFO, "kcopydfs %s (libkcopyd %s) serving %s on %s: "
		"%u device%s%s; passthrough %s", PACKAGE_VERSION,
		kcopyd_version(), fs->image_dir ? fs->image_dir : "devices",
		mnt, fs->ndevs, fs->ndevs == 1 ? "" : "s", names,
		fs->pt.disabled ? "off" :
		fs->pt.sys_admin ? "if the kernel offers it" :
		"off (no CAP_SYS_ADMIN)");
}

static void log_stop(struct kfs *fs, const char *mnt)
{
	struct kfs_counts c;

	kfs_table_counts(fs->table, &c);
	kfs_log(fs, LOG_INFO, "kcopydfs stopped on %s: %llu jobs done, "
		"%llu failed, %llu cancelled", mnt, (unsigned long long)c.done,
		(unsigned long long)c.failed, (unsigned long long)c.cancelled);
}

static int run(struct fuse_args *args, struct options *o)
{
	struct fuse_cmdline_opts fo = { 0 };
	struct fuse_loop_config *cfg = NULL;
	struct kfs fs = { 0 };
	bool mounted = false;
	int r, ret = 1;

	if (fuse_parse_cmdline(args, &fo) != 0)
		return 1;
	if (fo.show_help) {
		usage(args->argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out_opts;
	}
	if (fo.show_version) {
		printf("kcopydfs %s (libkcopyd %s)\n", PACKAGE_VERSION,
		       kcopyd_version());
		fuse_lowlevel_version();
		ret = 0;
		goto out_opts;
	}
	if (!fo.mountpoint) {
		fprintf(stderr, "usage: kcopydfs [options] [IMAGE_DIR] "
				"MOUNTPOINT (--help for more)\n");
		goto out_opts;
	}
	if (o->image_dir && (real_path(&o->image_dir) ||
			     add_image_dir(o, o->image_dir)))
		goto out_opts;
	if (o->pidfile && absolute_path(&o->pidfile))
		goto out_opts;
	if (o->state_dir && absolute_path(&o->state_dir))
		goto out_opts;

	clock_gettime(CLOCK_REALTIME, &fs.mounted);
	fs.uid = getuid();
	fs.gid = getgid();
	fs.dev_mode = o->allow_other ? 0660 : 0600;
	fs.foreground = fo.foreground;
	fs.verbose = o->verbose || fo.debug;
	fs.keep = o->keep;
	fs.max_queue = o->max_queue;
	pth(pthread_mutex_init(&fs.plock, NULL));
	pth(sem_init(&fs.kick, 0, 0) ? errno : 0);
	pth(pthread_mutex_init(&fs.reply_lock, NULL));
	pth(pthread_mutex_init(&fs.hlock, NULL));
	list_init(&fs.pollers);
	list_init(&fs.open);
	list_init(&fs.waiters);
	pth(pthread_cond_init(&fs.stop_cond, NULL));
	pth(sem_init(&fs.stop_sem, 0, 0) ? errno : 0);

	if (open_image_dir(&fs, o->image_dir) || open_devs(&fs, o) ||
	    kfs_finished_create(o->keep, &fs.finished))
		goto out_devs;
	if (o->state_dir) {
		char msg[PATH_MAX + 128];

		if (kfs_state_open(o->state_dir, &fs.state, msg, sizeof(msg))) {
			fprintf(stderr, "kcopydfs: %s\n", msg);
			goto out_devs;
		}
	}
	if (add_mount_opts(args, o))
		goto out_devs;
	fs.se = fuse_session_new(args, &kfs_ops, sizeof(kfs_ops), &fs);
	if (!fs.se)
		goto out_devs;
	if (kfs_signals_install(&fs))
		goto out_session;
	if (fuse_session_mount(fs.se, fo.mountpoint))
		goto out_signals;
	mounted = true;
	r = kfs_pt_session(&fs);
	if (r) {
		fprintf(stderr, "kcopydfs: passthrough: %s\n", strerror(-r));
		goto out_unmount;
	}
	if (fo.foreground)
		r = start_serving(&fs, o);
	else
		r = daemonize_and_serve(&fs, o);
	if (r)
		goto out_unmount;
	log_start(&fs, fo.mountpoint);

	cfg = fuse_loop_cfg_create();
	if (!cfg)
		goto out_unmount;
	if (fo.singlethread) {
		r = fuse_session_loop(fs.se);
	} else {
		fuse_loop_cfg_set_clone_fd(cfg, (unsigned int)fo.clone_fd);
		fuse_loop_cfg_set_max_threads(cfg, fo.max_threads);
		r = fuse_session_loop_mt(fs.se, cfg);
	}
	/* Ended by a signal or an unmount: a clean end. */
	ret = r < 0 ? 1 : 0;
	if (r < 0)
		kfs_log(&fs, LOG_ERR, "session loop: %s", strerror(-r));

out_unmount:
	kfs_stopper_stop(&fs);
	/* Nothing may write to the session's fd once unmount closes it. */
	kfs_session_over(&fs);
	kfs_notifier_stop(&fs);
	if (mounted)
		fuse_session_unmount(fs.se);
	clones_quiesce(&fs);
	if (fs.kc && fs.table) {
		finish_jobs(&fs);
		log_stop(&fs, fo.mountpoint);
	}
	kfs_release_all(&fs);
out_signals:
	kfs_signals_remove();
out_session:
	fuse_session_destroy(fs.se);
out_devs:
	clones_quiesce(&fs);
	if (fs.kc)
		kcopyd_client_destroy(fs.kc);
	kfs_state_close(fs.state, fs.table ? kfs_table_next_id(fs.table) : 0);
	kfs_table_free(fs.table);
	kfs_finished_free(fs.finished);
	kfs_devs_free(&fs);
	if (fs.image_dirfd > 0)
		close(fs.image_dirfd);
	pth(sem_destroy(&fs.kick) ? errno : 0);
	pth(sem_destroy(&fs.stop_sem) ? errno : 0);
	pth(pthread_cond_destroy(&fs.stop_cond));
	pth(pthread_mutex_destroy(&fs.plock));
	pth(pthread_mutex_destroy(&fs.reply_lock));
	pth(pthread_mutex_destroy(&fs.hlock));
	if (ret == 0 && o->pidfile)
		unlink(o->pidfile);
	if (cfg)
		fuse_loop_cfg_destroy(cfg);
out_opts:
	free(fo.mountpoint);
	return ret;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {
		.pages = 1024,
		.keep = 1000,
		.max_queue = 4096,
	};
	int ret = 1;

	if (!fuse_opt_parse(&args, &o, opt_spec, opt_proc) && !o.bad &&
	    !place_args(&args, &o))
		ret = run(&args, &o);
	for (unsigned int i = 0; i < o.ndevs; i++) {
		free(o.devs[i].name);
		free(o.devs[i].path);
		if (o.devs[i].fd >= 0)
			close(o.devs[i].fd);
	}
	free(o.devs);
	free(o.faults);
	free(o.clones);
	free(o.image_dir);
	free(o.pidfile);
	free(o.state_dir);
	free(o.args[0]);
	free(o.args[1]);
	fuse_opt_free_args(&args);
	return ret;
}
