#!/usr/bin/env bash
# Clone devices under faults: kcopydfs killed (-9) at random points of a
# hydration, several times over one META, keeps every byte written and
# fsync'd before the kill, and the hydration finishes after the last
# remount; a source region that cannot be read is retried, reported, and
# read from the source, and a write covering it still lands.
# The offsets come from $RANDOM; the seed is printed (SEED=N to re-run).
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd fallocate head
make_tmpdir

seed=${SEED:-$$}
echo "$0: seed $seed"
RANDOM=$seed
R=16384
size=$((8 * 1024 * 1024))
make_image "$tmp/src" 8M random
make_image "$tmp/dst" 8M zero
make_image "$tmp/meta" 64K zero
cp "$tmp/src" "$tmp/exp"
cp "$tmp/src" "$tmp/src.orig"
mnt=$tmp/mnt
devs=(--dev "src=$tmp/src" --dev "dst=$tmp/dst" --dev "meta=$tmp/meta")

stat_of()
{
	sed -n "s/^clone\\.c\\.$1=//p" "$mnt/stats"
}

# dev/c must read as exp, in reads of 1 MiB (each a source read at most).
check_clone()
{
	dd if="$mnt/dev/c" bs=1M status=none | cmp - "$tmp/exp" ||
		fail "round $1: dev/c lost fsync'd data (seed $seed)"
}

# Without fsync, the map is committed within the interval: a write to
# an unhydrated region, then a commit, survives kill -9.
start_kcopydfs "$mnt" "${devs[@]}" --clone c=src:dst:meta:region=16K:paused
commits=$(stat_of commits)
head -c 5000 /dev/urandom >"$tmp/p"
off=$(((size / R - 1) * R + 100))
dd if="$tmp/p" of="$mnt/dev/c" bs=5000 seek=$off oflag=seek_bytes \
	conv=notrunc status=none || fail "write without fsync"
dd if="$tmp/p" of="$tmp/exp" bs=5000 seek=$off oflag=seek_bytes \
	conv=notrunc status=none
for ((i = 0; i < 600; i++)); do
	[ "$(stat_of commits)" -gt "$commits" ] && break
	sleep 0.05
done
[ "$(stat_of commits)" -gt "$commits" ] || fail "no commit within 30 s"
kill -9 "$kcopydfs_pid"
wait "$kcopydfs_pid" 2>/dev/null
timeout 10 fusermount3 -u "$mnt" || fail "fusermount3 -u of the dead mount"
rm -f "$mnt.pid"

rounds=5
for ((round = 1; round <= rounds; round++)); do
	# Every source read slowed, so each kill lands mid-hydration; only
	# an fsync commits the map (the interval is longer than the test).
	start_kcopydfs "$mnt" "${devs[@]}" \
		--clone c=src:dst:meta:region=16K:commit=3600 \
		--subjob-size 16K --fault src:read:0+16384:delay=50000
	check_clone "$round (after the remount)"
	for ((k = 0; k < 3; k++)); do
		off=$(((RANDOM * 32768 + RANDOM) % (size - 70000)))
		len=$((1 + RANDOM % 70000))
		head -c $len /dev/urandom >"$tmp/p"
		dd if="$tmp/p" of="$mnt/dev/c" bs=$len seek=$off \
			oflag=seek_bytes conv=notrunc,fsync status=none ||
			fail "write $off+$len"
		dd if="$tmp/p" of="$tmp/exp" bs=$len seek=$off \
			oflag=seek_bytes conv=notrunc status=none
	done
	# A discard of whole regions, then an fsync.
	off=$(((RANDOM % (size / R - 4)) * R))
	fallocate -p -o $off -l $((3 * R)) "$mnt/dev/c" || fail "discard"
	dd if=/dev/null of="$mnt/dev/c" conv=notrunc,fsync status=none ||
		fail "fsync"
	dd if=/dev/zero of="$tmp/exp" bs=$R seek=$((off / R)) count=3 \
		conv=notrunc status=none
	sleep "0.$((RANDOM % 4))"
	kill -9 "$kcopydfs_pid"
	wait "$kcopydfs_pid" 2>/dev/null
	timeout 10 fusermount3 -u "$mnt" || fail "fusermount3 -u of the dead mount"
	rm -f "$mnt.pid"
done

# The last mount, at full speed: every byte kept, hydration finished.
start_kcopydfs "$mnt" "${devs[@]}" --clone c=src:dst:meta:region=16K
check_clone last
kcopydfs_wait_clone "$mnt" c hydrated
check_clone hydrated
stop_kcopydfs "$mnt"
cmp "$tmp/dst" "$tmp/exp" || fail "the dest is not the clone (seed $seed)"
cmp "$tmp/src" "$tmp/src.orig" || fail "the source changed"

# A source region that cannot be read: region 5 fails, is retried and
# reported; every other region hydrates; region 5 reads fail as the
# source's do, and a write of all of it makes it the dest's.
make_image "$tmp/meta" 64K zero
make_image "$tmp/dst" 8M zero
cp "$tmp/src" "$tmp/exp"
start_kcopydfs "$mnt" "${devs[@]}" --clone c=src:dst:meta:region=16K \
	--fault src:read:$((5 * R / 512 + 3))+1:EIO
kcopydfs_wait_clone "$mnt" c failed
[ "$(stat_of failed)" = 1 ] || fail "failed $(stat_of failed), not 1"
grep -q "^clone=c state=failed regions=$((size / R)) hydrated=$((size / R - 1)) skipped=0 failed=1 " \
	"$mnt/finished" || fail "no results line for the failure: $(cat "$mnt/finished")"
[ "$(stat_of hydrated)" = $((size / R - 1)) ] || fail "hydrated $(stat_of hydrated)"
[ "$(stat_of retries)" -ge 3 ] || fail "retries $(stat_of retries)"
grep -q "clone c: region 5 (bytes $((5 * R))+$R) failed to hydrate 3 times" \
	"$kcopydfs_log" || fail "no report of region 5: $(cat "$kcopydfs_log")"
dd if="$mnt/dev/c" bs=$R count=5 status=none | cmp -n $((5 * R)) - "$tmp/src" ||
	fail "regions before the bad one"
dd if="$mnt/dev/c" bs=$R skip=6 status=none |
	cmp - <(dd if="$tmp/src" bs=$R skip=6 status=none) ||
	fail "regions after the bad one"
expect_fail "Input/output error" dd if="$mnt/dev/c" of=/dev/null bs=$R \
	skip=5 count=1 status=none
expect_fail "Input/output error" dd if=/dev/zero of="$mnt/dev/c" bs=512 \
	seek=$((5 * R / 512)) count=1 conv=notrunc status=none
head -c $R /dev/urandom >"$tmp/p"
dd if="$tmp/p" of="$mnt/dev/c" bs=$R seek=5 conv=notrunc status=none ||
	fail "a whole write of the failed region"
dd if="$tmp/p" of="$tmp/exp" bs=$R seek=5 conv=notrunc status=none
kcopydfs_wait_clone "$mnt" c hydrated
check_clone faults
stop_kcopydfs "$mnt"
exit 0
