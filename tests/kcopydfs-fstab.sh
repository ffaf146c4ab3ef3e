#!/usr/bin/env bash
# kcopydfs as mount(8) runs it: an fstab line (mount -a -T FILE and
# mount -T FILE MNT), `mount -t fuse.kcopydfs` with -o options, and the
# systemd mount unit of kcopydfs(8), whose lines are taken from the man
# page itself.  mount.fuse3 runs "kcopydfs SOURCE MNT -o OPTS" by name with
# a fixed PATH, so the test runs in a private mount namespace where the
# built kcopydfs is bound over /usr/local/bin: the host sees none of it.
source "$abs_srcdir/functions.sh"
requires_fuse
requires unshare mount umount mountpoint
[ -x /sbin/mount.fuse3 ] || [ -x /usr/sbin/mount.fuse3 ] ||
	skip "mount.fuse3 is missing"
[ "$(id -u)" = 0 ] || skip "needs root for mount(8) and a mount namespace"
[ -d /usr/local/bin ] || skip "/usr/local/bin is missing"
unshare -m true 2>/dev/null || skip "cannot make a mount namespace"
make_tmpdir

img=$tmp/images
mkdir -p "$img" "$tmp/bin"
make_image "$img/a.img" 1M random
make_image "$img/b.img" 1M zero
printf '#!/bin/sh\nexec "%s" "$@"\n' "$KCOPYDFS" >"$tmp/bin/kcopydfs"
chmod 755 "$tmp/bin/kcopydfs"

# The man page's examples, with its paths replaced by the test's.
man=$abs_srcdir/../man/kcopydfs.8
from_man()
{
	sed -e 's/\\-/-/g' -e 's/\\e/\\/g' \
		-e "s|/srv/images|$img|g" -e "s|/mnt/kcopyd|$tmp/mnt|g" "$@" "$man"
}
from_man -n -e '/ fuse\.kcopydfs .* 0 0$/p' >"$tmp/fstab"
[ "$(wc -l <"$tmp/fstab")" = 1 ] || fail "no fstab line in kcopydfs(8)"
from_man -n -e '/^\[Mount\]/,/^\.fi/p' | grep '=' >"$tmp/unit"
grep -q '^Type=fuse.kcopydfs$' "$tmp/unit" || fail "no mount unit in kcopydfs(8)"
# A second fstab, for -o forms of every kind and a user's fsname.
printf '%s %s fuse.kcopydfs %s 0 0\n' "$img" "$tmp/mnt" \
	"noauto,fsname=imgs,dev=c=$img/a.img,pages=16,keep=2,max-queue=8,fault=b.img:write:0+8:ENOSPC,pidfile=$tmp/mnt.pid" \
	>"$tmp/fstab2"

cat >"$tmp/inner.sh" <<'INNER'
source "$abs_srcdir/functions.sh"
mnt=$tmp/mnt
mkdir -p "$mnt"
mount --bind "$tmp/bin" /usr/local/bin || fail "bind over /usr/local/bin"
cleanup_fn "umount -l '$mnt' 2>/dev/null"

# wait_gone PIDFILE: the daemon has removed it (a clean exit).
wait_gone()
{
	local i
	for ((i = 0; i < 400; i++)); do
		[ -e "$1" ] || return 0
		sleep 0.05
	done
	fail "the daemon did not exit cleanly after umount"
}

# 1. The man page's fstab line, by mount -a -T.
mount -a -T "$tmp/fstab" || fail "mount -a -T $(cat "$tmp/fstab")"
mountpoint -q "$mnt" || fail "mount -a mounted nothing"
line=$(grep " $mnt " /proc/self/mounts)
[[ $line == "$img $mnt fuse.kcopydfs "* ]] ||
	fail "fsname is not the image directory: $line"
[ "$(ls "$mnt/dev" | tr '\n' ' ')" = "a.img b.img " ] ||
	fail "devices: $(ls "$mnt/dev")"
echo "copy a.img:0+2048 b.img:0 sync" >"$mnt/control" || fail "copy"
cmp "$img/a.img" "$img/b.img" || fail "copy data"
# The options of the man page's line are in force.
opts=$(awk '{ print $4 }' "$tmp/fstab")
case ,$opts, in
*,keep=*) keep=${opts#*keep=}; keep=${keep%%,*}
	for i in $(seq $((keep + 1))); do
		echo "zero b.img:0+1 sync" >"$mnt/control" || fail "zero $i"
	done
	[ "$(wc -l <"$mnt/results")" = "$keep" ] ||
		fail "keep=$keep: $(cat "$mnt/results")" ;;
esac
umount "$mnt" || fail "umount"
mountpoint -q "$mnt" && fail "still mounted"

# 2. mount -T FILE MNT, every option in -o form, the user's fsname.
: >"$img/b.img"; truncate -s 1M "$img/b.img"
mount -T "$tmp/fstab2" "$mnt" || fail "mount -T $(cat "$tmp/fstab2")"
[ -s "$mnt.pid" ] || fail "pidfile= not written"
line=$(grep " $mnt " /proc/self/mounts)
[[ $line == "imgs $mnt fuse.kcopydfs "* ]] || fail "fsname=imgs: $line"
[ "$(ls "$mnt/dev" | tr '\n' ' ')" = "a.img b.img c " ] ||
	fail "dev=c=...: $(ls "$mnt/dev")"
grep -qx 'pages_total=16' "$mnt/stats" || fail "pages=16: $(cat "$mnt/stats")"
expect_fail "No space left" dd if=/dev/zero of="$mnt/dev/b.img" bs=512 count=1 \
	conv=notrunc status=none
for i in 1 2 3; do
	echo "copy c:0+8 a.img:8 sync" >"$mnt/control" || fail "copy $i"
done
[ "$(cut -d' ' -f1 "$mnt/results" | tr '\n' ' ')" = "id=2 id=3 " ] ||
	fail "keep=2: $(cat "$mnt/results")"
printf 'zero a.img:0+1\n%.0s' $(seq 9) |
	dd bs=64K iflag=fullblock of="$mnt/control" status=none 2>/dev/null &&
	fail "max-queue=8 let 9 jobs in"
umount "$mnt" || fail "umount 2"
wait_gone "$mnt.pid"

# 3. What systemd does with the man page's unit: mount -t TYPE -o OPTS.
what=$(sed -n 's/^What=//p' "$tmp/unit")
where=$(sed -n 's/^Where=//p' "$tmp/unit")
type=$(sed -n 's/^Type=//p' "$tmp/unit")
opts=$(sed -n 's/^Options=//p' "$tmp/unit")
[ "$where" = "$mnt" ] || fail "the unit's Where= is not the fstab's: $where"
mount -t "$type" ${opts:+-o "$opts"} "$what" "$where" ||
	fail "mount -t $type -o $opts $what $where"
echo "copy a.img:0+8 b.img:0 sync" >"$mnt/control" || fail "copy (unit)"
umount "$mnt" || fail "umount 3"

# 4. Refused at mount: an unknown option, a missing image directory.
expect_fail "unknown option" mount -t fuse.kcopydfs -o bogus=1 "$img" "$mnt"
expect_fail "No such file" mount -t fuse.kcopydfs "$tmp/none" "$mnt"
mountpoint -q "$mnt" && fail "a refused mount mounted"
exit 0
INNER
export tmp img
unshare -m --propagation private bash "$tmp/inner.sh"
