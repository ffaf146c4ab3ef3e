#!/usr/bin/env bash
# Hostile input through the mount: binary data, NUL bytes, a 1 MiB line,
# numbers past 64 bits, negative numbers, duplicate destinations, a
# destination equal to its source, host paths for device names, then
# thousands of writes from many processes at once, good and bad mixed.
# Each write gets its own errno, nothing bad is queued, and the daemon
# stays up and serves.
source "$abs_srcdir/functions.sh"
requires_fuse
requires cmp dd head seq
make_tmpdir

make_image "$tmp/a.img" 1M random
make_image "$tmp/b.img" 1M random
cp "$tmp/a.img" "$tmp/a.orig"
cp "$tmp/b.img" "$tmp/b.exp"
mnt=$tmp/mnt
start_kcopydfs "$mnt" --dev "a=$tmp/a.img" --dev "b=$tmp/b.img"

# refuse ERRNO_TEXT FILE: writing FILE to control in one write fails so.
refuse()
{
	expect_fail "$1" dd if="$2" of="$mnt/control" bs=2M iflag=fullblock \
		status=none
}

# refuse_line ERRNO_TEXT LINE
refuse_line()
{
	printf '%s\n' "$2" >"$tmp/line"
	refuse "$1" "$tmp/line"
}

head -c 4096 /dev/urandom >"$tmp/binary"
refuse "Invalid argument" "$tmp/binary"
printf 'copy a:0+1\0 b:0\n' >"$tmp/nul"
refuse "Invalid argument" "$tmp/nul"
printf '\0\0\0\0' >"$tmp/nuls"
refuse "Invalid argument" "$tmp/nuls"
{ printf 'copy a:0+1 b:0 tag='; head -c 1M /dev/zero | tr '\0' x; echo; } \
	>"$tmp/mib"
[ "$(stat -c %s "$tmp/mib")" -gt 1048576 ] || fail "1 MiB line"
refuse "File too large" "$tmp/mib"
{ printf 'copy a:0+1 b:0'; printf ' %.0s' $(seq 5000); echo; } >"$tmp/long"
refuse "File too large" "$tmp/long"

refuse_line "Invalid argument" "copy a:18446744073709551616+1 b:0"
refuse_line "Invalid argument" "copy a:0+99999999999999999999999 b:0"
refuse_line "Invalid argument" "zero a:340282366920938463463374607431768211456+1"
refuse_line "Numerical result out of range" "copy a:18446744073709551615+1 b:0"
refuse_line "Invalid argument" "copy a:-1+1 b:0"
refuse_line "Invalid argument" "copy a:0+-1 b:0"
refuse_line "Invalid argument" "zero b:0+-8"
refuse_line "Invalid argument" "copy a:0+8 b:0 b:0"
refuse_line "Invalid argument" "copy a:0+8 b:0 b:4"
refuse_line "Invalid argument" "copy a:0+8 a:4 a:0"
refuse_line "Argument list too long" \
	"copy a:0+1$(for i in $(seq 0 32); do printf ' b:%d' $i; done)"
refuse_line "No such file or directory" "copy c:0+1 b:0"
refuse_line "Invalid argument" "copy /etc/passwd:0+1 b:0"
refuse_line "Invalid argument" "copy ../../a.img:0+1 b:0"
refuse_line "Invalid argument" "copy $tmp/a.img:0+1 b:0"
refuse_line "Invalid argument" "copy $mnt/dev/a:0+1 b:0"
refuse_line "Numerical result out of range" "zero b:2048+1"
refuse_line "Invalid argument" "copy a:0+1 b:0 rm -rf /"
# One bad line spoils the whole write: the good line before it is not run.
printf 'zero b:0+8\ncopy a:0+1 nosuch:0\n' >"$tmp/two"
refuse "No such file or directory" "$tmp/two"
[ -z "$(cat "$mnt/results")" ] || fail "a refused write queued: $(cat "$mnt/results")"

# A destination equal to its source: memmove's answer, nothing changes.
echo "copy a:100+200 a:100 sync tag=same" >"$mnt/control" ||
	fail "copy onto itself refused"
cmp "$tmp/a.orig" "$tmp/a.img" || fail "copy onto itself changed a"

# 16 processes, 150 writes each: every 5th is a valid copy into the
# process's own slice of b, the others each one kind of bad input, and
# each must fail with its own errno.
nproc=16 nwrites=150
cases=(
	"Invalid argument|copy a:0+1 b:0 b:0"
	"Invalid argument|copy a:-5+1 b:0"
	"No such file or directory|zero nosuch:0+1"
	"Numerical result out of range|zero a:2047+2"
)
writer()
{
	local p=$1 i out want cmd bad=0 good=0
	for ((i = 0; i < nwrites; i++)); do
		if ((i % 5 == 0)); then
			echo "copy a:$((p * 64))+64 b:$((p * 64)) tag=p$p" \
				>"$mnt/control" 2>/dev/null || bad=$((bad + 1))
			good=$((good + 1))
			continue
		fi
		want=${cases[i % 4]%%|*}
		cmd=${cases[i % 4]#*|}
		out=$({ echo "$cmd" >"$mnt/control"; } 2>&1) && bad=$((bad + 1))
		[[ $out == *"$want"* ]] || bad=$((bad + 1))
	done
	echo "$good $bad" >"$tmp/writer.$p"
}
for ((p = 0; p < nproc; p++)); do
	writer $p &
	pids[p]=$!
done
for ((p = 0; p < nproc; p++)); do
	timeout 120 tail --pid=${pids[p]} -f /dev/null ||
		fail "writer $p still running after 120 s"
	wait ${pids[p]}
	read -r good bad <"$tmp/writer.$p" || fail "writer $p reported nothing"
	[ "$bad" = 0 ] || fail "writer $p: $bad writes answered wrongly"
	dd if="$tmp/a.img" of="$tmp/b.exp" bs=512 skip=$((p * 64)) \
		seek=$((p * 64)) count=64 conv=notrunc status=none
done

# Every good write was queued once, and nothing else: the ids are 2 on.
total=$((nproc * ((nwrites + 4) / 5) + 1))
[ "$(wc -l <"$mnt/results")" = "$total" ] ||
	fail "$(wc -l <"$mnt/results") jobs in results, want $total"
for ((id = 2; id <= total; id++)); do
	kcopydfs_wait_state "$mnt" $id done
done
cmp "$tmp/b.exp" "$tmp/b.img" || fail "data of the concurrent copies"
cmp "$tmp/a.orig" "$tmp/a.img" || fail "the source changed"

# Still serving.
kill -0 "$kcopydfs_pid" || fail "the daemon died"
echo "zero b:0+8 sync" >"$mnt/control" || fail "a copy after the storm"
grep -q '^jobs_failed=0$' "$mnt/stats" || fail "failed jobs: $(cat "$mnt/stats")"
stop_kcopydfs "$mnt"
echo "$0: $((nproc * nwrites)) writes from $nproc processes, 25 kinds of hostile input"
