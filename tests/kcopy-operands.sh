#!/bin/bash
# kcopy refuses, before it opens anything, an operand it cannot copy: a
# FIFO (whose open would wait for a writer), a character device, a
# directory, and `-`; and a region that ends past the largest
# size a file can have.  A kcopy started on a FIFO never waits there with
# SIGINT or SIGTERM blocked: it is gone long before a signal could matter.
source "$abs_srcdir/functions.sh"
requires cmp mkfifo timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 1M random
mkfifo ff
mkdir dir

run()
{
	timeout -s KILL 60 "$KCOPY" "$@" >out 2>err
	status=$?
}

# refused TEXT ARGS...: exit 1, a message with TEXT, nothing created.
refused()
{
	local text=$1
	shift
	run "$@"
	[ $status -eq 1 ] || fail "exit $status, not 1, for: $* -- $(cat err)"
	grep -qF -- "$text" err || fail "no '$text' for: $* -- got: $(cat err)"
	[ ! -e new.img ] || fail "new.img created by: $*"
	[ ! -e ./- ] || fail "a file named - created by: $*"
}

refused "ff:0+8: is a FIFO: kcopy copies regular files and block devices only" \
	ff:0+8 new.img
refused "ff: is a FIFO" src.img ff
refused "ff: is a FIFO" src.img new.img ff
refused "ff:0+8: is a FIFO" --zero ff:0+8
refused "/dev/zero:0+8: is a character device" /dev/zero:0+8 new.img
refused "/dev/null: is a character device" src.img /dev/null
refused "dir: is a directory" src.img new.img dir
refused "dir:0+8: is a directory" dir:0+8 new.img
refused "-: standard input and output are not supported" - new.img
refused "-: standard input and output are not supported" src.img -
refused "-:8: standard input and output are not supported" -- src.img -:8
# A file that is named - is reached as ./-.
"$KCOPY" src.img ./- || fail "copy to ./-"
cmp src.img ./- || fail "./- differs"
rm ./-

# Regions past the largest file size (2^63 - 1 bytes), near 2^54 sectors.
refused "new.img:18014398509481984: the region ends at sector 18014398509484032, past the largest size a file can have (18014398509481983 sectors)" \
	src.img new.img:18014398509481984
refused "new.img:18014398509480000: the region ends at sector 18014398509482048" \
	src.img new.img:18014398509480000
refused "new.img:9007199254740992K+4K: the region ends at sector 18014398509481992" \
	--zero new.img:9007199254740992K+4K
cp src.img old.img
refused "old.img:18014398509481984: the region ends" src.img old.img:18014398509481984
cmp src.img old.img || fail "old.img changed by a refused copy"

# A signal sent to a kcopy started on a FIFO finds it gone or ends it: it
# never waits in open(2) with the signal blocked.
set -m
for sig in INT TERM; do
	"$KCOPY" ff:0+8 new.img 2>err &
	pid=$!
	sleep 0.5
	kill -s $sig $pid 2>/dev/null
	timeout 60 tail --pid=$pid -f /dev/null ||
		{ kill -9 $pid; fail "kcopy on a FIFO still runs 60 s after SIG$sig"; }
	wait $pid
	status=$?
	# 1: refused before the signal came; 128+N: ended by it, at once.
	case $sig:$status in
	*:1 | INT:130 | TERM:143) ;;
	*) fail "kcopy on a FIFO, SIG$sig: exit $status: $(cat err)" ;;
	esac
	[ ! -e new.img ] || fail "new.img created"
done
exit 0
