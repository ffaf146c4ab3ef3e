/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One way of checking pthread calls in the programs: a failed call is a
 * bug (a lock not held, a destroyed object), not a condition to limp on,
 * so it aborts with the call's text.
 */
#ifndef KCOPYD_COMMON_PTH_H
#define KCOPYD_COMMON_PTH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define pth(call)							\
	do {								\
		int pth_err_ = (call);					\
		if (pth_err_ != 0) {					\
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__,	\
				__LINE__, #call, strerror(pth_err_));	\
			abort();					\
		}							\
	} while (0)

#endif /* KCOPYD_COMMON_PTH_H */
