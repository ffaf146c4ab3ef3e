/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --map FILE: a GNU ddrescue mapfile of the copy.  Positions are byte
 * offsets into the copied range (0 is the first byte of SRC:START), each
 * block '+' finished, '-' failed or '?' not tried.  A comment line holds
 * the identity of the copy (the devices' identities and sizes, the
 * regions), so a map is never applied to another copy.  The file is
 * replaced whole (replace_file: FILE.tmp, fsync(2), rename(2)), so a
 * crash leaves the old map or the new one, never a torn one.
 *
 * Thread model: main thread only.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kcopy.h"
#include "replace.h"

#define IDENT_PREFIX	"# kcopy map of "

void map_free(struct map *m)
{
	free(m->r);
	m->r = NULL;
	m->n = 0;
}

/* Make room for one more range. */
static int grow(struct map *m)
{
	struct map_range *r;
	size_t cap;

	if (m->n < m->cap)
		return 0;
	cap = m->cap ? m->cap * 2 : 16;
	r = realloc(m->r, cap * sizeof(*r));
	if (!r)
		return -ENOMEM;
	m->r = r;
	m->cap = cap;
	return 0;
}

/*
 * Give [pos, pos + size) the status st, splitting and merging ranges so
 * that they stay sorted, contiguous, cover [0, m->size) and no two
 * neighbours share a status.
 */
int map_set(struct map *m, uint64_t pos, uint64_t size, char st)
{
	uint64_t end = pos + size;
	size_t i, j;

	if (!size)
		return 0;
	/* Split at pos and at end, so both are range boundaries. */
	for (int k = 0; k < 2; k++) {
		uint64_t at = k ? end : pos;

		for (i = 0; i < m->n; i++) {
			struct map_range *r = &m->r[i];

			if (at > r->pos && at < r->pos + r->size) {
				if (grow(m))
					return -ENOMEM;
				r = &m->r[i];
				memmove(&m->r[i + 1], r, (m->n - i) * sizeof(*r));
				m->n++;
				r->size = at - r->pos;
				m->r[i + 1].pos = at;
				m->r[i + 1].size -= r->size;
				break;
			}
		}
	}
	for (i = 0; i < m->n; i++)
		if (m->r[i].pos >= pos && m->r[i].pos + m->r[i].size <= end)
			m->r[i].st = st;
	/* Merge neighbours of one status. */
	for (i = 0, j = 0; i < m->n; i++) {
		if (j && m->r[j - 1].st == m->r[i].st)
			m->r[j - 1].size += m->r[i].size;
		else
			m->r[j++] = m->r[i];
	}
	m->n = j;
	return 0;
}

/* Bytes of the map with status st. */
uint64_t map_bytes(const struct map *m, char st)
{
	uint64_t n = 0;

	for (size_t i = 0; i < m->n; i++)
		if (m->r[i].st == st)
			n += m->r[i].size;
	return n;
}

static int parse_hex(const char *s, uint64_t *v, const char **end)
{
	char *e;

	errno = 0;
	*v = strtoull(s, &e, 0);
	if (e == s || errno)
		return -EINVAL;
	*end = e;
	return 0;
}

/* One line of the map (not a comment): the status line or a block. */
static int parse_line(struct map *m, const char *s, bool *seen_status)
{
	uint64_t pos, size;
	const char *p;
	char st;

	if (parse_hex(s, &pos, &p))
		return -EINVAL;
	if (!*seen_status) {
		/* current_pos current_status [current_pass] */
		while (*p == ' ' || *p == '\t')
			p++;
		if (!strchr("?*/-FG+", *p) || !*p)
			return -EINVAL;
		*seen_status = true;
		return 0;
	}
	if (parse_hex(p, &size, &p))
		return -EINVAL;
	while (*p == ' ' || *p == '\t')
		p++;
	st = *p;
	if (!st || !strchr("?*/-+", st) || !size)
		return -EINVAL;
	/* Blocks must tile the domain in order. */
	if (pos != (m->n ? m->r[m->n - 1].pos + m->r[m->n - 1].size : 0))
		return -EINVAL;
	if (grow(m))
		return -ENOMEM;
	/* Trying and trimming were never finished: not tried, for us. */
	if (st == '*' || st == '/')
		st = '?';
	if (m->n && m->r[m->n - 1].st == st) {
		m->r[m->n - 1].size += size;
		return 0;
	}
	m->r[m->n++] = (struct map_range){ pos, size, st };
	return 0;
}

/*
 * Read an existing map.  Returns 0, -ENOENT (there is none), or another
 * negative errno with a message said.
 */
static int map_read(struct map *m)
{
	FILE *f = fopen(m->path, "re");
	char line[4096], *ident = NULL;
	bool seen_status = false;
	unsigned int lineno = 0;
	int r = 0;

	if (!f) {
		r = -errno;
		if (r != -ENOENT)
			say("%s: %s", m->path, strerror(-r));
		return r;
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		line[strcspn(line, "\n")] = '\0';
		if (!strncmp(line, IDENT_PREFIX, strlen(IDENT_PREFIX))) {
			free(ident);
			ident = strdup(line + 2);
			continue;
		}
		if (line[0] == '#' || !line[0])
			continue;
		r = parse_line(m, line, &seen_status);
		if (r) {
			say("%s: line %u is not a ddrescue mapfile line: '%s'",
			    m->path, lineno, line);
			goto out;
		}
	}
	if (!ident) {
		say("%s: not a map kcopy wrote (no '%s' line): refusing it",
		    m->path, IDENT_PREFIX + 2);
		r = -EINVAL;
	} else if (strcmp(ident, m->ident)) {
		say("%s: the map is of another copy:\n  map:  %s\n  this: %s\n"
		    "remove it, or give another --map, to start afresh",
		    m->path, ident, m->ident);
		r = -EINVAL;
	} else if (!m->n || m->r[m->n - 1].pos + m->r[m->n - 1].size !=
				    m->size) {
		say("%s: the blocks do not cover the %" PRIu64 " bytes of the "
		    "copy", m->path, m->size);
		r = -EINVAL;
	}
out:
	free(ident);
	fclose(f);
	return r;
}

int map_open(struct map *m, const char *path, const char *ident,
	     uint64_t size, bool *resumed)
{
	int r;

	memset(m, 0, sizeof(*m));
	m->path = path;
	m->size = size;
	snprintf(m->ident, sizeof(m->ident), "%s", ident);
	r = map_read(m);
	*resumed = !r;
	if (r != -ENOENT)
		return r;
	m->n = 0;
	if (grow(m))
		return -ENOMEM;
	if (size)
		m->r[m->n++] = (struct map_range){ 0, size, '?' };
	return map_save(m);
}

int map_save(struct map *m)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	uint64_t pos = 0;
	char st = '+';
	int r = 0;

	if (!f)
		return -ENOMEM;
	/* The status line: where the copy is, as ddrescue puts it. */
	for (size_t i = 0; i < m->n; i++)
		if (m->r[i].st != '+') {
			pos = m->r[i].pos;
			st = '?';
			break;
		}
	fprintf(f, "# Mapfile. Created by kcopy %s\n", PACKAGE_VERSION);
	fprintf(f, "# %s\n", m->ident);
	fprintf(f, "# current_pos  current_status  current_pass\n");
	fprintf(f, "0x%08" PRIX64 "     %c               1\n", pos, st);
	fprintf(f, "#      pos        size  status\n");
	for (size_t i = 0; i < m->n; i++)
		fprintf(f, "0x%08" PRIX64 "  0x%08" PRIX64 "  %c\n",
			m->r[i].pos, m->r[i].size, m->r[i].st);
	if (fclose(f))
		r = -ENOMEM;
	if (!r)
		r = replace_file(m->path, text, len);
	free(text);
	if (r)
		say("%s: cannot write the map: %s", m->path, strerror(-r));
	return r;
}
