#!/bin/bash
# The README's examples, and those of kcopy(1) on files, work as written.
# The README's C program (built from README.md by make as readme_example)
# copies as it says and reports a missing image; each ```sh block runs
# without error in an empty directory, with kcopy and kcopydfs of this
# build first in PATH; the results line the kcopydfs block prints has the
# form the README shows, and the refusal it reads back from control names
# the bad token.  kcopy(1)'s examples that need no device or mount run on
# sparse images.
source "$abs_srcdir/functions.sh"
requires cmp dd head truncate
readme=$abs_top_srcdir/README.md
example=$abs_builddir/readme_example
[ -x "$example" ] || fail "readme_example was not built"
make_tmpdir

# The C program: the first MiB of a.img to b.img.
mkdir "$tmp/c" && cd "$tmp/c" || fail "cd"
make_image a.img 2M random
make_image b.img 2M zero
"$example" || fail "the README's C program failed"
cmp -n 1048576 a.img b.img || fail "b.img's first MiB differs from a.img's"
cmp -i 1048576 -n 1048576 b.img /dev/zero || fail "b.img written past its first MiB"
rm b.img
out=$("$example" 2>&1) && fail "the C program succeeded without b.img"
[ "$out" = "copy: No such file or directory" ] ||
	fail "the C program without b.img said: $out"

# block LANG N: the Nth (from 1) ```LANG block of the README.
block()
{
	awk -v lang="$2" -v want="$1" '
		$0 == "```" lang { n++; on = (n == want); next }
		/^```/ { on = 0; next }
		on { print }' "$readme"
}
nr_blocks()
{
	grep -c "^\`\`\`$1\$" "$readme"
}

# Wrappers, so that the blocks' kcopy and kcopydfs are this build's.
mkdir "$tmp/bin" || fail "mkdir"
[ -x "$KCOPY" ] || skip "kcopy was not built"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$KCOPY" >"$tmp/bin/kcopy"
printf '#!/bin/sh\nexec "%s" "$@"\n' "${KCOPYDFS:-false}" >"$tmp/bin/kcopydfs"
chmod +x "$tmp/bin/kcopy" "$tmp/bin/kcopydfs"

n=$(nr_blocks sh)
[ "$n" -ge 2 ] || fail "only $n sh blocks in the README"
for ((i = 1; i <= n; i++)); do
	dir=$tmp/sh$i
	mkdir "$dir" || fail "mkdir"
	script=$(block "$i" sh)
	case $script in *kcopydfs*) requires_fuse ;; esac
	# A block that mounts is unmounted even when it fails.
	cleanup_fn "fusermount3 -u -z '$dir/mnt' 2>/dev/null"
	(cd "$dir" && PATH=$tmp/bin:$PATH timeout 120 bash -e -c "$script") \
		>"$dir.out" 2>"$dir.err" ||
		fail "README sh block $i failed: $(cat "$dir.err") -- the block: $script"
	! mountpoint -q "$dir/mnt" 2>/dev/null ||
		fail "README sh block $i left $dir/mnt mounted"
	# A refusal read back on the read-write descriptor names the token.
	if grep -q "sdx:0" <<<"$script"; then
		grep -q "unknown device 'sdx'" "$dir.out" ||
			fail "no refusal read back: $(cat "$dir.out")"
	fi
	# The results line shown in the README, with any time in usec=.
	if grep -q "cat mnt/results" <<<"$script"; then
		shown=$(block 1 text | grep '^id=') || fail "no results line shown"
		sed -E 's/usec=[0-9]+/usec=N/' "$dir.out" |
			grep -qFx "$(sed -E 's/usec=[0-9]+/usec=N/' <<<"$shown")" ||
			fail "results differ from the README's line: $(cat "$dir.out")"
	fi
done

# kcopy(1)'s examples that name only files, as written, on sparse images
# (kcopy skips their holes): the ones on /dev/ devices or a mount are left.
man_blocks()
{
	awk '/^\.SH EXAMPLES/ { on = 1; next }
		/^\.SH / { on = 0 }
		on && /^\.EX/ { ex = 1; next }
		on && /^\.EE/ { ex = 0; print "\f"; next }
		on && ex' "$1" |
		sed -e 's/\\-/-/g' -e 's/\\(aq/'"'"'/g' -e 's/\\e/\\/g'
}
mkdir "$tmp/man" && cd "$tmp/man" || fail "mkdir"
truncate -s 2G disk.img || fail "truncate"
make_image scratch.img 2M random
make_image data.img 2M random
ran=0
while IFS= read -r -d $'\f' script; do
	case $script in *"/dev/"* | *"/mnt/"* | *kcopydfs*) continue ;; esac
	PATH=$tmp/bin:$PATH timeout 120 bash -e -c "$script" >out 2>err ||
		fail "kcopy(1) example failed: $(cat err) -- the example: $script"
	ran=$((ran + 1))
done < <(man_blocks "$abs_top_srcdir/man/kcopy.1")
[ $ran -ge 3 ] || fail "only $ran of kcopy(1)'s examples ran"
cmp -n 1M scratch.img /dev/zero || fail "kcopy(1)'s zero example did not zero"
[ "$(stat -c %s part.img)" = 536870912 ] || fail "part.img is not 512 MiB"
exit 0
