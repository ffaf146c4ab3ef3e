#!/bin/bash
# kcopy --direct on a loop device with 4096-byte logical blocks: a region
# that does not start and end on that alignment is refused up front (exit
# 1, the misalignment named, nothing created or written) instead of
# failing in the middle as a read or write error; aligned regions copy.
source "$abs_srcdir/functions.sh"
requires cmp dd losetup timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 4M random
make_image dev.img 4M zero
loop=$(losetup -f --show -b 4096 dev.img 2>/dev/null) ||
	skip "losetup -b 4096 failed"
cleanup_fn losetup -d "$loop"
[ "$(blockdev --getss "$loop" 2>/dev/null)" = 4096 ] ||
	skip "$loop does not have 4096-byte sectors"

run()
{
	timeout 60 "$KCOPY" "$@" >out 2>err
	status=$?
}

# misaligned TEXT ARGS...: exit 1, TEXT said, the loop device unchanged.
misaligned()
{
	local text=$1
	shift
	run --direct "$@"
	[ $status -eq 1 ] || fail "exit $status, not 1, for: $* -- $(cat err)"
	grep -qF -- "$text" err || fail "no '$text' for: $* -- got: $(cat err)"
	cmp "$loop" dev.before || fail "$loop written by: $*"
	[ ! -e new.img ] || fail "new.img created by: $*"
}
cp dev.img dev.before

unit="takes I/O in multiples of 4096 bytes (8 sectors)"
misaligned "$loop:1: with --direct, $loop $unit, but the region starts at sector 1" \
	src.img:0+8 "$loop:1"
misaligned "$loop: with --direct, $loop $unit, but the region ends at sector 7" \
	src.img:0+7 "$loop"
misaligned "$loop:8: with --direct, $loop $unit, but the region ends at sector 20" \
	src.img:0+6K "$loop:8"
misaligned "$loop:3+8: with --direct, $loop $unit, but the region starts at sector 3" \
	"$loop:3+8" new.img
misaligned "$loop:0+4: with --direct, $loop $unit, but the region ends at sector 4" \
	--zero "$loop:0+4"
# The other destinations do not matter: nothing starts.
misaligned "but the region starts at sector 9" src.img:0+8 new.img "$loop:9"

# Aligned regions are copied, and a misaligned one without --direct too.
run --direct src.img:8+16 "$loop:8"
[ $status -eq 0 ] || fail "aligned copy: exit $status: $(cat err)"
cmp -n 8192 -i 4096 src.img "$loop" || fail "aligned copy differs"
run --direct "$loop:8+16" new.img:8
[ $status -eq 0 ] || fail "aligned copy from $loop: exit $status: $(cat err)"
cmp -n 8192 -i 4096 src.img new.img || fail "new.img differs"
rm -f new.img
run src.img:1+3 "$loop:1"
[ $status -eq 0 ] || fail "copy without --direct: exit $status: $(cat err)"
cmp -n 1536 -i 512 src.img "$loop" || fail "buffered copy differs"
exit 0
