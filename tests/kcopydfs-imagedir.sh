#!/usr/bin/env bash
# kcopydfs: device names and the image directory.  Names that would shadow
# dev/'s own entries or hold a slash, blank or control character are
# refused; in an image directory, a symbolic link out of it is never
# followed (a root daemon would serve /etc/passwd, writable), a link to a
# file of the directory is, and a file with an unusable name is skipped
# with a warning naming it, not an error about an option never typed.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp mountpoint timeout
make_tmpdir

mkdir "$tmp/img" "$tmp/outside"
make_image "$tmp/img/a" 64K random
make_image "$tmp/img/b" 64K zero
make_image "$tmp/outside/secret" 64K pattern
mnt=$tmp/mnt
mkdir -p "$mnt"

for name in . .. "" "a/b" "a b" $'a\tb' $'a\nb' $'a\x01b'; do
	status=0
	timeout 10 "$KCOPYDFS" -f --dev "$name=$tmp/img/a" "$mnt" \
		2>"$tmp/err" || status=$?
	[ $status = 1 ] || fail "--dev '$name=...' exited $status, want 1"
	mountpoint -q "$mnt" && fail "--dev '$name=...' mounted"
	grep -q "is not NAME" "$tmp/err" ||
		fail "--dev '$name=...': $(cat "$tmp/err")"
done

ln -s "$tmp/outside/secret" "$tmp/img/abs"
ln -s ../outside/secret "$tmp/img/rel"
ln -s /etc/passwd "$tmp/img/passwd"
ln -s a "$tmp/img/alias"
ln -s nowhere "$tmp/img/dangling"
cp "$tmp/img/b" "$tmp/img/bad name"
cp "$tmp/img/b" "$tmp/img/$(printf 'x%.0s' $(seq 70))"
start_kcopydfs "$mnt" --image-dir "$tmp/img"
[ "$(ls "$mnt/dev" | tr '\n' ' ')" = "a alias b " ] ||
	fail "dev/: $(ls "$mnt/dev" | tr '\n' ' ')"
for name in abs rel passwd; do
	grep -q "skipping '$name': a symbolic link out of the directory" \
		"$kcopydfs_log" || fail "$name: $(cat "$kcopydfs_log")"
done
grep -q "skipping 'bad name': not a device name" "$kcopydfs_log" ||
	fail "bad name: $(cat "$kcopydfs_log")"
grep -q "skipping 'xxxxxxxxxx*': not a device name" "$kcopydfs_log" ||
	fail "long name: $(cat "$kcopydfs_log")"
grep -q "skipping 'dangling'" "$kcopydfs_log" ||
	fail "dangling: $(cat "$kcopydfs_log")"
grep -q -- "dev '" "$kcopydfs_log" && fail "a message about --dev: $(cat "$kcopydfs_log")"
echo "copy alias:0+16 b:0 sync" >"$mnt/control" || fail "copy from alias"
cmp -n 8192 "$tmp/img/a" "$tmp/img/b" || fail "alias is not a"
stop_kcopydfs "$mnt"
cmp -s "$tmp/outside/secret" <(yes secret | head -c 65536) ||
	fail "the file outside changed"
exit 0
