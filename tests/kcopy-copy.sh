#!/bin/bash
# kcopy direct mode: fan-out, partial ranges, every unit, creation and
# extension of destinations, paths with ':', --zero, and bad input.
source "$abs_srcdir/functions.sh"
requires cmp dd truncate
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 4M random

# expect SRC_SKIP COUNT FILE FILE_SKIP (512-byte sectors): the region of FILE
# must equal the one of src.img, as dd copies it.
expect()
{
	dd if=src.img bs=512 skip="$1" count="$2" status=none >exp ||
		fail "dd src.img"
	dd if="$3" bs=512 skip="$4" count="$2" status=none >got ||
		fail "dd $3"
	cmp exp got || fail "$3 at $4 differs from src.img at $1+$2"
}

size_of() { stat -c %s "$1"; }

# Fan-out: one source, three new destinations at different offsets.
"$KCOPY" src.img a.img b.img:8 c.img:1M || fail "fan-out copy"
cmp src.img a.img || fail "a.img differs"
expect 0 8192 b.img 8
expect 0 8192 c.img 2048
[ "$(size_of b.img)" -eq $((4194304 + 4096)) ] || fail "b.img size"
[ "$(size_of c.img)" -eq $((4194304 + 1048576)) ] || fail "c.img size"
# The sectors before START of a created file are zeros.
cmp -n 4096 b.img /dev/zero || fail "b.img head is not zero"

# Partial ranges, with every unit: plain sectors, s, B, K, KiB, M, MiB.
"$KCOPY" src.img:8+16 d1.img || fail "sectors"
expect 8 16 d1.img 0
[ "$(size_of d1.img)" -eq 8192 ] || fail "d1.img size $(size_of d1.img)"
"$KCOPY" src.img:100s+20s d2.img:3s || fail "s"
expect 100 20 d2.img 3
"$KCOPY" src.img:1536B+1024B d2b.img:512B || fail "B"
expect 3 2 d2b.img 1
"$KCOPY" src.img:4K+8K d3.img:1K || fail "K"
expect 8 16 d3.img 2
"$KCOPY" src.img:2KiB+3KiB d4.img:1KiB || fail "KiB"
expect 4 6 d4.img 2
"$KCOPY" src.img:1M+1M d5.img:2M || fail "M"
expect 2048 2048 d5.img 4096
"$KCOPY" src.img:1MiB+2MiB d6.img || fail "MiB"
expect 2048 4096 d6.img 0
# COUNT defaults to the rest of the source.
"$KCOPY" src.img:3M d7.img || fail "rest"
expect 6144 2048 d7.img 0
[ "$(size_of d7.img)" -eq 1048576 ] || fail "d7.img size"
# G, GiB, T, TiB: zero is a valid START, and the sector counts in the
# messages show how each unit was read.
"$KCOPY" src.img:0G+0T d8.img:0GiB || fail "0G"
"$KCOPY" src.img:0TiB+1K d8.img:0T || fail "0T"
expect 0 2 d8.img 0
expect_fail "START 2097152 is past the end" "$KCOPY" src.img:1G x.img
expect_fail "START 2097152 is past the end" "$KCOPY" src.img:1GiB x.img
expect_fail "START 2147483648 is past the end" "$KCOPY" src.img:1T x.img
expect_fail "START 2147483648 is past the end" "$KCOPY" src.img:1TiB x.img
[ ! -e x.img ] || fail "a refused copy left x.img behind"

# An existing destination that is too short is extended, one that is
# longer keeps its size and its data outside the range.
make_image short.img 1K random
cp short.img short.orig
"$KCOPY" src.img:0+4 short.img:4 || fail "extend"
[ "$(size_of short.img)" -eq 4096 ] || fail "short.img not extended"
cmp -n 1024 short.img short.orig || fail "short.img head changed"
expect 0 4 short.img 4
make_image long.img 8M random
cp long.img long.orig
"$KCOPY" src.img long.img:2M || fail "into a longer file"
[ "$(size_of long.img)" -eq 8388608 ] || fail "long.img size changed"
cmp -n 2097152 long.img long.orig || fail "long.img head changed"
expect 0 8192 long.img 4096
cmp -i 6291456 long.img long.orig || fail "long.img tail changed"

# A source that is also a destination: an overlapping copy is a memmove.
cp src.img self.img
"$KCOPY" self.img:0+4096 self.img:1000 || fail "overlap up"
expect 0 4096 self.img 1000
cp src.img self.img
"$KCOPY" self.img:1000+4096 self.img:10 || fail "overlap down"
expect 1000 4096 self.img 10
# The same file twice, with overlapping regions, is refused.
expect_fail "overlap" "$KCOPY" src.img:0+16 o.img:0 o.img:8
[ ! -e o.img ] || fail "a refused copy left o.img behind"

# Paths containing ':' -- the range follows the last ':', and a trailing
# ':' ends a path whose name ends in ':NUMBER'.
cp src.img 'odd:8'
"$KCOPY" 'odd:8:' 'out:1:' || fail "trailing ':'"
cmp src.img 'out:1' || fail "'out:1' differs"
"$KCOPY" 'odd:8:16+4' 'out:2:2' || fail "range after the last ':'"
expect 16 4 'out:2' 2
"$KCOPY" src.img:0+1 'dir:x/../plain' 2>/dev/null &&
	fail "a path whose directory does not exist was accepted"
mkdir 'dir:x'
"$KCOPY" src.img:0+1 'dir:x/f' || fail "':' followed by a non-number"
expect 0 1 'dir:x/f' 0

# --zero: ranges, rest of the device, creation with a COUNT.
cp src.img z.img
"$KCOPY" --zero z.img:1K+2K z.img:1M+512 || fail "zero"
expect 0 2 z.img 0
cmp -i 1024 -n 2048 z.img /dev/zero || fail "z.img not zeroed"
expect 6 2040 z.img 6
cmp -i 1048576 -n 262144 z.img /dev/zero || fail "z.img second range"
expect 2560 5632 z.img 2560
"$KCOPY" --zero z.img:3M || fail "zero to the end"
cmp -i 3145728 -n 1048576 z.img /dev/zero || fail "z.img tail not zeroed"
[ "$(size_of z.img)" -eq 4194304 ] || fail "z.img size"
"$KCOPY" --zero znew.img:0+64K || fail "zero creates"
cmp znew.img <(head -c 65536 /dev/zero) || fail "znew.img"
expect_fail "give a COUNT" "$KCOPY" --zero none.img
[ ! -e none.img ] || fail "a refused zero left none.img behind"

# Bad input: exit 1 and a message naming the token; nothing created.
expect_usage()
{
	local text=$1 st
	shift
	"$KCOPY" "$@" >out 2>err
	st=$?
	[ $st -eq 1 ] || fail "exit $st, not 1, from: kcopy $*"
	grep -qF -- "$text" err || fail "no '$text' from kcopy $*: $(cat err)"
}
expect_usage "bad START '5Q'" src.img:5Q bad.img
expect_usage "bad COUNT '3X'" src.img:0+3X bad.img
expect_usage "bad.img:1000b: bad START '1000b'" src.img:1000 bad.img:1000b
expect_usage "bad COUNT '1000B': not a multiple of 512 bytes" \
	src.img:0+1000B bad.img
expect_usage "bad.img:0+1: a destination takes no COUNT" src.img bad.img:0+1
expect_usage "past the end of src.img" src.img:8000+200 bad.img
expect_usage "number too large" src.img:99999999999999999999 bad.img
expect_usage "No such file or directory" missing.img bad.img
expect_usage "a SRC and at least one DST" src.img
expect_usage "at most 32" src.img $(seq -f 'm%g.img' 33)
expect_usage "--pages '0'" --pages 0 src.img bad.img
expect_usage "--threads 'x'" --threads x src.img bad.img
expect_usage "--subjob-size '1000'" --subjob-size 1000 src.img bad.img
expect_usage "--progress 'soon'" --progress=soon src.img bad.img
expect_usage "unrecognized option '--frobnicate'" --frobnicate src.img bad.img
[ ! -e bad.img ] || fail "bad input left bad.img behind"
[ ! -e m1.img ] || fail "bad input left m1.img behind"

# 32 destinations are allowed, and all get the data.
"$KCOPY" src.img:0+64 $(seq -f 'n%g.img' 32) || fail "32 destinations"
for i in $(seq 32); do expect 0 64 "n$i.img" 0; done

# The engine options change nothing in the result.
"$KCOPY" --pages 1 --threads 3 --subjob-size 4K --write-seq --direct \
	--fsync src.img e.img:7 || fail "engine options"
expect 0 8192 e.img 7

# --help and --version, and the SYNOPSIS of the man page is --help's.
"$KCOPY" --help | grep -q "^Usage: kcopy" || fail "--help"
"$KCOPY" --version | grep -q "^kcopy [0-9]" || fail "--version"
exit 0
