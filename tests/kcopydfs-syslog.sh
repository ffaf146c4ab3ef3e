#!/usr/bin/env bash
# What a daemonised kcopydfs tells syslog: a start line (version, devices,
# passthrough), every failed job with its errno, nothing for a job that
# succeeds (unless --verbose), and a stop line.  The test runs in a
# private mount namespace with its own /dev, whose /dev/log is a socket
# of the test's: the host's log sees none of it.
source "$abs_srcdir/functions.sh"
requires_fuse
requires unshare python3 mountpoint
[ "$(id -u)" = 0 ] || skip "needs root for a mount namespace"
[ -d /mnt ] || skip "/mnt is missing"
unshare -m true 2>/dev/null || skip "cannot make a mount namespace"
make_tmpdir
export tmp

cat >"$tmp/inner.sh" <<'INNER'
source "$abs_srcdir/functions.sh"
# A /dev of the namespace's own: the host's nodes, and our /dev/log.
mount --rbind /dev /mnt || fail "bind /dev"
mount -t tmpfs -o mode=755 kcopyd-test-dev /dev || fail "tmpfs on /dev"
for n in null zero full random urandom fuse tty; do
	[ -e "/mnt/$n" ] || continue
	touch "/dev/$n" && mount --bind "/mnt/$n" "/dev/$n" || fail "/dev/$n"
done
mkdir /dev/shm /dev/pts
mount --rbind /mnt/shm /dev/shm || fail "/dev/shm"
mount --rbind /mnt/pts /dev/pts || fail "/dev/pts"
ln -s /proc/self/fd /dev/fd
ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr

log=$tmp/syslog
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
out = open(sys.argv[1], "a", buffering=1)
while True:
	out.write(s.recv(65536).decode(errors="replace").rstrip("\0\n") + "\n")
' "$log" &
listener=$!
cleanup_fn "kill $listener"
for ((i = 0; i < 200; i++)); do [ -S /dev/log ] && break; sleep 0.05; done
[ -S /dev/log ] || fail "no listener on /dev/log"

img=$tmp/img
mkdir -p "$img"
make_image "$img/a.img" 256K random
make_image "$img/b.img" 256K zero
mnt=$tmp/mnt
mkdir -p "$mnt"
cleanup_fn "fusermount3 -u -z '$mnt' 2>/dev/null"

# run_daemon OPTIONS...: mount in the background, run three jobs, unmount.
run_daemon()
{
	local i
	"$KCOPYDFS" -P "$tmp/pid" "$@" "$img" "$mnt" || fail "daemon: $*"
	echo "copy a.img:0+8 b.img:0 sync tag=good" >"$mnt/control" ||
		fail "good copy"
	echo "copy a.img:8+8 b.img:8 sync tag=bad" >"$mnt/control" 2>/dev/null &&
		fail "the failing copy succeeded"
	echo "zero b.img:100+8 sync tag=full" >"$mnt/control" 2>/dev/null &&
		fail "the failing zero succeeded"
	fusermount3 -u "$mnt" || fail "unmount"
	for ((i = 0; i < 400; i++)); do
		[ -e "$tmp/pid" ] || break
		sleep 0.05
	done
	[ -e "$tmp/pid" ] && fail "the daemon did not exit cleanly"
	# The stop line is the last: wait for it to arrive.
	for ((i = 0; i < 200; i++)); do
		grep -q "kcopydfs stopped on $mnt" "$log" && return 0
		sleep 0.05
	done
	fail "no stop line in syslog: $(cat "$log")"
}

faults="--fault a.img:read:8+8:EIO --fault b.img:write:100+8:ENOSPC"
run_daemon $faults
grep -q "kcopydfs\[[0-9]*\]: kcopydfs [0-9.]* (libkcopyd [0-9.]*) serving $img on $mnt: 2 devices a.img b.img; passthrough " "$log" ||
	fail "start line: $(cat "$log")"
grep -q "job failed: id=2 tag=bad op=copy state=failed read_err=1 .* (errno 5: Input/output error)" "$log" ||
	fail "failed copy not logged with its errno: $(cat "$log")"
grep -q "job failed: id=3 tag=full op=zero state=failed .* (errno 28: No space left on device)" "$log" ||
	fail "failed zero not logged with its errno: $(cat "$log")"
grep -q "tag=good" "$log" && fail "a job that succeeded was logged: $(cat "$log")"
grep -q "kcopydfs stopped on $mnt: 1 jobs done, 2 failed" "$log" ||
	fail "stop line: $(cat "$log")"
# Priorities: <facility*8+level>, daemon is 3: 30 info, 27 err.
grep -q "^<27>.*job failed: id=2" "$log" || fail "failed job not at LOG_ERR"
grep -q "^<30>.*serving $img" "$log" || fail "start line not at LOG_INFO"

# --verbose (or -o verbose) logs the jobs that succeed too.
: >"$log"
run_daemon -o verbose $faults
grep -q "job done: id=1 tag=good op=copy state=done" "$log" ||
	fail "-o verbose: $(cat "$log")"
exit 0
INNER
unshare -m --propagation private bash "$tmp/inner.sh"
