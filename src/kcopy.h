/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopy: definitions shared by the files of the command-line copier.
 */
#ifndef KCOPY_H
#define KCOPY_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "kcopyd.h"
#include "size.h"

/* Exit statuses, as kcopy(1) documents them. */
#define EXIT_USAGE		1
#define EXIT_READ_ERR		2
#define EXIT_WRITE_ERR		3
#define EXIT_BOTH_ERR		4
#define EXIT_VERIFY_ERR		5
#define EXIT_INTERRUPTED	130

/* --- Options ------------------------------------------------------------ */

#define DEFAULT_PAGES	1024		/* --pages when not given */

struct options {
	unsigned int pages;		/* client page pool, 4 KiB pages; 0: default */
	unsigned int threads;		/* 0: the engine's default */
	unsigned int subjob_size;	/* bytes; 0: the engine's default */
	bool ignore_errors;
	bool write_seq;
	bool direct;			/* O_DIRECT on every device */
	bool fsync;			/* KCOPYD_FLUSH: durable before done */
	uint64_t rate;			/* --rate bytes per second; 0: none */
	int progress_fd;		/* --progress=fd:N; -1: none */
	bool zero;
	unsigned int sparse_size;	/* zero detection; 0: the default */
	bool no_zero_detect;		/* --sparse=0 */
	bool allocated;			/* --allocated */
	bool target_zero;		/* --target-is-zero */
	bool verify;			/* --verify */
	bool checksum;			/* --checksum */
	const char *map;		/* --map FILE */
	bool retry_bad;			/* --retry-bad */
	int verbose;			/* -1 with -q, 1 with -v */
	double progress_interval;	/* --progress seconds; 0: not asked */
	const char *mount;		/* mount mode when non-NULL */
};

/* Report to stderr with the "kcopy: " prefix. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * --checksum: "xxh3-64-blocks:HEX  SRC" on stdout, as sha256sum prints a
 * file's; with hex NULL, say that the source was not read in full.
 */
void print_checksum(const char *hex, const char *src);

/* --- Numbers and ranges (spec.c) ------------------------------------------ */

/* As size_parse() (size.h), in whole sectors: -EDOM if not a multiple
 * of 512. */
int parse_sectors(const char *s, sector_t *sectors);

/* A command-line operand PATH[:START[+COUNT]]. */
struct operand {
	const char *token;		/* as given */
	char *path;			/* malloc'd */
	sector_t start;
	sector_t count;
	bool has_count;
};

/*
 * Split a token at its last ':' when what follows is a range (or empty,
 * which names the path before it with no range); otherwise the whole
 * token is the path.  Prints a message naming the token on error.
 * Returns 0, -EINVAL or -ENOMEM.
 */
int parse_operand(const char *token, struct operand *op);

/* Human-readable bytes, "1.50 GiB", into buf. */
const char *format_bytes(uint64_t bytes, char *buf, size_t len);

/* --- Progress (progress.c) ------------------------------------------------ */

enum progress_mode {
	PROGRESS_NONE,
	PROGRESS_TTY,			/* a live line, rewritten in place */
	PROGRESS_LINES,			/* one plain line per interval */
	PROGRESS_FD,			/* "N/100" lines to a descriptor */
};

#define PROGRESS_SAMPLES	16

struct progress {
	enum progress_mode mode;
	double interval;		/* seconds between updates */
	uint64_t total;			/* bytes */
	atomic_uint_least64_t done;	/* bytes completed, any thread */
	struct timespec start;
	double last_print;		/* seconds since start */
	/* Recent (time, done) samples for the rate: main thread only. */
	double sample_t[PROGRESS_SAMPLES];
	uint64_t sample_done[PROGRESS_SAMPLES];
	unsigned int nr_samples;
	bool drawn;			/* a tty line is on the screen */
	bool dumb;			/* TERM=dumb: no escape sequences */
	int fd;				/* PROGRESS_FD: where to write */
	int last_pct;			/* PROGRESS_FD: the last one written */
};

/* Choose the mode from the options and isatty(2). */
void progress_init(struct progress *p, const struct options *o,
		   uint64_t total);

/* Add completed bytes: any thread, never blocks. */
static inline void progress_add(struct progress *p, uint64_t bytes)
{
	atomic_fetch_add_explicit(&p->done, bytes, memory_order_relaxed);
}

/* Milliseconds until the next update is due; -1 when there are none. */
int progress_timeout(const struct progress *p);

/* Print an update if one is due. */
void progress_tick(struct progress *p);

/* The final update (a last line; the tty line is ended). */
void progress_finish(struct progress *p);

/* Take the live line off the terminal before printing other messages. */
void progress_clear(struct progress *p);

/* The work began `secs` ago (it ran before we watched it). */
void progress_set_elapsed(struct progress *p, double secs);

/* Seconds since progress_init(). */
double progress_elapsed(const struct progress *p);

/* --- Signals ---------------------------------------------------------- */

/*
 * Block SIGINT and SIGTERM in this thread (and in every thread it creates
 * from now on), and return a signalfd that reads them, or -errno (with
 * nothing blocked).
 */
int signals_block(void);

/*
 * Close the signalfd (if fd >= 0) and unblock SIGINT and SIGTERM: one
 * that came in between now takes its default action.
 */
void signals_unblock(int fd);

/* --- Map files (map.c) --------------------------------------------------- */

/* A range of the copy, in bytes from its start, and its status. */
struct map_range {
	uint64_t pos, size;
	char st;			/* '+' finished, '-' failed, '?' not tried */
};

struct map {
	const char *path;
	char ident[2048];		/* the identity line, without "# " */
	uint64_t size;			/* bytes of the copy */
	struct map_range *r;		/* sorted, tiling [0, size) */
	size_t n, cap;
};

/*
 * Read the map at path, which must be of this copy (ident) and of `size`
 * bytes (*resumed true), or create it all untried (*resumed false).
 * Returns 0 or a negative errno, with a message said.
 */
int map_open(struct map *m, const char *path, const char *ident,
	     uint64_t size, bool *resumed);
/* Give [pos, pos + size) status st. */
int map_set(struct map *m, uint64_t pos, uint64_t size, char st);
/* Bytes with status st. */
uint64_t map_bytes(const struct map *m, char st);
/* Replace the file with the map (temp file, fsync, rename). */
int map_save(struct map *m);
void map_free(struct map *m);

/* --- Modes -------------------------------------------------------------- */

int direct_main(const struct options *o, int argc, char **argv);
int mount_main(const struct options *o, int argc, char **argv);

#endif /* KCOPY_H */
