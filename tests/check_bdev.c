/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of block devices (lib/bdev.c): opening, sizes, full reads and
 * writes, fault rules and counters.  Built from the library's source so
 * the internal I/O functions can be called directly.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

START_TEST(test_open_refusals)
{
	struct block_device *b = NULL;
	char *path = make_image("ref", 4096, 0);

	ck_assert_int_eq(kcopyd_bdev_open(NULL, O_RDONLY, &b), -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDONLY, NULL), -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_open(path, O_WRONLY, &b), -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDWR | O_CREAT, &b),
			 -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDWR | O_TRUNC, &b),
			 -EINVAL);
	ck_assert_int_eq(kcopyd_bdev_open("/nonexistent/x", O_RDONLY, &b),
			 -ENOENT);
	ck_assert_int_eq(kcopyd_bdev_open(test_dir(), O_RDONLY, &b), -EISDIR);
	ck_assert_int_eq(kcopyd_bdev_open("/dev/null", O_RDONLY, &b),
			 -ENOTBLK);
	ck_assert_ptr_null(b);
	free(path);
}
END_TEST

/* A FIFO with no writer is refused at once, not waited on. */
START_TEST(test_open_fifo)
{
	struct block_device *b = NULL;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/fifo", test_dir());
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDONLY, &b), -ENOTBLK);
	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDWR, &b), -ENOTBLK);
	ck_assert_ptr_null(b);
	ck_assert_int_eq(unlink(path), 0);
}
END_TEST

START_TEST(test_sizes)
{
	struct block_device *b;
	char *path = make_image("size", 1024 * 1024 + 100, 1);

	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDONLY, &b), 0);
	/* The partial sector at the end is not part of the device. */
	ck_assert_uint_eq(kcopyd_bdev_sectors(b), 2048);
	ck_assert_uint_eq(kcopyd_bdev_sectors(NULL), 0);
	kcopyd_bdev_close(b);
	kcopyd_bdev_close(NULL);
	free(path);
}
END_TEST

START_TEST(test_direct)
{
	struct block_device *b;
	char *path = make_image("direct", 65536, 1);
	int r = kcopyd_bdev_open(path, O_RDWR | O_DIRECT, &b);

	if (r == -EINVAL) {	/* a file system without O_DIRECT */
		free(path);
		return;
	}
	ck_assert_int_eq(r, 0);
	ck_assert_uint_eq(kcopyd_bdev_sectors(b), 128);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

/* A real block device: the size comes from BLKGETSIZE64. */
START_TEST(test_loop_device)
{
	char *path = make_image("loop", 3 * 1024 * 1024, 1);
	char cmd[512], dev[64] = "";
	struct block_device *b;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "losetup -f --show %s 2>/dev/null", path);
	p = geteuid() == 0 ? popen(cmd, "r") : NULL;
	if (!p || !fgets(dev, sizeof(dev), p) || !dev[0]) {
		if (p)
			pclose(p);
		free(path);
		return;		/* no loop devices here */
	}
	pclose(p);
	dev[strcspn(dev, "\n")] = 0;
	ck_assert_int_eq(kcopyd_bdev_open(dev, O_RDONLY, &b), 0);
	ck_assert_uint_eq(kcopyd_bdev_sectors(b), 6144);
	kcopyd_bdev_close(b);
	snprintf(cmd, sizeof(cmd), "losetup -d %s", dev);
	ck_assert_int_eq(system(cmd), 0);
	free(path);
}
END_TEST

START_TEST(test_full_io_and_stats)
{
	char *path = make_image("io", 65536, 0);
	struct block_device *b;
	struct kcopyd_bdev_stats st;
	unsigned char out[8192], in[8192];
	struct iovec iov[2];

	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDWR, &b), 0);
	fill_pattern(out, sizeof(out), 5);
	iov[0] = (struct iovec){ out, 1000 };
	iov[1] = (struct iovec){ out + 1000, 7192 };
	ck_assert_int_eq(bdev_write_full(b, iov, 2, 4096), 0);
	iov[0] = (struct iovec){ in, 8192 };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 4096), 0);
	ck_assert(memcmp(in, out, sizeof(in)) == 0);

	/* Reading past the end of the file is an error, not a short read. */
	iov[0] = (struct iovec){ in, 8192 };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 65536 - 4096), -EIO);

	kcopyd_bdev_get_stats(b, &st);
	ck_assert_uint_eq(st.reads, 1);
	ck_assert_uint_eq(st.writes, 1);
	ck_assert_uint_eq(st.bytes_read, 8192);
	ck_assert_uint_eq(st.bytes_written, 8192);
	ck_assert_uint_eq(st.errors, 1);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

START_TEST(test_faults)
{
	char *path = make_image("fault", 65536, 3);
	struct block_device *b;
	struct kcopyd_fault f = { .ops = KCOPYD_FAULT_READ, .sector = 16,
				  .count = 1 };
	unsigned char out[16384], in[16384];
	struct iovec iov[1];

	ck_assert_int_eq(kcopyd_bdev_open(path, O_RDWR, &b), 0);

	/* Refused rules. */
	f.count = 0;
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), -EINVAL);
	f.count = 1;
	f.ops = 8;
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), -EINVAL);
	f.ops = KCOPYD_FAULT_READ;
	f.kind = 7;
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), -EINVAL);
	f.kind = KCOPYD_FAULT_ERROR;
	ck_assert_int_eq(kcopyd_bdev_add_fault(NULL, &f), -EINVAL);

	/* An error rule on sector 16: reads that touch it fail with EIO. */
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), 0);
	iov[0] = (struct iovec){ in, 8192 };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 0), 0);	/* 0..15 */
	iov[0] = (struct iovec){ in, 8192 };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 4096), -EIO);
	iov[0] = (struct iovec){ in, 512 };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 17 * 512), 0);
	/* A program's own I/O through the public calls meets the same rule. */
	ck_assert_int_eq(kcopyd_bdev_pread(b, in, 8192, 4096), -EIO);
	ck_assert_int_eq(kcopyd_bdev_pread(b, in, 8192, 0), 0);
	ck_assert_int_eq(kcopyd_bdev_pread(NULL, in, 8192, 0), -EINVAL);
	/* Writes are not affected by a read rule. */
	fill_pattern(out, sizeof(out), 9);
	iov[0] = (struct iovec){ out, 8192 };
	ck_assert_int_eq(bdev_write_full(b, iov, 1, 4096), 0);

	/* Another errno, for writes. */
	f = (struct kcopyd_fault){ .ops = KCOPYD_FAULT_WRITE, .sector = 100,
				   .count = 10, .error = ENOSPC };
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), 0);
	iov[0] = (struct iovec){ out, 1024 };
	ck_assert_int_eq(bdev_write_full(b, iov, 1, 109 * 512), -ENOSPC);

	/* Short writes: the full-write loop still writes everything. */
	kcopyd_bdev_clear_faults(b);
	f = (struct kcopyd_fault){ .ops = KCOPYD_FAULT_WRITE | KCOPYD_FAULT_READ,
				   .kind = KCOPYD_FAULT_SHORT, .sector = 0,
				   .count = 128 };
	ck_assert_int_eq(kcopyd_bdev_add_fault(b, &f), 0);
	fill_pattern(out, sizeof(out), 11);
	iov[0] = (struct iovec){ out, sizeof(out) };
	ck_assert_int_eq(bdev_write_full(b, iov, 1, 512), 0);
	iov[0] = (struct iovec){ in, sizeof(in) };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 512), 0);
	ck_assert(memcmp(in, out, sizeof(in)) == 0);
	kcopyd_bdev_clear_faults(b);
	iov[0] = (struct iovec){ in, 8192 };
	ck_assert_int_eq(bdev_read_full(b, iov, 1, 4096), 0);
	kcopyd_bdev_close(b);
	free(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("bdev");
	TCase *tc = tcase_create("open");

	tcase_add_test(tc, test_open_refusals);
	tcase_add_test(tc, test_open_fifo);
	tcase_add_test(tc, test_sizes);
	tcase_add_test(tc, test_direct);
	tcase_add_test(tc, test_loop_device);
	suite_add_tcase(s, tc);
	tc = tcase_create("io");
	tcase_add_test(tc, test_full_io_and_stats);
	tcase_add_test(tc, test_faults);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
