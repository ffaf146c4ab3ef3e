#!/usr/bin/env bash
# kcopydfs: layout, copy, multi-destination copy, zero, flags, read-back of
# ids, the results format, stats, and a clean exit after unmount.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd mountpoint stat
make_tmpdir

mkdir "$tmp/img" "$tmp/exp"
make_image "$tmp/img/a" 1M random
make_image "$tmp/img/b" 1M zero
make_image "$tmp/img/c" 512K pattern
make_image "$tmp/extra.img" 64K zero
cp "$tmp/img/"* "$tmp/exp/"
cp "$tmp/extra.img" "$tmp/exp/extra"
mnt=$tmp/mnt
start_kcopydfs "$mnt" --image-dir "$tmp/img" --dev "extra=$tmp/extra.img"

# Layout, modes and sizes.
[ "$(ls "$mnt")" = "$(printf 'control\ndev\nfinished\nresults\nstats')" ] ||
	fail "top level: $(ls "$mnt")"
[ "$(ls "$mnt/dev")" = "$(printf 'a\nb\nc\nextra')" ] ||
	fail "dev/: $(ls "$mnt/dev")"
[ "$(stat -c %a "$mnt/control")" = 600 ] || fail "control mode"
[ "$(stat -c %a "$mnt/results")" = 444 ] || fail "results mode"
[ "$(stat -c %a "$mnt/stats")" = 444 ] || fail "stats mode"
[ "$(stat -c %a "$mnt/finished")" = 444 ] || fail "finished mode"
[ "$(stat -c %a "$mnt/dev/a")" = 600 ] || fail "dev/a mode"
[ "$(stat -c %s "$mnt/dev/c")" = 524288 ] || fail "dev/c size"
[ "$(stat -c %s "$mnt/dev/extra")" = 65536 ] || fail "dev/extra size"
# Times are the mount's, not the epoch.
now=$(date +%s)
for f in control results stats dev/a; do
	t=$(stat -c %Y "$mnt/$f")
	[ $((now - t)) -ge 0 ] && [ $((now - t)) -lt 600 ] || fail "$f mtime $t"
done
[ -z "$(cat "$mnt/results")" ] || fail "results not empty at start"

# expect SRC SKIP DST SEEK COUNT: what a copy of COUNT sectors does.
expect()
{
	dd if="$tmp/exp/$1" of="$tmp/exp/$3" bs=512 skip="$2" seek="$4" \
		count="$5" conv=notrunc status=none
}

expect_zero()
{
	dd if=/dev/zero of="$tmp/exp/$1" bs=512 seek="$2" count="$3" \
		conv=notrunc status=none
}

echo "copy a:0+2048 b:0" >"$mnt/control" || fail "copy"
kcopydfs_wait_state "$mnt" 1 done
expect a 0 b 0 2048
cmp "$tmp/exp/b" "$tmp/img/b" || fail "whole-device copy"

# Offsets, several destinations, a tag; and ids read back on the handle.
exec 3<>"$mnt/control"
echo "copy a:100+50 c:10 b:1990 extra:64 tag=multi" >&3 || fail "multi"
read -r id <&3 || fail "no id read back"
[ "$id" = 2 ] || fail "read back '$id', want 2"
expect a 100 c 10 50
expect a 100 b 1990 50
expect a 100 extra 64 50
# Shell builtins may write line by line: dd makes it one write.
printf 'zero b:0+8 c:16+16 extra:0+1\n\ncopy c:0+8 a:2040 write_seq\n' |
	dd bs=64K iflag=fullblock status=none >&3 || fail "two commands"
read -r id1 <&3 && read -r id2 <&3 || fail "two ids"
[ "$id1 $id2" = "3 4" ] || fail "ids '$id1 $id2', want '3 4'"
exec 3>&-
kcopydfs_wait_state "$mnt" 2 done
kcopydfs_wait_state "$mnt" 3 done
kcopydfs_wait_state "$mnt" 4 done
expect_zero b 0 8
expect_zero c 16 16
expect_zero extra 0 1
expect c 0 a 2040 8
echo "copy a:0+1024 b:1024 ignore_errors sync tag=flags" >"$mnt/control" ||
	fail "ignore_errors write_seq sync"
expect a 0 b 1024 1024

for d in a b c extra; do
	cmp "$tmp/exp/$d" "$mnt/dev/$d" || fail "dev/$d through the mount"
done
cmp "$tmp/exp/extra" "$tmp/extra.img" || fail "extra image"
for d in a b c; do
	cmp "$tmp/exp/$d" "$tmp/img/$d" || fail "image $d"
done

# Every results line in the one format kcopy --mount parses.
re='^id=[0-9]+ tag=[A-Za-z0-9_.-]+ op=(copy|zero) state=(queued|running|done|failed) read_err=[01] write_err=0x[0-9a-f]+ sectors=[0-9]+ done=[0-9]+ usec=[0-9]+$'
n=0
while read -r line; do
	[[ $line =~ $re ]] || fail "bad results line: $line"
	n=$((n + 1))
done <"$mnt/results"
[ $n = 5 ] || fail "$n results lines, want 5"
grep -qx 'id=2 tag=multi op=copy state=done read_err=0 write_err=0x0 sectors=50 done=50 usec=[0-9]*' \
	"$mnt/results" || fail "job 2: $(grep '^id=2 ' "$mnt/results")"
grep -q '^id=3 tag=- op=zero state=done .* sectors=16 done=16 ' "$mnt/results" ||
	fail "job 3: $(grep '^id=3 ' "$mnt/results")"
grep -q '^id=5 tag=flags op=copy state=done ' "$mnt/results" || fail "job 5"

# Stats: the keys, in order, and counts that match what was done.
keys=$(sed 's/=.*//' "$mnt/stats" | head -9 | tr '\n' ' ')
[ "$keys" = "jobs_queued jobs_running jobs_done jobs_failed jobs_cancelled pages_in_use pages_total bytes_read bytes_written " ] ||
	fail "stats keys: $keys"
grep -qx 'jobs_done=5' "$mnt/stats" || fail "jobs_done: $(cat "$mnt/stats")"
grep -qx 'jobs_failed=0' "$mnt/stats" || fail "jobs_failed"
grep -qx 'pages_total=1024' "$mnt/stats" || fail "pages_total"
grep -qx 'pages_in_use=0' "$mnt/stats" || fail "pages_in_use"
for k in reads writes bytes_read bytes_written errors; do
	grep -q "^dev\.extra\.$k=[0-9]*$" "$mnt/stats" || fail "dev.extra.$k"
done
# The daemon counts what it serves, and its I/O goes through the device,
# whose counters then hold it too; it sees nothing of a passthrough device.
mode=$(kcopydfs_mode "$mnt" a) || exit 1
if [ "$mode" = direct_io ]; then
	fuse_read=$(sed -n 's/^dev\.a\.fuse_bytes_read=//p' "$mnt/stats")
	[ "${fuse_read:-0}" -gt 0 ] || fail "fuse_bytes_read"
else
	grep -q '^dev\.a\.fuse_' "$mnt/stats" &&
		fail "FUSE counts for a passthrough device"
	fuse_read=0
fi
grep -qx "dev.a.bytes_read=$((1598464 + fuse_read))" "$mnt/stats" ||
	fail "dev.a.bytes_read: $(grep dev.a.bytes_read "$mnt/stats")"

stop_kcopydfs "$mnt"
mountpoint -q "$mnt" && fail "still mounted"
exit 0
