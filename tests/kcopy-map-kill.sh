#!/bin/bash
# kcopy --map under SIGKILL at random points of a 1 GiB copy, twenty times
# (KCOPYD_ROUNDS=N for another count): after each kill ddrescuelog must
# read the map, and the run resumed with the same map must end with a
# byte-identical copy, having read from the source exactly the bytes the
# map did not call finished (the device counters kcopy -v prints).
# The copy is held to 512 MiB/s with --rate, so a kill lands anywhere in
# it; a kill after the end leaves a finished map, which the resumed run
# must honour by reading nothing.
source "$abs_srcdir/functions.sh"
requires cmp timeout ddrescuelog
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

rounds=${KCOPYD_ROUNDS:-20}
seed=${KCOPY_MAP_SEED:-$RANDOM}
echo "seed $seed (KCOPY_MAP_SEED=$seed to repeat), $rounds rounds"
RANDOM=$seed

size=$((1024 * 1024 * 1024))
make_image src.img 1G random

killed=0 partial=0
for ((iter = 1; iter <= rounds; iter++)); do
	rm -f dst.img m.map
	"$KCOPY" -q --rate 512M --map m.map src.img dst.img &
	pid=$!
	# Kill times spread over the two seconds of the copy, with jitter.
	cs=$((10 + 200 * (iter - 1) / rounds + RANDOM % 20))
	sleep "$((cs / 100)).$((cs / 10 % 10))$((cs % 10))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	status=$?
	[ $status = 137 ] && killed=$((killed + 1))
	if [ -e m.map ]; then
		ddrescuelog -t m.map >status.txt 2>&1 ||
			fail "round $iter: ddrescuelog cannot read the map: $(cat status.txt; cat m.map)"
		want=$(map_left m.map)
	else
		# Killed before it made its map (a loaded machine): kcopy
		# writes the map before any destination, so all is left.
		[ $status = 137 ] || fail "round $iter: no map after exit $status"
		want=$size
	fi
	[ "$want" -gt 0 ] && [ "$want" -lt $size ] && partial=$((partial + 1))
	echo "round $iter: exit $status, $want bytes left"
	timeout 600 "$KCOPY" -v --map m.map src.img dst.img >out 2>err ||
		fail "round $iter: resumed run failed: $(cat err)"
	cmp src.img dst.img || fail "round $iter: the copy differs from the source"
	grep -q "m.map: $want bytes read from the source; the map has $size bytes finished, 0 failed, 0 not tried" err ||
		fail "round $iter: not exactly the $want bytes left were read: $(cat err)"
	ddrescuelog -D m.map || fail "round $iter: ddrescuelog says not finished"
done
echo "$killed of $rounds copies killed, $partial maps partly finished"
[ $partial -gt 0 ] || fail "no kill left a partly finished map: nothing was resumed"
exit 0
