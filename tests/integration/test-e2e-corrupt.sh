#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A block corrupted on one replica's disk is caught by its checksum, the
# read is served from another replica, and the bad copy is rewritten.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v qemu-io >/dev/null || skip "qemu-io not installed"

start_cluster a b c
qbd volume create vol1 --size 64M --replicas 3 >/dev/null
sock="$TMP/vol1.sock"
# Reads prefer zone a, the replica we corrupt.
start_nbd vol1 "$sock" --zone a
uri=$(nbd_uri "$sock")

# One 4 KiB block of a pattern found nowhere else on the disks.
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7 + 13) % 251 for i in range(4096)))' >"$TMP/block.bin"
nbdcopy "$TMP/block.bin" "$uri" || fail "cannot write the test block at offset 0"

# Find the block in zone a's data file and flip bytes in it.
find_block() {
	python3 - "$1" "$TMP/block.bin" <<'PY'
import mmap, sys
pat = open(sys.argv[2], "rb").read()
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    i = m.find(pat)
    print(i)
PY
}
off=$(find_block "$TMP/chunk-a.img")
[ "$off" -ge 0 ] || fail "test block not found in zone a's data file"
printf 'CORRUPTED' | dd of="$TMP/chunk-a.img" bs=1 seek=$((off + 100)) conv=notrunc status=none
[ "$(find_block "$TMP/chunk-a.img")" = -1 ] || fail "corruption did not take"
log "corrupted zone a's copy at byte $off of its data file"

# The read still returns the right bytes...
nbdcopy "$uri" "$TMP/read.bin" || fail "read after corruption failed"
head -c 4096 "$TMP/read.bin" | cmp - "$TMP/block.bin" ||
	fail "read after corruption returned wrong data"
grep -qi 'checksum' "$TMP/chunkd-a.log" || fail "zone a did not report a checksum error"
log "read served from another replica; zone a logged the checksum error"

# ...and zone a's copy was repaired in place.
block_repaired() { [ "$(find_block "$TMP/chunk-a.img")" -ge 0 ]; }
wait_for "zone a's copy repaired" 10 block_repaired
log "zone a's copy rewritten"
stop_pid "$NBD_PID"
log "PASS"
