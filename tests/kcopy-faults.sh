#!/bin/bash
# kcopy direct mode on failing devices: the device files of a kcopydfs
# mount with --fault are real files whose reads or writes fail where the
# rules say, so each exit status is exercised, and --ignore-errors loses
# only the failing sectors.
source "$abs_srcdir/functions.sh"
requires cmp dd timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
requires_fuse
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 4M random
make_image dst.img 4M zero
make_image out.img 4M zero
start_kcopydfs "$tmp/mnt" --dev src="$tmp/src.img" --dev dst="$tmp/dst.img" \
	--fault src:read:3000+2 --fault dst:write:5000+1:ENOSPC

# The device files fail as the engine's devices do.
dd if=mnt/dev/src of=/dev/null bs=512 skip=3001 count=1 status=none 2>err &&
	fail "read of a bad sector succeeded"
grep -q "Input/output error" err || fail "bad read: $(cat err)"
dd if=/dev/zero of=mnt/dev/dst bs=512 seek=5000 count=1 conv=notrunc \
	status=none 2>err && fail "write of a bad sector succeeded"
grep -q "No space left on device" err || fail "bad write: $(cat err)"

run()
{
	timeout 120 "$KCOPY" "$@" >out 2>err
	status=$?
}

# Read error: exit 2, one line naming the source, its errno and a sector
# at or before the bad ones (where the failed transfer began), and the
# advice to go on past them.
run mnt/dev/src out.img
[ $status -eq 2 ] || fail "read error: exit $status: $(cat err)"
line=$(grep "^kcopy: mnt/dev/src: " err) || fail "no read line: $(cat err)"
[[ $line =~ ^kcopy:\ mnt/dev/src:\ Input/output\ error\ at\ sector\ ([0-9]+)$ ]] ||
	fail "bad read line: $line"
[ "${BASH_REMATCH[1]}" -le 3001 ] || fail "read error after the bad sectors: $line"
grep -q -- "--ignore-errors would go on" err || fail "no advice: $(cat err)"

# Write error: exit 3, the errno the rule gives, no advice for ENOSPC.
run src.img mnt/dev/dst
[ $status -eq 3 ] || fail "write error: exit $status: $(cat err)"
grep -Eq "^kcopy: mnt/dev/dst: No space left on device at sector [0-9]+$" err ||
	fail "no write line: $(cat err)"
grep -q -- "--ignore-errors" err && fail "advice that cannot help: $(cat err)"

# Both: exit 4; with --ignore-errors only the bad sectors are lost.
make_image out.img 4M zero
run --ignore-errors mnt/dev/src out.img mnt/dev/dst
[ $status -eq 4 ] || fail "both: exit $status: $(cat err)"
# Every lost range, exactly: the engine retries block by block.
grep -qx "kcopy: mnt/dev/src: Input/output error at sector 3000" err ||
	fail "no exact first read error: $(cat err)"
grep -qx "kcopy: mnt/dev/src: lost sectors 3000+2: Input/output error (unreadable, written as zeros)" err ||
	fail "read range not listed: $(cat err)"
grep -qx "kcopy: mnt/dev/dst: lost sectors 5000+1: No space left on device (not written)" err ||
	fail "write range not listed: $(cat err)"
[ "$(grep -c "lost sectors" err)" -eq 2 ] || fail "not two lost ranges: $(cat err)"
dd if=src.img of=expect.img bs=512 status=none
dd if=/dev/zero of=expect.img bs=512 seek=3000 count=2 conv=notrunc status=none
cmp expect.img out.img || fail "out.img is not the source less its 2 bad sectors"
# dst.img: the same, but sector 5000 was never written (it held zeros).
dd if=/dev/zero of=expect.img bs=512 seek=5000 count=1 conv=notrunc status=none
cmp expect.img dst.img || fail "dst.img is not the source less its bad sectors"

stop_kcopydfs "$tmp/mnt"
exit 0
