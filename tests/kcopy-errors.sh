#!/bin/bash
# kcopy direct mode, write errors: a destination on a full tmpfs fails
# with ENOSPC.  Exit status 3, one line naming each failed destination
# with the errno and a sector (which chunk meets the full disk first is not
# fixed, so only that it is a number), no advice to --ignore-errors for a
# full disk, the lost ranges listed with it, and the destinations that did
# not fail are complete.  (Read errors are covered in kcopy-mount.sh, through
# the fault injection of kcopydfs.)
source "$abs_srcdir/functions.sh"
requires cmp mount umount strace
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

mkdir full
mount -t tmpfs -o size=1M kcopy-test full 2>/dev/null ||
	skip "cannot mount a tmpfs"
cleanup_fn umount "$tmp/full"

make_image src.img 4M random

run()
{
	"$KCOPY" "$@" >out 2>err
	status=$?
}

# One destination, no room: exit 3 and one line that names it.
run src.img full/a.img
[ $status -eq 3 ] || fail "exit $status, not 3: $(cat err)"
enospc='No space left on device at sector [0-9]+$'
grep -Eq "^kcopy: full/a\.img: $enospc" err ||
	fail "no ENOSPC line with a sector for full/a.img: $(cat err)"
[ "$(grep -Ec "$enospc" err)" -eq 1 ] || fail "not one line: $(cat err)"
grep -q "stopped after the first error" err || fail "no stop message"
grep -q -- "--ignore-errors" err && fail "advice that cannot help: $(cat err)"
rm -f full/a.img

# With a good destination beside the full one, --ignore-errors goes on to
# the end: the good one is complete, the status still says write error.
run --ignore-errors src.img good.img full/b.img
[ $status -eq 3 ] || fail "exit $status, not 3, with --ignore-errors"
cmp src.img good.img || fail "good.img incomplete with --ignore-errors"
grep -Eq "^kcopy: full/b\.img: $enospc" err || fail "no line for b.img"
grep -Eq "^kcopy: full/b\.img: lost sectors [0-9]+\+[0-9]+: No space left on device \(not written\)$" err ||
	fail "no lost range listed for b.img: $(cat err)"
grep -q "good.img" err && fail "good.img reported: $(cat err)"
grep -q "stopped after" err && fail "stopped with --ignore-errors"
rm -f full/b.img

# Two failed destinations: one line each.
run --ignore-errors src.img full/c.img good2.img full/d.img
[ $status -eq 3 ] || fail "exit $status, not 3, two failures"
grep -Eq "^kcopy: full/c\.img: $enospc" err || fail "no line for c.img"
grep -Eq "^kcopy: full/d\.img: $enospc" err || fail "no line for d.img"
[ "$(grep -Ec "$enospc" err)" -eq 2 ] || fail "not two lines: $(cat err)"
cmp src.img good2.img || fail "good2.img incomplete"
rm -f full/c.img full/d.img

# A copy that fits is fine on the same file system, with --fsync too.
run --fsync src.img:0+512K full/e.img
[ $status -eq 0 ] || fail "exit $status for a copy that fits: $(cat err)"
cmp -n 524288 src.img full/e.img || fail "full/e.img differs"
rm -f full/e.img

# --fsync flushes the destination before the copy counts as done; without
# it nothing is flushed.
# LeakSanitizer cannot run under ptrace: off for the traced runs.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
strace -f -o trace -e trace=fsync,fdatasync "$KCOPY" --fsync \
	src.img:0+512K e.img 2>err || fail "--fsync: $(cat err)"
grep -Eq "(fsync|fdatasync)\([0-9]+\) += 0" trace ||
	fail "--fsync flushed nothing: $(cat trace)"
strace -f -o trace -e trace=fsync,fdatasync "$KCOPY" \
	src.img:0+512K f.img 2>err || fail "copy: $(cat err)"
grep -Eq "(fsync|fdatasync)\(" trace &&
	fail "a flush without --fsync: $(cat trace)"

# Nothing is created when the copy cannot start.
run src.img:0+1M /nonexistent-dir/x.img
[ $status -eq 1 ] || fail "exit $status for a missing directory"
grep -q "/nonexistent-dir/x.img: No such file or directory" err ||
	fail "no message for a missing directory: $(cat err)"
exit 0
