#!/usr/bin/env bash
# kcopydfs: command-line options, --keep, daemon mode and its pidfile,
# allow_other, and unmounting while a job runs.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd mountpoint timeout
make_tmpdir

make_image "$tmp/a.img" 1M random
make_image "$tmp/b.img" 1M zero
mnt=$tmp/mnt
mkdir -p "$mnt"

# Refused: bad options exit 1 before mounting.
for args in "--dev bad/name=$tmp/a.img" "--dev a" "--dev a=$tmp/none.img" \
	"--dev a=$tmp/a.img --dev a=$tmp/b.img" \
	"--dev a=$tmp/a.img --fault b:read:0+1" \
	"--dev a=$tmp/a.img --fault a:read:0+1:EWHAT" \
	"--dev a=$tmp/a.img --subjob-size 1000" \
	"--dev a=$tmp/a.img --pages 0" "--dev a=$tmp/a.img --threads x" \
	"--dev a=$tmp/a.img --max-queue 0" "--image-dir $tmp/nodir" "" \
	"-o dev=a=$tmp/a.img,pages=0" "-o image-dir=$tmp/nodir" \
	"$tmp --image-dir $tmp" "$tmp $tmp $tmp"; do
	status=0
	timeout 10 "$KCOPYDFS" -f $args "$mnt" 2>/dev/null || status=$?
	[ $status = 1 ] || fail "'$args' exited $status, want 1"
	mountpoint -q "$mnt" && fail "'$args' mounted"
done
expect_fail "usage" "$KCOPYDFS" --dev "a=$tmp/a.img"
"$KCOPYDFS" --help | grep -qF -- '--dev NAME[:ro]=PATH' || fail "--help"
"$KCOPYDFS" --version | grep -q '^kcopydfs ' || fail "--version"

# Engine options, --keep: only the 3 newest finished jobs are kept.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--pages 16 --threads 1 --subjob-size 16K --keep 3
grep -qx 'pages_total=16' "$mnt/stats" || fail "--pages"
for i in $(seq 0 5); do
	echo "copy a:$((i * 8))+8 b:$((i * 8)) sync" >"$mnt/control" ||
		fail "copy $i"
done
[ "$(cut -d' ' -f1 "$mnt/results" | tr '\n' ' ')" = "id=4 id=5 id=6 " ] ||
	fail "--keep 3: $(cat "$mnt/results")"
grep -qx 'jobs_done=6' "$mnt/stats" || fail "jobs_done counts dropped jobs"
cmp -n 24576 "$tmp/a.img" "$mnt/dev/b" || fail "data"
stop_kcopydfs "$mnt"

# Unmount while a job runs: the daemon lets it finish, logs it, exits 0.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--fault a:read:1000+8:delay=1500000
echo "copy a:1000+8 b:1000 tag=late" >"$mnt/control" || fail "late copy"
stop_kcopydfs "$mnt"
grep -q "finished after unmount: id=1 tag=late op=copy state=done" \
	"$kcopydfs_log" || fail "not logged: $(cat "$kcopydfs_log")"
cmp -i 512000:512000 -n 4096 "$tmp/a.img" "$tmp/b.img" ||
	fail "the job finished after unmount wrote wrong data"

# Daemon mode: when kcopydfs returns, the pidfile names a serving mount.
"$KCOPYDFS" -P "$tmp/d.pid" --dev "a=$tmp/a.img" "$mnt" ||
	fail "daemon mode failed"
cleanup_fn "fusermount3 -u -z '$mnt' 2>/dev/null"
[ -s "$tmp/d.pid" ] || fail "no pidfile when the daemon returned"
pid=$(cat "$tmp/d.pid")
mountpoint -q "$mnt" || fail "not mounted when the daemon returned"
[ "$(ls "$mnt/dev")" = a ] || fail "daemon mount does not serve"
if [ "$(id -u)" = 0 ]; then
	grep " $mnt " /proc/mounts | grep -q 'nosuid,nodev' ||
		fail "root mount without nosuid,nodev"
fi
fusermount3 -u "$mnt" || fail "unmount daemon"
timeout 20 tail --pid="$pid" -f /dev/null || fail "daemon did not exit"
[ ! -e "$tmp/d.pid" ] || fail "daemon left its pidfile"

# allow_other brings default_permissions, and group access to devices.
if [ "$(id -u)" = 0 ]; then
	start_kcopydfs "$mnt" --dev "a=$tmp/a.img" -o allow_other
	grep " $mnt " /proc/mounts | grep -q 'default_permissions' ||
		fail "allow_other without default_permissions"
	[ "$(stat -c %a "$mnt/dev/a")" = 660 ] || fail "dev mode with allow_other"
	[ "$(stat -c %a "$mnt/control")" = 600 ] || fail "control mode"
	# Mode bits are enforced now: nobody else may write commands.
	if command -v setpriv >/dev/null; then
		chmod 711 "$tmp"
		setpriv --reuid=65534 --regid=65534 --clear-groups \
			bash -c "echo 'zero a:0+1' >'$mnt/control'" 2>/dev/null &&
			fail "another user wrote to control"
		setpriv --reuid=65534 --regid=65534 --clear-groups \
			cat "$mnt/results" >/dev/null ||
			fail "another user cannot read results"
	fi
	stop_kcopydfs "$mnt"
fi
exit 0
