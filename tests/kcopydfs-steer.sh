#!/usr/bin/env bash
# kcopydfs: jobs a user steers.  results name the errno, sector and device
# of a failure; cancel ID and cancel tag=WORD stop running jobs (state
# cancelled, logged); throttle and --throttle slow the engine; flush
# reaches the device's flush counter.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd
make_tmpdir

make_image "$tmp/a.img" 64M random
make_image "$tmp/b.img" 64M zero
make_image "$tmp/c.img" 8M zero
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--dev "c=$tmp/c.img" --fault c:write:5000+1:ENOSPC --throttle 16M

# submit LINE: write one command, print the id read back.
submit()
{
	local id
	exec 3<>"$mnt/control"
	printf '%s\n' "$1" >&3 || fail "'$1' refused"
	read -r id <&3 || fail "'$1': no id read back"
	exec 3>&-
	echo "$id"
}

# A failure names its errno, its first sector and the device.
id=$(submit "copy a:0+8M c:0")
kcopydfs_wait_state "$mnt" "$id" failed
line=$(grep "^id=$id " "$mnt/results")
[[ $line =~ \ error=ENOSPC@([0-9]+)\ on\ c$ ]] || fail "no error= in: $line"
[ "${BASH_REMATCH[1]}" -le 5000 ] || fail "error after the bad sector: $line"
grep -q "job failed: id=$id .*error=ENOSPC@" "$kcopydfs_log" ||
	fail "failed job not logged: $(cat "$kcopydfs_log")"

# --throttle 16M: 64 MiB take 4 s, so a cancel finds them running.
id=$(submit "copy a:0+64M b:0 tag=big")
for ((i = 0; i < 400; i++)); do
	[ "$(kcopydfs_field "$mnt" "$id" done)" -gt 0 ] && break
	sleep 0.05
done
[ "$(kcopydfs_field "$mnt" "$id" done)" -gt 0 ] ||
	fail "job $id did not start in 20 s: $(cat "$mnt/results")"
echo "cancel tag=big" >"$mnt/control" || fail "cancel tag=big refused"
kcopydfs_wait_state "$mnt" "$id" cancelled
done_sectors=$(kcopydfs_field "$mnt" "$id" done)
[ "$done_sectors" -lt 131072 ] || fail "cancelled, yet all done: $(cat "$mnt/results")"
grep -q "job cancelled: id=$id " "$kcopydfs_log" ||
	fail "cancelled job not logged: $(cat "$kcopydfs_log")"
grep -q "^jobs_cancelled=1$" "$mnt/stats" || fail "$(cat "$mnt/stats")"

# cancel ID of a running job; then of a finished one, and of a tag
# nobody has: ENOENT with a message.
id=$(submit "copy a:0+64M b:0")
cid=$(submit "cancel $id")
[ "$cid" = "$id" ] || fail "cancel $id read back '$cid'"
kcopydfs_wait_state "$mnt" "$id" cancelled
expect_fail "No such file or directory" bash -c "echo 'cancel $id' >'$mnt/control'"
exec 3<>"$mnt/control"
printf 'cancel tag=nobody\n' >&3 2>/dev/null && fail "cancel of no job accepted"
read -r reply <&3
exec 3>&-
case $reply in
*"cancel tag=nobody: no unfinished job with that tag"*) ;;
*) fail "read back: $reply" ;;
esac
expect_fail "Invalid argument" bash -c "echo 'cancel' >'$mnt/control'"
expect_fail "Invalid argument" bash -c "echo 'cancel 0' >'$mnt/control'"
expect_fail "Invalid argument" bash -c "echo 'cancel 1 2' >'$mnt/control'"

# throttle off: the same copy runs to the end.
echo "throttle off" >"$mnt/control" || fail "throttle off refused"
id=$(submit "copy a:0+64M b:0 sync")
[ "$(kcopydfs_field "$mnt" "$id" state)" = done ] || fail "$(cat "$mnt/results")"
cmp "$tmp/a.img" "$tmp/b.img" || fail "b.img differs after the full copy"
echo "throttle 50%" >"$mnt/control" || fail "throttle 50% refused"
echo "throttle 100%" >"$mnt/control" || fail "throttle 100% refused"
for bad in "throttle" "throttle 0%" "throttle 101%" "throttle 5X" \
	"throttle 100" "throttle 1M 2M"; do
	expect_fail "Invalid argument" bash -c "echo '$bad' >'$mnt/control'"
done

# flush: one flush of each destination, counted.
before=$(sed -n 's/^dev\.b\.flushes=//p' "$mnt/stats")
[ "$before" = 0 ] || fail "flushes before any flush job: $before"
id=$(submit "copy a:0+1M b:0 flush sync")
[ "$(kcopydfs_field "$mnt" "$id" state)" = done ] || fail "$(cat "$mnt/results")"
grep -q '^dev\.b\.flushes=1$' "$mnt/stats" || fail "$(cat "$mnt/stats")"

stop_kcopydfs "$mnt"

# A bad --throttle is refused before mounting.
"$KCOPYDFS" -f --dev "a=$tmp/a.img" --throttle 7Q "$tmp/mnt2" 2>"$tmp/err" &&
	fail "--throttle 7Q accepted"
grep -q "bad value '7Q' for throttle" "$tmp/err" || fail "$(cat "$tmp/err")"
exit 0
