#!/bin/bash
# kcopy --checksum prints the digest of the source range, computed from
# what the copy reads (holes are not read); each is compared with the
# digest computed here, independently, by the python3-xxhash program that
# kcopy(1) gives, over the source file's bytes: data, a sparse image, a range at an odd sector, several
# destinations with --verify, a copy up into an overlap, an empty source.
# --checksum with --map or --zero is refused.
source "$abs_srcdir/functions.sh"
requires cmp truncate fallocate timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"
requires_digest_py
# libkcopyd(3) gives the same program.
awk '/^\.SH THE DIGEST/ { on = 1; next }
	on && /^\.EX/ { ex = 1; next }
	on && /^\.EE/ { exit }
	on && ex' "$abs_top_srcdir/man/libkcopyd.3" |
	sed -e 's/\\-/-/g' -e 's/\\(aq/'"'"'/g' >digest3.py
cmp digest.py digest3.py || fail "libkcopyd(3) and kcopy(1) differ: $(diff digest.py digest3.py)"

# ref FILE [START COUNT]: the digest of the range (default: all of FILE)
ref()
{
	local n=$(($(stat -c %s "$1") / 512))
	"$py" digest.py "$1" "${2:-0}" "${3:-$n}" || fail "digest.py $*"
}

# run SRC-TOKEN ARGS...: kcopy --checksum; $status, out, err
run()
{
	timeout 300 "$KCOPY" --checksum "$@" >out 2>err
	status=$?
}

# check WANT TOKEN: stdout is exactly the digest line of TOKEN
check()
{
	local want=$1 token=$2
	[ $status -eq 0 ] || fail "exit $status: $(cat err)"
	[ "$(cat out)" = "$want  $token" ] ||
		fail "printed '$(cat out)', want '$want  $token'"
}

# Data, not a multiple of the block.
make_image src.img $((3 * 1024 * 1024 + 1536)) random
run src.img dst.img
check "$(ref src.img)" src.img
cmp src.img dst.img || fail "dst.img differs"

# A sparse image: holes that start and end inside blocks, one at the end.
make_image sp.img 16M random
fallocate -p -o $((68 * 1024)) -l $((64 * 1024)) sp.img
fallocate -p -o $((1024 * 1024 + 4096)) -l $((5 * 1024 * 1024)) sp.img
fallocate -p -o $((11 * 1024 * 1024 + 20480)) -l 5M sp.img
timeout 300 "$KCOPY" -v --checksum sp.img spd.img >out 2>err
status=$?
check "$(ref sp.img)" sp.img
cmp sp.img spd.img || fail "spd.img differs"
# The holes were hashed, not read.
grep -q " 0 B of holes not read" err && fail "no hole skipped: $(cat err)"
grep -q "of holes not read" err || fail "no summary: $(cat err)"

# A range from an odd sector, of an odd number of sectors.
run sp.img:7+12345 part.img
check "$(ref sp.img 7 12345)" sp.img:7+12345
run sp.img:129s+3M odd.img
check "$(ref sp.img 129 6144)" sp.img:129s+3M

# Several destinations, read back.
run --verify sp.img f1.img f2.img
check "$(ref sp.img)" sp.img
cmp sp.img f2.img || fail "f2.img differs"

# A copy up into an overlap runs from the end: the digest is still that
# of the source as it was.
make_image ov.img 6M random
want=$(ref ov.img 0 10000)
cp ov.img ov.orig
run ov.img:0+10000 ov.img:3
check "$want" ov.img:0+10000
cmp -n $((10000 * 512)) ov.orig <(tail -c +$((3 * 512 + 1)) ov.img) ||
	fail "the overlapping copy is wrong"

# With small chunks, blocks are cut between chunks.
run --pages 8 --subjob-size 8K sp.img:5+20000 small.img
check "$(ref sp.img 5 20000)" sp.img:5+20000

# An empty source has the digest of no block.
: >empty.img
run empty.img empty2.img
check "$(ref empty.img)" empty.img

# A range past the end of the file: the program says so, and stops.
timeout 120 "$py" digest.py src.img 0 $(stat -c %s src.img) >out 2>err
status=$?
[ $status -eq 1 ] || fail "digest.py past the end: exit $status: $(cat err)"
grep -q "past the end of the file" err || fail "digest.py past the end: $(cat err)"
[ -s out ] && fail "digest.py past the end printed: $(cat out)"

# Refused: nothing to digest, or a copy that does not read it all.
run --zero dst.img
[ $status -eq 1 ] || fail "--checksum --zero: exit $status"
grep -q "\-\-zero has none" err || fail "--zero: $(cat err)"
[ -s out ] && fail "--checksum --zero printed: $(cat out)"
run --map m.map src.img m.img
[ $status -eq 1 ] || fail "--checksum --map: exit $status"
grep -q "cannot go with --map" err || fail "--map: $(cat err)"
[ -e m.img ] && fail "--checksum --map created the destination"
exit 0
