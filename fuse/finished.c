/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MNT/finished, an append-only view of the jobs as they end.
 *
 * Thread model: kfs_finished_add runs on the engine's callback thread,
 * the reads on FUSE worker threads; f->lock guards everything, and no
 * other lock is taken under it.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "finished.h"
#include "pth.h"

struct line {
	uint64_t off;		/* in the stream of every byte appended */
	size_t len;		/* with the newline */
	char *text;
};

struct kfs_finished {
	pthread_mutex_t lock;
	unsigned int cap;	/* lines kept at most */
	struct line *ring;	/* line seq is ring[seq % cap] (lock) */
	uint64_t first;		/* seq of the oldest kept line (lock) */
	uint64_t next;		/* seq of the next line (lock) */
	uint64_t size;		/* bytes ever appended (lock) */
};

int kfs_finished_create(unsigned int keep, struct kfs_finished **result)
{
	struct kfs_finished *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->cap = keep;
	f->ring = calloc(keep ? keep : 1, sizeof(*f->ring));
	if (!f->ring) {
		free(f);
		return -ENOMEM;
	}
	pth(pthread_mutex_init(&f->lock, NULL));
	*result = f;
	return 0;
}

void kfs_finished_free(struct kfs_finished *f)
{
	if (!f)
		return;
	for (uint64_t s = f->first; s < f->next; s++)
		free(f->ring[s % f->cap].text);
	pth(pthread_mutex_destroy(&f->lock));
	free(f->ring);
	free(f);
}

void kfs_finished_add(struct kfs_finished *f, const char *line)
{
	size_t len = strlen(line) + 1;
	char *text = malloc(len);
	struct line *l;

	if (text) {
		memcpy(text, line, len - 1);
		text[len - 1] = '\n';
	}
	pth(pthread_mutex_lock(&f->lock));
	if (!f->cap || !text) {
		/* Nothing kept, but the stream still grew. */
		for (uint64_t s = f->first; s < f->next; s++)
			free(f->ring[s % f->cap].text);
		f->size += len;
		f->first = f->next = f->next + 1;
		pth(pthread_mutex_unlock(&f->lock));
		free(text);
		return;
	}
	if (f->next - f->first == f->cap) {
		free(f->ring[f->first % f->cap].text);
		f->first++;
	}
	l = &f->ring[f->next % f->cap];
	l->off = f->size;
	l->len = len;
	l->text = text;
	f->size += len;
	f->next++;
	pth(pthread_mutex_unlock(&f->lock));
}

uint64_t kfs_finished_size(struct kfs_finished *f)
{
	uint64_t size;

	pth(pthread_mutex_lock(&f->lock));
	size = f->size;
	pth(pthread_mutex_unlock(&f->lock));
	return size;
}

/* Where off falls among the kept lines (lock held). */
static void seek(struct kfs_finished *f, uint64_t off,
		 struct kfs_finished_pos *pos)
{
	pos->seq = f->first;
	pos->skip = 0;
	for (uint64_t s = f->first; s < f->next; s++) {
		const struct line *l = &f->ring[s % f->cap];

		if (off < l->off + l->len) {
			pos->seq = s;
			pos->skip = off > l->off ? (size_t)(off - l->off) : 0;
			return;
		}
		pos->seq = s + 1;
	}
}

size_t kfs_finished_read(struct kfs_finished *f, struct kfs_finished_pos *pos,
			 uint64_t off, char *buf, size_t size)
{
	size_t used = 0;

	pth(pthread_mutex_lock(&f->lock));
	if (!pos->valid || pos->off != off)
		seek(f, off, pos);
	if (pos->seq < f->first) {
		/* Dropped while the reader was away: on from the oldest. */
		pos->seq = f->first;
		pos->skip = 0;
	}
	while (pos->seq < f->next && used < size) {
		const struct line *l = &f->ring[pos->seq % f->cap];
		size_t take = l->len - pos->skip;

		if (take > size - used)
			take = size - used;
		memcpy(buf + used, l->text + pos->skip, take);
		used += take;
		pos->skip += take;
		if (pos->skip == l->len) {
			pos->seq++;
			pos->skip = 0;
		}
	}
	pth(pthread_mutex_unlock(&f->lock));
	pos->off = off + used;
	pos->valid = true;
	return used;
}
