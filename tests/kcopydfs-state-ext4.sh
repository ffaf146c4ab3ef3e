#!/usr/bin/env bash
# kcopydfs --state DIR with images on ext4, which gives a new file the
# inode number of one just deleted: a destination replaced between two
# mounts by another file of the same size and the same inode number is
# still seen as changed (its birth time), its job fails with ESTALE and
# the new file is not written.
source "$abs_srcdir/functions.sh"
requires_fuse
requires mkfs.ext4 mount umount cmp
[ "$(id -u)" = 0 ] || skip "mount of an ext4 image needs root"
make_tmpdir
mnt=$tmp/mnt
st=$tmp/state
truncate -s 64M "$tmp/fs.img" || fail "truncate"
mkfs.ext4 -q -F -E nodiscard "$tmp/fs.img" || fail "mkfs.ext4"
mkdir "$tmp/fs"
mount -o loop "$tmp/fs.img" "$tmp/fs" 2>/dev/null || skip "cannot mount a loop device"
cleanup_fn umount -l "$tmp/fs"
img=$tmp/fs
make_image "$img/a.img" 8M random
make_image "$img/b.img" 8M random
devs=(--dev "a=$img/a.img" --dev "b=$img/b.img")

start_kcopydfs "$mnt" "${devs[@]}" --state "$st" --subjob-size 16K \
	--fault a:read:0+16384:delay=20000
kcopydfs_queue "$mnt" "copy a:0+8192 b:0 tag=replaced"
stop_kcopydfs "$mnt"
[ -e "$st/job.$id" ] || fail "job $id not kept: $(ls "$st")"

# b replaced: a new file, written whole, then renamed over the old one.
ino=$(stat -c %i "$img/b.img")
rm "$img/b.img"
make_image "$img/b.new" 8M random
mv "$img/b.new" "$img/b.img"
[ "$(stat -c %i "$img/b.img")" = "$ino" ] ||
	skip "ext4 gave the new file another inode number"
cp "$img/b.img" "$tmp/b.before"
start_kcopydfs "$mnt" "${devs[@]}" --state "$st"
grep -q "^id=$id tag=replaced op=copy state=failed .* resumed error=ESTALE@0 on b" \
	"$mnt/results" || fail "job $id: $(cat "$mnt/results")"
grep -q "job $id not resumed: .*device b changed" "$kcopydfs_log" ||
	fail "no reason logged: $(cat "$kcopydfs_log")"
stop_kcopydfs "$mnt"
cmp "$tmp/b.before" "$img/b.img" || fail "the new b was written"
