#!/bin/bash
# kcopy --map: a GNU ddrescue mapfile kept as the copy goes.  kcopy is
# killed with SIGKILL at random points of a copy slowed by a delay rule;
# after each kill ddrescuelog must read the map, and a second run with the
# same map must end with a byte-identical copy, having read from the
# source exactly the bytes the map left unfinished.  A map of another
# copy and a --map copy that overlaps its source are refused; failed
# ranges are skipped on a rerun and retried with --retry-bad.
source "$abs_srcdir/functions.sh"
requires cmp dd timeout ddrescuelog
[ -x "$KCOPY" ] || skip "kcopy was not built"
requires_fuse
make_tmpdir
cd "$tmp" || fail "cd $tmp"

seed=${KCOPY_MAP_SEED:-$RANDOM}
echo "seed $seed (KCOPY_MAP_SEED=$seed to repeat)"
RANDOM=$seed

make_image src.img 64M random
# 50 ms for every read of the source: six seconds or so for the copy,
# more on a loaded machine, and the kill comes within three.
start_kcopydfs "$tmp/mnt" --dev src:ro="$tmp/src.img" \
	--fault src:read:0+131072:delay=50000

killed=0
for iter in 1 2 3; do
	rm -f dst.img m.map
	"$KCOPY" -q --map m.map mnt/dev/src dst.img &
	pid=$!
	sleep "$((RANDOM % 3)).$((RANDOM % 9 + 1))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	status=$?
	[ $status = 137 ] && killed=$((killed + 1))
	[ -e m.map ] || fail "iteration $iter: no map after the kill"
	ddrescuelog -t m.map >status.txt 2>&1 ||
		fail "iteration $iter: ddrescuelog cannot read the map: $(cat status.txt; cat m.map)"
	want=$(map_left m.map)
	echo "iteration $iter: exit $status, $want bytes left"
	timeout 300 "$KCOPY" -v --map m.map mnt/dev/src dst.img >out 2>err ||
		fail "iteration $iter: resumed run failed: $(cat err)"
	cmp src.img dst.img || fail "iteration $iter: the copy differs from the source"
	grep -q "m.map: $want bytes read from the source; the map has 67108864 bytes finished, 0 failed, 0 not tried" err ||
		fail "iteration $iter: not exactly the $want bytes left were read: $(cat err)"
	ddrescuelog -D m.map || fail "iteration $iter: ddrescuelog says not finished"
done
[ $killed -gt 0 ] || fail "every copy ended before its kill: nothing was resumed"

# A map of another copy is refused, and nothing is written.
make_image other.img 64M random
cp dst.img before.img
"$KCOPY" --map m.map other.img dst.img 2>err && fail "a map of another source was taken"
grep -q "m.map: the map is of another copy" err || fail "refusal: $(cat err)"
cmp before.img dst.img || fail "a refused map still wrote"
# So is one whose destination is another file.
"$KCOPY" --map m.map src.img dst2.img 2>err && fail "a map of another destination was taken"
grep -q "the map is of another copy" err || fail "dest refusal: $(cat err)"
# And a file that is not a map.
echo "garbage" >bad.map
"$KCOPY" --map bad.map src.img dst.img 2>err && fail "garbage map taken"
grep -q "bad.map: line 1 is not a ddrescue mapfile line" err || fail "garbage: $(cat err)"

# A memmove (source and destination overlap in one file) is refused with
# --map: a restart midway would read a half-overwritten source.
cp src.img mm.img
"$KCOPY" --map mm.map mm.img:0+1M mm.img:512K 2>err && fail "overlap with --map taken"
grep -q "overlaps the source" err || fail "overlap refusal: $(cat err)"
cmp src.img mm.img || fail "a refused memmove wrote"

stop_kcopydfs "$tmp/mnt"

# Failed ranges: '-' in the map, skipped by a rerun, retried by
# --retry-bad once the device reads again.
start_kcopydfs "$tmp/mnt" --dev src:ro="$tmp/src.img" --fault src:read:4096+8:EIO
rm -f dst.img m.map
"$KCOPY" -i --map m.map mnt/dev/src dst.img 2>err
[ $? -eq 2 ] || fail "bad read: not exit 2: $(cat err)"
grep -q "^0x00200000  0x00001000  -$" m.map || fail "no failed range: $(cat m.map)"
[ "$(map_left m.map)" = 4096 ] || fail "not 4096 bytes left: $(cat m.map)"
"$KCOPY" -v --map m.map mnt/dev/src dst.img 2>err || fail "rerun: $(cat err)"
grep -q "m.map: 0 bytes read from the source" err || fail "rerun read: $(cat err)"
stop_kcopydfs "$tmp/mnt"
start_kcopydfs "$tmp/mnt" --dev src:ro="$tmp/src.img"
"$KCOPY" -v --retry-bad --map m.map mnt/dev/src dst.img 2>err ||
	fail "--retry-bad: $(cat err)"
grep -q "m.map: 4096 bytes read from the source; the map has 67108864 bytes finished" err ||
	fail "--retry-bad read: $(cat err)"
cmp src.img dst.img || fail "the copy differs after --retry-bad"
stop_kcopydfs "$tmp/mnt"

"$KCOPY" --retry-bad src.img dst.img 2>err && fail "--retry-bad without --map taken"
grep -q "needs --map" err || fail "retry-bad alone: $(cat err)"
exit 0
