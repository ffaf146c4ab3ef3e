#!/usr/bin/env bash
# Devices at runtime: attach and detach through the control file, while
# jobs run; a device named by a queued or running job cannot be detached
# (EBUSY); an open dev/NAME outlives its detach; a name attached again is
# a new inode; only images beneath the image directory can be attached
# (no symbolic link, "..", absolute path or /proc link out of it); another
# user cannot attach, with or without allow_other; `wait ID`.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd stat setpriv
make_tmpdir
chmod 755 "$tmp"

img=$tmp/img
mkdir -p "$img/sub" "$tmp/out"
make_image "$img/a.img" 1M random
make_image "$img/b.img" 1M zero
make_image "$tmp/out/secret.img" 64K random
ln -s ../out/secret.img "$img/up"
ln -s "$tmp/out/secret.img" "$img/abs"
ln -s /proc/self/root/etc/passwd "$img/magic"
ln -s sub/../../out/secret.img "$img/climb"
mnt=$tmp/mnt

# ctl CMD: one write to control; prints the shell's error, if any.
ctl()
{
	echo "$1" 2>&1 >"$mnt/control"
}

# A slow source: every read of a.img's first 8 sectors takes 10 s.
start_kcopydfs "$mnt" "$img" --fault a.img:read:0+8:delay=10000000
[ "$(ls "$mnt/dev" | tr '\n' ' ')" = "a.img b.img " ] ||
	fail "links out of the image directory were served: $(ls "$mnt/dev")"
grep -q "skipping 'up': a symbolic link out of the directory" "$kcopydfs_log" ||
	fail "no message for the skipped link: $(cat "$kcopydfs_log")"

# attach: an image made after the mount, by a relative and an absolute path.
make_image "$img/c.img" 512K random
ctl "attach c c.img" || fail "attach c"
ctl "attach c2 $img/sub/../c.img" || fail "attach by an absolute path"
[ "$(stat -c %s "$mnt/dev/c")" = 524288 ] || fail "dev/c size"
cmp "$img/c.img" "$mnt/dev/c2" || fail "dev/c2 data"
ctl "detach c2" || fail "detach c2"

# Refused attaches name the problem, and change nothing.
for case in "Permission denied:attach x up" \
	"Permission denied:attach x abs" \
	"Permission denied:attach x magic" \
	"Permission denied:attach x climb" \
	"Permission denied:attach x ../out/secret.img" \
	"Permission denied:attach x $tmp/out/secret.img" \
	"Permission denied:attach x /etc/passwd" \
	"No such file:attach x none.img" \
	"Is a directory:attach x sub" \
	"Invalid argument:attach x/y c.img" \
	"Invalid argument:attach x" \
	"Invalid argument:attach x c.img rw" \
	"File exists:attach c b.img" \
	"No such file:detach x" \
	"Invalid argument:detach" \
	"Invalid argument:wait x" \
	"No such file:wait 99"; do
	out=$(ctl "${case#*:}") && fail "'${case#*:}' was accepted"
	[[ $out == *"${case%%:*}"* ]] || fail "'${case#*:}': $out"
done
expect_fail "Invalid argument" dd of="$mnt/control" status=none \
	<<<"$(printf 'attach x c.img\nzero b.img:0+1')"
exec 3<>"$mnt/control"
echo "attach x ../out/secret.img" >&3 2>/dev/null && fail "attach via fd 3"
read -r line <&3
[[ $line == "error: Permission denied: '../out/secret.img' leads out of the image directory $img" ]] ||
	fail "read back: $line"
exec 3>&-
[ "$(ls "$mnt/dev" | tr '\n' ' ')" = "a.img b.img c " ] ||
	fail "a refused attach left something: $(ls "$mnt/dev")"

# Under a running job: its devices are busy, others come and go.
echo "copy a.img:0+8 c:0 tag=slow" >"$mnt/control" || fail "slow copy"
kcopydfs_wait_state "$mnt" 1 queued running
out=$(ctl "detach c") && fail "detached a destination in use"
[[ $out == *"Device or resource busy"* ]] || fail "detach c: $out"
out=$(ctl "detach a.img") && fail "detached a source in use"
[[ $out == *"Device or resource busy"* ]] || fail "detach a.img: $out"
grep -q "device 'c' is in use by 1 queued or running job" "$kcopydfs_log" ||
	fail "EBUSY message: $(cat "$kcopydfs_log")"
make_image "$img/d.img" 64K random
ctl "attach d d.img" || fail "attach during a job"
echo "copy d:0+128 b.img:0 sync" >"$mnt/control" || fail "copy from d"
ctl "detach d" || fail "detach d, idle, during another job"
[ "$(kcopydfs_field "$mnt" 1 state)" != done ] ||
	fail "the slow job ended too soon for this test"
# wait: returns when job 1 ends; then c is free at once.
ctl "wait 1" || fail "wait 1"
[ "$(kcopydfs_field "$mnt" 1 state)" = done ] || fail "wait returned early"
ctl "wait 1" || fail "wait for a finished job"
cmp -n 4096 "$img/a.img" "$img/c.img" || fail "slow copy data"

# An open dev/NAME outlives the detach; the name attached again is new.
cp "$img/c.img" "$tmp/c.orig"
ino=$(stat -c %i "$mnt/dev/c")
exec 4<"$mnt/dev/c"
ctl "detach c" || fail "detach c after the job"
[ -e "$mnt/dev/c" ] && fail "dev/c still there after detach"
grep -q '^dev\.c\.' "$mnt/stats" && fail "detached c in stats"
ctl "attach c b.img" || fail "attach c again"
[ "$(stat -c %i "$mnt/dev/c")" != "$ino" ] || fail "re-attached c has the old inode"
cmp <(cat <&4) "$tmp/c.orig" || fail "the open file lost its device"
exec 4<&-
cmp "$img/b.img" "$mnt/dev/c" || fail "new dev/c is not b.img"

# Read-only: a source, never a destination.
ctl "attach r d.img ro" || fail "attach ro"
[ "$(stat -c %a "$mnt/dev/r")" = 400 ] || fail "ro mode: $(stat -c %a "$mnt/dev/r")"
out=$(ctl "zero r:0+1") && fail "zeroed a read-only device"
[[ $out == *"Read-only file system"* ]] || fail "zero r: $out"
expect_fail "Read-only file system" dd if=/dev/zero of="$mnt/dev/r" bs=512 \
	count=1 conv=notrunc status=none
echo "copy r:0+8 a.img:0 sync" >"$mnt/control" || fail "copy from r"
cmp -n 4096 "$img/d.img" "$img/a.img" || fail "copy from r data"

# Another user: never the control file, allow_other or not.
as_nobody()
{
	setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
}
if [ "$(id -u)" = 0 ]; then
	as_nobody bash -c "echo 'attach n c.img' >'$mnt/control'" 2>/dev/null &&
		fail "another user attached without allow_other"
	stop_kcopydfs "$mnt"
	start_kcopydfs "$mnt" "$img" -o allow_other
	as_nobody ls "$mnt/dev" >/dev/null || fail "allow_other: cannot list dev/"
	as_nobody bash -c "echo 'attach n c.img' >'$mnt/control'" 2>/dev/null &&
		fail "another user attached with allow_other"
	as_nobody bash -c "echo 'detach a.img' >'$mnt/control'" 2>/dev/null &&
		fail "another user detached with allow_other"
	[ "$(ls "$mnt/dev" | tr '\n' ' ')" = "a.img b.img c.img d.img " ] ||
		fail "another user changed the devices: $(ls "$mnt/dev")"
fi
stop_kcopydfs "$mnt"

# Without an image directory there is nothing to attach from.
start_kcopydfs "$mnt" --dev "a=$img/a.img"
out=$(ctl "attach b b.img") && fail "attach without an image directory"
[[ $out == *"Permission denied"* ]] || fail "attach without IMAGE_DIR: $out"
stop_kcopydfs "$mnt"
exit 0
