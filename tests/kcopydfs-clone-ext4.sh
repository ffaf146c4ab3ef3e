#!/usr/bin/env bash
# An ext4 file system on a clone whose source is an NBD export (nbdkit,
# read-only): through a loop device over dev/NAME it checks clean and
# mounts before hydration, takes a new file, still checks clean, and
# after hydration DEST alone holds the whole file system.
source "$abs_srcdir/functions.sh"
requires_fuse
requires mkfs.ext4 e2fsck losetup nbdkit cmp
[ "$(id -u)" = 0 ] || skip "losetup and mount need root"
make_tmpdir

# A source file system with files in it, served read-only over NBD with
# its reads slowed.
mkdir "$tmp/tree" "$tmp/fs"
for ((i = 1; i <= 20; i++)); do
	head -c $((i * 37 * 1024)) /dev/urandom >"$tmp/tree/f$i"
done
truncate -s 64M "$tmp/src.img"
mkfs.ext4 -q -F -E nodiscard -d "$tmp/tree" "$tmp/src.img" ||
	fail "mkfs.ext4 -d"
start_nbdkit s -r --filter=delay file "$tmp/src.img" rdelay=2ms
make_image "$tmp/dst" 64M zero
make_image "$tmp/meta" 64K zero
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "s=$nbd_uri" --dev "d=$tmp/dst" \
	--dev "m=$tmp/meta" --clone c=s:d:m:paused

stat_of()
{
	sed -n "s/^clone\\.c\\.$1=//p" "$mnt/stats"
}

loop=$(losetup -f --show "$mnt/dev/c") || fail "losetup on dev/c"
cleanup_fn "umount '$tmp/fs' 2>/dev/null; losetup -d $loop 2>/dev/null"
e2fsck -f -n "$loop" >"$tmp/fsck1" 2>&1 ||
	fail "the unhydrated clone does not check clean: $(cat "$tmp/fsck1")"
mount "$loop" "$tmp/fs" || fail "mount $loop"
for ((i = 1; i <= 20; i++)); do
	cmp "$tmp/tree/f$i" "$tmp/fs/f$i" || fail "f$i differs before hydration"
done
head -c $((3 * 1024 * 1024)) /dev/urandom >"$tmp/new"
cp "$tmp/new" "$tmp/fs/new" || fail "write a file on the clone"
sync
umount "$tmp/fs" || fail "umount"
e2fsck -f -n "$loop" >"$tmp/fsck2" 2>&1 ||
	fail "the clone does not check clean after a write: $(cat "$tmp/fsck2")"
[ "$(stat_of hydrated)" -lt "$(stat_of regions)" ] ||
	fail "everything hydrated while paused: $(grep clone "$mnt/stats")"

echo "clone-resume c" >"$mnt/control" || fail "clone-resume"
kcopydfs_wait_clone "$mnt" c hydrated
e2fsck -f -n "$loop" >"$tmp/fsck3" 2>&1 ||
	fail "the hydrated clone does not check clean: $(cat "$tmp/fsck3")"
losetup -d "$loop"
for ((i = 0; i < 200; i++)); do
	[ -z "$(losetup -n -O NAME -j "$mnt/dev/c" 2>/dev/null)" ] && break
	sleep 0.05
done
stop_kcopydfs "$mnt"

# DEST alone is the file system, with the file written on the clone.
e2fsck -f -n "$tmp/dst" >"$tmp/fsck4" 2>&1 ||
	fail "DEST does not check clean: $(cat "$tmp/fsck4")"
mount -o ro,loop "$tmp/dst" "$tmp/fs" || fail "mount DEST"
for ((i = 1; i <= 20; i++)); do
	cmp "$tmp/tree/f$i" "$tmp/fs/f$i" || fail "f$i differs on DEST"
done
cmp "$tmp/new" "$tmp/fs/new" || fail "the file written on the clone differs on DEST"
umount "$tmp/fs"
exit 0
