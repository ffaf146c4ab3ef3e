#!/usr/bin/env bash
# kcopydfs --state DIR on a full file system: a command whose record cannot
# be written is refused with ENOSPC and the cause read back, leaves no
# temporary file behind to hold the space, and runs nothing; a job whose
# later record fails ends failed with ENOSPC on state and leaves no record;
# once there is room again, jobs are accepted with ids never used before.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp mount umount
make_tmpdir
mnt=$tmp/mnt
mkdir "$tmp/full"
mount -t tmpfs -o size=64k kcopydfs-test "$tmp/full" 2>/dev/null ||
	skip "cannot mount a tmpfs"
cleanup_fn umount -l "$tmp/full"
st=$tmp/full/state
make_image "$tmp/a.img" 8M random
make_image "$tmp/b.img" 8M random
cp "$tmp/b.img" "$tmp/b.orig"

# fill: take every free page of the tmpfs.
fill()
{
	dd if=/dev/zero of="$tmp/full/filler" bs=4k status=none 2>/dev/null
	[ "$(df --output=avail "$tmp/full" | tail -1)" -eq 0 ] ||
		fail "the tmpfs is not full: $(df "$tmp/full")"
}

# Reads of a slowed down: a job runs many steps, and records them.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--state "$st" --subjob-size 16K --fault a:read:0+16384:delay=20000
kcopydfs_queue "$mnt" "copy a:0+16384 b:0 tag=long"
lid=$id
[ -e "$st/job.$lid" ] || fail "job $lid accepted without a record"

# 1. Full while the job runs: its next record fails, and so does it.
fill
kcopydfs_wait_state "$mnt" "$lid" failed done
grep -q "^id=$lid tag=long op=copy state=failed .* error=ENOSPC@0 on state" \
	"$mnt/results" || fail "job $lid: $(cat "$mnt/results")"
echo "$0: $(grep "^id=$lid " "$mnt/results")"
[ -z "$(ls "$st" | grep '^job\.')" ] || fail "left in state: $(ls "$st")"

# 2. Full when a command comes (again: the record removed freed room):
# refused, nothing left, nothing run.
fill
exec 3<>"$mnt/control"
echo "zero b:0+8 tag=refused" >&3 2>/dev/null && fail "queued without a record"
read -r line <&3
exec 3>&-
case $line in
*"cannot record it in state $st: No space left on device"*) ;;
*) fail "read back: $line" ;;
esac
[ -z "$(ls "$st" | grep '^job\.')" ] || fail "left in state: $(ls "$st")"
grep -q "tag=refused" "$mnt/results" && fail "a job without record queued"

# 3. Room again: accepted, with an id after the failed job's.
rm "$tmp/full/filler"
kcopydfs_queue "$mnt" "zero b:0+8 tag=room"
rid=$id
[ "$rid" -gt "$lid" ] || fail "id $rid after job $lid"
kcopydfs_wait_state "$mnt" "$rid" done
stop_kcopydfs "$mnt"
[ -z "$(ls "$st" | grep '^job\.')" ] || fail "left in state: $(ls "$st")"
cmp -i $((16384 * 512)) "$tmp/b.img" "$tmp/b.orig" || fail "b beyond the job"
