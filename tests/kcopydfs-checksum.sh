#!/bin/bash
# The checksum word of a kcopydfs copy: its results line ends with the
# digest of the source range, equal to the one computed here by the
# python3-xxhash program kcopy(1) gives, for a sparse image and a range
# at an odd sector; digest=none when a read failed (ignore_errors went on
# past it), and kcopy --checksum prints none; refused on a zero and
# under --state; absent from a job without the word.
source "$abs_srcdir/functions.sh"
requires cmp truncate fallocate timeout
requires_fuse
make_tmpdir
cd "$tmp" || fail "cd $tmp"
requires_digest_py

# hex FILE START COUNT: the digest's 16 hexadecimal digits
hex()
{
	local d
	d=$("$py" digest.py "$@") || fail "digest.py $*"
	echo "${d#xxh3-64-blocks:}"
}

make_image src.img 12M random
fallocate -p -o $((68 * 1024)) -l $((64 * 1024)) src.img
fallocate -p -o $((2 * 1024 * 1024 + 4096)) -l 3M src.img
make_image bad.img 4M random
make_image d0.img 12M zero
make_image d1.img 12M zero
start_kcopydfs "$tmp/mnt" --dev src="$tmp/src.img" --dev bad="$tmp/bad.img" \
	--dev d0="$tmp/d0.img" --dev d1="$tmp/d1.img" \
	--fault bad:read:2000+8:EIO

# refused LINE PART: writing LINE fails with EINVAL, and the handle reads
# back a message holding PART
refused()
{
	local out reply
	exec 3<>mnt/control
	if out=$(printf '%s\n' "$1" | dd status=none 2>&1 >&3); then
		fail "'$1' was accepted"
	fi
	case $out in *"Invalid argument"*) ;; *) fail "'$1': $out" ;; esac
	read -r reply <&3 || fail "'$1': nothing read back"
	exec 3>&-
	case $reply in
	"error: Invalid argument: "*"$2"*) ;;
	*) fail "'$1': read back '$reply', want '$2'" ;;
	esac
}

# digest LINE: the value of its digest= field
digest()
{
	sed -n 's/.* digest=\([^ ]*\)$/\1/p' <<<"$1"
}

echo "copy src:0+24576 d0:0 d1:0 checksum sync tag=all" >mnt/control ||
	fail "checksum job failed: $(cat mnt/results)"
line=$(grep "tag=all " mnt/results)
case "$line" in *"state=done"*) ;; *) fail "all: $line" ;; esac
[ "$(digest "$line")" = "$(hex src.img 0 24576)" ] ||
	fail "digest of src: $line, want $(hex src.img 0 24576)"
cmp src.img d0.img || fail "d0 differs"

# With verify too, from an odd sector, for an odd count.
echo "copy src:7+12345 d0:0 verify checksum sync tag=odd" >mnt/control ||
	fail "odd job failed: $(cat mnt/results)"
line=$(grep "tag=odd " mnt/results)
case "$line" in *"verify=ok digest="*) ;; *) fail "odd: $line" ;; esac
[ "$(digest "$line")" = "$(hex src.img 7 12345)" ] ||
	fail "digest of src:7+12345: $line, want $(hex src.img 7 12345)"

# A read error passed over: the copy goes on, the digest is none.
echo "copy bad:0+8192 d1:0 ignore_errors checksum sync tag=bad" \
	>mnt/control 2>err && fail "a job with a read error succeeded"
line=$(grep "tag=bad " mnt/results)
case "$line" in *"state=failed"*"read_err=1"*" digest=none") ;; *) fail "bad: $line" ;; esac

# kcopy --checksum of a device whose read fails: the copy goes on with
# --ignore-errors, but no digest is printed, and a line says why.
if [ -x "${KCOPY:-}" ]; then
	timeout 120 "$KCOPY" -i --checksum mnt/dev/bad kout.img >out 2>kerr
	status=$?
	[ $status -eq 2 ] || fail "kcopy of bad: exit $status: $(cat kerr)"
	[ -s out ] && fail "kcopy printed a checksum: $(cat out)"
	grep -q "^kcopy: mnt/dev/bad: no checksum: the source range was not read in full" kerr ||
		fail "kcopy of bad: $(cat kerr)"
fi

# kcopy's mount mode prints the digest as --checksum does, or says why
# there is none.
if [ -x "$KCOPY" ]; then
	timeout 300 "$KCOPY" --mount mnt copy src:7+12345 d0:0 checksum \
		tag=mnt >out 2>err || fail "kcopy --mount: $(cat err)"
	[ "$(cat out)" = "xxh3-64-blocks:$(hex src.img 7 12345)  src:7+12345" ] ||
		fail "kcopy --mount printed '$(cat out)', want the digest"
	timeout 300 "$KCOPY" --mount mnt copy bad:0+8192 d1:0 ignore_errors \
		checksum tag=mntbad >out 2>err
	[ $? -eq 2 ] || fail "kcopy --mount, read error: $(cat err)"
	[ -s out ] && fail "kcopy --mount, read error, printed: $(cat out)"
	grep -q "bad:0+8192: no checksum" err || fail "no message: $(cat err)"
fi

# No word, no digest; a zero has no source to digest.
echo "copy src:0+8 d1:0 sync tag=plain" >mnt/control || fail "plain failed"
line=$(grep "tag=plain " mnt/results)
case "$line" in *digest=*) fail "digest unasked: $line" ;; esac
refused "zero d1:0+8 checksum" "option 'checksum' is for copy only"
stop_kcopydfs "$tmp/mnt"

# Under --state a job runs in steps a later mount may resume: refused,
# naming the reason, and nothing queued.
start_kcopydfs "$tmp/mnt" --dev src="$tmp/src.img" --dev d1="$tmp/d1.img" \
	--state "$tmp/state"
refused "copy src:0+8 d1:0 checksum" \
	"command 1: checksum cannot go with --state"
[ -s mnt/results ] && fail "a job was queued: $(cat mnt/results)"
stop_kcopydfs "$tmp/mnt"
exit 0
