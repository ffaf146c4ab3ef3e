/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopydfs_mmap FILE OFFSET TEXT: map the page of FILE that holds OFFSET
 * with MAP_SHARED, store TEXT at OFFSET through the mapping, msync it,
 * unmap, and read it back with pread.  Exit 0 if the read gives TEXT back,
 * 1 with a message naming the failed call otherwise (mmap of a kcopydfs
 * device file in direct I/O mode fails: "mmap: No such device").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int die(const char *what)
{
	fprintf(stderr, "kcopydfs_mmap: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char *argv[])
{
	const long page = sysconf(_SC_PAGESIZE);
	off_t off, base;
	size_t len;
	char *map, *back;
	int fd;

	if (argc != 4) {
		fprintf(stderr, "usage: kcopydfs_mmap FILE OFFSET TEXT\n");
		return 1;
	}
	off = (off_t)strtoll(argv[2], NULL, 0);
	len = strlen(argv[3]);
	base = off - off % page;
	if (len == 0 || (size_t)(off - base) + len > (size_t)page) {
		fprintf(stderr, "kcopydfs_mmap: TEXT must fit in one page\n");
		return 1;
	}
	fd = open(argv[1], O_RDWR);
	if (fd == -1)
		return die("open");
	map = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   base);
	if (map == MAP_FAILED)
		return die("mmap");
	memcpy(map + (off - base), argv[3], len);
	if (msync(map, (size_t)page, MS_SYNC))
		return die("msync");
	if (munmap(map, (size_t)page))
		return die("munmap");
	back = malloc(len);
	if (!back)
		return die("malloc");
	if (pread(fd, back, len, off) != (ssize_t)len)
		return die("pread");
	if (memcmp(back, argv[3], len)) {
		fprintf(stderr, "kcopydfs_mmap: read back other bytes\n");
		return 1;
	}
	free(back);
	return close(fd) ? die("close") : 0;
}
