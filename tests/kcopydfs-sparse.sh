#!/usr/bin/env bash
# kcopydfs and holes: dev/NAME reports its image's allocation (du), answers
# SEEK_DATA/SEEK_HOLE (cp --sparse=always) and fallocate (punch, zero
# range), so fstrim over a loop device frees blocks; a sparse copy
# through control stays sparse; read-only devices;
# one image under two names is one device to the overlap rules, and a
# refused batch queues nothing.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd truncate stat cp fallocate python3
make_tmpdir

alloc() { echo $(($(stat -c %b "$1") * 512)); }
MiB=1048576

# 32 MiB with 2 MiB of data.
truncate -s 32M "$tmp/s.img"
for at in 1 30; do
	head -c $MiB /dev/urandom |
		dd of="$tmp/s.img" bs=1M seek=$at conv=notrunc status=none
done
[ "$(alloc "$tmp/s.img")" -le $((3 * MiB)) ] ||
	skip "this file system does not keep holes"
head -c $((32 * MiB)) /dev/urandom >"$tmp/d.img"
make_image "$tmp/c.img" 1M random
make_image "$tmp/x.img" 1M random
make_image "$tmp/r.img" 1M random
cp "$tmp/r.img" "$tmp/r.orig"
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "s=$tmp/s.img" --dev "d=$tmp/d.img" \
	--dev "c=$tmp/c.img" --dev "x=$tmp/x.img" --dev "y=$tmp/x.img" \
	--dev "r:ro=$tmp/r.img"

# st_blocks is the image's allocation.
[ "$(alloc "$mnt/dev/s")" -eq "$(alloc "$tmp/s.img")" ] ||
	fail "dev/s: $(alloc "$mnt/dev/s") bytes allocated, image $(alloc "$tmp/s.img")"
[ "$(alloc "$mnt/dev/d")" -ge $((32 * MiB)) ] || fail "dev/d allocation"

# cp --sparse=always finds the holes by SEEK_DATA/SEEK_HOLE (or by reading
# zeros), and the copy holds the same bytes.
cp --sparse=always "$mnt/dev/s" "$tmp/out.img" || fail "cp --sparse"
cmp "$tmp/s.img" "$tmp/out.img" || fail "out.img differs"
[ "$(alloc "$tmp/out.img")" -le $((3 * MiB)) ] ||
	fail "out.img: $(alloc "$tmp/out.img") bytes allocated"
python3 - "$mnt/dev/s" <<'PY' || fail "SEEK_DATA/SEEK_HOLE on dev/s"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
M = 1 << 20
assert os.lseek(fd, 0, os.SEEK_DATA) == M, "first data"
assert os.lseek(fd, M, os.SEEK_HOLE) == 2 * M, "hole after it"
assert os.lseek(fd, 2 * M, os.SEEK_DATA) == 30 * M, "second data"
assert os.lseek(fd, 30 * M, os.SEEK_HOLE) == 31 * M, "hole at 31 MiB"
try:
    os.lseek(fd, 31 * M, os.SEEK_DATA)
    assert False, "data past the last extent"
except OSError as e:
    assert e.errno == 6, e    # ENXIO
PY

# A sparse copy through control: the holes of s become holes of d.
echo "copy s:0+32M d:0 sync" >"$mnt/control" || fail "sparse copy"
cmp "$tmp/s.img" "$tmp/d.img" || fail "d.img differs"
[ "$(alloc "$tmp/d.img")" -le $((3 * MiB)) ] ||
	fail "d.img: $(alloc "$tmp/d.img") bytes allocated after the copy"

# fallocate on dev/NAME: punch a hole and zero a range, in the image.
head -c $((4 * MiB)) /dev/urandom | dd of="$mnt/dev/d" bs=1M seek=8 \
	conv=notrunc status=none || fail "write dev/d"
before=$(alloc "$tmp/d.img")
fallocate --punch-hole --offset $((8 * MiB)) --length $((2 * MiB)) \
	"$mnt/dev/d" || fail "punch hole"
cmp -n $((2 * MiB)) -i $((8 * MiB)):0 "$tmp/d.img" /dev/zero ||
	fail "punched range is not zeros"
[ "$(alloc "$tmp/d.img")" -le $((before - 2 * MiB)) ] ||
	fail "punch freed nothing: $before, now $(alloc "$tmp/d.img")"
fallocate --zero-range --offset $((10 * MiB)) --length $MiB "$mnt/dev/d" ||
	fail "zero range"
cmp -n $MiB -i $((10 * MiB)):0 "$tmp/d.img" /dev/zero ||
	fail "zeroed range is not zeros"
[ "$(stat -c %s "$tmp/d.img")" -eq $((32 * MiB)) ] || fail "size changed"
fallocate --collapse-range --offset 0 --length $MiB "$mnt/dev/d" 2>/dev/null &&
	fail "collapse-range accepted"

# Read-only: reads served, writes refused, copies onto it refused.
cmp "$mnt/dev/r" "$tmp/r.orig" || fail "dev/r read"
dd if=/dev/zero of="$mnt/dev/r" bs=4k count=1 conv=notrunc status=none \
	2>/dev/null && fail "write to a read-only device"
expect_fail "Read-only" bash -c "echo 'copy c:0+8 r:0' >'$mnt/control'"
echo "copy r:0+8 c:0 sync" >"$mnt/control" || fail "copy from dev/r"
cmp "$tmp/r.img" "$tmp/r.orig" || fail "r.img changed"
grep -q "is on a read-only device" "$kcopydfs_log" || fail "EROFS not logged"

# One image under two names: copy c:0+16 x:0 y:8 overlaps, and the batch
# fails as a whole, its first command not run either.
before=$(grep -c '^id=' "$mnt/results")
# (dd: one write for the batch, where printf writes a line at a time)
expect_fail "Invalid argument" bash -c \
	"printf 'copy c:0+16 c:100\ncopy c:0+16 x:0 y:8\n' |
	 dd bs=64K iflag=fullblock status=none >'$mnt/control'"
[ "$(grep -c '^id=' "$mnt/results")" -eq "$before" ] ||
	fail "a refused batch queued jobs: $(cat "$mnt/results")"
grep -q "'y:8' overlaps another destination" "$kcopydfs_log" ||
	fail "aliased overlap not named"

# A file system on a loop device over dev/NAME: fstrim's discards reach
# the image as punched holes (root, losetup, mkfs.ext4 and fstrim only).
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null &&
   command -v mkfs.ext4 >/dev/null && command -v fstrim >/dev/null &&
   loop=$(losetup -f --show "$mnt/dev/d" 2>/dev/null); then
	cleanup_fn "losetup -d $loop 2>/dev/null"
	mkdir "$tmp/fs"
	mkfs.ext4 -q -F -E nodiscard "$loop" || fail "mkfs.ext4 on $loop"
	mount "$loop" "$tmp/fs" || fail "mount $loop"
	cleanup_fn "umount '$tmp/fs' 2>/dev/null"
	head -c $((16 * MiB)) /dev/urandom >"$tmp/fs/f" || fail "write in fs"
	sync
	full=$(alloc "$tmp/d.img")
	rm "$tmp/fs/f"
	sync
	fstrim "$tmp/fs" || fail "fstrim"
	[ "$(alloc "$tmp/d.img")" -le $((full - 12 * MiB)) ] ||
		fail "fstrim freed too little: $full, now $(alloc "$tmp/d.img")"
	umount "$tmp/fs" || fail "umount"
	losetup -d "$loop"
	# The loop device lets go of dev/d when its last opener (udev's
	# probe, too) closes it: wait for that before unmounting.
	for ((i = 0; i < 200; i++)); do
		[ -z "$(losetup -n -O NAME -j "$mnt/dev/d" 2>/dev/null)" ] &&
			break
		sleep 0.05
	done
fi

stop_kcopydfs "$mnt"

# -o ro: every device read-only; the mount's control stays writable.
start_kcopydfs "$mnt" --dev "c=$tmp/c.img" --dev "x=$tmp/x.img" -o ro
expect_fail "Read-only" bash -c "echo 'zero x:0+8' >'$mnt/control'"
echo "copy c:0+8 c:100 sync" >"$mnt/control" 2>/dev/null &&
	fail "copy onto c with -o ro"
stop_kcopydfs "$mnt"
