#!/bin/bash
# kcopy and holes: a sparse source stays sparse in a new destination, zeros
# in the data are punched, --sparse=0, --allocated, --target-is-zero,
# --zero punches, and the size grammar's units.
source "$abs_srcdir/functions.sh"
requires cmp dd truncate stat du
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

# Bytes allocated to a file.
alloc() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
MiB=1048576

# 64 MiB holding 3 MiB of data in three extents; the rest holes.
truncate -s 64M sparse.img
for at in 0 20 63; do
	head -c $MiB /dev/urandom |
		dd of=sparse.img bs=1M seek=$at conv=notrunc status=none
done
[ "$(alloc sparse.img)" -le $((4 * MiB)) ] ||
	skip "this file system does not keep holes"

# A new destination: only the data is allocated, and the copy says so.
"$KCOPY" -v sparse.img new.img 2>log || fail "sparse copy: $(cat log)"
cmp sparse.img new.img || fail "new.img differs"
[ "$(alloc new.img)" -le "$(alloc sparse.img)" ] ||
	fail "new.img: $(alloc new.img) bytes allocated, source $(alloc sparse.img)"
grep -q "3.00 MiB of data written, 61.00 MiB of holes not read" log ||
	fail "summary: $(cat log)"

# An old destination full of data: where the source has holes, it gets
# zeros, by punching.
head -c $((64 * MiB)) /dev/urandom >old.img
"$KCOPY" sparse.img old.img || fail "copy over data"
cmp sparse.img old.img || fail "old.img differs"
[ "$(alloc old.img)" -le $((4 * MiB)) ] ||
	fail "old.img: $(alloc old.img) bytes allocated"

# Allocated zeros in the source are found and punched, unless --sparse=0.
head -c $((8 * MiB)) /dev/zero >zeros.img
head -c 4096 /dev/urandom | dd of=zeros.img bs=4096 seek=100 conv=notrunc \
	status=none
"$KCOPY" zeros.img z1.img || fail "zeros"
cmp zeros.img z1.img || fail "z1.img differs"
[ "$(alloc z1.img)" -le $((64 * 1024)) ] ||
	fail "z1.img: $(alloc z1.img) bytes allocated"
"$KCOPY" --sparse=0 zeros.img z2.img || fail "--sparse=0"
cmp zeros.img z2.img || fail "z2.img differs"
[ "$(alloc z2.img)" -ge $((8 * MiB)) ] ||
	fail "--sparse=0: z2.img only $(alloc z2.img) bytes allocated"
"$KCOPY" --sparse=64K zeros.img z3.img || fail "--sparse=64K"
cmp zeros.img z3.img || fail "z3.img differs"
[ "$(alloc z3.img)" -ge $((64 * 1024)) ] &&
	[ "$(alloc z3.img)" -le $((128 * 1024)) ] ||
	fail "--sparse=64K: z3.img has $(alloc z3.img) bytes allocated"
expect_fail "--sparse '3000'" "$KCOPY" --sparse=3000 zeros.img z4.img
expect_fail "--sparse 'x'" "$KCOPY" --sparse=x zeros.img z4.img

# --allocated: every block of the destination stays allocated.
"$KCOPY" --allocated sparse.img full.img || fail "--allocated"
cmp sparse.img full.img || fail "full.img differs"
[ "$(alloc full.img)" -ge $((64 * MiB)) ] ||
	fail "--allocated: full.img only $(alloc full.img) bytes allocated"

# --target-is-zero: the holes of the source are not zeroed in the
# destination (here, falsely, it is not zeros: the old bytes stay).
head -c $((64 * MiB)) /dev/urandom >tz.img
cp tz.img tz.orig
"$KCOPY" --target-is-zero sparse.img tz.img || fail "--target-is-zero"
cmp -i $((21 * MiB)):$((21 * MiB)) -n $((40 * MiB)) tz.img tz.orig ||
	fail "--target-is-zero zeroed a hole"
cmp -n $MiB sparse.img tz.img || fail "--target-is-zero: data not copied"

# --zero punches holes: nothing stays allocated.
head -c $((32 * MiB)) /dev/urandom >zero.img
"$KCOPY" --zero zero.img || fail "--zero"
cmp -n $((32 * MiB)) zero.img /dev/zero || fail "zero.img not zeros"
[ "$(alloc zero.img)" -le 65536 ] ||
	fail "--zero: $(alloc zero.img) bytes still allocated"
head -c $((4 * MiB)) /dev/urandom >zeroa.img
"$KCOPY" --zero --allocated zeroa.img || fail "--zero --allocated"
cmp -n $((4 * MiB)) zeroa.img /dev/zero || fail "zeroa.img not zeros"
[ "$(alloc zeroa.img)" -ge $((4 * MiB)) ] ||
	fail "--zero --allocated: only $(alloc zeroa.img) bytes allocated"

# One size grammar: k (as dd), K, KiB, B and s all name the same range.
for r in 4k+8k 4K+8K 4KiB+8KiB 4096B+8192B 8s+16s 8+16; do
	rm -f part.img
	"$KCOPY" "sparse.img:$r" part.img || fail "range $r"
	[ "$(stat -c %s part.img)" -eq 8192 ] || fail "range $r: size"
	cmp -i 4096:0 -n 8192 sparse.img part.img || fail "range $r: data"
done
