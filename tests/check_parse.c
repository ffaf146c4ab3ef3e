/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the kcopydfs command parser (fuse/parse.c): every token
 * kind, every errno, number overflow, and the limits.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs.h"
#include "parse.h"

/* Devices: "a" 1000 sectors, "b" 1000, "big" 2^40, "d.e_f-1" 8. */
static const struct {
	const char *name;
	uint64_t sectors;
} devs[] = {
	{ "a", 1000 }, { "b", 1000 }, { "big", 1ull << 40 }, { "d.e_f-1", 8 },
};

static int find(const struct kfs_devlookup *dl, const char *name, size_t len,
		uint64_t *sectors)
{
	for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++)
		if (strlen(devs[i].name) == len &&
		    !memcmp(devs[i].name, name, len)) {
			*sectors = devs[i].sectors;
			return (int)i;
		}
	return -ENOENT;
}

static const struct kfs_devlookup dl = { .find = find };
static struct kfs_cmd cmd;
static char msg[512];

static int parse(const char *line)
{
	return kfs_parse_line(line, strlen(line), &dl, &cmd, msg, sizeof(msg));
}

/* The line fails with err, and the message names `token`. */
static void bad(const char *line, int err, const char *token)
{
	int r = parse(line);

	ck_assert_msg(r == err, "'%s': got %d (%s), want %d", line, r, msg,
		      err);
	ck_assert_msg(strstr(msg, token), "'%s': message '%s' lacks '%s'",
		      line, msg, token);
}

/* --- Commands ------------------------------------------------------------- */

START_TEST(test_copy_simple)
{
	ck_assert_int_eq(parse("copy a:0+16 b:8"), 0);
	ck_assert_int_eq(cmd.op, KFS_OP_COPY);
	ck_assert_int_eq(cmd.src.dev, 0);
	ck_assert_uint_eq(cmd.src.sector, 0);
	ck_assert_uint_eq(cmd.src.count, 16);
	ck_assert_uint_eq(cmd.num_dests, 1);
	ck_assert_int_eq(cmd.dests[0].dev, 1);
	ck_assert_uint_eq(cmd.dests[0].sector, 8);
	ck_assert_uint_eq(cmd.dests[0].count, 16);
	ck_assert_uint_eq(cmd.flags, 0);
	ck_assert_str_eq(cmd.tag, "");
}
END_TEST

START_TEST(test_copy_options)
{
	ck_assert_int_eq(parse("\t copy  a:10+5   b:0 b:100 big:7 "
			       "ignore_errors write_seq sync tag=night.ly-1 "),
			 0);
	ck_assert_uint_eq(cmd.num_dests, 3);
	ck_assert_int_eq(cmd.dests[2].dev, 2);
	ck_assert_uint_eq(cmd.dests[2].sector, 7);
	ck_assert_uint_eq(cmd.dests[2].count, 5);
	ck_assert_uint_eq(cmd.flags,
			  KFS_IGNORE_ERRORS | KFS_WRITE_SEQ | KFS_SYNC);
	ck_assert_str_eq(cmd.tag, "night.ly-1");
}
END_TEST

START_TEST(test_copy_checksum)
{
	ck_assert_int_eq(parse("copy a:0+8 b:0 checksum verify"), 0);
	ck_assert_uint_eq(cmd.flags, KFS_CHECKSUM | KFS_VERIFY);
}
END_TEST

START_TEST(test_zero)
{
	ck_assert_int_eq(parse("zero a:0+8 b:992+8 d.e_f-1:0+8 sync tag=z"),
			 0);
	ck_assert_int_eq(cmd.op, KFS_OP_ZERO);
	ck_assert_uint_eq(cmd.num_dests, 3);
	ck_assert_uint_eq(cmd.dests[1].sector, 992);
	ck_assert_uint_eq(cmd.dests[1].count, 8);
	ck_assert_int_eq(cmd.dests[2].dev, 3);
	ck_assert_uint_eq(cmd.flags, KFS_SYNC);
	ck_assert_str_eq(cmd.tag, "z");
}
END_TEST

START_TEST(test_blank)
{
	ck_assert_int_eq(parse(""), 0);
	ck_assert_int_eq(cmd.op, KFS_OP_NONE);
	ck_assert_int_eq(parse(" \t  "), 0);
	ck_assert_int_eq(cmd.op, KFS_OP_NONE);
}
END_TEST

START_TEST(test_edges)
{
	/* The last sector, a whole device, and an empty region at the end. */
	ck_assert_int_eq(parse("copy a:999+1 b:999"), 0);
	ck_assert_int_eq(parse("copy a:0+1000 b:0"), 0);
	ck_assert_int_eq(parse("zero a:1000+0"), 0);
	ck_assert_int_eq(parse("zero big:0+1099511627776"), 0);
	/* Overlaps the engine can do: one direction, or in place. */
	ck_assert_int_eq(parse("copy a:0+100 a:50"), 0);
	ck_assert_int_eq(parse("copy a:50+100 a:0 write_seq"), 0);
	ck_assert_int_eq(parse("copy a:0+100 a:0"), 0);
}
END_TEST

/* cancel and throttle take exactly one argument. */
START_TEST(test_cancel_throttle)
{
	ck_assert_int_eq(parse("cancel 7"), 0);
	ck_assert_int_eq(cmd.op, KFS_OP_CANCEL);
	ck_assert_uint_eq(cmd.cancel_id, 7);
	ck_assert_int_eq(parse("throttle 64M"), 0);
	ck_assert_int_eq(cmd.op, KFS_OP_THROTTLE);
	ck_assert_uint_eq(cmd.rate, 64ull << 20);
	ck_assert_int_eq(parse("throttle 50%"), 0);
	ck_assert_uint_eq(cmd.percent, 50);
	ck_assert_uint_eq(cmd.rate, 0);
	ck_assert_int_eq(parse("throttle off"), 0);
	ck_assert_uint_eq(cmd.rate, 0);
	ck_assert_uint_eq(cmd.percent, 0);
	bad("cancel", -EINVAL, "cancel needs a job ID or tag=WORD");
	bad("cancel 1 2", -EINVAL, "unknown word '2' after cancel");
	bad("cancel 0", -EINVAL, "bad job id '0'");
	bad("throttle", -EINVAL, "throttle needs RATE, PCT% or off");
	bad("throttle 1M x", -EINVAL, "unknown word 'x' after throttle");
	bad("throttle 0%", -EINVAL, "bad share '0%'");
}
END_TEST

/* --- Errors --------------------------------------------------------------- */

START_TEST(test_einval_syntax)
{
	bad("paste a:0+1 b:0", -EINVAL, "'paste'");
	bad("copy", -EINVAL, "copy needs");
	bad("copy a:0+8", -EINVAL, "destination");
	bad("zero", -EINVAL, "zero needs");
	bad("copy a:0+8 b:0 fast", -EINVAL, "'fast'");
	bad("copy a:0 b:0", -EINVAL, "'a:0'");
	bad("copy a:0+8 b:0+8", -EINVAL, "'b:0+8'");
	bad("zero a:0", -EINVAL, "'a:0'");
	bad("copy a:x+8 b:0", -EINVAL, "'x'");
	bad("copy a:0+ b:0", -EINVAL, "'a:0+'");
	bad("copy a:+8 b:0", -EINVAL, "'a:+8'");
	bad("copy a:0x10+8 b:0", -EINVAL, "'0x10'");
	bad("copy a:0+8 b:0 sync b:8", -EINVAL, "'b:8'");
	bad("copy :0+8 b:0", -EINVAL, "':0+8'");
	bad("copy a/b:0+8 b:0", -EINVAL, "'a/b:0+8'");
	bad("COPY a:0+8 b:0", -EINVAL, "'COPY'");
}
END_TEST

START_TEST(test_einval_numbers)
{
	/* Negative, signed, overflowing. */
	bad("copy a:-1+8 b:0", -EINVAL, "'-1'");
	bad("copy a:0+-8 b:0", -EINVAL, "'-8'");
	bad("copy a:+0+8 b:0", -EINVAL, "'a:+0+8'");
	bad("zero a:0+18446744073709551616", -EINVAL, "too large");
	bad("zero a:99999999999999999999999+1", -EINVAL, "too large");
	/* 2^64 - 1 parses, and is then past the end. */
	bad("zero big:18446744073709551615+1", -ERANGE, "big");
}
END_TEST

START_TEST(test_einval_options)
{
	bad("zero a:0+8 ignore_errors", -EINVAL, "'ignore_errors'");
	bad("zero a:0+8 write_seq", -EINVAL, "'write_seq'");
	bad("zero a:0+8 checksum", -EINVAL, "'checksum' is for copy only");
	bad("copy a:0+8 b:0 checksum checksum", -EINVAL, "twice");
	bad("copy a:0+8 b:0 sync sync", -EINVAL, "twice");
	bad("copy a:0+8 b:0 tag=x tag=y", -EINVAL, "twice");
	bad("copy a:0+8 b:0 tag=", -EINVAL, "'tag='");
	bad("copy a:0+8 b:0 tag=a/b", -EINVAL, "'tag=a/b'");
	bad("copy a:0+8 b:0 tag=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxx", -EINVAL, "bad tag");
	bad("copy a:0+8 b:0 Sync", -EINVAL, "'Sync'");
}
END_TEST

/*
 * The engine's rules come from the engine: real images behind the names,
 * "x" and "y" one image under two names, "r" read-only.
 */
static const char *const engine_names[] = { "a", "b", "x", "y", "r" };
static struct block_device *engine_bdevs[5];

static int engine_find(const struct kfs_devlookup *l, const char *name,
		       size_t len, uint64_t *sectors)
{
	for (int i = 0; i < 5; i++)
		if (strlen(engine_names[i]) == len &&
		    !memcmp(engine_names[i], name, len)) {
			*sectors = kcopyd_bdev_sectors(engine_bdevs[i]);
			return i;
		}
	return -ENOENT;
}

static int engine_check(const struct kfs_devlookup *l,
			const struct kfs_cmd *c, int *culprit)
{
	return kfs_cmd_check(engine_bdevs, c, culprit);
}

static const struct kfs_devlookup engine_dl = {
	.find = engine_find, .check = engine_check,
};

static void engine_open(void)
{
	char a[] = "/dev/shm/check_parse.XXXXXX";
	char b[] = "/dev/shm/check_parse.XXXXXX";
	int fa = mkstemp(a), fb = mkstemp(b);

	ck_assert_int_ge(fa, 0);
	ck_assert_int_ge(fb, 0);
	ck_assert_int_eq(ftruncate(fa, 1000 * 512), 0);
	ck_assert_int_eq(ftruncate(fb, 1000 * 512), 0);
	close(fa);
	close(fb);
	ck_assert_int_eq(kcopyd_bdev_open(a, O_RDWR, &engine_bdevs[0]), 0);
	ck_assert_int_eq(kcopyd_bdev_open(b, O_RDWR, &engine_bdevs[1]), 0);
	ck_assert_int_eq(kcopyd_bdev_open(b, O_RDWR, &engine_bdevs[2]), 0);
	ck_assert_int_eq(kcopyd_bdev_open(b, O_RDWR, &engine_bdevs[3]), 0);
	ck_assert_int_eq(kcopyd_bdev_open(a, O_RDONLY, &engine_bdevs[4]), 0);
	unlink(a);
	unlink(b);
}

static void engine_close(void)
{
	for (int i = 0; i < 5; i++)
		kcopyd_bdev_close(engine_bdevs[i]);
}

static void engine_bad(const char *line, int err, const char *token)
{
	int r = kfs_parse_line(line, strlen(line), &engine_dl, &cmd, msg,
			       sizeof(msg));

	ck_assert_msg(r == err, "'%s': got %d (%s), want %d", line, r, msg,
		      err);
	ck_assert_msg(strstr(msg, token), "'%s': message '%s' lacks '%s'",
		      line, msg, token);
}

START_TEST(test_einval_overlap)
{
	engine_open();
	engine_bad("copy a:0+100 b:0 b:50", -EINVAL, "'b:50' overlaps");
	engine_bad("copy a:100+100 a:50 a:150", -EINVAL, "both sides");
	engine_bad("copy a:0+100 a:50 write_seq", -EINVAL, "write_seq");
	/* One image under two names: the names differ, the image not. */
	engine_bad("copy a:0+16 x:0 y:8", -EINVAL, "'y:8' overlaps");
	engine_bad("copy x:0+16 y:8 write_seq", -EINVAL, "'x:0+16' above it");
	ck_assert_int_eq(kfs_parse_line("copy x:0+16 y:8", 15, &engine_dl,
					&cmd, msg, sizeof(msg)), 0);
	ck_assert_int_eq(kfs_parse_line("copy x:0+16 y:16", 16, &engine_dl,
					&cmd, msg, sizeof(msg)), 0);
	engine_bad("zero a:0+8 r:0+8", -EROFS, "'r:0+8' is on a read-only");
	/* Without the hook, the parser leaves the rules to the engine. */
	ck_assert_int_eq(parse("copy a:0+100 b:0 b:50"), 0);
	engine_close();
}
END_TEST

START_TEST(test_einval_bytes)
{
	static const char nul[] = "copy a:0+8\0 b:0";
	static const char ctl[] = "copy a:0+8 b:0\r";
	static const char high[] = "copy a:0+8 b:\xc3\xa9";
	int r;

	r = kfs_parse_line(nul, sizeof(nul) - 1, &dl, &cmd, msg, sizeof(msg));
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_ptr_nonnull(strstr(msg, "NUL byte at offset 10"));
	bad(ctl, -EINVAL, "0x0d");
	bad(high, -EINVAL, "0xc3");
}
END_TEST

START_TEST(test_enoent)
{
	bad("copy x:0+8 b:0", -ENOENT, "'x'");
	bad("copy a:0+8 b:0 nosuch:0", -ENOENT, "'nosuch'");
	bad("zero A:0+8", -ENOENT, "'A'");
}
END_TEST

START_TEST(test_erange)
{
	bad("copy a:993+8 b:0", -ERANGE, "'a:993+8'");
	bad("copy a:0+8 b:993", -ERANGE, "'b:993'");
	bad("zero a:1001+0", -ERANGE, "'a:1001+0'");
	bad("zero d.e_f-1:0+9", -ERANGE, "(8 sectors)");
	/* START + COUNT wraps around 2^64: still past the end. */
	bad("zero big:1+18446744073709551615", -ERANGE, "big");
}
END_TEST

START_TEST(test_e2big)
{
	char line[2048] = "copy a:0+1";
	size_t n = strlen(line);

	for (int i = 0; i < KFS_MAX_DESTS; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " big:%d",
				      i);
	ck_assert_int_eq(parse(line), 0);
	ck_assert_uint_eq(cmd.num_dests, KFS_MAX_DESTS);
	snprintf(line + n, sizeof(line) - n, " b:5");
	bad(line, -E2BIG, "'b:5'");
}
END_TEST

START_TEST(test_efbig_line)
{
	char *line = malloc(KFS_MAX_LINE + 2);
	int r;

	memset(line, ' ', KFS_MAX_LINE + 1);
	memcpy(line, "zero a:0+8", 10);
	r = kfs_parse_line(line, KFS_MAX_LINE, &dl, &cmd, msg, sizeof(msg));
	ck_assert_int_eq(r, 0);
	r = kfs_parse_line(line, KFS_MAX_LINE + 1, &dl, &cmd, msg,
			   sizeof(msg));
	ck_assert_int_eq(r, -EFBIG);
	free(line);
}
END_TEST

START_TEST(test_long_token_message)
{
	char line[600] = "copy ";

	memset(line + 5, 'q', 500);
	line[505] = '\0';
	bad(line, -EINVAL, "...'");
	ck_assert_uint_lt(strlen(msg), 200);
}
END_TEST

/* --- Whole writes --------------------------------------------------------- */

static struct kfs_cmd cmds[8];
static unsigned int ncmds;

static int parse_write(const char *buf, size_t len)
{
	return kfs_parse_write(buf, len, &dl, cmds, 8, &ncmds, msg,
			       sizeof(msg));
}

START_TEST(test_write_lines)
{
	const char *w = "copy a:0+8 b:0\n\n  \nzero b:8+8 tag=t\n"
			"copy b:0+1 a:5";

	ck_assert_int_eq(parse_write(w, strlen(w)), 0);
	ck_assert_uint_eq(ncmds, 3);
	ck_assert_int_eq(cmds[0].op, KFS_OP_COPY);
	ck_assert_int_eq(cmds[1].op, KFS_OP_ZERO);
	ck_assert_str_eq(cmds[1].tag, "t");
	ck_assert_uint_eq(cmds[2].dests[0].sector, 5);
	ck_assert_int_eq(parse_write("\n", 1), 0);
	ck_assert_uint_eq(ncmds, 0);
}
END_TEST

START_TEST(test_write_errors)
{
	const char *w = "copy a:0+8 b:0\nzero b:8+8 bogus\n";
	const char *one = "zero q:0+8\n";
	char *big;

	ck_assert_int_eq(parse_write(w, strlen(w)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(msg, "line 2: "));
	ck_assert_ptr_nonnull(strstr(msg, "'bogus'"));
	/* A single line carries no line number. */
	ck_assert_int_eq(parse_write(one, strlen(one)), -ENOENT);
	ck_assert_ptr_null(strstr(msg, "line "));
	ck_assert_int_eq(parse_write("zero a:0+8\0\n", 12), -EINVAL);
	ck_assert_ptr_nonnull(strstr(msg, "NUL"));

	big = malloc(KFS_MAX_BATCH + 1);
	memset(big, '\n', KFS_MAX_BATCH + 1);
	ck_assert_int_eq(parse_write(big, KFS_MAX_BATCH), 0);
	ck_assert_int_eq(parse_write(big, KFS_MAX_BATCH + 1), -EFBIG);
	ck_assert_ptr_nonnull(strstr(msg, "69633"));
	free(big);

	/* More commands than the caller has room for. */
	ck_assert_int_eq(parse_write("zero a:0+1\nzero a:0+1\nzero a:0+1\n"
				     "zero a:0+1\nzero a:0+1\nzero a:0+1\n"
				     "zero a:0+1\nzero a:0+1\nzero a:0+1\n",
				     99), -EFBIG);
}
END_TEST

/* --- Sizes and fault specs ------------------------------------------------ */

START_TEST(test_size)
{
	uint64_t v;

	ck_assert_int_eq(kfs_parse_size("4096", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(kfs_parse_size("64K", &v), 0);
	ck_assert_uint_eq(v, 65536);
	ck_assert_int_eq(kfs_parse_size("2M", &v), 0);
	ck_assert_uint_eq(v, 2 * 1024 * 1024);
	ck_assert_int_eq(kfs_parse_size("", &v), -EINVAL);
	ck_assert_int_eq(kfs_parse_size("K", &v), -EINVAL);
	ck_assert_int_eq(kfs_parse_size("2m", &v), -EINVAL);
	ck_assert_int_eq(kfs_parse_size("-1", &v), -EINVAL);
	ck_assert_int_eq(kfs_parse_size("18014398509481984K", &v), -EINVAL);
	ck_assert_int_eq(kfs_parse_size("1G", &v), 0);
	ck_assert_uint_eq(v, 1u << 30);
	ck_assert_int_eq(kfs_parse_size("4k", &v), 0);
	ck_assert_uint_eq(v, 4096);
}
END_TEST

/* Regions take the same grammar: sectors bare, bytes with a unit. */
START_TEST(test_region_units)
{
	ck_assert_int_eq(parse("copy a:4k+8K b:1KiB"), 0);
	ck_assert_uint_eq(cmd.src.sector, 8);
	ck_assert_uint_eq(cmd.src.count, 16);
	ck_assert_uint_eq(cmd.dests[0].sector, 2);
	ck_assert_int_eq(parse("zero a:16s+512B"), 0);
	ck_assert_uint_eq(cmd.dests[0].sector, 16);
	ck_assert_uint_eq(cmd.dests[0].count, 1);
	bad("zero a:0+1000B", -EINVAL, "whole number of sectors");
	bad("zero a:0+4x", -EINVAL, "'4x' is not a number of sectors");
	bad("zero a:0+1T", -ERANGE, "ends past the end");
}
END_TEST

/* --fault ranges too. */
START_TEST(test_fault_units)
{
	struct kcopyd_fault f;
	char name[16];

	ck_assert_int_eq(kfs_parse_fault("b:read:1M+4k", name, sizeof(name),
					 &f, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(f.sector, 2048);
	ck_assert_uint_eq(f.count, 8);
	ck_assert_int_eq(kfs_parse_fault("b:read:1000B+8", name,
					 sizeof(name), &f, msg, sizeof(msg)),
			 -EINVAL);
}
END_TEST

START_TEST(test_fault)
{
	struct kcopyd_fault f;
	char name[KFS_MAX_NAME + 1];

	ck_assert_int_eq(kfs_parse_fault("sda:read:8+16", name, sizeof(name),
					 &f, msg, sizeof(msg)), 0);
	ck_assert_str_eq(name, "sda");
	ck_assert_uint_eq(f.ops, KCOPYD_FAULT_READ);
	ck_assert_int_eq(f.kind, KCOPYD_FAULT_ERROR);
	ck_assert_int_eq(f.error, EIO);
	ck_assert_uint_eq(f.sector, 8);
	ck_assert_uint_eq(f.count, 16);

	ck_assert_int_eq(kfs_parse_fault("b:write:0+1:ENOSPC", name,
					 sizeof(name), &f, msg, sizeof(msg)),
			 0);
	ck_assert_uint_eq(f.ops, KCOPYD_FAULT_WRITE);
	ck_assert_int_eq(f.error, ENOSPC);
	ck_assert_int_eq(kfs_parse_fault("b:rw:0+1:5", name, sizeof(name), &f,
					 msg, sizeof(msg)), 0);
	ck_assert_uint_eq(f.ops, KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE);
	ck_assert_int_eq(f.error, 5);
	ck_assert_int_eq(kfs_parse_fault("b:write:0+1:short", name,
					 sizeof(name), &f, msg, sizeof(msg)),
			 0);
	ck_assert_int_eq(f.kind, KCOPYD_FAULT_SHORT);
	ck_assert_int_eq(kfs_parse_fault("b:read:0+1:delay=2500", name,
					 sizeof(name), &f, msg, sizeof(msg)),
			 0);
	ck_assert_int_eq(f.kind, KCOPYD_FAULT_DELAY);
	ck_assert_uint_eq(f.delay_us, 2500);

	ck_assert_int_eq(kfs_parse_fault("b:read", name, sizeof(name), &f, msg,
					 sizeof(msg)), -EINVAL);
	ck_assert_int_eq(kfs_parse_fault("b:trim:0+1", name, sizeof(name), &f,
					 msg, sizeof(msg)), -EINVAL);
	ck_assert_int_eq(kfs_parse_fault("b:read:0+0", name, sizeof(name), &f,
					 msg, sizeof(msg)), -EINVAL);
	ck_assert_int_eq(kfs_parse_fault("b:read:0+1:EFOO", name, sizeof(name),
					 &f, msg, sizeof(msg)), -EINVAL);
	ck_assert_int_eq(kfs_parse_fault("b/c:read:0+1", name, sizeof(name),
					 &f, msg, sizeof(msg)), -EINVAL);
	ck_assert_int_eq(kfs_parse_fault("b:read:0+1:delay=x", name,
					 sizeof(name), &f, msg, sizeof(msg)),
			 -EINVAL);
	/* START+COUNT past 2^64 is refused here, naming the spec. */
	ck_assert_int_eq(kfs_parse_fault("b:write:18446744073709551615+8",
					 name, sizeof(name), &f, msg,
					 sizeof(msg)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(msg, "18446744073709551615+8"));
}
END_TEST

/* attach, detach, wait: parsed whole, alone in a write. */
static int admin(const char *text, struct kfs_admin *a)
{
	return kfs_parse_admin(text, strlen(text), a, msg, sizeof(msg));
}

START_TEST(test_admin)
{
	struct kfs_admin a;

	ck_assert_int_eq(admin("attach sdc images/c.img\n", &a), 0);
	ck_assert_int_eq(a.op, KFS_ADMIN_ATTACH);
	ck_assert_str_eq(a.name, "sdc");
	ck_assert_str_eq(a.path, "images/c.img");
	ck_assert(!a.ro);
	ck_assert_int_eq(admin("\t attach  r\tc.img ro", &a), 0);
	ck_assert_str_eq(a.name, "r");
	ck_assert(a.ro);
	ck_assert_int_eq(admin("detach sdc\n", &a), 0);
	ck_assert_int_eq(a.op, KFS_ADMIN_DETACH);
	ck_assert_str_eq(a.name, "sdc");
	ck_assert_int_eq(admin("wait 18446744073709551615\n", &a), 0);
	ck_assert_int_eq(a.op, KFS_ADMIN_WAIT);
	ck_assert_uint_eq(a.id, UINT64_MAX);
	/* Blank lines around it are no other command. */
	ck_assert_int_eq(admin("\nwait 3\n\n", &a), 0);
	ck_assert_uint_eq(a.id, 3);
	/* Not an admin command: left to kfs_parse_write. */
	ck_assert_int_eq(admin("copy a:0+1 b:0\nzero b:0+1\n", &a), 0);
	ck_assert_int_eq(a.op, KFS_ADMIN_NONE);
	ck_assert_int_eq(admin("attached x y\n", &a), 0);
	ck_assert_int_eq(a.op, KFS_ADMIN_NONE);
}
END_TEST

START_TEST(test_admin_errors)
{
	static const struct {
		const char *text;
		int err;
		const char *says;
	} bad[] = {
		{ "attach x c.img\nzero b:0+1\n", -EINVAL, "alone" },
		{ "zero b:0+1\ndetach x\n", -EINVAL, "detach must be alone" },
		{ "attach x\n", -EINVAL, "attach NAME PATH [ro]" },
		{ "attach x c.img rw\n", -EINVAL, "'rw'" },
		{ "attach x c.img ro ro\n", -EINVAL, "extra word 'ro'" },
		{ "attach x/y c.img\n", -EINVAL, "bad device name 'x/y'" },
		{ "attach .. c.img\n", -EINVAL, "bad device name" },
		{ "detach\n", -EINVAL, "detach NAME" },
		{ "detach a b\n", -EINVAL, "extra word 'b'" },
		{ "wait\n", -EINVAL, "wait ID" },
		{ "wait -1\n", -EINVAL, "bad job id '-1'" },
		{ "wait 18446744073709551616\n", -EINVAL, "bad job id" },
		{ "attach x c\x01.img\n", -EINVAL, "binary byte 0x01" },
	};
	struct kfs_admin a;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(admin(bad[i].text, &a) == bad[i].err,
			      "'%s' gave %s", bad[i].text, msg);
		ck_assert_msg(strstr(msg, bad[i].says), "'%s': %s",
			      bad[i].text, msg);
	}
}
END_TEST

/* Names: the charset and length, and never dev/'s own entries. */
START_TEST(test_valid_name)
{
	static const char *const good[] = { "a", "sda", "a.img", "...",
		".a", "a..", "-_.", "x-1" };
	static const char *const bad[] = { ".", "..", "", "a/b", "a b",
		"a\tb", "a\nb", "a\x01b", "a\x7f" };
	char longest[KFS_MAX_NAME + 2];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(kfs_valid_name(good[i], strlen(good[i])),
			      "'%s' refused", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!kfs_valid_name(bad[i], strlen(bad[i])),
			      "'%s' accepted", bad[i]);
	/* A length given excludes what follows: "." of ".x" is refused. */
	ck_assert(!kfs_valid_name(".x", 1));
	ck_assert(!kfs_valid_name("..x", 2));
	memset(longest, 'n', sizeof(longest));
	ck_assert(kfs_valid_name(longest, KFS_MAX_NAME));
	ck_assert(!kfs_valid_name(longest, KFS_MAX_NAME + 1));
}
END_TEST

static Suite *parse_suite(void)
{
	Suite *s = suite_create("parse");
	TCase *tc;

	tc = tcase_create("commands");
	tcase_add_test(tc, test_copy_simple);
	tcase_add_test(tc, test_copy_options);
	tcase_add_test(tc, test_copy_checksum);
	tcase_add_test(tc, test_zero);
	tcase_add_test(tc, test_blank);
	tcase_add_test(tc, test_edges);
	tcase_add_test(tc, test_valid_name);
	tcase_add_test(tc, test_cancel_throttle);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_einval_syntax);
	tcase_add_test(tc, test_einval_numbers);
	tcase_add_test(tc, test_einval_options);
	tcase_add_test(tc, test_einval_overlap);
	tcase_add_test(tc, test_einval_bytes);
	tcase_add_test(tc, test_enoent);
	tcase_add_test(tc, test_erange);
	tcase_add_test(tc, test_e2big);
	tcase_add_test(tc, test_efbig_line);
	tcase_add_test(tc, test_long_token_message);
	suite_add_tcase(s, tc);

	tc = tcase_create("writes");
	tcase_add_test(tc, test_write_lines);
	tcase_add_test(tc, test_write_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("options");
	tcase_add_test(tc, test_size);
	tcase_add_test(tc, test_region_units);
	tcase_add_test(tc, test_fault_units);
	tcase_add_test(tc, test_fault);
	suite_add_tcase(s, tc);

	tc = tcase_create("admin");
	tcase_add_test(tc, test_admin);
	tcase_add_test(tc, test_admin_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(parse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
