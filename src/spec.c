/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sizes with units, and operands PATH[:START[+COUNT]].
 *
 * Thread model: pure functions, called from the main thread only.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcopy.h"

int parse_sectors(const char *s, sector_t *sectors)
{
	uint64_t bytes;
	int r = size_parse(s, KCOPYD_SECTOR_SIZE, &bytes);

	if (r)
		return r;
	if (bytes % KCOPYD_SECTOR_SIZE)
		return -EDOM;
	*sectors = bytes >> KCOPYD_SECTOR_SHIFT;
	return 0;
}

static const char *size_error(int r)
{
	switch (r) {
	case -ERANGE:
		return "number too large";
	case -EDOM:
		return "not a multiple of 512 bytes";
	default:
		return "expected a number with an optional unit "
		       "(B, s, K, M, G, T, KiB, MiB, GiB, TiB)";
	}
}

/* Parse "START" or "START+COUNT" into op; message on error. */
static int parse_range(const char *range, struct operand *op)
{
	char buf[64];
	const char *plus = strchr(range, '+');
	const char *count = NULL;
	size_t len = strlen(range);
	int r;

	if (plus) {
		len = (size_t)(plus - range);
		count = plus + 1;
	}
	if (len >= sizeof(buf)) {
		say("%s: bad range '%s': too long", op->token, range);
		return -EINVAL;
	}
	memcpy(buf, range, len);
	buf[len] = '\0';
	r = parse_sectors(buf, &op->start);
	if (r) {
		say("%s: bad START '%s': %s", op->token, buf, size_error(r));
		return -EINVAL;
	}
	if (count) {
		r = parse_sectors(count, &op->count);
		if (r) {
			say("%s: bad COUNT '%s': %s", op->token, count,
			    size_error(r));
			return -EINVAL;
		}
		op->has_count = true;
	}
	if (op->has_count && op->start + op->count < op->start) {
		say("%s: START+COUNT is too large", op->token);
		return -EINVAL;
	}
	return 0;
}

/*
 * The last ':' that may start a range: in a URI, only one past the
 * authority (nbd://HOST:PORT/...), so a port is never taken for a START.
 */
static const char *range_colon(const char *token)
{
	const char *colon = strrchr(token, ':'), *path;

	if (!colon || !kcopyd_bdev_is_uri(token))
		return colon;
	path = strchr(strstr(token, "://") + 3, '/');
	return path && colon > path ? colon : NULL;
}

int parse_operand(const char *token, struct operand *op)
{
	const char *colon = range_colon(token);
	size_t path_len = strlen(token);
	int r;

	memset(op, 0, sizeof(*op));
	op->token = token;
	/*
	 * Text after the last ':' that starts with a digit must be a range;
	 * anything else there belongs to the path.  A trailing ':' ends a
	 * path that itself contains ":NUMBER".
	 */
	if (colon && (colon[1] == '\0' || isdigit((unsigned char)colon[1]))) {
		path_len = (size_t)(colon - token);
		if (colon[1]) {
			r = parse_range(colon + 1, op);
			if (r)
				return r;
		}
	}
	if (path_len == 0) {
		say("%s: no path before ':'", token);
		return -EINVAL;
	}
	op->path = strndup(token, path_len);
	if (!op->path) {
		say("%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	return 0;
}

const char *format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const names[] = { "B", "KiB", "MiB", "GiB",
					     "TiB", "PiB", "EiB" };
	double v = (double)bytes;
	unsigned int i = 0;

	while (v >= 1024 && i + 1 < sizeof(names) / sizeof(names[0])) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.2f %s", v, names[i]);
	return buf;
}
