#!/usr/bin/env bash
# fio verify on a clone during its hydration: random writes of 4 KiB
# (each waiting for its region's copy, from several threads at once),
# verified as written, again after the hydration, and the dest then
# holds exactly what dev/NAME shows.
source "$abs_srcdir/functions.sh"
requires_fuse
requires fio cmp
make_tmpdir

make_image "$tmp/src" 32M random
make_image "$tmp/dst" 32M zero
make_image "$tmp/meta" 64K zero
mnt=$tmp/mnt
# Source reads slowed, so that the writes meet a hydration under way.
start_kcopydfs "$mnt" --dev "src=$tmp/src" --dev "dst=$tmp/dst" \
	--dev "meta=$tmp/meta" --clone c=src:dst:meta:region=64K \
	--subjob-size 64K --fault src:read:0+65536:delay=20000

job=(--name=clone --filename="$mnt/dev/c" --rw=randwrite --bs=4k
     --size=8M --numjobs=3 --offset_increment=8M --ioengine=psync
     --verify=crc32c --verify_fatal=1 --randrepeat=1 --thread
     --verify_state_save=0)
fio "${job[@]}" --output="$tmp/fio.out" ||
	fail "fio verify during hydration: $(cat "$tmp/fio.out")"
grep -q "err= 0" "$tmp/fio.out" || fail "fio reported errors: $(cat "$tmp/fio.out")"
echo "after fio: $(grep -E "clone.c.(state|hydrated|skipped)=" "$mnt/stats" | tr "\n" " ")"

kcopydfs_wait_clone "$mnt" c hydrated
fio "${job[@]}" --verify_only --output="$tmp/fio2.out" ||
	fail "fio verify after hydration: $(cat "$tmp/fio2.out")"
dd if="$mnt/dev/c" bs=1M status=none >"$tmp/seen"
stop_kcopydfs "$mnt"
cmp "$tmp/seen" "$tmp/dst" || fail "the dest differs from what dev/c showed"
# Past the 24 MiB fio wrote, the clone is the source.
cmp -i 25165824 "$tmp/dst" "$tmp/src" || fail "the dest past fio's range"
exit 0
