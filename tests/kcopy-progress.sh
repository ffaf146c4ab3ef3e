#!/bin/bash
# kcopy progress output: nothing when stderr is not a terminal, periodic
# lines and a final one with --progress (or -p), nothing at all with -q,
# "N/100" lines on a descriptor with --progress=fd:N, and a live line on a
# terminal that fits its width and has no escapes on TERM=dumb.
source "$abs_srcdir/functions.sh"
requires cmp script timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 32M pattern
total=33554432

# Not a terminal: silence by default.
"$KCOPY" src.img a.img >out 2>err || fail "copy"
cmp src.img a.img || fail "a.img differs"
[ ! -s err ] || fail "output without --progress: $(cat err)"
[ ! -s out ] || fail "output on stdout: $(cat out)"

# --progress: every line well formed, the last one complete.  Small
# sub-jobs make the copy take a few updates on most machines; the test
# asserts the format, not how many lines there are.
"$KCOPY" --progress=0.1 --pages 1 --subjob-size 4K src.img b.img 2>err ||
	fail "copy with --progress"
cmp src.img b.img || fail "b.img differs"
[ -s err ] || fail "no progress lines"
re='^kcopy: [0-9]+/'$total' bytes \([0-9]+%\) [0-9.]+ [KMGT]?i?B/s, [-0-9:]+ (left|elapsed)$'
while read -r line; do
	[[ $line =~ $re ]] || fail "bad progress line: $line"
done <err
tail -n 1 err | grep -q "^kcopy: $total/$total bytes (100%) .* elapsed$" ||
	fail "no final line: $(tail -n 1 err)"
prev=0
while read -r line; do
	n=${line#kcopy: }
	n=${n%%/*}
	[ "$n" -ge "$prev" ] || fail "progress went back: $prev then $n"
	prev=$n
done <err

# The default interval is accepted too, and -q silences everything.
"$KCOPY" --progress src.img:0+1M c.img 2>err || fail "--progress"
grep -q "^kcopy: 1048576/1048576 bytes (100%)" err ||
	fail "--progress: $(cat err)"
"$KCOPY" -q --progress=0.1 src.img d.img 2>err || fail "copy with -q"
[ ! -s err ] || fail "-q printed: $(cat err)"
"$KCOPY" -q --zero d.img 2>err || fail "zero with -q"
[ ! -s err ] || fail "-q printed: $(cat err)"

# -p is --progress (and --pages keeps its long form).
"$KCOPY" -p --pages 8 src.img:0+1M g.img 2>err || fail "-p: $(cat err)"
grep -q "^kcopy: 1048576/1048576 bytes (100%)" err || fail "-p: $(cat err)"

# --progress=fd:N: percentages that never go back, ending at 100/100, and
# nothing on stderr.
"$KCOPY" --progress=fd:3 --pages 1 --subjob-size 4K src.img h.img \
	3>fd.out 2>err || fail "--progress=fd:3: $(cat err)"
cmp src.img h.img || fail "h.img differs"
[ ! -s err ] || fail "stderr with --progress=fd: $(cat err)"
prev=-1
while read -r line; do
	[[ $line =~ ^([0-9]+)/100$ ]] || fail "bad fd line: $line"
	[ "${BASH_REMATCH[1]}" -gt "$prev" ] || fail "went back: $prev, $line"
	prev=${BASH_REMATCH[1]}
done <fd.out
[ "$(tail -n 1 fd.out)" = 100/100 ] || fail "no 100/100: $(cat fd.out)"
"$KCOPY" --progress=fd:9 src.img i.img 2>err && fail "a closed descriptor"
grep -q "descriptor 9 is not open for writing" err || fail "$(cat err)"

# A terminal gets a live line (carriage returns) without --progress.
timeout 60 script -qec "'$KCOPY' src.img e.img" /dev/null >tty.out ||
	fail "copy on a terminal"
cmp src.img e.img || fail "e.img differs"
grep -q $'\r' tty.out || fail "no live line on a terminal"
tr '\r' '\n' <tty.out | grep -q "32.00 MiB / 32.00 MiB  100%" ||
	fail "no complete live line: $(tr '\r' '\n' <tty.out)"
timeout 60 script -qec "'$KCOPY' -q src.img f.img" /dev/null \
	>tty.out || fail "copy on a terminal with -q"
[ ! -s tty.out ] || fail "-q printed on a terminal"

# 30 columns: the line loses its tail rather than wrapping; a dumb
# terminal gets spaces, not escape sequences.
timeout 60 script -qec "stty cols 30; TERM=dumb '$KCOPY' src.img j.img" \
	/dev/null >tty.out || fail "copy on a narrow dumb terminal"
grep -q $'\033' tty.out && fail "an escape on TERM=dumb"
tr '\r' '\n' <tty.out | grep -q "32.00 MiB / 32.00 MiB  100%" ||
	fail "no live line on a narrow terminal: $(tr '\r' '\n' <tty.out)"
long=$(tr '\r' '\n' <tty.out | awk '{ if (length($0) > n) n = length($0) } END { print n + 0 }')
[ "$long" -lt 30 ] || fail "a line of $long columns on 30"
exit 0
