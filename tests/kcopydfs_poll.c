/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopydfs_poll FILE TIMEOUT_MS: open FILE (a kcopydfs results file), read
 * it whole, check that poll() reports nothing new yet, print "waiting" and
 * then poll() until it reports POLLIN.  Exit 0 when woken, 2 on timeout,
 * 3 if it was ready before anything changed, 1 on error.  After waking it
 * reads the file again from the start and prints the new text.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_all(int fd, int print)
{
	char buf[65536];
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) == -1)
		return -1;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (print)
			fwrite(buf, 1, (size_t)n, stdout);
	return n < 0 ? -1 : 0;
}

int main(int argc, char *argv[])
{
	struct pollfd p;
	int fd, r;

	if (argc != 3) {
		fprintf(stderr, "usage: kcopydfs_poll FILE TIMEOUT_MS\n");
		return 1;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd == -1 || read_all(fd, 0)) {
		perror(argv[1]);
		return 1;
	}
	p.fd = fd;
	p.events = POLLIN;
	r = poll(&p, 1, 0);
	if (r < 0) {
		perror("poll");
		return 1;
	}
	if (r > 0) {
		fprintf(stderr, "ready before any change (revents 0x%x)\n",
			p.revents);
		return 3;
	}
	printf("waiting\n");
	fflush(stdout);
	r = poll(&p, 1, atoi(argv[2]));
	if (r < 0) {
		perror("poll");
		return 1;
	}
	if (r == 0)
		return 2;
	if (!(p.revents & POLLIN)) {
		fprintf(stderr, "woken without POLLIN (revents 0x%x)\n",
			p.revents);
		return 1;
	}
	if (read_all(fd, 1)) {
		perror(argv[1]);
		return 1;
	}
	return 0;
}
