/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The page pool: the client's copy buffers, a fixed number of 4 KiB pages
 * mapped once at creation and never grown, so the client's buffer memory
 * is bounded by num_pages whatever the jobs ask.
 *
 * Thread model: no lock of its own; every get and put is made under the
 * owning client's lock.  The page contents belong to the sub-job holding
 * them and are touched without any lock.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

int pool_init(struct page_pool *pool, unsigned int nr)
{
	size_t bytes = (size_t)nr * KCOPYD_PAGE_SIZE;

	pool->free = malloc(sizeof(*pool->free) * nr);
	if (!pool->free)
		return -ENOMEM;
	/* Anonymous memory: a page costs nothing until first used. */
	pool->mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pool->mem == MAP_FAILED) {
		pool->mem = NULL;
		free(pool->free);
		return -ENOMEM;
	}
	pool->nr = nr;
	pool->nr_free = nr;
	pool->peak = 0;
	/* A stack popped from the top: hand out pages in ascending order. */
	for (unsigned int i = 0; i < nr; i++)
		pool->free[i] = nr - 1 - i;
	return 0;
}

void pool_destroy(struct page_pool *pool)
{
	if (!pool->mem)		/* never initialised */
		return;
	munmap(pool->mem, (size_t)pool->nr * KCOPYD_PAGE_SIZE);
	free(pool->free);
}

void pool_get(struct page_pool *pool, unsigned int *idx, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		idx[i] = pool->free[--pool->nr_free];
	if (pool->nr - pool->nr_free > pool->peak)
		pool->peak = pool->nr - pool->nr_free;
}

void pool_put(struct page_pool *pool, const unsigned int *idx, unsigned int n)
{
	/* In reverse, so that the next get sees the same ascending run. */
	while (n--)
		pool->free[pool->nr_free++] = idx[n];
}

int pool_iov(const struct page_pool *pool, const unsigned int *idx,
	     unsigned int n, size_t bytes, struct iovec *iov)
{
	int cnt = 0;

	for (unsigned int i = 0; i < n && bytes; i++) {
		char *page = pool->mem + (size_t)idx[i] * KCOPYD_PAGE_SIZE;
		size_t len = bytes < KCOPYD_PAGE_SIZE ? bytes : KCOPYD_PAGE_SIZE;

		if (cnt && (char *)iov[cnt - 1].iov_base +
				   iov[cnt - 1].iov_len == page) {
			iov[cnt - 1].iov_len += len;
		} else {
			iov[cnt].iov_base = page;
			iov[cnt].iov_len = len;
			cnt++;
		}
		bytes -= len;
	}
	return cnt;
}
