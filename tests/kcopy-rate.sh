#!/bin/bash
# kcopy --rate: the throttle of the library.  16 MiB at 4 MiB/s cannot end
# in less than about 4 s (the bound is a floor only the throttle makes; a
# loaded machine only adds to it); bad rates are refused with a message.
source "$abs_srcdir/functions.sh"
requires cmp
[ -x "$KCOPY" ] || skip "kcopy was not built"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 16M random

start=$(date +%s%N)
"$KCOPY" --rate 4M/s src.img a.img 2>err || fail "--rate: $(cat err)"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
cmp src.img a.img || fail "a.img differs"
[ "$ms" -ge 3500 ] || fail "16 MiB at 4 MiB/s in $ms ms"

for bad in 0 -1 4X 100; do
	"$KCOPY" --rate "$bad" src.img b.img 2>err && fail "--rate $bad accepted"
	grep -q "^kcopy: --rate '$bad': expected bytes per second" err ||
		fail "--rate $bad: $(cat err)"
done
[ -e b.img ] && fail "b.img created by a refused command"
exit 0
