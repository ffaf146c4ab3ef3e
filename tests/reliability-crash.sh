#!/usr/bin/env bash
# kill -9 of kcopydfs with copies in flight: fusermount3 -u cleans up the
# dead mount, a new mount of the same images works, and every byte outside
# the destinations of the jobs in flight is intact; inside them each page
# holds either its old contents or the source's, nothing else.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd awk sort comm mountpoint
make_tmpdir

make_image "$tmp/a.img" 4M random
make_image "$tmp/b.img" 4M random
cp "$tmp/a.img" "$tmp/a.orig"
cp "$tmp/b.img" "$tmp/b.exp"
mnt=$tmp/mnt
# Every engine read of a is slowed, so that copies are caught mid-way.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--subjob-size 16K --fault a:read:0+8192:delay=20000

# A finished job: its data must survive the crash.
echo "copy a:0+64 b:7000 sync tag=before" >"$mnt/control" || fail "copy"
dd if="$tmp/a.img" of="$tmp/b.exp" bs=512 skip=0 seek=7000 count=64 \
	conv=notrunc status=none

# Three copies in flight: a:S+2048 to b:D, for (S, D) below.
flight=("0 0" "2048 2048" "4096 4608")
for f in "${flight[@]}"; do
	set -- $f
	echo "copy a:$1+2048 b:$2 tag=flight" >"$mnt/control" || fail "queue"
done
for id in 2 3 4; do
	kcopydfs_wait_state "$mnt" $id running
done
kill -9 "$kcopydfs_pid"
wait "$kcopydfs_pid" 2>/dev/null
status=$?
[ $status = 137 ] || fail "kcopydfs exited $status, not by SIGKILL"

# The dead mount answers ENOTCONN until it is unmounted.
cat "$mnt/results" 2>/dev/null && fail "the dead mount still answers"
timeout 10 fusermount3 -u "$mnt" || fail "fusermount3 -u of the dead mount"
mountpoint -q "$mnt" && fail "still mounted after fusermount3 -u"
rm -f "$mnt.pid"

# Outside the destinations in flight: exactly as expected.  cmp -l lists
# the differing bytes (1-based offsets); each must lie in a flight range.
cmp "$tmp/a.orig" "$tmp/a.img" || fail "the source changed"
ranges=$(for f in "${flight[@]}"; do set -- $f; echo "$(($2 * 512)) $((($2 + 2048) * 512))"; done)
cmp -l "$tmp/b.exp" "$tmp/b.img" | awk -v r="$ranges" '
	BEGIN { n = split(r, v, /[ \n]/); for (i = 1; i < n; i += 2) { lo[i] = v[i]; hi[i] = v[i + 1] } }
	{ off = $1 - 1; ok = 0
	  for (i in lo) if (off >= lo[i] && off < hi[i]) ok = 1
	  if (!ok) { print "byte " off " changed outside the jobs in flight"; exit 1 } }' ||
	fail "b damaged outside the jobs in flight"

# Inside them: no byte differs both from the old b and from the copy.
cp "$tmp/b.exp" "$tmp/b.new"
for f in "${flight[@]}"; do
	set -- $f
	dd if="$tmp/a.img" of="$tmp/b.new" bs=512 skip=$1 seek=$2 count=2048 \
		conv=notrunc status=none
done
cmp -l "$tmp/b.exp" "$tmp/b.img" | awk '{ print int(($1 - 1) / 4096) }' |
	sort -u >"$tmp/old.pages"
cmp -l "$tmp/b.new" "$tmp/b.img" | awk '{ print int(($1 - 1) / 4096) }' |
	sort -u >"$tmp/new.pages"
torn=$(comm -12 "$tmp/old.pages" "$tmp/new.pages" | head -5)
[ -z "$torn" ] || fail "pages neither old nor copied: $torn"
echo "$0: killed with $(wc -l <"$tmp/old.pages") of 1536 pages in flight copied"

# A new mount of the same images works, and finishes what was cut short.
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img"
for f in "${flight[@]}"; do
	set -- $f
	echo "copy a:$1+2048 b:$2 sync" >"$mnt/control" || fail "copy again"
done
cmp "$tmp/b.new" "$mnt/dev/b" || fail "b after the copies were re-run"
stop_kcopydfs "$mnt"
cmp "$tmp/b.new" "$tmp/b.img" || fail "b.img after the new mount"
