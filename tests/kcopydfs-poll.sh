#!/usr/bin/env bash
# kcopydfs: poll() on results sleeps until a job changes state, then wakes.
source "$abs_srcdir/functions.sh"
requires_fuse
requires timeout
make_tmpdir
poller=$abs_builddir/kcopydfs_poll
[ -x "$poller" ] || skip "kcopydfs_poll was not built"

make_image "$tmp/a.img" 256K random
make_image "$tmp/b.img" 256K zero
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img"

# wait_poller OUT: until the poller says it sleeps in poll().
wait_poller()
{
	for ((i = 0; i < 200; i++)); do
		grep -q waiting "$1" && return 0
		kill -0 $poller_pid 2>/dev/null || break
		sleep 0.05
	done
	wait $poller_pid
	fail "poller did not start to wait (status $?)"
}

# Nothing changes: poll reports nothing (exit 3 if it did), then times out.
"$poller" "$mnt/results" 300 >"$tmp/out0" &
poller_pid=$!
wait $poller_pid
status=$?
[ $status = 2 ] || fail "poll without a change: status $status"

# A new job wakes the poller, whose new read shows it.
"$poller" "$mnt/results" 20000 >"$tmp/out1" &
poller_pid=$!
wait_poller "$tmp/out1"
echo "copy a:0+512 b:0 tag=wake" >"$mnt/control" || fail "copy"
status=0
wait $poller_pid || status=$?
[ $status = 0 ] || fail "poller status $status"
grep -q '^id=1 tag=wake op=copy' "$tmp/out1" || fail "woken read: $(cat "$tmp/out1")"
kcopydfs_wait_state "$mnt" 1 done

# Several pollers at once all wake on one change.
for n in 1 2 3; do
	"$poller" "$mnt/results" 20000 >"$tmp/multi$n" &
	pids[n]=$!
	poller_pid=${pids[n]}
	wait_poller "$tmp/multi$n"
done
echo "zero b:0+8 tag=again" >"$mnt/control" || fail "zero"
for n in 1 2 3; do
	status=0
	wait ${pids[n]} || status=$?
	[ $status = 0 ] || fail "poller $n status $status"
done

stop_kcopydfs "$mnt"
exit 0
