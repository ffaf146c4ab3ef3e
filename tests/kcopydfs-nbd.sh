#!/bin/bash
# kcopydfs with remote devices: --dev NAME=URI serves an NBD export as
# dev/NAME, through the daemon (never passthrough); copy jobs between a
# file and exports; a read-only export is a read-only device; dev/NAME
# under fio with verification.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd nbdkit nbdcopy stat fio
"$KCOPY" /dev/null nbd+unix:///?socket=/nonexistent 2>&1 |
	grep -q "Protocol not supported" && skip "built without libnbd"
make_tmpdir

MiB=1048576
make_image "$tmp/a.img" 16M random
start_nbdkit r memory 64M
R=$nbd_uri
start_nbdkit_tcp t memory 64M
T=$nbd_uri
start_nbdkit ro -r pattern 16M
RO=$nbd_uri
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "r=$R" --dev "t=$T" \
	--dev "ro=$RO"

[ "$(stat -c %s "$mnt/dev/r")" = $((64 * MiB)) ] || fail "dev/r size"
[ "$(stat -c %s "$mnt/dev/ro")" = $((16 * MiB)) ] || fail "dev/ro size"
for n in r t ro; do
	[ "$(kcopydfs_mode "$mnt" $n)" = direct_io ] ||
		fail "dev/$n: $(kcopydfs_mode "$mnt" $n), want direct_io"
done

# dev/NAME reads and writes reach the export.
dd if="$tmp/a.img" of="$mnt/dev/r" bs=1M conv=notrunc status=none ||
	fail "write dev/r"
nbdcopy "$R" "$tmp/r.out" || fail "nbdcopy $R"
cmp -n $((16 * MiB)) "$tmp/a.img" "$tmp/r.out" || fail "dev/r write"
dd if="$mnt/dev/r" of="$tmp/r.back" bs=1M count=16 status=none ||
	fail "read dev/r"
cmp "$tmp/a.img" "$tmp/r.back" || fail "dev/r read"

# Copy jobs: NBD to NBD and to a file, with the same control file.
echo "copy r:0+16M t:8M a:0 sync" >"$mnt/control" || fail "copy r"
kcopydfs_wait_state "$mnt" 1 done
[ "$(kcopydfs_field "$mnt" 1 write_err)" = 0x0 ] ||
	fail "copy r: $(cat "$mnt/results")"
nbdcopy "$T" "$tmp/t.out" || fail "nbdcopy $T"
cmp -n $((16 * MiB)) -i 0:$((8 * MiB)) "$tmp/a.img" "$tmp/t.out" ||
	fail "copy to dev/t"

# A read-only export: read, copied from, never written.
dd if="$mnt/dev/ro" bs=1M count=1 status=none >"$tmp/ro.head" ||
	fail "read dev/ro"
[ "$(stat -c %s "$tmp/ro.head")" = $MiB ] || fail "dev/ro read size"
if dd if="$tmp/a.img" of="$mnt/dev/ro" bs=4k count=1 conv=notrunc \
	status=none 2>/dev/null; then
	fail "a write to a read-only export succeeded"
fi
expect_fail "" sh -c "echo 'copy a:0+8 ro:0 sync' >'$mnt/control'"
grep -q "read-only" "$kcopydfs_log" || fail "no read-only notice"

# fio writes dev/t at random and verifies what it reads back.
fio --name=verify --filename="$mnt/dev/t" --size=32M \
	--rw=randwrite --bs=4k-64k --ioengine=psync --numjobs=1 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 \
	--verify_state_save=0 \
	--output="$tmp/fio.log" || fail "fio: $(cat "$tmp/fio.log")"
grep -q "err= 0" "$tmp/fio.log" || fail "fio: $(cat "$tmp/fio.log")"

stop_kcopydfs "$mnt"
