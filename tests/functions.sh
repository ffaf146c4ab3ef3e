# Shared by the integration tests: source it first thing.
#
#   requires CMD...          skip (exit 77) unless every command exists
#   requires_fuse            skip unless FUSE mounts can be made here
#   cleanup_fn CMD...        run CMD at exit, last registered first
#   make_tmpdir              $tmp: a fresh directory on tmpfs, removed at exit
#   make_image PATH SIZE [random|zero|pattern]
#   fail MSG...              report and exit 1
#   expect_fail ERRNO_TEXT CMD...  CMD must fail and print ERRNO_TEXT
#   wait_progress PID FILE   wait until kcopy PID has printed progress with
#                            bytes done to FILE
#   start_nbdkit NAME PLUGIN-ARGS...  serve an NBD export on $tmp/NAME.sock,
#                            killed at exit; sets nbd_uri and nbd_pid
#   start_nbdkit_tcp NAME PLUGIN-ARGS...  the same on a free 127.0.0.1 port
#   requires_digest_py       skip unless python3 has xxhash; sets $py and
#                            writes kcopy(1)'s digest program to ./digest.py
set -u

fail()
{
	echo "$0: FAIL: $*" >&2
	exit 1
}

skip()
{
	echo "$0: SKIP: $*"
	exit 77
}

requires()
{
	local c
	for c; do
		command -v "$c" >/dev/null 2>&1 || skip "$c not found"
	done
}

requires_fuse()
{
	[ -c /dev/fuse ] || skip "/dev/fuse is missing"
	[ -r /dev/fuse ] && [ -w /dev/fuse ] || skip "/dev/fuse is not usable"
	requires fusermount3
	[ -x "${KCOPYDFS:-}" ] || skip "kcopydfs was not built"
}

_cleanup_fns=()

cleanup_fn()
{
	_cleanup_fns+=("$*")
}

_run_cleanup()
{
	local status=$? i
	trap - EXIT
	for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do
		eval "${_cleanup_fns[i]}" || :
	done
	exit $status
}
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

make_tmpdir()
{
	local base=/dev/shm
	[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
	tmp=$(mktemp -d "$base/kcopyd-test.XXXXXX") || fail "mktemp"
	cleanup_fn rm -rf "$tmp"
}

# requires_digest_py: $py, a python3 with the xxhash module (else skip),
# and ./digest.py, the reference program kcopy(1) gives, as printed there.
requires_digest_py()
{
	local p
	py=
	for p in python3 /usr/bin/python3; do
		if command -v "$p" >/dev/null && "$p" -c 'import xxhash' 2>/dev/null; then
			py=$p
			break
		fi
	done
	[ -n "$py" ] || skip "no python3 with the xxhash module (python3-xxhash)"
	awk '/^\.SS Checksum/ { on = 1; next }
		on && /^\.EX/ { ex = 1; next }
		on && /^\.EE/ { exit }
		on && ex' "$abs_top_srcdir/man/kcopy.1" |
		sed -e 's/\\-/-/g' -e 's/\\(aq/'"'"'/g' >digest.py
	grep -q xxh3_64_intdigest digest.py ||
		fail "no program in kcopy(1): $(cat digest.py)"
}

# make_image PATH SIZE [random|zero|pattern]; SIZE as truncate(1) takes it.
make_image()
{
	local path=$1 size=$2 kind=${3:-random} bytes
	rm -f "$path"
	truncate -s "$size" "$path" || fail "truncate $path"
	bytes=$(stat -c %s "$path")
	case $kind in
	random) head -c "$bytes" /dev/urandom | dd of="$path" conv=notrunc status=none ;;
	zero) ;;
	pattern) yes "$(basename "$path")" | head -c "$bytes" |
		dd of="$path" conv=notrunc status=none ;;
	esac
}

# map_left MAP: the bytes a ddrescue mapfile does not call finished.
map_left()
{
	local pos sz st n=0
	while read -r pos sz st; do
		# Comments, and the status line (its second field is a status).
		case "$pos $sz" in '#'*|' '*|*' '[^0]*) continue ;; esac
		[ "$st" != + ] && n=$((n + sz))
	done <"$1"
	echo $n
}

# wait_progress PID FILE: at most 30 s; fail if PID ends first.
wait_progress()
{
	local pid=$1 file=$2 i
	for ((i = 0; i < 600; i++)); do
		grep -q "^kcopy: [1-9][0-9]*/" "$file" && return 0
		kill -0 "$pid" 2>/dev/null || fail "kcopy ended: $(cat "$file")"
		sleep 0.05
	done
	kill -9 "$pid"
	fail "no progress from kcopy in 30 s"
}

# expect_fail TEXT CMD...: CMD must exit non-zero and print TEXT.
expect_fail()
{
	local text=$1 out
	shift
	if out=$("$@" 2>&1); then
		fail "expected failure ($text) from: $*"
	fi
	case $out in
	*"$text"*) ;;
	*) fail "expected '$text' from: $* -- got: $out" ;;
	esac
}

# --- nbdkit -----------------------------------------------------------------
# Wait (bounded) for nbdkit to write its pidfile, which it does once it
# listens; 0 if it did, 1 if it died first (a port taken, say).
_wait_nbdkit()
{
	local pid=$1 pidfile=$2 i
	for ((i = 0; i < 600; i++)); do
		[ -s "$pidfile" ] && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	fail "nbdkit did not start in 30 s: $(cat "$tmp/nbdkit.log")"
}

start_nbdkit()
{
	local name=$1
	shift
	rm -f "$tmp/$name.sock" "$tmp/$name.pid"
	nbdkit -f --exit-with-parent -U "$tmp/$name.sock" \
		-P "$tmp/$name.pid" "$@" 2>>"$tmp/nbdkit.log" &
	nbd_pid=$!
	cleanup_fn "kill -CONT $nbd_pid 2>/dev/null; kill $nbd_pid 2>/dev/null"
	_wait_nbdkit "$nbd_pid" "$tmp/$name.pid" ||
		fail "nbdkit $*: $(cat "$tmp/nbdkit.log")"
	nbd_uri="nbd+unix:///?socket=$tmp/$name.sock"
}

start_nbdkit_tcp()
{
	local name=$1 port try
	shift
	for ((try = 0; try < 20; try++)); do
		port=$((20000 + RANDOM % 40000))
		rm -f "$tmp/$name.pid"
		nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" \
			-P "$tmp/$name.pid" "$@" 2>>"$tmp/nbdkit.log" &
		nbd_pid=$!
		if _wait_nbdkit "$nbd_pid" "$tmp/$name.pid"; then
			cleanup_fn "kill -CONT $nbd_pid 2>/dev/null; kill $nbd_pid 2>/dev/null"
			nbd_uri="nbd://127.0.0.1:$port/"
			return 0
		fi
	done
	fail "no free port for nbdkit: $(cat "$tmp/nbdkit.log")"
}

# --- kcopydfs ---------------------------------------------------------------
#   start_kcopydfs MNT [OPTIONS...]  mount kcopydfs in the foreground (-f) on
#                            MNT (created), wait for its pidfile; sets
#                            kcopydfs_pid and kcopydfs_log
#   stop_kcopydfs MNT        unmount, and fail unless the daemon exits 0
#   kcopydfs_wait_state MNT ID STATE...  wait (bounded) until job ID of
#                            MNT/results is in one of the STATEs
#   kcopydfs_field MNT ID KEY  print KEY's value in job ID's results line
#   kcopydfs_queue MNT CMD   write CMD to MNT/control, fail unless a job
#                            id is read back; sets id
#   kcopydfs_mode MNT NAME   print dev/NAME's I/O mode from MNT/stats
#                            (passthrough or direct_io)
#   kcopydfs_wait_clone MNT NAME STATE  wait (60 s at most) until clone
#                            NAME of MNT/stats is in STATE
# KCOPYDFS_OPTS (e.g. --no-passthrough) is added to every start_kcopydfs.
start_kcopydfs()
{
	local mnt=$1 i
	shift
	mkdir -p "$mnt"
	kcopydfs_log=$tmp/kcopydfs.$$.$RANDOM.log
	rm -f "$mnt.pid"
	# Registered before mounting, so a failing test never leaves a mount.
	cleanup_fn "fusermount3 -u -z '$mnt' 2>/dev/null"
	# shellcheck disable=SC2086
	"$KCOPYDFS" -f -P "$mnt.pid" ${KCOPYDFS_OPTS:-} "$@" "$mnt" \
		2>"$kcopydfs_log" &
	kcopydfs_pid=$!
	cleanup_fn "kill $kcopydfs_pid 2>/dev/null"
	for ((i = 0; i < 200; i++)); do
		[ -s "$mnt.pid" ] && break
		kill -0 "$kcopydfs_pid" 2>/dev/null ||
			fail "kcopydfs did not start: $(cat "$kcopydfs_log")"
		sleep 0.05
	done
	[ -s "$mnt.pid" ] || fail "kcopydfs wrote no pidfile within 10 s"
	[ "$(cat "$mnt.pid")" = "$kcopydfs_pid" ] || fail "pidfile has a wrong pid"
	mountpoint -q "$mnt" || fail "$mnt is not mounted though the pidfile is written"
}

stop_kcopydfs()
{
	local mnt=$1 i status=0
	# A mount still busy for a moment (a loop device or a reader that
	# is going away) is tried again for up to 10 s.
	for ((i = 0; i < 100; i++)); do
		timeout 10 fusermount3 -u "$mnt" 2>"$mnt.umount" && break
		grep -q busy "$mnt.umount" ||
			fail "fusermount3 -u $mnt failed: $(cat "$mnt.umount")"
		sleep 0.1
	done
	[ "$i" -lt 100 ] || fail "fusermount3 -u $mnt: busy for 10 s"
	rm -f "$mnt.umount"
	for ((i = 0; i < 400; i++)); do
		kill -0 "$kcopydfs_pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$kcopydfs_pid" 2>/dev/null && fail "kcopydfs still runs 20 s after unmount"
	wait "$kcopydfs_pid" || status=$?
	[ "$status" = 0 ] || fail "kcopydfs exited $status after unmount: $(cat "$kcopydfs_log")"
	[ ! -e "$mnt.pid" ] || fail "kcopydfs left its pidfile behind"
}

# kcopydfs_queue MNT CMD: write CMD to MNT/control; the id read back in $id.
kcopydfs_queue()
{
	exec 3<>"$1/control" || fail "open $1/control"
	echo "$2" >&3 || fail "queue $2"
	read -r id <&3 || fail "no id read back for $2"
	exec 3>&-
}

kcopydfs_field()
{
	local mnt=$1 id=$2 key=$3
	sed -n "s/^id=$id .*\\<$key=\\([^ ]*\\).*/\\1/p" "$mnt/results"
}

kcopydfs_wait_state()
{
	local mnt=$1 id=$2 i s
	shift 2
	for ((i = 0; i < 400; i++)); do
		s=$(kcopydfs_field "$mnt" "$id" state)
		case " $* " in *" $s "*) return 0 ;; esac
		sleep 0.05
	done
	fail "job $id of $mnt not in state $* after 20 s: $(cat "$mnt/results")"
}

kcopydfs_wait_clone()
{
	local mnt=$1 name=$2 state=$3 i
	for ((i = 0; i < 1200; i++)); do
		grep -qx "clone\\.$name\\.state=$state" "$mnt/stats" && return 0
		sleep 0.05
	done
	fail "clone $name not $state in 60 s: $(grep clone "$mnt/stats")"
}

kcopydfs_mode()
{
	local mnt=$1 name=$2 m
	m=$(sed -n "s/^dev\\.$name\\.mode=//p" "$mnt/stats")
	case $m in
	passthrough | direct_io) ;;
	*) fail "dev.$name.mode is '$m'" ;;
	esac
	case " ${KCOPYDFS_OPTS:-} " in
	*" --no-passthrough "*)
		[ "$m" = direct_io ] ||
			fail "dev/$name in $m mode with --no-passthrough" ;;
	esac
	echo "$m"
}
