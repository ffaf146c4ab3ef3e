/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One size grammar for every program: digits, then optionally a unit, as
 * dd(1) and qemu-img(1) take them:
 *   s                sectors of 512 bytes
 *   B                bytes
 *   k K M G T        powers of 1024
 *   KiB MiB GiB TiB  the same
 * A bare number counts `bare_unit` bytes (1 for a byte count, 512 where
 * sectors are meant).  Pure functions: any thread.
 */
#ifndef KCOPYD_COMMON_SIZE_H
#define KCOPYD_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parse s (the whole string) into *bytes.  Returns 0, -EINVAL (no digits,
 * a sign, an unknown unit) or -ERANGE (more than 2^64 - 1 bytes).
 */
int size_parse(const char *s, uint64_t bare_unit, uint64_t *bytes);

/*
 * As size_parse() on the first len bytes of s (not NUL-terminated), for
 * parsers that work on tokens.
 */
int size_parse_n(const char *s, size_t len, uint64_t bare_unit,
		 uint64_t *bytes);

/* A message for an error of size_parse(): "not a size", ... */
const char *size_strerror(int err);

#endif /* KCOPYD_COMMON_SIZE_H */
