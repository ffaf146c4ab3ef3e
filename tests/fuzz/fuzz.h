/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared by the fuzz targets: check(COND, FMT, ...) aborts with the
 * target's name, the place and a message when COND is false, so that
 * libFuzzer (or the corpus replay) records the input as a crash.
 * Define FUZZ_NAME before including this.
 */
#ifndef KCOPYD_FUZZ_H
#define KCOPYD_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define check(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, FUZZ_NAME ": %s:%d: ",		\
				__FILE__, __LINE__);			\
			fprintf(stderr, __VA_ARGS__);			\
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

#endif
