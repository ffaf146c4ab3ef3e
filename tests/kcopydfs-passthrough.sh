#!/usr/bin/env bash
# kcopydfs: dev/NAME by FUSE passthrough where it can be had -- the daemon
# then sees no READ or WRITE, MAP_SHARED works, data and sizes are right
# both ways -- and direct I/O through the daemon, per device and for good,
# wherever it cannot: --no-passthrough, fault rules, a partial last sector,
# a block device, no CAP_SYS_ADMIN, a kernel that refuses the backing file.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd grep stat
[ "$(id -u)" = 0 ] || skip "passthrough needs CAP_SYS_ADMIN"
mmap=$abs_builddir/kcopydfs_mmap
[ -x "$mmap" ] || skip "kcopydfs_mmap was not built"
make_tmpdir

make_image "$tmp/a.img" 4M random
make_image "$tmp/f.img" 2M random
make_image "$tmp/odd.img" 1000K random
truncate -s +100 "$tmp/odd.img"
make_image "$tmp/new" 1M random
mnt=$tmp/mnt

# -d: libfuse logs every request the daemon gets.
start_kcopydfs "$mnt" -d --dev "a=$tmp/a.img" --dev "f=$tmp/f.img" \
	--dev "odd=$tmp/odd.img" --fault f:write:3000+8
if grep -q 'passthrough: not offered by the kernel' "$kcopydfs_log"; then
	stop_kcopydfs "$mnt"
	skip "the kernel does not offer FUSE passthrough"
fi
grep -q '^kcopydfs: passthrough: on (\(compat\|libfuse\))$' "$kcopydfs_log" ||
	fail "no passthrough line in the log: $(grep passthrough "$kcopydfs_log")"
grep -q '^kcopydfs: dev/a: passthrough$' "$kcopydfs_log" || fail "log: dev/a"
grep -q '^kcopydfs: dev/f: direct_io (fault rules' "$kcopydfs_log" ||
	fail "log: dev/f"
grep -q '^kcopydfs: dev/odd: direct_io (size not a whole number of sectors)$' \
	"$kcopydfs_log" || fail "log: dev/odd"
[ "$(kcopydfs_mode "$mnt" a)" = passthrough ] || fail "dev/a mode"
[ "$(kcopydfs_mode "$mnt" f)" = direct_io ] || fail "dev/f mode"
[ "$(kcopydfs_mode "$mnt" odd)" = direct_io ] || fail "dev/odd mode"

# Passthrough: right data and size, and not one READ or WRITE request.
[ "$(stat -c %s "$mnt/dev/a")" = 4194304 ] || fail "dev/a size"
cmp "$tmp/a.img" "$mnt/dev/a" || fail "read dev/a"
dd if="$tmp/new" of="$mnt/dev/a" bs=64K seek=16 conv=notrunc,fsync \
	status=none || fail "write dev/a"
cmp -n 1M "$tmp/new" "$tmp/a.img" 0 1M || fail "image of a"
# Opened again and again, by several readers at once (the backing file is
# dropped with the last one and taken again by the next).
for r in 1 2 3 4; do
	(for i in 1 2 3 4 5; do cmp -s "$tmp/a.img" "$mnt/dev/a" || exit 1; done) &
	pids[r]=$!
done
for r in 1 2 3 4; do
	wait ${pids[r]} || fail "reader $r saw other data"
done
"$mmap" "$mnt/dev/a" 12345 "through a shared mapping" || fail "mmap dev/a"
[ "$(dd if="$tmp/a.img" bs=1 skip=12345 count=24 status=none)" = \
	"through a shared mapping" ] || fail "the mapping's store in the image"
# dev/a is inode 16, dev/odd 18 (status files are read by the daemon).
grep -q 'opcode: \(READ\|WRITE\) ([0-9]*), nodeid: 16,' "$kcopydfs_log" &&
	fail "the daemon served I/O of a passthrough device"
grep -q 'opcode: FSYNC ([0-9]*), nodeid: 16,' "$kcopydfs_log" || fail "fsync did not reach the daemon"
grep -q '^dev\.a\.fuse_' "$mnt/stats" && fail "FUSE counts for dev/a"

# Engine and device file agree both ways.
echo "zero a:8+8 sync" >"$mnt/control" || fail "zero"
# (No process substitution here: a child ending during a sync write
# interrupts it.)
dd if="$mnt/dev/a" of="$tmp/block" bs=4096 skip=1 count=1 status=none
cmp -n 4096 "$tmp/block" /dev/zero || fail "the engine's zeroes through dev/a"
echo "copy a:2048+2048 f:0 sync" >"$mnt/control" || fail "copy"
cmp -n 1M "$tmp/new" "$mnt/dev/f" || fail "what was written through dev/a, copied"

# Direct I/O: the daemon serves it (and so sees the checks above were
# able to fail), and refuses a shared mapping.
cmp "$tmp/odd.img" "$mnt/dev/odd" 2>/dev/null && fail "dev/odd has its tail"
cmp -n 1024000 "$tmp/odd.img" "$mnt/dev/odd" || fail "read dev/odd"
[ "$(stat -c %s "$mnt/dev/odd")" = 1024000 ] || fail "dev/odd size"
grep -q 'opcode: READ ([0-9]*), nodeid: 18,' "$kcopydfs_log" || fail "no READ seen for dev/odd"
expect_fail "No such device" "$mmap" "$mnt/dev/f" 0 x
expect_fail "Input/output error" \
	dd if=/dev/zero of="$mnt/dev/f" bs=512 seek=3000 count=1 \
	conv=notrunc status=none
stop_kcopydfs "$mnt"

# --no-passthrough: every device by direct I/O.
start_kcopydfs "$mnt" --no-passthrough --dev "a=$tmp/a.img"
[ "$(kcopydfs_mode "$mnt" a)" = direct_io ] || fail "--no-passthrough"
grep -q '^kcopydfs: dev/a: direct_io (--no-passthrough)$' "$kcopydfs_log" ||
	fail "log with --no-passthrough"
expect_fail "No such device" "$mmap" "$mnt/dev/a" 0 x
cmp "$tmp/a.img" "$mnt/dev/a" || fail "read dev/a by direct I/O"
stop_kcopydfs "$mnt"

# A block device.
if command -v losetup >/dev/null &&
	loop=$(losetup -f --show "$tmp/f.img" 2>/dev/null); then
	cleanup_fn "losetup -d $loop"
	start_kcopydfs "$mnt" --dev "loop=$loop"
	[ "$(kcopydfs_mode "$mnt" loop)" = direct_io ] || fail "block device"
	grep -q '^kcopydfs: dev/loop: direct_io (not a regular file)$' \
		"$kcopydfs_log" || fail "log: dev/loop"
	cmp "$tmp/f.img" "$mnt/dev/loop" || fail "read dev/loop"
	stop_kcopydfs "$mnt"
else
	echo "$0: no loop device here: block device part not run"
fi

# Without CAP_SYS_ADMIN: a user's own mount, where users may use FUSE.
user=kcpt$$
if command -v useradd >/dev/null && command -v setpriv >/dev/null &&
	useradd -M -N -d /nonexistent -s /usr/sbin/nologin "$user" &&
	cleanup_fn "userdel $user 2>/dev/null" &&
	setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" \
		--clear-groups -- test -r /dev/fuse -a -w /dev/fuse; then
	chmod 755 "$tmp"
	mkdir "$tmp/u" "$tmp/u/mnt"
	cp "$tmp/a.img" "$tmp/u/a.img"
	chown -R "$user" "$tmp/u"
	printf '#!/bin/sh\nexec setpriv --reuid=%s --regid=%s --clear-groups -- %s "$@"\n' \
		"$(id -u "$user")" "$(id -g "$user")" "$KCOPYDFS" >"$tmp/as-user"
	chmod 755 "$tmp/as-user"
	KCOPYDFS=$tmp/as-user start_kcopydfs "$tmp/u/mnt" --dev "a=$tmp/u/a.img"
	[ "$(kcopydfs_mode "$tmp/u/mnt" a)" = direct_io ] || fail "as a user"
	grep -q '^kcopydfs: dev/a: direct_io (no CAP_SYS_ADMIN)$' \
		"$kcopydfs_log" || fail "log as a user"
	stop_kcopydfs "$tmp/u/mnt"
else
	echo "$0: users cannot mount FUSE here: the part without CAP_SYS_ADMIN not run"
fi

# CAP_SYS_ADMIN in a user namespace only: the kernel refuses the backing
# file at the first open, and the device stays in direct I/O from then on.
if unshare -r -m --propagation private true 2>/dev/null; then
	cat >"$tmp/userns.sh" <<-EOF
	set -u
	"$KCOPYDFS" -f --dev "a=$tmp/a.img" "$mnt" 2>"$tmp/userns.log" &
	pid=\$!
	for i in \$(seq 200); do
		grep -q '^dev.a.mode=' "$mnt/stats" 2>/dev/null && break
		sleep 0.05
	done
	before=\$(grep '^dev.a.mode=' "$mnt/stats")
	cmp "$tmp/a.img" "$mnt/dev/a" || echo "data differs"
	cmp "$tmp/a.img" "$mnt/dev/a" || echo "data differs again"
	after=\$(grep '^dev.a.mode=' "$mnt/stats")
	umount "$mnt"
	wait \$pid
	echo "\$before \$after exit=\$?"
	EOF
	mkdir -p "$mnt"
	out=$(timeout 60 unshare -r -m --propagation private bash "$tmp/userns.sh")
	[ "$out" = "dev.a.mode=passthrough dev.a.mode=direct_io exit=0" ] ||
		fail "in a user namespace: $out: $(cat "$tmp/userns.log")"
	grep -q '^kcopydfs: dev/a: direct_io (passthrough: Operation not permitted)$' \
		"$tmp/userns.log" || fail "log in a user namespace"
else
	echo "$0: no user namespaces here: that part not run"
fi
exit 0
