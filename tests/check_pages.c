/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the page pool (lib/pages.c), built into this program from
 * the library's source since the pool is internal.
 */
#include <config.h>

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

START_TEST(test_pool_get_put)
{
	struct page_pool pool;
	unsigned int a[4], b[4];

	ck_assert_int_eq(pool_init(&pool, 8), 0);
	ck_assert_uint_eq(pool.nr_free, 8);
	ck_assert_uint_eq((uintptr_t)pool.mem % KCOPYD_PAGE_SIZE, 0);
	pool_get(&pool, a, 4);
	for (unsigned int i = 0; i < 4; i++)
		ck_assert_uint_eq(a[i], i);	/* ascending from a new pool */
	pool_get(&pool, b, 4);
	ck_assert_uint_eq(pool.nr_free, 0);
	ck_assert_uint_eq(pool.peak, 8);
	pool_put(&pool, a, 4);
	ck_assert_uint_eq(pool.nr_free, 4);
	/* What goes back comes out again in the same order. */
	pool_get(&pool, b, 4);
	for (unsigned int i = 0; i < 4; i++)
		ck_assert_uint_eq(b[i], a[i]);
	pool_put(&pool, b, 4);
	ck_assert_uint_eq(pool.peak, 8);
	pool_destroy(&pool);
}
END_TEST

START_TEST(test_pool_iov_merges)
{
	struct page_pool pool;
	unsigned int idx[5] = { 0, 1, 2, 4, 5 };
	struct iovec iov[5];
	int n;

	ck_assert_int_eq(pool_init(&pool, 8), 0);
	n = pool_iov(&pool, idx, 5, 5 * KCOPYD_PAGE_SIZE, iov);
	ck_assert_int_eq(n, 2);
	ck_assert_ptr_eq(iov[0].iov_base, pool.mem);
	ck_assert_uint_eq(iov[0].iov_len, 3 * KCOPYD_PAGE_SIZE);
	ck_assert_ptr_eq(iov[1].iov_base, pool.mem + 4 * KCOPYD_PAGE_SIZE);
	ck_assert_uint_eq(iov[1].iov_len, 2 * KCOPYD_PAGE_SIZE);

	/* A partial last page, and fewer bytes than pages. */
	n = pool_iov(&pool, idx, 5, 3 * KCOPYD_PAGE_SIZE + 512, iov);
	ck_assert_int_eq(n, 2);
	ck_assert_uint_eq(iov[1].iov_len, 512);
	n = pool_iov(&pool, idx, 5, 1024, iov);
	ck_assert_int_eq(n, 1);
	ck_assert_uint_eq(iov[0].iov_len, 1024);
	pool_destroy(&pool);
}
END_TEST

START_TEST(test_pool_large)
{
	struct page_pool pool;
	unsigned int *idx = malloc(sizeof(*idx) * 65536);
	struct iovec iov[1];

	/* 256 MiB of address space: mapped lazily, so this costs nothing. */
	ck_assert_int_eq(pool_init(&pool, 65536), 0);
	pool_get(&pool, idx, 65536);
	ck_assert_int_eq(pool_iov(&pool, idx, 1, KCOPYD_PAGE_SIZE, iov), 1);
	pool_put(&pool, idx, 65536);
	ck_assert_uint_eq(pool.nr_free, 65536);
	pool_destroy(&pool);
	free(idx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pages");
	TCase *tc = tcase_create("pool");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_pool_get_put);
	tcase_add_test(tc, test_pool_iov_merges);
	tcase_add_test(tc, test_pool_large);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
