#!/usr/bin/env bash
# MNT/finished: one line per job as it ends, a file that only grows, so
# `tail -f` follows it; a reader more than --keep lines behind skips lines
# but never gets a torn one.  Then the "Devices at runtime" example of
# kcopydfs(8), taken from the man page and run as written.
source "$abs_srcdir/functions.sh"
requires_fuse
requires tail timeout cmp
make_tmpdir

img=$tmp/images
mkdir -p "$img"
make_image "$img/a.img" 1M random
make_image "$img/b.img" 1M zero
mnt=$tmp/mnt
start_kcopydfs "$mnt" "$img"
[ "$(stat -c %s "$mnt/finished")" = 0 ] || fail "finished is not empty"

tail -n +1 -f -s 0.1 "$mnt/finished" >"$tmp/tail.out" 2>"$tmp/tail.err" &
tailpid=$!
cleanup_fn "kill $tailpid 2>/dev/null"
for ((i = 0; i < 400; i++)); do
	ls -l "/proc/$tailpid/fd" 2>/dev/null | grep -q "$mnt/finished" && break
	sleep 0.05
done
ls -l "/proc/$tailpid/fd" 2>/dev/null | grep -q "$mnt/finished" ||
	fail "tail did not open finished in 20 s: $(cat "$tmp/tail.err")"
for i in 1 2 3 4 5; do
	echo "zero b.img:$i+1 sync tag=t$i" >"$mnt/control" || fail "zero $i"
done
echo "copy a.img:0+8 b.img:10 tag=last" >"$mnt/control" || fail "copy"
for ((i = 0; i < 400; i++)); do
	grep -q "tag=last" "$tmp/tail.out" && break
	sleep 0.05
done
kill $tailpid
[ "$(cut -d' ' -f1,2 "$tmp/tail.out" | tr '\n' ' ')" = \
	"id=1 tag=t1 id=2 tag=t2 id=3 tag=t3 id=4 tag=t4 id=5 tag=t5 id=6 tag=last " ] ||
	fail "tail -f saw: $(cat "$tmp/tail.out") $(cat "$tmp/tail.err")"
grep -q truncated "$tmp/tail.err" && fail "tail: $(cat "$tmp/tail.err")"
size=$(stat -c %s "$mnt/finished")
[ "$size" = "$(wc -c <"$tmp/tail.out")" ] || fail "size $size is not every byte"
stop_kcopydfs "$mnt"

start_kcopydfs "$mnt" "$img" --keep 3
for i in 1 2 3 4 5 6; do
	echo "zero b.img:$i+1 sync" >"$mnt/control" || fail "zero $i"
done
# Only the last 3 lines are kept; a fresh reader gets those, whole.
[ "$(cut -d' ' -f1 "$mnt/finished" | tr '\n' ' ')" = "id=4 id=5 id=6 " ] ||
	fail "kept lines: $(cat "$mnt/finished")"
# A reader that stopped within line 2 and comes back after it was dropped.
exec 3<"$mnt/finished"
dd bs=1 count=100 status=none <&3 >/dev/null
for i in 7 8 9 10; do
	echo "zero b.img:$i+1 sync tag=t$i" >"$mnt/control" || fail "zero $i"
done
rest=$(cat <&3)
exec 3<&-
[ "$(cut -d' ' -f1 <<<"$rest" | tr '\n' ' ')" = "id=8 id=9 id=10 " ] ||
	fail "a reader left behind got: $rest"

# The man page's example, with its paths replaced by the test's.
man=$abs_srcdir/../man/kcopydfs.8
sed -n '/^\.\\" example: runtime/,/^\.fi/p' "$man" | sed -e '1,3d' -e '$d' \
	-e 's/\\-/-/g' -e 's/\\e/\\/g' \
	-e "s|/srv/images|$img|g" -e "s|/mnt/kcopyd|$mnt|g" >"$tmp/example.sh"
grep -q 'attach' "$tmp/example.sh" || fail "no runtime example in kcopydfs(8)"
(set -e; source "$tmp/example.sh") || fail "the example failed: $(cat "$tmp/example.sh")"
[ -e "$mnt/dev/new" ] && fail "the example's device is still attached"
cmp -n 1M "$img/a.img" "$img/new.img" || fail "the example's copy"
stop_kcopydfs "$mnt"
exit 0
