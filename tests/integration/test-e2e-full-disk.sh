#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Full disks, through real processes and clients we did not write
# (libnbd, qemu-io):
#  1. stores with no free chunk slot: a write to a new chunk fails with
#     ENOSPC at the NBD client (not EIO), reads of everything written and
#     writes to chunks already allocated go on, nothing is damaged;
#  2. sparse store files on full filesystems (a small ext4 image per zone,
#     loop-mounted; tmpfs if loop devices are missing): the same, and a
#     TRIM gives the space back for new writes.
# Ends with `qbd volume verify` (every block's checksum, every replica).
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v qemu-io >/dev/null || skip "qemu-io not installed"
PYNBD=""
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import nbd' 2>/dev/null; then PYNBD=$p; break; fi
done
[ -n "$PYNBD" ] || skip "python3-libnbd not installed"
MiB=1048576

# fill URI: write 1 MiB chunks of a pattern from offset 0 until a write
# fails; prints "chunks-written errno-name".
fill() {
	"$PYNBD" - "$1" <<'PY'
import errno, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n, err = 0, "none"
while n < h.get_size() // 1048576:
    try:
        h.pwrite(bytes([n % 251 + 1]) * 1048576, n * 1048576)
    except nbd.Error as e:
        err = errno.errorcode.get(e.errnum, str(e.errnum))
        break
    n += 1
h.shutdown()
print(n, err)
PY
}
# check URI N: the first N chunks read back; chunk 0 can be rewritten.
check() {
	"$PYNBD" - "$1" "$2" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for n in range(int(sys.argv[2])):
    assert h.pread(1048576, n * 1048576) == bytes([n % 251 + 1]) * 1048576, "chunk %d" % n
h.pwrite(b"\xee" * 65536, 4096)
h.flush()
assert h.pread(65536, 4096) == b"\xee" * 65536
h.pwrite(bytes([1]) * 65536, 4096)
h.shutdown()
PY
}
# The failure as qemu-io reports it.
qemu_write_fails_enospc() {
	qemu-io -f raw -c "write -P 0x33 $2 64k" "$1" >"$TMP/qemu-io.out" 2>&1 || true
	grep -q "No space left on device" "$TMP/qemu-io.out"
}

# ---- 1. no free chunk slot ----
start_etcd
# 16 MiB stores hold about 14 chunks.
for z in a b c; do CHUNKD_SIZE=16M start_chunkd "$z" --scrub-rate 64M; done
wait_for "3 chunk servers alive" 20 nodes_alive 3
qbd volume create slots --size 64M >/dev/null
start_nbd slots "$TMP/slots.sock"
uri=$(nbd_uri "$TMP/slots.sock")
set -- $(fill "$uri")
n=$1; err=$2
slots=$(qbd node list --json | python3 -c 'import json,sys; print(min(n["slots"] for n in json.load(sys.stdin)))')
[ "$err" = ENOSPC ] || fail "stores without a free slot: a write failed with $err after $n chunks (want ENOSPC)"
[ "$n" -eq "$slots" ] || fail "$n chunks written, the stores have $slots slots"
log "no free slot: $n chunks written, then ENOSPC at the client"
qemu_write_fails_enospc "$uri" $(((n + 1) * MiB)) || fail "qemu-io: $(cat "$TMP/qemu-io.out")"
check "$uri" "$n" || fail "reads, or writes to allocated chunks, after ENOSPC"
# The chunk whose write failed reads as it was (zeros), at once: the
# writer undid the write instead of waiting for a copy no replica has
# room for.
timeout 5 "$PYNBD" -c "
import nbd
h = nbd.NBD()
h.connect_uri('$uri')
assert h.pread(1048576, $n * 1048576) == bytes(1048576)
h.shutdown()" || fail "reading the chunk whose write failed"
grep -q "no space on the replicas" "$TMP/nbd-slots.log" || fail "the writer did not log the undone write"
for z in a b c; do
	kill -0 "$(eval echo \$CHUNKD_PID_$z)" || fail "chunk server $z died"
done
stop_pid "$NBD_PID"
verified_slots() { qbd volume verify slots >"$TMP/verify.out" 2>&1; }
wait_for "identical replicas (volume verify)" 30 verified_slots
log "reads, rewrites of allocated chunks and verify fine; qemu-io sees ENOSPC"
for z in a b c; do stop_chunkd "$z"; done

# ---- 2. full filesystems ----
mounted=""
fs_cleanup() { # the chunk servers stop before their filesystems go
	for z in a b c; do
		eval "_p=\${CHUNKD_PID_$z:-}"
		[ -n "$_p" ] && tracked "$_p" && stop_pid "$_p"
	done
	for m in $mounted; do umount -l "$m" 2>/dev/null; done
}
on_exit fs_cleanup
how=""
for z in a b c; do
	mkdir -p "$TMP/fs-$z"
	truncate -s 48M "$TMP/fs-$z.img"
	if mkfs.ext4 -q -F "$TMP/fs-$z.img" 2>/dev/null &&
	   mount -o loop "$TMP/fs-$z.img" "$TMP/fs-$z" 2>/dev/null; then
		how="ext4 on a loop device"
	elif mount -t tmpfs -o size=40m tmpfs "$TMP/fs-$z" 2>/dev/null; then
		how="tmpfs"
	else
		skip "cannot mount a small filesystem (loop device or tmpfs; needs root)"
	fi
	mounted="$TMP/fs-$z $mounted"
done
log "small filesystems: $how"
for z in a b c; do
	# a sparse 1 GiB store on each: the filesystem fills first
	qbd-chunkd --data "$TMP/fs-$z/store" --size 1G --listen "127.0.0.1:$(eval echo \$CHUNKD_PORT_$z)" \
		--zone "$z" --etcd "$QBD_ETCD" --scrub-rate 64M >>"$TMP/chunkd-fs-$z.log" 2>&1 &
	eval "CHUNKD_PID_$z=$!"
	track_pid $! "chunkd-$z (small filesystem)"
done
for z in a b c; do wait_for "chunk server $z on its small filesystem" 20 port_open "$(eval echo \$CHUNKD_PORT_$z)"; done
wait_for "3 chunk servers alive" 20 nodes_alive 3
qbd volume create full --size 256M >/dev/null
start_nbd full "$TMP/full.sock"
uri=$(nbd_uri "$TMP/full.sock")
set -- $(fill "$uri")
n=$1; err=$2
[ "$err" = ENOSPC ] || fail "full filesystems: a write failed with $err after $n chunks (want ENOSPC)"
[ "$n" -gt 4 ] && [ "$n" -lt 48 ] || fail "$n chunks fit on 48 MiB filesystems"
log "full filesystems: $n chunks written, then ENOSPC at the client"
qemu_write_fails_enospc "$uri" $(((n + 2) * MiB)) || fail "qemu-io: $(cat "$TMP/qemu-io.out")"
check "$uri" "$n" || fail "reads, or writes over written data, on full filesystems"
# A TRIM of 4 MiB gives the space back: new chunks can be written again.
"$PYNBD" - "$uri" "$n" <<'PY' || fail "trim, then writes into new chunks"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n = int(sys.argv[2])
h.trim(4 * 1048576, 1048576)
assert h.pread(4 * 1048576, 1048576) == bytes(4 * 1048576)
for c in (n + 10, n + 11):
    h.pwrite(bytes([c % 251 + 1]) * 1048576, c * 1048576)
h.flush()
for c in (n + 10, n + 11):
    assert h.pread(1048576, c * 1048576) == bytes([c % 251 + 1]) * 1048576
h.shutdown()
PY
log "a trim gave space back; new chunks written"
for z in a b c; do
	kill -0 "$(eval echo \$CHUNKD_PID_$z)" || fail "chunk server $z died"
done
stop_pid "$NBD_PID"
# Replicas that missed a write for want of space get it by resync once
# there is room again: wait for identical replicas.
verified() { qbd volume verify full >"$TMP/verify.out" 2>&1; }
wait_for "identical replicas (volume verify)" 60 verified
grep -q "checksum mismatch\|bad block" "$TMP"/chunkd-*.log && fail "a checksum failed somewhere"
for z in a b c; do stop_chunkd "$z"; done
log "PASS"
