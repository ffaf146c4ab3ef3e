/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public header on its own: it must compile as strict C99 (this file)
 * and as C++ (compiled by `c++ -fsyntax-only` when one is available), and
 * what it declares must link.
 */
#include <kcopyd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	struct kcopyd_client *kc;
	struct io_region r = { NULL, 0, 0 };
	int ok;

	ok = kcopyd_client_create(0, &kc) < 0 && r.bdev == NULL &&
	     strlen(kcopyd_version()) > 0;
	if (system("command -v c++ >/dev/null 2>&1") == 0 &&
	    system("c++ -x c++ -fsyntax-only -Wall -Werror -I\"$abs_top_srcdir/lib\""
		   " - </dev/null -include kcopyd.h") != 0)
		ok = 0;
	printf("%s\n", ok ? "header ok" : "header FAILED");
	return ok ? 0 : 1;
}
