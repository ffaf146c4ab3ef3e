#!/bin/bash
# kcopy --map on ext4, which gives a new file the inode number of one just
# deleted: a destination deleted and made anew between two runs (same
# name, same size, same inode number) is another copy's, and the map is
# refused (its birth time differs) with nothing written; the old file
# itself still resumes.
source "$abs_srcdir/functions.sh"
requires mkfs.ext4 mount umount cmp
[ -x "$KCOPY" ] || skip "kcopy was not built"
[ "$(id -u)" = 0 ] || skip "mount of an ext4 image needs root"
make_tmpdir
cd "$tmp" || fail "cd $tmp"
truncate -s 64M fs.img || fail "truncate"
mkfs.ext4 -q -F -E nodiscard fs.img || fail "mkfs.ext4"
mkdir fs
mount -o loop fs.img fs 2>/dev/null || skip "cannot mount a loop device"
cleanup_fn umount -l "$tmp/fs"
make_image fs/src.img 8M random

# A finished map.
"$KCOPY" -q --map fs/m.map fs/src.img fs/dst.img || fail "copy"
cmp fs/src.img fs/dst.img || fail "the copy differs"
cp fs/m.map m.good

# dst.img deleted and made anew: same name, size and inode number.
ino=$(stat -c %i fs/dst.img)
rm fs/dst.img
make_image fs/dst.new 8M random
mv fs/dst.new fs/dst.img
[ "$(stat -c %i fs/dst.img)" = "$ino" ] ||
	skip "ext4 gave the new file another inode number"
cp fs/dst.img before.img
"$KCOPY" --map fs/m.map fs/src.img fs/dst.img 2>err &&
	fail "the map of the deleted destination was taken"
grep -q "the map is of another copy" err || fail "refusal: $(cat err)"
cmp before.img fs/dst.img || fail "a refused map still wrote"
cmp m.good fs/m.map || fail "a refused map was changed"

# The same files again: the map is theirs, and nothing is left to copy.
rm -f fs/m.map fs/dst.img
"$KCOPY" -q --map fs/m.map fs/src.img fs/dst.img || fail "third copy"
"$KCOPY" -v --map fs/m.map fs/src.img fs/dst.img 2>err ||
	fail "resume of a finished map: $(cat err)"
grep -q "m.map: 0 bytes read from the source" err || fail "resume read: $(cat err)"
exit 0
