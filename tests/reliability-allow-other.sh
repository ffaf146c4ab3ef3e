#!/usr/bin/env bash
# Who may do what.  Mounted with -o allow_other, a second user (made by the
# test) can read results and stats, but can neither open control nor read
# or write a device file, whose mode does not grant it.  Without
# allow_other that user cannot enter the mount at all.
source "$abs_srcdir/functions.sh"
requires_fuse
requires useradd userdel setpriv id
[ "$(id -u)" = 0 ] || skip "needs root to add a user"
make_tmpdir
# The user must be able to reach the mount point: only FUSE may stop it.
chmod 755 "$tmp"

user=kcrel$$
useradd -M -N -d /nonexistent -s /usr/sbin/nologin "$user" ||
	skip "useradd failed"
cleanup_fn "userdel $user 2>/dev/null"
uid=$(id -u "$user")
gid=$(id -g "$user")

# as_user CMD...: run CMD as the second user, with no extra groups.
as_user()
{
	setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
}

make_image "$tmp/a.img" 256K random
make_image "$tmp/b.img" 256K random
cp "$tmp/a.img" "$tmp/a.orig"
cp "$tmp/b.img" "$tmp/b.orig"
mnt=$tmp/mnt

start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	-o allow_other
echo "copy a:0+8 b:0 sync tag=root" >"$mnt/control" || fail "root's copy"
dd if="$tmp/a.orig" of="$tmp/b.orig" bs=512 count=8 conv=notrunc status=none

out=$(as_user cat "$mnt/results") || fail "the user cannot read results"
[[ $out == "id=1 tag=root "* ]] || fail "results as the user: $out"
as_user grep -q '^jobs_done=1$' "$mnt/stats" || fail "the user cannot read stats"
as_user ls "$mnt/dev" >/dev/null || fail "the user cannot list dev/"
expect_fail "Permission denied" \
	as_user sh -c "echo 'zero b:0+8' >'$mnt/control'"
expect_fail "Permission denied" as_user cat "$mnt/control"
expect_fail "Permission denied" as_user head -c 512 "$mnt/dev/a"
expect_fail "Permission denied" \
	as_user dd if=/dev/zero of="$mnt/dev/b" bs=512 count=1 conv=notrunc
expect_fail "Permission denied" as_user sh -c "echo x >'$mnt/results'"
expect_fail "Permission denied" as_user sh -c "echo x >'$mnt/stats'"
[ "$(wc -l <"$mnt/results")" = 1 ] || fail "the user queued a job"
stop_kcopydfs "$mnt"
cmp "$tmp/a.orig" "$tmp/a.img" || fail "a changed"
cmp "$tmp/b.orig" "$tmp/b.img" || fail "b changed other than by root's copy"

# Without allow_other the user cannot even look inside.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img"
expect_fail "Permission denied" as_user ls "$mnt"
expect_fail "Permission denied" as_user cat "$mnt/results"
expect_fail "Permission denied" as_user cat "$mnt/stats"
ls "$mnt" >/dev/null || fail "root cannot list the mount"
stop_kcopydfs "$mnt"
