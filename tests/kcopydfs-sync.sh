#!/usr/bin/env bash
# kcopydfs: `sync` writes: success, EIO from injected read and write
# faults (with and without ignore_errors), a signal ending the wait while
# the job goes on, and a sync writer pending when the daemon is stopped.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd timeout mountpoint
make_tmpdir

make_image "$tmp/a.img" 1M random
make_image "$tmp/b.img" 1M zero
make_image "$tmp/c.img" 1M zero
cp "$tmp/b.img" "$tmp/b.exp"
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--dev "c=$tmp/c.img" --subjob-size 4K \
	--fault a:read:0+8:EIO --fault c:write:0+8:ENOSPC \
	--fault a:read:64+8:delay=2000000

expect()	# SKIP SEEK COUNT: a copy from a to b
{
	dd if="$tmp/a.img" of="$tmp/b.exp" bs=512 skip="$1" seek="$2" \
		count="$3" conv=notrunc status=none
}

id_of()		# TAG
{
	sed -n "s/^id=\\([0-9]*\\) tag=$1 .*/\\1/p" "$mnt/results"
}

# Success: the job is over by the time the write returns.
echo "copy a:8+56 b:100 sync tag=ok" >"$mnt/control" || fail "sync copy"
grep -q '^id=1 tag=ok op=copy state=done .* done=56 ' "$mnt/results" ||
	fail "sync returned before the job was done: $(cat "$mnt/results")"
expect 8 100 56
cmp "$tmp/b.exp" "$mnt/dev/b" || fail "data of the sync copy"

# A read error: EIO, and the job is recorded as failed (how much of it
# was written depends on the chunks in flight: c is not compared).
expect_fail "Input/output error" \
	bash -c "echo 'copy a:0+16 c:100 sync tag=rerr' >'$mnt/control'"
grep -q "^id=2 tag=rerr op=copy state=failed read_err=1 write_err=0x0 " \
	"$mnt/results" || fail "read error: $(cat "$mnt/results")"

# ignore_errors goes on past the bad chunk, and still reports EIO.
expect_fail "Input/output error" bash -c \
	"echo 'copy a:0+16 b:300 ignore_errors sync tag=ign' >'$mnt/control'"
grep -q "^id=3 tag=ign .* state=failed read_err=1 .* done=16 " \
	"$mnt/results" || fail "ignore_errors: $(cat "$mnt/results")"
# The failed chunk's sectors are written as zeros, the rest copied.
dd if=/dev/zero of="$tmp/b.exp" bs=512 seek=300 count=8 conv=notrunc status=none
expect 8 308 8
cmp "$tmp/b.exp" "$mnt/dev/b" || fail "data after ignore_errors"

# A write error on the first destination only: write_err bit 0.
expect_fail "Input/output error" bash -c \
	"echo 'copy a:8+8 c:0 b:400 sync tag=werr' >'$mnt/control'"
grep -q "^id=4 tag=werr .* state=failed read_err=0 write_err=0x1 " \
	"$mnt/results" || fail "write error: $(cat "$mnt/results")"
expect 8 400 8
cmp "$tmp/b.exp" "$mnt/dev/b" || fail "the good destination of job 4"

# A signal ends the wait (EINTR); the job goes on and completes.
(
	trap : USR1
	echo "copy a:64+8 b:500 sync tag=slow" >"$mnt/control" 2>"$tmp/intr.err"
	echo $? >"$tmp/intr.status"
) &
writer=$!
for ((i = 0; i < 200; i++)); do
	[ -n "$(id_of slow)" ] && break
	sleep 0.05
done
[ -n "$(id_of slow)" ] || fail "the slow job never showed up"
kill -USR1 $writer
timeout 10 tail --pid=$writer -f /dev/null || fail "writer not interrupted"
wait $writer
[ "$(cat "$tmp/intr.status")" = 1 ] || fail "interrupted write returned 0"
grep -q "Interrupted system call" "$tmp/intr.err" ||
	fail "interrupted write: $(cat "$tmp/intr.err")"
kcopydfs_wait_state "$mnt" "$(id_of slow)" done
expect 64 500 8
cmp "$tmp/b.exp" "$mnt/dev/b" || fail "data of the interrupted sync job"

# A sync writer pending when the daemon is told to stop: the daemon serves
# on until the job is over, the writer learns that it succeeded, then the
# daemon unmounts and exits 0.
timeout 20 bash -c "echo 'copy a:64+8 b:600 sync tag=late' >'$mnt/control'" \
	2>"$tmp/late.err" &
writer=$!
for ((i = 0; i < 200; i++)); do
	[ -n "$(id_of late)" ] && break
	sleep 0.05
done
late=$(id_of late)
[ -n "$late" ] || fail "the late job never showed up"
kill -TERM "$kcopydfs_pid"
status=0
timeout 20 tail --pid="$kcopydfs_pid" -f /dev/null || fail "daemon hangs"
wait "$kcopydfs_pid" || status=$?
[ $status = 0 ] || fail "daemon exited $status after SIGTERM"
wait $writer
status=$?
[ $status != 124 ] || fail "the sync writer hung"
[ $status = 0 ] || fail "late sync writer exited $status: $(cat "$tmp/late.err")"
mountpoint -q "$mnt" && fail "still mounted after SIGTERM"
grep -q "stopping: waiting for 1 sync write" "$kcopydfs_log" ||
	fail "the wait for the sync write not logged: $(cat "$kcopydfs_log")"
expect 64 600 8
cmp "$tmp/b.exp" "$tmp/b.img" || fail "data of the job finished after unmount"
exit 0
