#!/bin/bash
# Verify against real silent corruption: a kcopydfs mount with a corrupt
# rule on one of three destinations flips bytes on write and still says
# the write succeeded.  kcopy --verify and the verify job word must catch
# it on that destination only, at its first sector; without them the same
# copy ends "done", which shows the rule is silent.
source "$abs_srcdir/functions.sh"
requires cmp dd timeout
[ -x "$KCOPY" ] || skip "kcopy was not built"
requires_fuse
make_tmpdir
cd "$tmp" || fail "cd $tmp"

make_image src.img 4M random
for d in d0 d1 d2; do make_image $d.img 4M zero; done
start_kcopydfs "$tmp/mnt" --dev src="$tmp/src.img" --dev d0="$tmp/d0.img" \
	--dev d1="$tmp/d1.img" --dev d2="$tmp/d2.img" \
	--fault d1:write:2000+4:corrupt

# The verify word: failed, on d1, at the rule's first sector; the other
# destinations are exact copies (ignore_errors lets the job finish).
echo "copy src:0+8192 d0:0 d1:0 d2:0 verify ignore_errors sync tag=v" \
	>mnt/control 2>err && fail "a failed sync job wrote without error"
line=$(grep "tag=v " mnt/results)
case "$line" in
*"state=failed"*"verify=failed@2000 on d1") ;;
*) fail "verify job: $line" ;;
esac
case "$line" in *"write_err=0x0 "*) ;; *) fail "verify error is not a write error: $line" ;; esac
cmp src.img d0.img || fail "d0 differs"
cmp src.img d2.img || fail "d2 differs"
cmp -s src.img d1.img && fail "d1 was not corrupted: the rule did nothing"
[ "$(cmp -l src.img d1.img | wc -l)" = 4 ] || fail "d1: not 4 bytes corrupted"

# Without verify the job is done, and nothing says d1 is wrong.
echo "copy src:0+8192 d0:0 d1:0 d2:0 sync tag=plain" >mnt/control ||
	fail "plain job failed"
line=$(grep "tag=plain " mnt/results)
case "$line" in *"state=done"*) ;; *) fail "plain job: $line" ;; esac
case "$line" in *verify=*) fail "verify reported unasked: $line" ;; esac

# A clean verify.
echo "copy src:0+8192 d0:0 verify sync tag=clean" >mnt/control ||
	fail "clean verify failed: $(cat mnt/results)"
line=$(grep "tag=clean " mnt/results)
case "$line" in *"state=done"*"verify=ok") ;; *) fail "clean: $line" ;; esac

run()
{
	timeout 120 "$KCOPY" "$@" >out 2>err
	status=$?
}

# kcopy --verify: exit 5, one line naming the destination and sector;
# --ignore-errors copies (and verifies) to the end all the same.
for d in d0 d2; do make_image $d.img 4M zero; done
run -v --verify --ignore-errors src.img d0.img mnt/dev/d1 d2.img
[ $status -eq 5 ] || fail "--verify: exit $status: $(cat err)"
grep -q "^kcopy: mnt/dev/d1: verify failed: sector 2000 " err ||
	fail "no verify line: $(cat err)"
[ "$(grep -c "verify failed" err)" = 1 ] || fail "more than d1 failed: $(cat err)"
grep -q "d0.img: 4.00 MiB read back, verify ok" err || fail "no d0 summary: $(cat err)"
cmp src.img d0.img || fail "d0 differs after kcopy"
cmp src.img d2.img || fail "d2 differs after kcopy"

# The same without --verify: success, though d1 is wrong.
run src.img mnt/dev/d1
[ $status -eq 0 ] || fail "plain kcopy: exit $status: $(cat err)"
cmp -s src.img d1.img && fail "d1 not corrupted by plain kcopy"

# A clean --verify exits 0.
make_image d0.img 4M zero
run --verify src.img d0.img
[ $status -eq 0 ] || fail "clean --verify: exit $status: $(cat err)"
cmp src.img d0.img || fail "d0 differs after a clean --verify"

stop_kcopydfs "$tmp/mnt"
exit 0
