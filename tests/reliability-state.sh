#!/usr/bin/env bash
# kcopydfs --state: jobs survive kill -9.
#  1. A memmove (a copy whose destination overlaps its source, on one
#     device) killed several times mid-way and resumed each time ends
#     exactly as the memmove done offline: a resume that read source
#     sectors the job had already overwritten would show.
#  2. 100 jobs queued and running on several devices (copies, fan-out,
#     zeroes, memmoves; tags), kcopydfs killed, a new mount with the same
#     state: every destination ends as if never interrupted, every job
#     that had not finished reappears once, with its id, its tag and
#     `resumed`, and no record stays behind.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp python3 mountpoint
make_tmpdir
mnt=$tmp/mnt
st=$tmp/state

# kill_kcopydfs: kill -9 and clean up the dead mount.
kill_kcopydfs()
{
	kill -9 "$kcopydfs_pid"
	wait "$kcopydfs_pid" 2>/dev/null
	timeout 10 fusermount3 -u "$mnt" || fail "fusermount3 -u of the dead mount"
	rm -f "$mnt.pid"
}

# queue CMD: write CMD to control; its job's id in $id.
queue()
{
	kcopydfs_queue "$mnt" "$1"
}

# record_done ID: the sectors job ID's record says are finished (or -).
record_done()
{
	sed -n 's/^done //p' "$st/job.$1" 2>/dev/null || echo -
}

# --- 1. memmove killed and resumed ------------------------------------------
make_image "$tmp/m.img" 16M random
cp "$tmp/m.img" "$tmp/m.exp"
# 12 MiB from sector 4096 up by 256 KiB (less than a step would be
# without the overlap), and the first 8 MiB down by 256 KiB
# of what is then there: the expectation, as memmove does it.
python3 - "$tmp/m.exp" <<'PY'
import sys
f = open(sys.argv[1], "r+b")
b = bytearray(f.read())
S = 512
b[(4096 + 512) * S:(4096 + 512 + 24576) * S] = b[4096 * S:(4096 + 24576) * S]
b[0:16384 * S] = b[512 * S:(512 + 16384) * S]
f.seek(0)
f.write(b)
PY
# Every read of m is slowed, so that kills land mid-way.
slow=(--subjob-size 16K --fault m:read:0+32768:delay=10000)
start_kcopydfs "$mnt" --dev "m=$tmp/m.img" --state "$st" "${slow[@]}"
echo "copy m:4096+24576 m:4608 tag=up" >"$mnt/control" || fail "queue up"
[ -e "$st/job.1" ] || fail "job 1 accepted without a record"
# Killed at points that are no step boundary (a step ends every 512
# sectors here): the engine is then mid-way through a step.
for target in 2900 7300 11700; do
	for ((i = 0; i < 1200; i++)); do
		now=$(kcopydfs_field "$mnt" 1 done)
		[ "${now:-0}" -ge $target ] && break
		sleep 0.02
	done
	[ "${now:-0}" -ge $target ] || fail "job 1 not at $target in 24 s: $(cat "$mnt/results")"
	kill_kcopydfs
	echo "$0: memmove killed at $now of 24576 sectors, $(record_done 1) recorded"
	[ -e "$st/job.1" ] || fail "at $target: the record is gone"
	start_kcopydfs "$mnt" --dev "m=$tmp/m.img" --state "$st" "${slow[@]}"
	grep -q "^id=1 tag=up .* resumed" "$mnt/results" ||
		fail "at $target: job 1 not resumed: $(cat "$mnt/results")"
done
kcopydfs_wait_state "$mnt" 1 done failed
grep -q "^id=1 tag=up op=copy state=done .*sectors=24576 done=24576 .*resumed" \
	"$mnt/results" || fail "job 1: $(cat "$mnt/results")"
[ ! -e "$st/job.1" ] || fail "job 1 done, its record left"
# The second memmove, downwards, killed once.
queue "copy m:512+16384 m:0 tag=down"
for ((i = 0; i < 1200; i++)); do
	now=$(kcopydfs_field "$mnt" "$id" done)
	[ "${now:-0}" -ge 1700 ] && break
	sleep 0.02
done
kill_kcopydfs
start_kcopydfs "$mnt" --dev "m=$tmp/m.img" --state "$st"
kcopydfs_wait_state "$mnt" "$id" done failed
grep -q "^id=$id tag=down op=copy state=done .*resumed" "$mnt/results" ||
	fail "job $id: $(cat "$mnt/results")"
stop_kcopydfs "$mnt"
cmp "$tmp/m.exp" "$tmp/m.img" || fail "the memmoves resumed differ from memmove"

# --- 2. 100 jobs ------------------------------------------------------------
for d in s1 s2 m; do make_image "$tmp/$d.img" 16M random; done
for d in d1 d2 d3; do make_image "$tmp/$d.img" 32M random; done
for d in s1 s2 d1 d2 d3 m; do cp "$tmp/$d.img" "$tmp/$d.exp"; done
# The jobs, and what they make of copies of the images: sources are never
# written, destinations never shared, so the order of the jobs does not
# matter - and a job run twice (a memmove) would show.
python3 - "$tmp" >"$tmp/jobs" <<'PY'
import random, sys
tmp = sys.argv[1]
rnd = random.Random(12)
S = 512
img = {d: bytearray(open(f"{tmp}/{d}.exp", "rb").read())
       for d in ("s1", "s2", "d1", "d2", "d3", "m")}
cur = {"d1": 0, "d2": 0, "d3": 0}
jobs = []
def take(d, n):
    s = cur[d]
    cur[d] += n + rnd.randrange(0, 64)
    assert cur[d] <= 65536
    return s
for k in range(100):
    tag = f"t{k % 7}"
    if k % 25 == 3:
        # A memmove in its own 4 MiB of m, up or down by 64..512 KiB.
        base = (k // 25) * 8192
        shift = rnd.choice((128, 512, 1024))
        n = 6000
        src, dst = (base, base + shift) if k % 2 else (base + shift, base)
        img["m"][dst * S:(dst + n) * S] = img["m"][src * S:(src + n) * S]
        jobs.append(f"copy m:{src}+{n} m:{dst} tag={tag}")
    elif k % 10 == 7:
        n = rnd.choice((8, 100, 1000))
        d = rnd.choice(("d1", "d2", "d3"))
        s = take(d, n)
        img[d][s * S:(s + n) * S] = bytes(n * S)
        jobs.append(f"zero {d}:{s}+{n} tag={tag}")
    else:
        n = rnd.choice((8, 64, 256, 1024, 2048))
        src = rnd.choice(("s1", "s2"))
        off = rnd.randrange(0, 32768 - n)
        fan = rnd.sample(("d1", "d2", "d3"), rnd.choice((1, 1, 2, 3)))
        words = [f"{src}:{off}+{n}"]
        for d in fan:
            s = take(d, n)
            img[d][s * S:(s + n) * S] = img[src][off * S:(off + n) * S]
            words.append(f"{d}:{s}")
        jobs.append("copy " + " ".join(words) + f" tag={tag}")
for d, b in img.items():
    open(f"{tmp}/{d}.exp", "wb").write(b)
print("\n".join(jobs))
PY
[ "$(wc -l <"$tmp/jobs")" = 100 ] || fail "the job list"
devs=()
for d in s1 s2 d1 d2 d3 m; do devs+=(--dev "$d=$tmp/$d.img"); done
rm -rf "$st"
start_kcopydfs "$mnt" "${devs[@]}" --state "$st" --subjob-size 16K \
	--throttle 8M
# Four writes of 25 lines: ids 1..100 in order.
for part in 0 1 2 3; do
	sed -n "$((part * 25 + 1)),$((part * 25 + 25))p" "$tmp/jobs" \
		>"$mnt/control" || fail "queue part $part"
done
# Killed once some jobs are done and most are not.
for ((i = 0; i < 1200; i++)); do
	ndone=$(grep -c "state=done" "$mnt/results")
	[ "$ndone" -ge 10 ] && break
	sleep 0.05
done
[ "$ndone" -ge 10 ] || fail "no 10 jobs done in 60 s: $(cat "$mnt/results")"
cp "$mnt/results" "$tmp/results.before"
kill_kcopydfs
nrec=$(ls "$st" | grep -c '^job\.[0-9]*$')
echo "$0: killed with $ndone jobs done, $nrec records"
[ "$nrec" -gt 0 ] || fail "no record left to resume"

start_kcopydfs "$mnt" "${devs[@]}" --state "$st"
for ((i = 0; i < 1200; i++)); do
	grep -q "state=\(queued\|running\)" "$mnt/results" || break
	sleep 0.05
done
cp "$mnt/results" "$tmp/results.after"
grep -qv "state=done" "$tmp/results.after" &&
	fail "not all done: $(grep -v state=done "$tmp/results.after")"
[ "$(wc -l <"$tmp/results.after")" = "$nrec" ] ||
	fail "$nrec records, but results has: $(cat "$tmp/results.after")"
python3 - "$tmp" <<'PY' || fail "results after the resume"
import re, sys
tmp = sys.argv[1]
jobs = open(f"{tmp}/jobs").read().splitlines()
before = {}
for l in open(f"{tmp}/results.before"):
    m = re.match(r"id=(\d+) .*state=(\w+)", l)
    before[int(m.group(1))] = m.group(2)
seen = set()
for l in open(f"{tmp}/results.after"):
    m = re.match(r"id=(\d+) tag=(\S+) .*state=done .*sectors=(\d+) done=(\d+) .* resumed$", l)
    if not m:
        sys.exit(f"not a resumed done job: {l}")
    i, tag = int(m.group(1)), m.group(2)
    if i in seen or not 1 <= i <= 100:
        sys.exit(f"id {i} twice or unknown")
    seen.add(i)
    if before.get(i) == "done":
        sys.exit(f"job {i} was done before the kill, yet resumed")
    if f"tag={tag}" not in jobs[i - 1].split() or m.group(3) != m.group(4):
        sys.exit(f"job {i}: {l} is not {jobs[i - 1]}")
PY
[ -z "$(ls "$st" | grep '^job\.')" ] || fail "records left: $(ls "$st")"
echo "$0: $(grep -c . "$tmp/results.after") jobs resumed, of them" \
	"$(grep -c '^id=\(4\|29\|54\|79\) ' "$tmp/results.after") of the 4 memmoves"
# Ids never repeat across mounts.
queue "zero d1:0+8"
[ "$id" -gt 100 ] || fail "a new job got id $id"
kcopydfs_wait_state "$mnt" "$id" done
stop_kcopydfs "$mnt"
python3 -c "
import sys
b = bytearray(open('$tmp/d1.exp','rb').read()); b[0:4096] = bytes(4096)
open('$tmp/d1.exp','wb').write(b)"
for d in s1 s2 d1 d2 d3 m; do
	cmp "$tmp/$d.exp" "$tmp/$d.img" || fail "$d differs from the jobs never interrupted"
done
