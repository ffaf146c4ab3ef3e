#!/usr/bin/env bash
# kcopydfs: coherence between dev/NAME and the engine both ways, many
# shells writing commands at once, and block-device clipping at the end.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd head
make_tmpdir

make_image "$tmp/a.img" 2M zero
make_image "$tmp/b.img" 2M pattern
make_image "$tmp/new" 1M random
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img"

# What is written through dev/a is what a copy issued next reads.
dd if="$tmp/new" of="$mnt/dev/a" bs=64K conv=notrunc,fsync status=none ||
	fail "write dev/a"
# Read dev/b first, so a page cache (if any) would hold the old data.
cat "$mnt/dev/b" >/dev/null
echo "copy a:0+2048 b:2048 sync" >"$mnt/control" || fail "copy"
# What the job wrote is what the next read of dev/b returns.
cmp <(dd if="$mnt/dev/b" bs=1M skip=1 status=none) "$tmp/new" ||
	fail "dev/b after the copy"
cmp <(head -c 1M "$tmp/b.img") <(head -c 1M "$mnt/dev/b") ||
	fail "first half of b changed"

# 8 shells at once, 16 commands each: every one accepted, ids unique.
for s in $(seq 0 7); do
	(
		for j in $(seq 0 15); do
			k=$((s * 16 + j))
			echo "copy a:$((k * 16))+16 b:$((k * 16)) tag=s$s" \
				>"$mnt/control" || exit 1
		done
	) &
	pids[s]=$!
done
for s in $(seq 0 7); do
	wait ${pids[s]} || fail "shell $s had a write refused"
done
[ "$(cut -d' ' -f1 "$mnt/results" | sort -u | wc -l)" = 129 ] ||
	fail "ids not unique: $(cut -d' ' -f1 "$mnt/results" | sort | uniq -d)"
for id in $(seq 2 129); do
	kcopydfs_wait_state "$mnt" $id done
done
cmp <(head -c 1M "$mnt/dev/b") "$tmp/new" || fail "concurrent copies"

# Clipping as a block device: nothing read at the end, ENOSPC on writes
# there, and a write across the end is cut short.  In passthrough mode the
# kernel does the I/O on the image and clips only reads (kcopydfs(8)).
mode=$(kcopydfs_mode "$mnt" a) || exit 1
size=$((2 * 1024 * 1024))
n=$(dd if="$mnt/dev/a" bs=512 skip=4096 count=1 status=none | wc -c)
[ "$n" = 0 ] || fail "read $n bytes past the end"
n=$(dd if="$mnt/dev/a" iflag=skip_bytes skip=$((size - 100)) bs=4096 count=1 status=none | wc -c)
[ "$n" = 100 ] || fail "read $n bytes across the end, want 100"
if [ "$mode" = passthrough ]; then
	[ "$(stat -c %s "$mnt/dev/a")" = $size ] || fail "dev/a size"
	grep -q '^dev\.a\.fuse_' "$mnt/stats" &&
		fail "FUSE counts for a passthrough device"
	stop_kcopydfs "$mnt"
	exit 0
fi
expect_fail "No space left on device" \
	dd if=/dev/zero of="$mnt/dev/a" bs=512 seek=4096 count=1 conv=notrunc status=none
head -c 1024 /dev/urandom >"$tmp/tail"
dd if="$tmp/tail" of="$mnt/dev/a" bs=1024 oflag=seek_bytes \
	seek=$((size - 512)) count=1 conv=notrunc status=none 2>/dev/null &&
	fail "write across the end succeeded"
cmp <(head -c 512 "$tmp/tail") <(tail -c 512 "$tmp/a.img") ||
	fail "the part of the write before the end"
[ "$(stat -c %s "$tmp/a.img")" = $size ] || fail "the image grew"
grep -q '^dev\.a\.fuse_writes=[1-9]' "$mnt/stats" || fail "fuse_writes"

stop_kcopydfs "$mnt"
exit 0
