/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The size grammar of size.h.
 *
 * Thread model: pure functions, any thread.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "size.h"

struct unit {
	const char *name;
	uint64_t bytes;
};

/* Units are case-sensitive, but for dd's k. */
static const struct unit units[] = {
	{ "B", 1 },
	{ "s", 512 },
	{ "k", 1ull << 10 }, { "K", 1ull << 10 }, { "KiB", 1ull << 10 },
	{ "M", 1ull << 20 }, { "MiB", 1ull << 20 },
	{ "G", 1ull << 30 }, { "GiB", 1ull << 30 },
	{ "T", 1ull << 40 }, { "TiB", 1ull << 40 },
};

int size_parse_n(const char *s, size_t len, uint64_t bare_unit,
		 uint64_t *bytes)
{
	uint64_t n = 0, mult = bare_unit;
	size_t i = 0;

	if (!len || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		unsigned int d = (unsigned int)(s[i] - '0');

		if (n > (UINT64_MAX - d) / 10)
			return -ERANGE;
		n = n * 10 + d;
	}
	if (i < len) {
		size_t u;

		for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
			if (strlen(units[u].name) == len - i &&
			    !memcmp(s + i, units[u].name, len - i))
				break;
		if (u == sizeof(units) / sizeof(units[0]))
			return -EINVAL;
		mult = units[u].bytes;
	}
	if (n && mult > UINT64_MAX / n)
		return -ERANGE;
	*bytes = n * mult;
	return 0;
}

int size_parse(const char *s, uint64_t bare_unit, uint64_t *bytes)
{
	return size_parse_n(s, strlen(s), bare_unit, bytes);
}

const char *size_strerror(int err)
{
	return err == -ERANGE ? "number too large" :
	       "not a size (digits, then s, B, k, K, M, G, T or KiB..TiB)";
}
