/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The progress meter: a live line on a terminal, plain periodic lines, or
 * "N/100" lines on a descriptor for scripts (--progress=fd:N).  The live
 * line fits the terminal's width, and uses no escape sequence on
 * TERM=dumb.
 *
 * Thread model: progress_add() is called from engine worker threads and
 * only adds to the atomic `done`.  Everything else, including the rate
 * samples and all output, belongs to the main thread.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kcopy.h"

/* How often the live line on a terminal is redrawn. */
#define TTY_INTERVAL	0.25

/* The rate is measured over about this many seconds of recent samples. */
#define RATE_WINDOW	3.0

static double now_since(const struct timespec *start)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - start->tv_sec) +
	       (double)(t.tv_nsec - start->tv_nsec) / 1e9;
}

double progress_elapsed(const struct progress *p)
{
	return now_since(&p->start);
}

void progress_set_elapsed(struct progress *p, double secs)
{
	double shift = secs - progress_elapsed(p);
	struct timespec *t = &p->start;
	long long ns;

	if (shift <= 0)
		return;
	ns = (long long)(shift * 1e9);
	t->tv_sec -= ns / 1000000000;
	t->tv_nsec -= ns % 1000000000;
	if (t->tv_nsec < 0) {
		t->tv_nsec += 1000000000;
		t->tv_sec--;
	}
	/* Samples and the last update are relative to the old start. */
	for (unsigned int i = 0; i < p->nr_samples; i++)
		p->sample_t[i] += shift;
	p->last_print += shift;
}

void progress_init(struct progress *p, const struct options *o,
		   uint64_t total)
{
	memset(p, 0, sizeof(*p));
	atomic_init(&p->done, 0);
	p->total = total;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	p->mode = PROGRESS_NONE;
	p->last_pct = -1;
	if (o->progress_fd >= 0) {
		/* For a script: asked for, so even with -q. */
		p->mode = PROGRESS_FD;
		p->fd = o->progress_fd;
		p->interval = TTY_INTERVAL;
		return;
	}
	if (o->verbose < 0)
		return;
	if (o->progress_interval > 0) {
		p->mode = isatty(STDERR_FILENO) ? PROGRESS_TTY :
						  PROGRESS_LINES;
		p->interval = o->progress_interval;
	} else if (isatty(STDERR_FILENO)) {
		p->mode = PROGRESS_TTY;
	}
	if (p->mode == PROGRESS_TTY) {
		const char *term = getenv("TERM");

		p->interval = TTY_INTERVAL;
		p->dumb = !term || !strcmp(term, "dumb");
	}
}

/* The terminal's width, or 80 if it does not say. */
static unsigned int tty_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

/*
 * Go back to the start of the line and blank what was there: an escape
 * sequence, or on a dumb terminal spaces.
 */
static void tty_rewind(const struct progress *p)
{
	if (!p->dumb) {
		fputs("\r\033[K", stderr);
		return;
	}
	fputc('\r', stderr);
	for (unsigned int i = 1; i < tty_width(); i++)
		fputc(' ', stderr);
	fputc('\r', stderr);
}

/*
 * The live line, with as much as fits in the width (the last column is
 * left free, so no terminal wraps): the whole line, then without the
 * time, then without the rate, then the percentage alone.
 */
static void tty_line(const struct progress *p, const char *sdone,
		     const char *stotal, double pct, const char *srate,
		     const char *eta, bool final)
{
	unsigned int width = tty_width();
	char line[4][160];
	int i;

	snprintf(line[0], sizeof(line[0]), "%s / %s  %3.0f%%  %s/s  %s %s",
		 sdone, stotal, pct, srate, eta, final ? "elapsed" : "left");
	snprintf(line[1], sizeof(line[1]), "%s / %s  %3.0f%%  %s/s", sdone,
		 stotal, pct, srate);
	snprintf(line[2], sizeof(line[2]), "%s / %s  %3.0f%%", sdone, stotal,
		 pct);
	snprintf(line[3], sizeof(line[3]), "%3.0f%%", pct);
	for (i = 0; i < 3 && strlen(line[i]) + 1 > width; i++)
		;
	tty_rewind(p);
	fputs(line[i], stderr);
}

/* --progress=fd:N: a line each time the whole percentage moves. */
static void fd_line(struct progress *p, uint64_t done, bool final)
{
	int pct = p->total ? (int)(100 * done / p->total) : 100;
	char buf[16];
	int n;

	if (final)
		pct = 100;
	if (pct == p->last_pct)
		return;
	p->last_pct = pct;
	n = snprintf(buf, sizeof(buf), "%d/100\n", pct);
	/* A reader that went away must not stop the copy. */
	if (write(p->fd, buf, (size_t)n) != n)
		p->mode = PROGRESS_NONE;
}

int progress_timeout(const struct progress *p)
{
	double left;

	if (p->mode == PROGRESS_NONE)
		return -1;
	left = p->last_print + p->interval - progress_elapsed(p);
	return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/* Record a sample; return the recent rate in bytes per second. */
static double sample_rate(struct progress *p, double t, uint64_t done)
{
	unsigned int oldest;

	if (p->nr_samples == PROGRESS_SAMPLES) {
		memmove(p->sample_t, p->sample_t + 1,
			(PROGRESS_SAMPLES - 1) * sizeof(p->sample_t[0]));
		memmove(p->sample_done, p->sample_done + 1,
			(PROGRESS_SAMPLES - 1) * sizeof(p->sample_done[0]));
		p->nr_samples--;
	}
	p->sample_t[p->nr_samples] = t;
	p->sample_done[p->nr_samples] = done;
	p->nr_samples++;

	/* The oldest sample still inside the window. */
	for (oldest = 0; oldest + 1 < p->nr_samples; oldest++)
		if (t - p->sample_t[oldest] <= RATE_WINDOW)
			break;
	if (oldest + 1 < p->nr_samples && t - p->sample_t[oldest] > 0.1)
		return (double)(done - p->sample_done[oldest]) /
		       (t - p->sample_t[oldest]);
	return t > 0 ? (double)done / t : 0;
}

static void format_eta(double secs, char *buf, size_t len)
{
	unsigned long s;

	if (secs < 0 || secs > 99.0 * 3600) {
		snprintf(buf, len, "--:--");
		return;
	}
	s = (unsigned long)(secs + 0.5);
	if (s >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, len, "%lu:%02lu", s / 60, s % 60);
}

static void print(struct progress *p, bool final)
{
	uint64_t done = atomic_load_explicit(&p->done, memory_order_relaxed);
	double t = progress_elapsed(p);
	double rate, pct;
	char sdone[32], stotal[32], srate[32], eta[32];

	if (done > p->total)
		done = p->total;
	rate = final && t > 0 ? (double)done / t : sample_rate(p, t, done);
	pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
	format_bytes(done, sdone, sizeof(sdone));
	format_bytes(p->total, stotal, sizeof(stotal));
	format_bytes((uint64_t)rate, srate, sizeof(srate));
	if (final)
		format_eta(t, eta, sizeof(eta));
	else
		format_eta(rate > 0 ? (double)(p->total - done) / rate : -1,
			   eta, sizeof(eta));
	p->last_print = t;

	if (p->mode == PROGRESS_FD) {
		fd_line(p, done, final);
		return;
	}
	if (p->mode == PROGRESS_TTY) {
		tty_line(p, sdone, stotal, pct, srate, eta, final);
		p->drawn = true;
		if (final) {
			fputc('\n', stderr);
			p->drawn = false;
		}
	} else {
		fprintf(stderr,
			"kcopy: %llu/%llu bytes (%.0f%%) %s/s, %s %s\n",
			(unsigned long long)done,
			(unsigned long long)p->total, pct, srate, eta,
			final ? "elapsed" : "left");
	}
	fflush(stderr);
}

void progress_tick(struct progress *p)
{
	if (p->mode != PROGRESS_NONE && progress_timeout(p) == 0)
		print(p, false);
}

void progress_finish(struct progress *p)
{
	if (p->mode != PROGRESS_NONE)
		print(p, true);
}

void progress_clear(struct progress *p)
{
	if (p->mode == PROGRESS_TTY && p->drawn) {
		tty_rewind(p);
		fflush(stderr);
		p->drawn = false;
	}
}
