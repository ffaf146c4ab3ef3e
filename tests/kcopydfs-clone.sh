#!/usr/bin/env bash
# Clone devices: dev/NAME reads as the source before hydration reaches it,
# a write to an unhydrated region waits for its hydration, whole-region
# writes and discards skip it, the devices under a clone are refused to
# jobs, the map in META resumes after a remount, a META of another
# clone is refused, and clone-finish turns a hydrated clone into a plain
# device over its dest.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd fallocate
make_tmpdir

R=65536				# the region size
make_image "$tmp/src" 4M random
make_image "$tmp/other" 4M random
make_image "$tmp/dst" 5M zero
make_image "$tmp/small" 2M zero
make_image "$tmp/meta" 64K zero
make_image "$tmp/junk" 64K random
mnt=$tmp/mnt
devs=(--dev "src=$tmp/src" --dev "dst=$tmp/dst" --dev "meta=$tmp/meta")

stat_of()
{
	sed -n "s/^clone\\.c\\.$1=//p" "$mnt/stats"
}

# Refused at mount, with a message naming the problem.
mkdir -p "$mnt"
bad_mount()
{
	local want=$1 out
	shift
	if out=$("$KCOPYDFS" -f "$@" "$mnt" 2>&1); then
		fusermount3 -u "$mnt"
		fail "mounted with $*"
	fi
	case $out in *"$want"*) ;; *) fail "for $*: '$out', not '$want'" ;; esac
}
bad_mount "smaller than source" --dev "src=$tmp/src" --dev "s=$tmp/small" \
	--dev "meta=$tmp/meta" --clone c=src:s:meta
bad_mount "region size '12K'" "${devs[@]}" --clone c=src:dst:meta:region=12K
bad_mount "holds no clone metadata" --dev "src=$tmp/src" \
	--dev "dst=$tmp/dst" --dev "meta=$tmp/junk" --clone c=src:dst:meta
bad_mount "no dest device 'nope'" "${devs[@]}" --clone c=src:nope:meta
bad_mount "device 'src' exists" "${devs[@]}" --clone src=src:dst:meta
cmp -n 4096 "$tmp/meta" /dev/zero || fail "a refused mount wrote META"

start_kcopydfs "$mnt" "${devs[@]}" --dev "x=$tmp/small" \
	--clone c=src:dst:meta:paused
[ "$(stat_of regions)" = 64 ] || fail "regions: $(stat_of regions)"
[ "$(stat_of region_size)" = $R ] || fail "the default region size"
[ "$(stat -c %s "$mnt/dev/c")" = 4194304 ] || fail "dev/c is not the source's size"

# Paused: every byte reads as the source, and nothing is hydrated.
cmp "$mnt/dev/c" "$tmp/src" || fail "dev/c does not read as the source"
[ "$(stat_of hydrated)" = 0 ] || fail "reads hydrated regions while paused"
[ "$(stat_of state)" = paused ] || fail "state $(stat_of state)"

cp "$tmp/src" "$tmp/exp"
# A partial write to region 1: it waits for region 1's hydration.
head -c 1000 /dev/urandom >"$tmp/p1"
dd if="$tmp/p1" of="$mnt/dev/c" bs=1000 seek=$((R + 5000)) oflag=seek_bytes \
	conv=notrunc status=none || fail "partial write"
dd if="$tmp/p1" of="$tmp/exp" bs=1000 seek=$((R + 5000)) oflag=seek_bytes \
	conv=notrunc status=none
[ "$(stat_of hydrated)" = 1 ] || fail "hydrated $(stat_of hydrated) after one partial write"
[ "$(stat_of bytes_copied)" = $R ] || fail "a partial write copied $(stat_of bytes_copied)"
# A whole region (2): straight to the dest, no copy.
head -c $R /dev/urandom >"$tmp/p2"
dd if="$tmp/p2" of="$mnt/dev/c" bs=$R seek=2 conv=notrunc status=none ||
	fail "whole-region write"
dd if="$tmp/p2" of="$tmp/exp" bs=$R seek=2 conv=notrunc status=none
# Discard of regions 10..13: no copy either, zeros after.
fallocate -p -o $((10 * R)) -l $((4 * R)) "$mnt/dev/c" || fail "discard"
dd if=/dev/zero of="$tmp/exp" bs=$R seek=10 count=4 conv=notrunc status=none
[ "$(stat_of hydrated)" = 6 ] || fail "hydrated $(stat_of hydrated), not 6"
[ "$(stat_of skipped)" = 5 ] || fail "skipped $(stat_of skipped), not 5"
[ "$(stat_of bytes_copied)" = $R ] || fail "discards and whole writes copied"
cmp "$mnt/dev/c" "$tmp/exp" || fail "dev/c after writes and a discard"

# Under the clone: no copy job writes there, no one opens them for writing.
expect_fail "Device or resource busy" \
	bash -c "echo 'copy src:0+8 dst:0' >'$mnt/control'"
grep -q "region 'dst:0' is on a clone or a device under a clone" "$kcopydfs_log" ||
	fail "no message for a copy to a device under a clone"
expect_fail "Device or resource busy" \
	bash -c "echo 'copy c:0+8 x:0' >'$mnt/control'"
expect_fail "busy" dd if=/dev/zero of="$mnt/dev/dst" bs=512 count=1 \
	conv=notrunc status=none
expect_fail "No such file" bash -c "echo 'clone-resume nope' >'$mnt/control'"
fsync_ok=$(python3 -c "import os; f=os.open('$mnt/dev/c', os.O_RDWR); os.fsync(f); print('ok')" 2>&1 || :)
[ "$fsync_ok" = ok ] || fail "fsync of dev/c: $fsync_ok"
stop_kcopydfs "$mnt"

# The same META with another source: refused.
bad_mount "belongs to another source" --dev "src=$tmp/other" \
	--dev "dst=$tmp/dst" --dev "meta=$tmp/meta" --clone c=src:dst:meta
bad_mount "has region=65536, not 131072" "${devs[@]}" \
	--clone c=src:dst:meta:region=128K

# Remounted: the map is kept, hydration finishes, copying only the rest.
start_kcopydfs "$mnt" "${devs[@]}" --clone c=src:dst:meta
kcopydfs_wait_clone "$mnt" c hydrated
[ "$(stat_of hydrated)" = 64 ] || fail "hydrated $(stat_of hydrated)"
[ "$(stat_of bytes_copied)" = $((58 * R)) ] ||
	fail "the remount copied $(stat_of bytes_copied) bytes, not the 58 regions left"
cmp "$mnt/dev/c" "$tmp/exp" || fail "dev/c after hydration"
grep -q "^clone=c state=hydrated regions=64 hydrated=64 skipped=0 failed=0 bytes=$((58 * R)) usec=" \
	"$mnt/finished" || fail "no results line in finished: $(cat "$mnt/finished")"
# Hydrated: writes go to the dest.
dd if="$tmp/p1" of="$mnt/dev/c" bs=1000 seek=7 conv=notrunc status=none ||
	fail "write after hydration"
dd if="$tmp/p1" of="$tmp/exp" bs=1000 seek=7 conv=notrunc status=none
stop_kcopydfs "$mnt"
grep -q "clone c: hydrated, 64 regions" "$kcopydfs_log" ||
	fail "no log line at the end of hydration: $(cat "$kcopydfs_log")"
cmp -n 4194304 "$tmp/dst" "$tmp/exp" || fail "the dest is not the clone"
cmp -s "$tmp/src" "$tmp/exp" &&
	fail "the writes did not change anything"

# At runtime: clone and remove on the control file.
make_image "$tmp/meta2" 64K zero
make_image "$tmp/dst2" 4M zero
start_kcopydfs "$mnt" --dev "src=$tmp/src" --dev "dst2=$tmp/dst2" \
	--dev "meta2=$tmp/meta2"
expect_fail "Invalid argument" \
	bash -c "echo 'clone d src dst2 meta2 region=3K' >'$mnt/control'"
echo "clone d src dst2 meta2 region=128K paused" >"$mnt/control" ||
	fail "clone on the control file"
sed -n 's/^clone\.d\.region_size=//p' "$mnt/stats" | grep -qx 131072 ||
	fail "no clone d of 128K regions: $(grep clone "$mnt/stats")"
cmp "$mnt/dev/d" "$tmp/src" || fail "dev/d does not read as the source"
expect_fail "Device or resource busy" \
	bash -c "echo 'detach src' >'$mnt/control'"
expect_fail "Device or resource busy" \
	bash -c "echo 'detach d' >'$mnt/control'"
expect_fail "Device or resource busy" \
	bash -c "echo 'clone e src dst2 meta2' >'$mnt/control'"
echo "remove d" >"$mnt/control" || fail "remove"
[ ! -e "$mnt/dev/d" ] || fail "dev/d still there after remove"
echo "detach dst2" >"$mnt/control" || fail "detach of a device no longer under a clone"
stop_kcopydfs "$mnt"
grep -q "clone d: removed" "$kcopydfs_log" || fail "no log line for remove"

# clone-finish: refused until every region is hydrated, then dev/f is a
# plain device over the dest, without unmounting.
make_image "$tmp/meta3" 64K zero
make_image "$tmp/dst3" 4M zero
make_image "$tmp/y" 1M random
start_kcopydfs "$mnt" --dev "src=$tmp/src" --dev "dst3=$tmp/dst3" \
	--dev "meta3=$tmp/meta3" --dev "y=$tmp/y" --clone f=src:dst3:meta3:paused
expect_fail "Resource temporarily unavailable" \
	bash -c "echo 'clone-finish f' >'$mnt/control'"
grep -q "clone f: 64 of 64 regions not hydrated yet (paused: clone-resume it)" \
	"$kcopydfs_log" || fail "no message for a finish before hydration"
expect_fail "Invalid argument" bash -c "echo 'clone-finish' >'$mnt/control'"
expect_fail "No such file" bash -c "echo 'clone-finish nope' >'$mnt/control'"
expect_fail "No such file" bash -c "echo 'clone-finish y' >'$mnt/control'"
[ -n "$(sed -n 's/^clone\.f\.state=//p' "$mnt/stats")" ] ||
	fail "a refused finish took the clone away"
echo "clone-resume f" >"$mnt/control" || fail "clone-resume"
kcopydfs_wait_clone "$mnt" f hydrated
# A file open on the clone across the finish: still reads and writes DEST.
head -c 512 /dev/urandom >"$tmp/p3"
out=$(python3 - "$mnt" "$tmp/p3" <<'PY'
import os, sys
mnt, p3 = sys.argv[1], sys.argv[2]
f = os.open(mnt + "/dev/f", os.O_RDWR)
c = os.open(mnt + "/control", os.O_WRONLY)
os.write(c, b"clone-finish f\n")
os.close(c)
before = os.pread(f, 4096, 65536)
os.pwrite(f, open(p3, "rb").read(), 3 * 65536)
os.fsync(f)
os.close(f)
print("ok" if len(before) == 4096 else "short read")
PY
) || fail "finish with dev/f open: $out"
[ "$out" = ok ] || fail "the open dev/f after the finish: $out"
cp "$tmp/src" "$tmp/exp3"
dd if="$tmp/p3" of="$tmp/exp3" bs=512 seek=$((3 * R / 512)) conv=notrunc \
	status=none
! grep -q "^clone\.f\." "$mnt/stats" ||
	fail "clone lines in stats after finish: $(grep clone "$mnt/stats")"
grep -q "^dev\.f\.reads=" "$mnt/stats" || fail "no dev/f after finish"
cmp "$mnt/dev/f" "$tmp/exp3" || fail "dev/f does not read as the dest after finish"
# Writes through dev/f land in the dest; copy jobs may write both again.
dd if="$tmp/p1" of="$mnt/dev/f" bs=1000 seek=$((5 * R + 7)) \
	oflag=seek_bytes conv=notrunc,fsync status=none || fail "write to dev/f"
dd if="$tmp/p1" of="$tmp/exp3" bs=1000 seek=$((5 * R + 7)) \
	oflag=seek_bytes conv=notrunc status=none
echo "copy y:0+16 dst3:2048 sync" >"$mnt/control" ||
	fail "a copy onto the dest after finish"
dd if="$tmp/y" of="$tmp/exp3" bs=512 count=16 seek=2048 conv=notrunc status=none
echo "copy y:16+16 f:4096 sync" >"$mnt/control" ||
	fail "a copy onto dev/f after finish"
dd if="$tmp/y" of="$tmp/exp3" bs=512 skip=16 count=16 seek=4096 \
	conv=notrunc status=none
cmp "$mnt/dev/f" "$tmp/exp3" || fail "dev/f after writes and copies"
expect_fail "No such file" bash -c "echo 'clone-finish f' >'$mnt/control'"
# SOURCE and META are released: detached at once.
echo "detach meta3" >"$mnt/control" || fail "detach of the finished clone's meta"
echo "detach src" >"$mnt/control" || fail "detach of the finished clone's source"
stop_kcopydfs "$mnt"
grep -q "clone f: finished: dev/f is $tmp/dst3" "$kcopydfs_log" ||
	fail "no log line for clone-finish: $(cat "$kcopydfs_log")"
cmp -n 4194304 "$tmp/dst3" "$tmp/exp3" || fail "the dest after finish"
exit 0
