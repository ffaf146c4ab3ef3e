#!/bin/bash
# kcopy and remote devices: NBD URIs as sources and destinations against
# real nbdkit servers on Unix sockets and 127.0.0.1 ports; a sparse remote
# source, fan-out to a file and two servers, a read-only export, a server
# that fails writes, one that is killed and one that stops answering.
# Each result is checked against an independent reader (nbdcopy) or cmp.
source "$abs_srcdir/functions.sh"
requires cmp nbdkit nbdcopy stat truncate
[ -x "$KCOPY" ] || skip "kcopy was not built"
"$KCOPY" /dev/null nbd+unix:///?socket=/nonexistent 2>&1 |
	grep -q "Protocol not supported" && skip "built without libnbd"
make_tmpdir
cd "$tmp" || fail "cd $tmp"

alloc() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
MiB=1048576
# What an export holds, read by nbdcopy into a file.
fetch() { rm -f "$2"; nbdcopy "$1" "$2" || fail "nbdcopy $1"; }

make_image src.img 32M

# file -> NBD (Unix socket), NBD -> file, NBD (TCP) -> NBD (Unix).
start_nbdkit a memory 32M
A=$nbd_uri
start_nbdkit_tcp t memory 32M
T=$nbd_uri
start_nbdkit b memory 32M
B=$nbd_uri
"$KCOPY" src.img "$A" 2>log || fail "file -> $A: $(cat log)"
fetch "$A" a.out
cmp src.img a.out || fail "file -> NBD: data differs"
"$KCOPY" "$A" back.img 2>log || fail "$A -> file: $(cat log)"
cmp src.img back.img || fail "NBD -> file: data differs"
"$KCOPY" "$A" "$T" 2>log || fail "$A -> $T: $(cat log)"
"$KCOPY" "$T" "$B" 2>log || fail "$T -> $B: $(cat log)"
fetch "$B" b.out
cmp src.img b.out || fail "NBD -> NBD: data differs"

# Ranges after a URI's path; a port is not a range.
"$KCOPY" src.img:0+1M "$T:2M" 2>log || fail "ranges: $(cat log)"
fetch "$T" t.out
cmp -n $((2 * MiB)) src.img t.out || fail "before the range changed"
cmp -n $MiB -i 0:$((2 * MiB)) src.img t.out ||
	fail "the range at 2 MiB differs"

# Fan-out: one read to a local file and two servers.
start_nbdkit c memory 32M
C=$nbd_uri
start_nbdkit_tcp d memory 32M
D=$nbd_uri
make_image fan.img 32M
"$KCOPY" -v fan.img fan.out "$C" "$D" 2>log || fail "fan-out: $(cat log)"
grep -q "to 3 destinations" log || fail "fan-out summary: $(cat log)"
cmp fan.img fan.out || fail "fan-out: file differs"
fetch "$C" c.out
cmp fan.img c.out || fail "fan-out: $C differs"
fetch "$D" d.out
cmp fan.img d.out || fail "fan-out: $D differs"

# A sparse remote source (5 % data) ends sparse in a new file, its holes
# not read; the data matches.
start_nbdkit s sparse-random 256M percent=5 seed=1234
S=$nbd_uri
"$KCOPY" -v "$S" sparse.out 2>log || fail "sparse: $(cat log)"
fetch "$S" sparse.ref
cmp sparse.ref sparse.out || fail "sparse: data differs"
[ "$(alloc sparse.out)" -le $((64 * MiB)) ] ||
	fail "sparse.out: $(alloc sparse.out) bytes allocated of 256 MiB"
grep -q "MiB of holes not read" log || fail "sparse summary: $(cat log)"

# And a sparse file to an export: its holes are zeroed there, not written.
truncate -s 64M hole.img
head -c $MiB /dev/urandom | dd of=hole.img bs=1M seek=10 conv=notrunc \
	status=none
start_nbdkit h memory 64M
"$KCOPY" -v hole.img "$nbd_uri" 2>log || fail "sparse to NBD: $(cat log)"
fetch "$nbd_uri" h.out
cmp hole.img h.out || fail "sparse to NBD: data differs"
grep -q "1.00 MiB of data written" log || fail "sparse to NBD: $(cat log)"

# A read-only export is refused as a destination, and read as a source.
start_nbdkit ro -r memory 32M
RO=$nbd_uri
expect_fail "Read-only file system" "$KCOPY" src.img "$RO"
"$KCOPY" "$RO" ro.out 2>log || fail "read-only source: $(cat log)"

# Bad kcopyd parameters in the query.
expect_fail "Invalid argument" "$KCOPY" src.img "$A&timeout=0"
expect_fail "Invalid argument" "$KCOPY" src.img "$A&connections=x"

# A server that fails every write with ENOSPC: that destination fails
# (exit 3, named), the others get everything.
start_nbdkit e --filter=error memory 32M error=ENOSPC error-pwrite-rate=100%
E=$nbd_uri
start_nbdkit f memory 32M
F=$nbd_uri
rm -f e.out
status=0
"$KCOPY" -i src.img "$E" e.out "$F" 2>log || status=$?
[ $status = 3 ] || fail "error filter: exit $status, want 3: $(cat log)"
grep -qx "kcopy: $E: No space left on device at sector [0-9]*" log ||
	fail "error filter: $(cat log)"
cmp src.img e.out || fail "error filter: e.out differs"
fetch "$F" f.out
cmp src.img f.out || fail "error filter: $F differs"

# A read error of the source is a read error (exit 2).
start_nbdkit r --filter=error pattern 32M error=EIO error-pread-rate=100%
status=0
"$KCOPY" "$nbd_uri" r.out 2>log || status=$?
[ $status = 2 ] || fail "read errors: exit $status, want 2: $(cat log)"

# A server killed mid-copy (writes slowed so that it is): that
# destination fails, the others complete.
start_nbdkit k --filter=delay memory 64M wdelay=100ms
K=$nbd_uri
kpid=$nbd_pid
start_nbdkit g memory 64M
G=$nbd_uri
make_image big.img 64M
rm -f k.out
"$KCOPY" -i --progress=0.1 big.img "$K" k.out "$G" 2>log &
cpid=$!
wait_progress $cpid log
kill -9 $kpid
status=0
wait $cpid || status=$?
[ $status = 3 ] || fail "killed server: exit $status, want 3: $(cat log)"
grep -F "kcopy: $K: " log | grep -Eq " at sector [0-9]+$" ||
	fail "killed server: $(cat log)"
cmp big.img k.out || fail "killed server: k.out differs"
fetch "$G" g.out
cmp big.img g.out || fail "killed server: $G differs"

# A server that stops answering: after timeout= seconds without a reply
# that destination fails, the others complete.
start_nbdkit z --filter=delay memory 64M wdelay=100ms
Z="$nbd_uri&timeout=2"
zpid=$nbd_pid
start_nbdkit y memory 64M
Y=$nbd_uri
rm -f z.out
"$KCOPY" -i --progress=0.1 big.img "$Z" z.out "$Y" 2>log &
cpid=$!
wait_progress $cpid log
kill -STOP $zpid
status=0
wait $cpid || status=$?
kill -CONT $zpid
[ $status = 3 ] || fail "stopped server: exit $status, want 3: $(cat log)"
grep -F "kcopy: $Z: " log | grep -Eq " at sector [0-9]+$" ||
	fail "stopped server: $(cat log)"
cmp big.img z.out || fail "stopped server: z.out differs"
fetch "$Y" y.out
cmp big.img y.out || fail "stopped server: $Y differs"

# Fault rules apply to remote devices as to files: not here (kcopy has
# none), see check_nbd.
exit 0
