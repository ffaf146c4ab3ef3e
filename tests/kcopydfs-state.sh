#!/usr/bin/env bash
# kcopydfs --state DIR: an unmount with jobs queued keeps them for the next
# mount, which resumes them; a device gone or changed fails its job with
# the reason and writes nothing; one DIR serves one mount at a time; files
# of DIR that are no records are skipped with a warning.
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
exec 3<>"$mnt/control"
echo "zero b:100+4096 tag=z" >&3 || fail "queue z"
read -r zid <&3 || fail "no id"
exec 3>&-
# A cancelled job: no record either.
exec 3<>"$mnt/control"
echo "copy a:0+8192 c:8192 tag=cancelme" >&3 || fail "queue cancelme"
read -r cid <&3 || fail "no id"
exec 3>&-
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
