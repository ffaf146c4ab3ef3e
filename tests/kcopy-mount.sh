#!/bin/bash
# kcopy mount mode: commands through a real kcopydfs mount over tmpfs
# images; fan-out, ranges, zero, each exit status (with the fault
# injection of kcopydfs), refused commands, progress and interruption.
source "$abs_srcdir/functions.sh"
requires cmp dd timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
requires_fuse
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image sda.img 8M random
make_image sdb.img 8M zero
make_image sdc.img 8M zero
make_image sde.img 32M random
make_image sdf.img 32M zero
mkdir mnt
cleanup_fn "fusermount3 -u -z '$tmp/mnt' 2>/dev/null"
# sda fails a read at sector 4000, sdc a write at 8000; sde is slow.
"$KCOPYDFS" -f -P "$tmp/pid" \
	--dev sda="$tmp/sda.img" --dev sdb="$tmp/sdb.img" \
	--dev sdc="$tmp/sdc.img" --dev sde="$tmp/sde.img" \
	--dev sdf="$tmp/sdf.img" \
	--fault sda:read:4000+1 --fault sdc:write:8000+8 \
	--fault sde:read:0+65536:delay=100000 \
	"$tmp/mnt" 2>daemon.log &
daemon=$!
cleanup_fn "kill $daemon 2>/dev/null"
timeout 30 bash -c "until [ -s '$tmp/pid' ]; do sleep 0.05; done" ||
	fail "kcopydfs did not start: $(cat daemon.log)"

# expect A A_SKIP COUNT B B_SKIP: sectors of two images are equal.
expect()
{
	dd if="$1" bs=512 skip="$2" count="$3" status=none >exp || fail "dd"
	dd if="$4" bs=512 skip="$5" count="$3" status=none >got || fail "dd"
	cmp exp got || fail "$4 at $5 differs from $1 at $2+$3"
}

run()
{
	timeout 60 "$KCOPY" "$@" >out 2>err
	status=$?
}

# Fan-out and partial ranges: exit 0, data as dd sees it, silent.
run --mount mnt copy sda:0+2048 sdb:0 sdc:4096
[ $status -eq 0 ] || fail "copy: exit $status: $(cat err)"
[ ! -s err ] || fail "copy printed: $(cat err)"
expect sda.img 0 2048 sdb.img 0
expect sda.img 0 2048 sdc.img 4096
run --mount mnt copy sda:5000+100 sdb:7 tag=part
[ $status -eq 0 ] || fail "partial copy: exit $status: $(cat err)"
expect sda.img 5000 100 sdb.img 7
run --mount mnt zero sdb:10+20 sdc:4096+1
[ $status -eq 0 ] || fail "zero: exit $status: $(cat err)"
cmp -i 5120 -n 10240 sdb.img /dev/zero || fail "sdb not zeroed"
cmp -i $((4096 * 512)) -n 512 sdc.img /dev/zero || fail "sdc not zeroed"
expect sda.img 1 2047 sdc.img 4097
run -v --mount mnt copy sda:0+8 sdb:0
grep -q "^kcopy: job [0-9]* queued on mnt" err || fail "-v: $(cat err)"

# Read error: exit 2, the source named.
run --mount mnt copy sda:3900+200 sdb:0
[ $status -eq 2 ] || fail "read error: exit $status: $(cat err)"
grep -q "^kcopy: job [0-9]*: read error on the source sda:3900+200$" err ||
	fail "read error message: $(cat err)"
# Write error: exit 3, one line for the failed destination only.
run --mount mnt copy sda:0+100 sdb:0 sdc:7950 ignore_errors
[ $status -eq 3 ] || fail "write error: exit $status: $(cat err)"
grep -q "^kcopy: job [0-9]*: write error on destination sdc:7950$" err ||
	fail "write error message: $(cat err)"
[ "$(grep -c error err)" -eq 1 ] || fail "not one line: $(cat err)"
expect sda.img 0 100 sdb.img 0
# Both: exit 4.
run --mount mnt copy sda:3990+100 sdc:7990 sdb:0 ignore_errors
[ $status -eq 4 ] || fail "both errors: exit $status: $(cat err)"
grep -q "read error on the source sda:3990+100" err || fail "$(cat err)"
grep -q "write error on destination sdc:7990" err || fail "$(cat err)"

# Refused commands: exit 1, kcopydfs's message, naming the token.
run --mount mnt copy sda:0+8 sdx:0
[ $status -eq 1 ] || fail "unknown device: exit $status"
grep -q "sdx" err || fail "unknown device message: $(cat err)"
run --mount mnt copy sda:0+99999 sdb:0
[ $status -eq 1 ] || fail "past the end: exit $status"
grep -q "sda:0+99999" err || fail "past the end message: $(cat err)"
run --mount mnt zero sdb:0+8 frobnicate
[ $status -eq 1 ] || fail "unknown word: exit $status"
grep -q "frobnicate" err || fail "unknown word message: $(cat err)"
run --mount mnt move sda:0+8 sdb:0
[ $status -eq 1 ] || fail "move: exit $status"
grep -q "'move': expected copy or zero" err || fail "move: $(cat err)"
run --mount mnt --pages 4 copy sda:0+8 sdb:0
[ $status -eq 1 ] || fail "--pages in mount mode: exit $status"
# The default's value given by hand is an engine option all the same.
run --mount mnt --pages 1024 copy sda:0+8 sdb:0
[ $status -eq 1 ] || fail "--pages 1024 in mount mode: exit $status"
grep -q "engine options belong to kcopydfs" err || fail "--pages 1024: $(cat err)"
run --mount "$tmp" copy sda:0+8 sdb:0
[ $status -eq 1 ] || fail "not a mount: exit $status"
grep -q "$tmp/control" err || fail "not a mount: $(cat err)"

# An argument that is not exactly one word is refused before anything is
# written: a newline in a tag would reach the control file as a second
# command (here, a zero of what sdb holds).
cp sdb.img sdb.before || fail "cp"
jobs=$(grep -c '^id=' mnt/results)
# refused_word TEXT ARGS...: exit 1, TEXT in the message.
refused_word()
{
	local text=$1
	shift
	run --mount mnt "$@"
	[ $status -eq 1 ] || fail "exit $status, not 1, for: $* -- $(cat err)"
	grep -qF -- "$text" err || fail "no '$text' for: $* -- got: $(cat err)"
}
refused_word "argument \$'tag=nightly\\nzero sdb:0+16' holds a newline" \
	copy sda:0+8 sdc:0 $'tag=nightly\nzero sdb:0+16'
refused_word "argument \$'sdb:0 sdc:0' holds a space" \
	copy sda:0+8 "sdb:0 sdc:0"
refused_word "holds a tab" copy sda:0+8 sdc:0 $'tag=a\tb'
refused_word "holds a carriage return" copy sda:0+8 sdc:0 $'tag=a\rb'
refused_word "\$'tag=a\\x01b' holds a control character" \
	copy sda:0+8 sdc:0 $'tag=a\001b'
refused_word "an empty argument" zero sdc:0+8 ""
[ "$(grep -c '^id=' mnt/results)" -eq "$jobs" ] ||
	fail "a refused command queued a job: $(cat mnt/results)"
cmp sdb.img sdb.before || fail "sdb changed by a refused command"

# Progress from the results file: well-formed lines, a complete last one.
run --mount mnt --progress=0.1 copy sde:0+4096 sdf:0
[ $status -eq 0 ] || fail "slow copy: exit $status: $(cat err)"
re='^kcopy: [0-9]+/2097152 bytes \([0-9]+%\) [0-9.]+ [KMGT]?i?B/s, [-0-9:]+ (left|elapsed)$'
while read -r line; do
	[[ $line =~ $re ]] || fail "bad progress line: $line"
done <err
tail -n 1 err | grep -q "^kcopy: 2097152/2097152 bytes (100%)" ||
	fail "no final line: $(cat err)"
expect sde.img 0 4096 sdf.img 0
run -q --mount mnt --progress=0.1 copy sde:0+1024 sdf:8192
[ $status -eq 0 ] && [ ! -s err ] || fail "-q: exit $status: $(cat err)"

# Interrupted, kcopy stops waiting; the job goes on and completes.
set -m
"$KCOPY" --mount mnt --progress=0.1 copy sde:0+65536 sdf:0 tag=long 2>err &
pid=$!
wait_progress $pid err
kill -INT $pid
timeout 30 tail --pid=$pid -f /dev/null || fail "kcopy did not stop"
wait $pid
status=$?
[ $status -eq 130 ] || fail "interrupted: exit $status: $(cat err)"
grep -q "^kcopy: interrupted after [0-9]* bytes ([0-9]*%): job [0-9]* goes on in mnt" err ||
	fail "interrupted message: $(cat err)"
timeout 60 bash -c "until grep -q 'tag=long op=copy state=done' mnt/results
	do sleep 0.1; done" || fail "the long job did not finish"
expect sde.img 0 65536 sdf.img 0

fusermount3 -u mnt || fail "unmount"
# Whether it exits 0 is for the tests of kcopydfs to check.
timeout 30 tail --pid=$daemon -f /dev/null || fail "kcopydfs did not exit"
exit 0
