#!/usr/bin/env bash
# kcopydfs: the control file's line discipline.  A command is complete only
# at its newline: a batch cut at every byte offset (dd with every block
# size, and a writev(2) of more segments than one FUSE request carries,
# which the kernel splits) runs exactly its jobs, each once and whole; a
# refused write changes nothing; an unfinished line is bounded, and one
# left at close never runs.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd python3 mountpoint
make_tmpdir

make_image "$tmp/a.img" 1M random
make_image "$tmp/b.img" 12M zero
make_image "$tmp/c.img" 1M pattern
cp "$tmp/c.img" "$tmp/c.exp"
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img" \
	--dev "c=$tmp/c.img" --keep 100000

nresults() { wc -l <"$mnt/results"; }

# dd with every block size from 1 to the whole batch: each run queues the
# three jobs, whole.  A cut command would run with other numbers (zero
# c:10+1 for a cut after "zero c:10+1", a copy to b:1 for "copy a:0+8 b:1").
batch=$'zero c:10+100 tag=z\ncopy a:0+8 b:10000 tag=c\nzero c:300+7 tag=y\n'
want=$'tag=z op=zero sectors=100\ntag=c op=copy sectors=8\ntag=y op=zero sectors=7'
for ((bs = 1; bs <= ${#batch}; bs++)); do
	before=$(nresults)
	printf '%s' "$batch" | dd of="$mnt/control" bs=$bs status=none ||
		fail "dd bs=$bs refused the batch: $(tail -n 3 "$kcopydfs_log")"
	got=$(tail -n +$((before + 1)) "$mnt/results" |
		sed 's/^id=[0-9]* \(tag=[^ ]*\) \(op=[a-z]*\) .* \(sectors=[0-9]*\) .*/\1 \2 \3/')
	[ "$got" = "$want" ] || fail "dd bs=$bs ran: $got"
done
dd if=/dev/zero of="$tmp/c.exp" bs=512 seek=10 count=100 conv=notrunc status=none
dd if=/dev/zero of="$tmp/c.exp" bs=512 seek=300 count=7 conv=notrunc status=none

# Shell builtins writing one command in pieces.
{ printf 'zero c:40'; printf '0+4 '; printf 'tag=sh\n'; } >"$mnt/control" ||
	fail "a command in three printf writes"
dd if=/dev/zero of="$tmp/c.exp" bs=512 seek=400 count=4 conv=notrunc status=none

# writev(2) with more segments than one request holds: 255 one-line
# segments then a command in two, split by the kernel between them (the
# case of the reports), then one command cut at every offset behind 255
# blank segments.
python3 - "$mnt" "$tmp" <<'PY' || fail "writev splits"
import os, sys
mnt, tmp = sys.argv[1], sys.argv[2]
fd = os.open(mnt + "/control", os.O_WRONLY)
segs = [b"zero c:%d+1 tag=f\n" % (600 + i) for i in range(255)]
segs += [b"copy a:0+8 b:1", b"0000 tag=w\n"]
n = os.writev(fd, segs)
total = sum(map(len, segs))
if n != total:
    sys.exit("writev took %d of %d bytes" % (n, total))
runs = 0
for cut in range(len(b"copy a:99+1 b:20099 tag=v99\n") + 1):
    line = b"copy a:%d+1 b:%d tag=v%d\n" % (cut, 20000 + cut, cut)
    segs = [b"\n"] * 255 + [line[:cut], line[cut:]]
    n = os.writev(fd, segs)
    if n != sum(map(len, segs)):
        sys.exit("cut %d: writev took %d bytes" % (cut, n))
    runs += 1
os.close(fd)
open(tmp + "/runs", "w").write("%d\n" % runs)
PY
runs=$(cat "$tmp/runs")
for ((i = 0; i < 255; i++)); do
	echo "tag=f op=zero sectors=1"
done >"$tmp/want"
echo "tag=w op=copy sectors=8" >>"$tmp/want"
for ((i = 0; i < runs; i++)); do
	echo "tag=v$i op=copy sectors=1"
done >>"$tmp/want"
grep -E 'tag=(f|w|v[0-9]+) ' "$mnt/results" |
	sed 's/^id=[0-9]* \(tag=[^ ]*\) \(op=[a-z]*\) .* \(sectors=[0-9]*\) .*/\1 \2 \3/' \
	>"$tmp/got"
cmp "$tmp/want" "$tmp/got" || fail "writev jobs: $(diff "$tmp/want" "$tmp/got" | head)"
dd if=/dev/zero of="$tmp/c.exp" bs=512 seek=600 count=255 conv=notrunc status=none

# One descriptor: a refused write changes nothing (the unfinished line is
# still there for the next write); too long an unfinished line is EFBIG;
# a line left unfinished at close never runs.
python3 - "$mnt" <<'PY' || fail "line discipline on one descriptor"
import errno, os, sys
fd = os.open(sys.argv[1] + "/control", os.O_RDWR)
def refused(data, want):
    try:
        os.write(fd, data)
    except OSError as e:
        if e.errno != want:
            sys.exit("%r: %s, want %s" % (data, e, errno.errorcode[want]))
        return
    sys.exit("%r was accepted" % data)
if os.write(fd, b"zero c:50") != 9:
    sys.exit("partial write")
refused(b"x+1 tag=bad\n", errno.EINVAL)
refused(b"0+1\x00", errno.EINVAL)
refused(b"0+2 nosuch:0+1\n", errno.ENOENT)
if os.write(fd, b"0+2 tag=p1\n") != 11:
    sys.exit("completing write")
os.lseek(fd, 0, os.SEEK_SET)
refused(b"zero c:0+1 tag=" + b"x" * 5000, errno.EFBIG)
if os.write(fd, b"zero c:0+1 tag=" + b"x" * 4000) != 4015:
    sys.exit("a 4015-byte unfinished line")
refused(b"y" * 100, errno.EFBIG)
refused(b"y" * 100 + b"\n", errno.EFBIG)
os.close(fd)
fd = os.open(sys.argv[1] + "/control", os.O_WRONLY)
os.write(fd, b"zero c:0+1 tag=never")
os.close(fd)
PY
dd if=/dev/zero of="$tmp/c.exp" bs=512 seek=500 count=2 conv=notrunc status=none
grep -q ' tag=p1 op=zero .* sectors=2 ' "$mnt/results" ||
	fail "the completed line did not run: $(tail -n 3 "$mnt/results")"
grep -q 'tag=never\|tag=bad\|tag=xxx' "$mnt/results" &&
	fail "an unfinished or refused line ran: $(tail -n 3 "$mnt/results")"
grep -q "unfinished line of 20 bytes" "$kcopydfs_log" ||
	fail "the discarded line was not logged: $(cat "$kcopydfs_log")"

# Every job done; the data says each ran once, at the right place.
for ((i = 0; i < 600; i++)); do
	[ -z "$(grep -v 'state=done' "$mnt/results")" ] && break
	sleep 0.1
done
[ -z "$(grep -v 'state=done' "$mnt/results")" ] ||
	fail "jobs not done: $(grep -v 'state=done' "$mnt/results" | head -3)"
python3 - "$tmp" "$runs" <<'PY' || fail "data of b"
import sys
tmp, runs = sys.argv[1], int(sys.argv[2])
a = open(tmp + "/a.img", "rb").read()
want = bytearray(12 << 20)
want[10000 * 512:10008 * 512] = a[0:8 * 512]
for i in range(runs):
    want[(20000 + i) * 512:(20001 + i) * 512] = a[i * 512:(i + 1) * 512]
got = open(tmp + "/b.img", "rb").read()
if got != want:
    bad = [s for s in range(len(got) // 512)
           if got[s * 512:(s + 1) * 512] != want[s * 512:(s + 1) * 512]]
    sys.exit("b differs at %d sectors, first %s" % (len(bad), bad[:5]))
PY
cmp "$tmp/c.exp" "$tmp/c.img" || fail "data of c"
stop_kcopydfs "$mnt"
exit 0
