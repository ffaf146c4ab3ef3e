#!/usr/bin/env bash
# kcopydfs: a `sync` write that a signal interrupts after its jobs were
# queued.  dash's echo and Python's os.write retry on EINTR: the retry must
# wait for the jobs already queued (or get their outcome), never queue them
# again.  Signals land at random points of many sync writes under dash and
# Python, the self-overlapping copy included (run twice, it would shift the
# data twice); each job must be in results once and the data exact.  A
# fatal signal still frees the waiting process; a daemon told to stop
# answers a waiting writer with its job's true outcome.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dash python3 mountpoint timeout
make_tmpdir

seed=${KCOPYD_SEED:-$RANDOM}
echo "seed $seed (KCOPYD_SEED=$seed to repeat)"
RANDOM=$seed

make_image "$tmp/a.img" 4M random
make_image "$tmp/w.img" 4M zero
make_image "$tmp/s.img" 3M random
make_image "$tmp/l.img" 1M zero
cp "$tmp/s.img" "$tmp/s.orig"
mnt=$tmp/mnt
# Slow destinations, so that signals find the writers waiting; a read
# error for the failing job.
start_kcopydfs "$mnt" --subjob-size 4K --dev "a=$tmp/a.img" \
	--dev "w=$tmp/w.img" --dev "s=$tmp/s.img" --dev "l=$tmp/l.img" \
	--fault w:write:0+8192:delay=20000 --fault s:write:0+6144:delay=2000 \
	--fault l:write:0+2048:delay=100000 --fault a:read:8000+8:EIO

once()		# TAG: exactly one job has it, and it is in STATE ($2)
{
	local n
	n=$(grep -c " tag=$1 " "$mnt/results")
	[ "$n" = 1 ] || fail "$n jobs tagged $1: $(grep " tag=$1 " "$mnt/results")"
	kcopydfs_wait_state "$mnt" "$(sed -n "s/^id=\\([0-9]*\\) tag=$1 .*/\\1/p" \
		"$mnt/results")" "$2"
}

# The reported case, then signals at random points of dash writers.
for ((i = 0; i < 12; i++)); do
	rm -f "$tmp/trapped"
	dash -c "trap : USR1; : >'$tmp/trapped'; echo 'copy a:$((i * 64))+64 w:$((i * 64)) sync tag=d$i' >'$mnt/control'" \
		2>"$tmp/dash.err" &
	p=$!
	for ((k = 0; k < 400; k++)); do
		[ -e "$tmp/trapped" ] && break
		sleep 0.01
	done
	for ((k = 0; k <= RANDOM % 3; k++)); do
		sleep "0.0$((RANDOM % 10))"
		kill -USR1 $p 2>/dev/null
	done
	timeout 60 tail --pid=$p -f /dev/null || fail "dash writer $i hangs"
	wait $p || fail "dash writer $i failed: $(cat "$tmp/dash.err")"
	once "d$i" done
done

# Python: an interval timer fires through many sync writes (os.write
# retries on EINTR, PEP 475); then one whose handler waits until the job
# has failed, so the retry comes after the end and must get EIO at once.
python3 - "$mnt" "$seed" <<'PY' || fail "python writers"
import errno, os, random, signal, sys, time
mnt, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
fired = 0
def tick(sig, frame):
    global fired
    fired += 1
signal.signal(signal.SIGALRM, tick)
fd = os.open(mnt + "/control", os.O_WRONLY)
for i in range(12, 30):
    cmd = b"copy a:%d+64 w:%d sync tag=p%d\n" % (i * 64, i * 64, i)
    signal.setitimer(signal.ITIMER_REAL, rnd.uniform(0.001, 0.1),
                     rnd.uniform(0.005, 0.05))
    n = os.write(fd, cmd)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if n != len(cmd):
        sys.exit("write %d returned %d" % (i, n))
# The self-overlapping copy: 2 MiB moved up 8 sectors, as memmove.
cmd = b"copy s:0+4096 s:8 sync tag=mm\n"
signal.setitimer(signal.ITIMER_REAL, rnd.uniform(0.001, 0.2),
                 rnd.uniform(0.01, 0.1))
n = os.write(fd, cmd)
signal.setitimer(signal.ITIMER_REAL, 0)
if n != len(cmd):
    sys.exit("memmove write returned %d" % n)
if fired < 19:
    sys.exit("only %d signals fired" % fired)

def failed_job(sig, frame):
    for _ in range(600):
        if any(" tag=bad " in l and "state=failed" in l
               for l in open(mnt + "/results")):
            return
        time.sleep(0.05)
signal.signal(signal.SIGALRM, failed_job)
signal.setitimer(signal.ITIMER_REAL, 0.05)
try:
    os.write(fd, b"copy a:8000+64 w:4000 ignore_errors sync tag=bad\n")
    sys.exit("the failed job's retry succeeded")
except OSError as e:
    if e.errno != errno.EIO:
        sys.exit("the failed job's retry: %s" % e)
os.close(fd)
PY
for ((i = 12; i < 30; i++)); do
	once "p$i" done
done
once mm done
once bad failed

# A fatal signal still frees the writer; its job goes on.  (Background
# jobs of a script start with SIGINT ignored: env gives back its default.)
for sig in INT KILL; do
	env --default-signal=INT python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, sys.argv[2].encode())' \
		"$mnt/control" "copy a:0+200 l:0 sync tag=$sig"$'\n' 2>/dev/null &
	p=$!
	for ((i = 0; i < 400; i++)); do
		grep -q " tag=$sig " "$mnt/results" && break
		sleep 0.05
	done
	grep -q " tag=$sig " "$mnt/results" ||
		fail "the job of SIG$sig never showed"
	kill -$sig $p
	timeout 30 tail --pid=$p -f /dev/null || fail "SIG$sig did not free the writer"
	wait $p && fail "the writer killed by SIG$sig exited 0"
	once "$sig" "queued running done"
done
env --default-signal=INT dash -c "echo 'copy a:0+200 l:400 sync tag=dashint' >'$mnt/control'" 2>/dev/null &
p=$!
for ((i = 0; i < 400; i++)); do
	grep -q " tag=dashint " "$mnt/results" && break
	sleep 0.05
done
grep -q " tag=dashint " "$mnt/results" || fail "the job of dash never showed"
kill -INT $p
timeout 30 tail --pid=$p -f /dev/null || fail "SIGINT did not free dash"
once dashint "queued running done"

# The data: each copy ran once, where it was asked to.
for t in INT KILL dashint; do
	kcopydfs_wait_state "$mnt" "$(sed -n "s/^id=\\([0-9]*\\) tag=$t .*/\\1/p" \
		"$mnt/results")" done
done
python3 - "$tmp" <<'PY' || fail "data"
import sys
tmp = sys.argv[1]
a = open(tmp + "/a.img", "rb").read()
w = open(tmp + "/w.img", "rb").read()
want = bytearray(len(w))
for i in range(30):
    want[i * 64 * 512:(i + 1) * 64 * 512] = a[i * 64 * 512:(i + 1) * 64 * 512]
# The failing copy: its unreadable chunk written as zeros, the rest copied.
want[4008 * 512:4064 * 512] = a[8008 * 512:8064 * 512]
if w != bytes(want):
    sys.exit("w differs")
s = open(tmp + "/s.orig", "rb").read()
want = bytearray(s)
want[8 * 512:(8 + 4096) * 512] = s[0:4096 * 512]
got = open(tmp + "/s.img", "rb").read()
if got != bytes(want):
    bad = sum(got[i:i + 512] != want[i:i + 512] for i in range(0, len(s), 512))
    sys.exit("the memmove copy: %d sectors differ" % bad)
PY

# Stopped while dash waits: the daemon waits for the job and answers with
# its outcome (not EINTR, which dash would retry into a dead mount).
rm -f "$tmp/trapped"
dash -c "trap : USR1; : >'$tmp/trapped'; echo 'copy a:0+200 l:800 sync tag=stop' >'$mnt/control'" \
	2>"$tmp/stop.err" &
p=$!
for ((i = 0; i < 400; i++)); do
	grep -q " tag=stop " "$mnt/results" && break
	sleep 0.05
done
grep -q " tag=stop " "$mnt/results" || fail "the job of the stop never showed"
kill -USR1 $p
kill -TERM "$kcopydfs_pid"
timeout 60 tail --pid=$p -f /dev/null || fail "the writer hangs at stop"
wait $p || fail "the writer at stop failed: $(cat "$tmp/stop.err")"
timeout 60 tail --pid="$kcopydfs_pid" -f /dev/null || fail "daemon hangs"
status=0
wait "$kcopydfs_pid" || status=$?
[ $status = 0 ] || fail "daemon exited $status: $(cat "$kcopydfs_log")"
mountpoint -q "$mnt" && fail "still mounted after SIGTERM"
dd if="$tmp/a.img" bs=512 count=200 status=none >"$tmp/want"
dd if="$tmp/l.img" bs=512 skip=800 count=200 status=none >"$tmp/got"
cmp "$tmp/want" "$tmp/got" || fail "data of the job at stop"
exit 0
