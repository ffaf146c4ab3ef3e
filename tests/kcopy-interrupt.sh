#!/bin/bash
# kcopy stops cleanly on SIGINT and SIGTERM: the jobs in flight finish,
# nothing more is written, it says how far it got and exits 130.  The
# source is a loop device read with O_DIRECT in 4 KiB pieces, which keeps
# a 256 MiB copy running for a few seconds.
source "$abs_srcdir/functions.sh"
requires cmp losetup timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

total=$((256 * 1024 * 1024))
make_image src.img 256M random
loop=$(losetup -f --show src.img 2>/dev/null) || skip "losetup failed"
cleanup_fn losetup -d "$loop"

# Background jobs of a shell without job control ignore SIGINT.
set -m

# interrupt SIGNAL NAME: start a copy, signal it once it has made
# progress, and check what it says and what it wrote.
interrupt()
{
	local sig=$1 name=$2 pid status n line i
	rm -f out.img err
	"$KCOPY" --direct --pages 1 --threads 1 --subjob-size 4K \
		--progress=0.1 "$loop" out.img 2>err &
	pid=$!
	wait_progress $pid err
	kill -s "$sig" $pid
	timeout 60 tail --pid=$pid -f /dev/null || fail "kcopy did not stop"
	wait $pid
	status=$?
	[ $status -eq 130 ] || fail "exit $status after SIG$sig, not 130"

	line=$(grep "interrupted" err) || fail "no message: $(tail -n 3 err)"
	[[ $line =~ ^kcopy:\ interrupted\ after\ ([0-9]+)\ bytes\ \([0-9]+%\)\ by\ $name ]] ||
		fail "bad message: $line"
	n=${BASH_REMATCH[1]}
	[ "$n" -gt 0 ] && [ "$n" -lt $total ] ||
		fail "interrupted after $n bytes of $total"
	# What it says is done is done, and nothing after it was written.
	cmp -n "$n" src.img out.img || fail "the first $n bytes differ"
	cmp -i "$n" -n $((total - n)) out.img /dev/zero ||
		fail "data written after the $n bytes it reported"
	grep -q "100%" err && fail "a 100% line after an interruption"
	return 0
}

interrupt INT Interrupt
interrupt TERM Terminated
exit 0
