#!/usr/bin/env bash
# kcopydfs --state DIR: an unmount with jobs queued keeps them for the next
# mount, which resumes them; a device gone or changed fails its job with
# the reason and writes nothing; one DIR serves one mount at a time; files
# of DIR that are no records are skipped with a warning; a cancelled job
# does not come back after a kill; records edited by hand fail, with why.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp mountpoint
make_tmpdir
mnt=$tmp/mnt
st=$tmp/state
make_image "$tmp/a.img" 8M random
make_image "$tmp/b.img" 8M random
make_image "$tmp/c.img" 8M random
cp "$tmp/b.img" "$tmp/b.orig"
cp "$tmp/c.img" "$tmp/c.orig"
devs=(--dev "a=$tmp/a.img" --dev "b=$tmp/b.img" --dev "c=$tmp/c.img")
# Reads of a slowed down, so that jobs are still queued at the unmount.
slow=(--subjob-size 16K --fault a:read:0+16384:delay=20000)

# 1. Unmount with jobs queued: kept, then resumed with ids and tags.
start_kcopydfs "$mnt" "${devs[@]}" --state "$st" "${slow[@]}"
printf 'copy a:0+8192 b:0 tag=one\ncopy a:8192+8192 b:8192 c:0 tag=two\n' |
	dd bs=64K status=none >"$mnt/control" || fail "queue"
ls "$st/job.1" "$st/job.2" >/dev/null || fail "no records: $(ls "$st")"
second=(--state "$st" --dev "a=$tmp/a.img")
mkdir -p "$tmp/mnt2"
cleanup_fn "fusermount3 -u -z '$tmp/mnt2' 2>/dev/null"
expect_fail "another kcopydfs uses it" \
	timeout 20 "$KCOPYDFS" -f "${second[@]}" "$tmp/mnt2"
mountpoint -q "$tmp/mnt2" && fail "a second mount on the same state"
stop_kcopydfs "$mnt"
grep -q "kept in state .* for the next mount: id=1 tag=one op=copy state=kept" \
	"$kcopydfs_log" ||
	fail "job 1 not kept: $(cat "$kcopydfs_log")"
ls "$st/job.1" "$st/job.2" >/dev/null || fail "records gone at unmount: $(ls "$st")"
start_kcopydfs "$mnt" "${devs[@]}" -o "state=$st"
kcopydfs_wait_state "$mnt" 1 done failed
kcopydfs_wait_state "$mnt" 2 done failed
grep -q "^id=1 tag=one op=copy state=done .*sectors=8192 done=8192 .* resumed" \
	"$mnt/results" || fail "job 1: $(cat "$mnt/results")"
grep -q "^id=2 tag=two op=copy state=done .*sectors=8192 done=8192 .* resumed" \
	"$mnt/results" || fail "job 2: $(cat "$mnt/results")"
grep -q "^state_resumed=2$" "$mnt/stats" || fail "stats: $(grep state "$mnt/stats")"
cmp "$tmp/a.img" "$tmp/b.img" || fail "b after the resume"
cmp -n $((8192 * 512)) "$tmp/c.img" <(tail -c $((8192 * 512)) "$tmp/a.img") ||
	fail "c after the resume"
cmp -i $((8192 * 512)) "$tmp/c.img" "$tmp/c.orig" || fail "c beyond the job"
[ -z "$(ls "$st" | grep '^job\.')" ] || fail "records left: $(ls "$st")"
stop_kcopydfs "$mnt"

# 2. A destination changed (another file of that name) and one gone: each
# job fails with the reason, and nothing is written.
cp "$tmp/b.orig" "$tmp/b.img"
start_kcopydfs "$mnt" "${devs[@]}" --state "$st" "${slow[@]}" \
	--fault b:write:0+16384:delay=20000
printf 'copy a:0+4096 b:0 tag=changed\ncopy a:0+4096 c:0 tag=gone\n' |
	dd bs=64K status=none >"$mnt/control" || fail "queue 2"
kcopydfs_queue "$mnt" "zero b:100+4096 tag=z"
zid=$id
# A cancelled job: no record either.
kcopydfs_queue "$mnt" "copy a:0+8192 c:8192 tag=cancelme"
cid=$id
[ -e "$st/job.$cid" ] || fail "job $cid accepted without a record"
echo "cancel $cid" >"$mnt/control" || fail "cancel $cid"
kcopydfs_wait_state "$mnt" "$cid" cancelled done failed
grep -q "^id=$cid tag=cancelme op=copy state=cancelled" "$mnt/results" ||
	fail "job $cid: $(cat "$mnt/results")"
[ ! -e "$st/job.$cid" ] || fail "job $cid ended, its record left"
# A record that cannot be written: the command is refused, with the cause.
next=$((cid + 1))
mkdir "$st/job.$next.tmp"
exec 3<>"$mnt/control"
echo "zero c:0+8 tag=norecord" >&3 2>/dev/null && fail "queued without a record"
read -r line <&3
exec 3>&-
case $line in
*"cannot record it in state $st: Is a directory"*) ;;
*) fail "read back: $line" ;;
esac
grep -q "tag=norecord" "$mnt/results" && fail "a job without record queued"
rmdir "$st/job.$next.tmp"
stop_kcopydfs "$mnt"
cp "$tmp/b.orig" "$tmp/b.new"
mv "$tmp/b.new" "$tmp/b.img"
cp "$tmp/b.img" "$tmp/b.before"
cp "$tmp/c.img" "$tmp/c.before"
# Not records: left alone, with a warning.
echo junk >"$st/notes.txt"
printf 'kcopydfs job 1\nid 999\n' >"$st/job.999"
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" --state "$st"
id1=$((zid - 2))
id2=$((zid - 1))
grep -q "^id=$id1 tag=changed op=copy state=failed .* resumed error=ESTALE@0 on b" \
	"$mnt/results" || fail "changed b: $(cat "$mnt/results")"
grep -q "^id=$id2 tag=gone op=copy state=failed .* resumed error=ENODEV@0 on c" \
	"$mnt/results" || fail "c gone: $(cat "$mnt/results")"
grep -q "^id=$zid tag=z op=zero state=failed .* resumed error=ESTALE@0 on b" \
	"$mnt/results" || fail "zero on changed b: $(cat "$mnt/results")"
grep -q "^id=999 tag=- op=copy state=failed .* error=EBADMSG" "$mnt/results" ||
	fail "a bad record: $(cat "$mnt/results")"
grep -q "job $id1 not resumed: .*device b changed" "$kcopydfs_log" ||
	fail "no reason logged: $(cat "$kcopydfs_log")"
grep -q "job $id2 not resumed: .*device c is gone" "$kcopydfs_log" ||
	fail "no reason logged: $(cat "$kcopydfs_log")"
grep -q "skipping 'notes.txt': not a job record" "$kcopydfs_log" ||
	fail "no warning: $(cat "$kcopydfs_log")"
[ -e "$st/notes.txt" ] || fail "a file that is no record was removed"
[ -z "$(ls "$st" | grep '^job\.')" ] || fail "records left: $(ls "$st")"
stop_kcopydfs "$mnt"
cmp "$tmp/b.before" "$tmp/b.img" || fail "the changed b was written"
cmp "$tmp/c.before" "$tmp/c.img" || fail "c was written"

# 3. A cancel answered, then kill -9 before the job's step is over: the
# next mount does not bring the cancelled job back.
rm -rf "$st"
start_kcopydfs "$mnt" "${devs[@]}" --state "$st" --subjob-size 16K \
	--fault a:read:0+16384:delay=50000
kcopydfs_queue "$mnt" "copy a:0+8192 c:0 tag=cancelled"
cid=$id
echo "cancel $cid" >"$mnt/control" || fail "cancel $cid"
kill -9 "$kcopydfs_pid"
wait "$kcopydfs_pid" 2>/dev/null
timeout 10 fusermount3 -u "$mnt" || fail "fusermount3 -u of the dead mount"
rm -f "$mnt.pid"
[ ! -e "$st/job.$cid" ] || fail "job $cid cancelled, its record kept"
start_kcopydfs "$mnt" "${devs[@]}" --state "$st"
grep -q "^id=$cid " "$mnt/results" &&
	fail "a cancelled job came back: $(cat "$mnt/results")"
grep -q "^state_resumed=0$" "$mnt/stats" || fail "stats: $(grep state "$mnt/stats")"
stop_kcopydfs "$mnt"

# 4. Records edited by hand: each fails with the reason (EBADMSG on state)
# and writes nothing; an id too large for a record is skipped, and new ids
# go on from the records'.
rm -rf "$st"
mkdir "$st"
cp "$tmp/b.img" "$tmp/b.before"
sa=$(stat -c %s "$tmp/a.img")
# ident FILE: its identity as a record holds it.
ident()
{
	local born
	born=$(stat -c %w "$1")
	if [ "$born" = - ]; then
		echo "file $(stat -c %d:%i "$1")"
	else
		echo "file $(stat -c %d:%i "$1") born $(date -d "$born" +%s.%N)"
	fi
}
ida="dev a $sa $(ident "$tmp/a.img")"
idb="dev b $sa $(ident "$tmp/b.img")"
rec() { printf 'kcopydfs job 1\nid %s\ndone %s\ncmd %s\n' "$@"; }
{ rec 20 99999999999999999999 "copy a:0+100 b:0 tag=huge"
  echo "$ida"; echo "$idb"; } >"$st/job.20"
{ rec 21 0 "copy a:0+100 b:16380 tag=past"; echo "$ida"; echo "$idb"; } \
	>"$st/job.21"
rec 22 0 "copy a:0+100 b:200 tag=nodevs" >"$st/job.22"
{ rec 23 0 "copy a:0+100 b:300 tag=onlya"; echo "$ida"; } >"$st/job.23"
{ rec 24 -5 "copy a:0+100 b:400 tag=neg"; echo "$ida"; echo "$idb"; } \
	>"$st/job.24"
{ rec 25 0 "copy a:0+100 b:500 checksum tag=ck"; echo "$ida"; echo "$idb"; } \
	>"$st/job.25"
{ rec 26 0 "zero b:600+8 tag=ok"; echo "$idb"; } >"$st/job.26"
{ rec 18446744073709551615 0 "zero b:0+8 tag=max"; echo "$idb"; } \
	>"$st/job.18446744073709551615"
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" --state "$st"
kcopydfs_wait_state "$mnt" 26 done failed
# (A record cut at a bad line has no command, so no tag, read yet.)
for t in 20:huge 21:past 22:nodevs 23:onlya 24:- 25:ck; do
	grep -q "^id=${t%%:*} tag=${t#*:} op=copy state=failed .* resumed error=EBADMSG@0 on state" \
		"$mnt/results" || fail "record $t: $(cat "$mnt/results")"
done
grep -q "^id=26 tag=ok op=zero state=done .* resumed" "$mnt/results" ||
	fail "record ok: $(cat "$mnt/results")"
for why in "done 18446744073709551615 is past its 100 sectors" \
	"ends past the end of 'b'" "no device line for a" \
	"no device line for b" "unknown line 'done -5'" \
	"checksum cannot be resumed" \
	"skipping 'job.18446744073709551615': not a job record"; do
	grep -qF "$why" "$kcopydfs_log" || fail "not logged: $why: $(cat "$kcopydfs_log")"
done
grep -q "^state_resumed=1$" "$mnt/stats" || fail "stats: $(grep state "$mnt/stats")"
kcopydfs_queue "$mnt" "zero b:600+8"
nid=$id
[ "$nid" = 27 ] || fail "a new job got id $nid, not 27"
kcopydfs_wait_state "$mnt" "$nid" done
[ "$(grep -c . "$mnt/results")" = 8 ] || fail "results: $(cat "$mnt/results")"
stop_kcopydfs "$mnt"
[ -e "$st/job.18446744073709551615" ] || fail "a file that is no record was removed"
# A state that is no directory: refused, with the cause.
ln -s "$tmp/nowhere/x" "$tmp/dangling"
expect_fail "state $tmp/dangling: No such file or directory" \
	timeout 20 "$KCOPYDFS" -f --dev "a=$tmp/a.img" --state "$tmp/dangling" "$mnt"
expect_fail "state $tmp/a.img: Not a directory" \
	timeout 20 "$KCOPYDFS" -f --dev "b=$tmp/b.img" --state "$tmp/a.img" "$mnt"
mountpoint -q "$mnt" && fail "mounted on a state that is no directory"
dd if=/dev/zero of="$tmp/b.before" bs=512 seek=600 count=8 conv=notrunc \
	status=none
cmp "$tmp/b.before" "$tmp/b.img" || fail "b written by a bad record"
