# Shared by the integration tests: source it first thing.
#
#   requires CMD...          skip (exit 77) unless every command exists
#   requires_fuse            skip unless FUSE mounts can be made here
#   cleanup_fn CMD...        run CMD at exit, last registered first
#   make_tmpdir              $tmp: a fresh directory on tmpfs, removed at exit
#   make_image PATH SIZE [random|zero|pattern]
#   fail MSG...              report and exit 1
#   expect_fail ERRNO_TEXT CMD...  CMD must fail and print ERRNO_TEXT
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
