#!/usr/bin/env bash
# kcopydfs: what readers of results cost the daemon.  Thousands of
# descriptors open on a large results file, each read a little and held,
# must not grow the daemon's memory with their number (a private copy of
# the text per descriptor took it past a gigabyte); and results read in
# pieces of any size, or at any offset, is the same text.
source "$abs_srcdir/functions.sh"
requires_fuse
requires python3 mountpoint
make_tmpdir

want_fds=15000
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=$((want_fds + 256))
nfds=$((hard - 256 < want_fds ? hard - 256 : want_fds))
[ "$nfds" -ge 4000 ] || skip "only $hard descriptors allowed"
ulimit -n $((nfds + 128))

make_image "$tmp/c.img" 1M zero
mnt=$tmp/mnt
# A small quarantine keeps ASan from holding freed read buffers, which
# would count as the daemon's memory here.
old_asan=${ASAN_OPTIONS-}
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=4"
start_kcopydfs "$mnt" --dev "c=$tmp/c.img" --keep 1200
if [ -n "$old_asan" ]; then export ASAN_OPTIONS=$old_asan; else unset ASAN_OPTIONS; fi

# 1,200 kept jobs with long tags: about 200 KB of results.
python3 - "$mnt" <<'PY' || fail "queueing the jobs"
import os, sys
fd = os.open(sys.argv[1] + "/control", os.O_WRONLY)
for b in range(3):
    lines = b"".join(b"zero c:%d+1 tag=%s\n" % (i, (b"t%05d" % (b * 400 + i)) * 10)
                     for i in range(400))
    if os.write(fd, lines) != len(lines):
        sys.exit("short write")
os.close(fd)
PY
for ((i = 0; i < 400; i++)); do
	[ "$(grep -c 'state=done' "$mnt/results")" = 1200 ] && break
	sleep 0.05
done
[ "$(grep -c 'state=done' "$mnt/results")" = 1200 ] ||
	fail "jobs not done: $(grep -vc 'state=done' "$mnt/results") left"

python3 - "$mnt" "$kcopydfs_pid" "$nfds" <<'PY' || fail "readers"
import os, random, sys
mnt, pid, nfds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def rss():
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    sys.exit("no VmRSS for %d" % pid)

def whole(fd, chunk):
    out = b""
    while True:
        b = os.read(fd, chunk)
        if not b:
            return out
        out += b

# The same text whatever the size of the reads, or their offsets.
fd = os.open(mnt + "/results", os.O_RDONLY)
text = whole(fd, 1 << 20)
if len(text) < 150000 or text.count(b"\n") != 1200:
    sys.exit("results: %d bytes, %d lines" % (len(text), text.count(b"\n")))
seed = random.randrange(1 << 30)
print("seed", seed)
rnd = random.Random(seed)
for chunk in (1, 7, 100, 511, 4096, 65536):
    os.lseek(fd, 0, os.SEEK_SET)
    if whole(fd, chunk) != text:
        sys.exit("results read %d bytes at a time differs" % chunk)
for _ in range(200):
    off = rnd.randrange(len(text) + 10)
    n = rnd.randrange(1, 5000)
    if os.pread(fd, n, off) != text[off:off + n]:
        sys.exit("pread(%d, %d) differs" % (n, off))
os.close(fd)

# Many readers, each holding its descriptor after a small read.
MiB = 1 << 20
base = rss()
fds = []
for i in range(nfds):
    fd = os.open(mnt + "/results", os.O_RDONLY)
    if os.read(fd, 100) != text[:100]:
        sys.exit("reader %d read other text" % i)
    fds.append(fd)
    if i % 1000 == 999 and rss() - base > 64 * MiB:
        sys.exit("daemon grew by %d MiB with %d readers"
                 % ((rss() - base) // MiB, i + 1))
# A second read on each, from where the first ended.
for fd in fds:
    if os.read(fd, 50) != text[100:150]:
        sys.exit("a held reader lost its place")
grown = rss() - base
print("daemon RSS %d MiB, grew by %d MiB with %d readers of %d KiB of results"
      % (rss() // MiB, grown // MiB, nfds, len(text) // 1024))
if grown > 64 * MiB:
    sys.exit("daemon grew by %d MiB" % (grown // MiB))
for fd in fds:
    os.close(fd)
PY
stop_kcopydfs "$mnt"
exit 0
