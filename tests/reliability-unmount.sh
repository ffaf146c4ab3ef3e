#!/usr/bin/env bash
# fusermount3 -u with copies in flight: the daemon lets them finish, logs
# each one's final results line, and exits 0; the data is complete.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd grep
make_tmpdir

make_image "$tmp/a.img" 2M random
make_image "$tmp/b.img" 2M random
cp "$tmp/b.img" "$tmp/b.exp"
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--subjob-size 16K --fault a:read:0+4096:delay=10000

for i in 0 1 2; do
	echo "copy a:$((i * 1024))+1024 b:$((i * 1024)) tag=j$i" \
		>"$mnt/control" || fail "queue"
	dd if="$tmp/a.img" of="$tmp/b.exp" bs=512 skip=$((i * 1024)) \
		seek=$((i * 1024)) count=1024 conv=notrunc status=none
done
kcopydfs_wait_state "$mnt" 1 running
# Started now, so not finished when the unmount comes: 64 chunks of 10 ms.
inflight=$(grep -c 'state=\(queued\|running\)' "$mnt/results")
[ "$inflight" -ge 1 ] || fail "no job in flight at unmount"
stop_kcopydfs "$mnt"

# Each job unfinished at unmount is in the log with its final line, done.
n=$(grep -c '^kcopydfs: finished after unmount: id=[0-9]* tag=j[0-2] op=copy state=done ' \
	"$kcopydfs_log")
[ "$n" -ge 1 ] || fail "no job logged as finished after unmount: $(cat "$kcopydfs_log")"
grep 'state=failed' "$kcopydfs_log" && fail "a job failed at unmount"
cmp "$tmp/b.exp" "$tmp/b.img" || fail "the copies were not completed"
echo "$0: $n of 3 jobs finished after unmount"
