#!/usr/bin/env bash
# kcopydfs: every errno of a control write, its read-back message and log
# line, all-or-nothing writes, and the queue bound (EAGAIN).
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd
make_tmpdir

make_image "$tmp/a.img" 1M random
make_image "$tmp/b.img" 1M zero
mnt=$tmp/mnt
# Reads of a:1000+8 take 3 s: jobs that stay in the queue.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--max-queue 2 --fault a:read:1000+8:delay=3000000

# bad STRERROR MESSAGE_PART BYTES: one write of BYTES (printf format) must
# fail with STRERROR, and the handle must read back the message.
bad()
{
	local err=$1 part=$2 out reply
	exec 3<>"$mnt/control"
	if out=$(printf "$3" | dd bs=128K iflag=fullblock status=none 2>&1 >&3); then
		fail "write of '$3' succeeded"
	fi
	case $out in *"$err"*) ;; *) fail "'$3': dd said: $out" ;; esac
	read -r reply <&3 || fail "'$3': nothing read back"
	exec 3>&-
	case $reply in
	"error: $err: "*"$part"*) ;;
	*) fail "'$3': read back '$reply', want '$err' and '$part'" ;;
	esac
	grep -qF -- "$part" "$kcopydfs_log" || fail "'$part' not logged"
}

einval="Invalid argument"
bad "$einval" "unknown command 'bogus'" 'bogus a:0+8 b:0\n'
bad "$einval" "unknown word 'fast'" 'copy a:0+8 b:0 fast\n'
bad "$einval" "too large" 'zero a:0+99999999999999999999\n'
bad "$einval" "'-1'" 'copy a:-1+8 b:0\n'
bad "$einval" "NUL byte at offset 10" 'zero a:0+8\0\n'
bad "$einval" "binary byte 0x01" 'zero a:0+8\001\n'
bad "$einval" "'b:8' overlaps another destination" 'copy a:0+16 b:0 b:8\n'
bad "$einval" "needs NAME:START+COUNT" 'zero b:0\n'
bad "No such file or directory" "unknown device 'sdz'" 'copy sdz:0+8 b:0\n'
bad "Numerical result out of range" "'b:2040+16'" 'zero b:2040+16\n'
dests=$(for i in $(seq 0 32); do printf ' b:%d' $((i * 8)); done)
bad "Argument list too long" "more than 32 destinations at 'b:256'" \
	"copy a:0+8$dests\\n"
bad "File too large" "longer than 4096" "zero a:0+8$(printf '%5000s' '')\\n"
bad "File too large" "larger than 65536" "$(printf '%70000s' '')"
# The engine's own overlap rule, caught before anything is queued.
bad "$einval" "on both sides" 'copy a:100+100 a:50 a:150\n'

# echo's own report, as a user sees it.
expect_fail "Invalid argument" bash -c "echo 'zero b:0' >'$mnt/control'"
expect_fail "No such file or directory" bash -c "echo 'zero q:0+1' >'$mnt/control'"

# All or nothing: a bad last line queues none of the lines before it.
bad "No such file or directory" "line 3: unknown device 'q'" \
	'zero b:0+8\ncopy a:0+8 b:8\nzero q:0+8\n'
[ -z "$(cat "$mnt/results")" ] || fail "a refused write queued jobs"
grep -qx 'jobs_done=0' "$mnt/stats" || fail "jobs ran"

# EAGAIN: two slow jobs fill the queue (--max-queue 2).
exec 3<>"$mnt/control"
printf 'copy a:1000+8 b:0 tag=slow1\ncopy a:1000+8 b:8 tag=slow2\n' |
	dd bs=64K iflag=fullblock status=none >&3 || fail "two slow jobs"
read -r id1 <&3 && read -r id2 <&3 || fail "ids of the slow jobs"
exec 3>&-
[ "$id1 $id2" = "1 2" ] || fail "ids '$id1 $id2'"
bad "Resource temporarily unavailable" "queue full" 'zero b:100+1\n'
grep -c . "$mnt/results" | grep -qx 2 || fail "EAGAIN queued a job"
kcopydfs_wait_state "$mnt" 1 done
kcopydfs_wait_state "$mnt" 2 done
# Room again; and a batch bigger than the whole queue never fits.
echo "zero b:100+1" >"$mnt/control" || fail "queue has room again"
bad "Resource temporarily unavailable" "no room for 3 more jobs" \
	'zero b:0+1\nzero b:1+1\nzero b:2+1\n'

# Status files are read-only, whoever asks.
expect_fail "Permission denied" bash -c "echo x >'$mnt/results'"
expect_fail "Permission denied" bash -c "echo x >'$mnt/stats'"

stop_kcopydfs "$mnt"
exit 0
