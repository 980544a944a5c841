#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Background scrub: bytes flipped in one replica's store file, in a chunk
# nobody reads, are found by that chunk server's scrubber (logged as a bad
# block, counted in its node record), reported to the writer in a PING
# reply, and repaired by a resync from a good replica; `qbd volume verify`
# finds the replicas identical afterwards.
#
# QBD_TEST_SCRUB_RATE (default 64M) is the chunk servers' --scrub-rate;
# with 0 (scrub off) the test must fail: nothing else reads the chunk.
. "$(dirname "$0")/lib.sh"
init_test "$@"
rate=${QBD_TEST_SCRUB_RATE:-64M}

start_etcd
for z in a b c; do start_chunkd "$z" --scrub-rate "$rate"; done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
qbd volume create vol1 --size 64M --replicas 3 >/dev/null
vid=$(qbd volume info vol1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
sock="$TMP/vol1.sock"
start_nbd vol1 "$sock" --zone a
uri=$(nbd_uri "$sock")

# 4 MiB (chunks 0-3), with one 4 KiB block found nowhere else at 2 MiB +
# 8 KiB: block 2 of chunk 2.
python3 - "$TMP/data.bin" "$TMP/block.bin" <<'PY'
import sys
blk = bytes((i * 7 + 13) % 251 for i in range(4096))
data = bytearray(b"".join(bytes([(n * 31 + 5) % 256]) * 4096 for n in range(1024)))
data[2 * 1048576 + 8192 : 2 * 1048576 + 12288] = blk
open(sys.argv[1], "wb").write(data)
open(sys.argv[2], "wb").write(blk)
PY
nbdcopy "$TMP/data.bin" "$uri" || fail "cannot write the test data"

find_block() {
	python3 - "$1" "$TMP/block.bin" <<'PY'
import mmap, sys
pat = open(sys.argv[2], "rb").read()
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    print(m.find(pat))
PY
}
off=$(find_block "$TMP/chunk-b.img")
[ "$off" -ge 0 ] || fail "test block not found in zone b's store file"
printf 'FLIPPED' | dd of="$TMP/chunk-b.img" bs=1 seek=$((off + 100)) conv=notrunc status=none
[ "$(find_block "$TMP/chunk-b.img")" = -1 ] || fail "the corruption did not take"
log "flipped bytes of chunk 2, block 2 in zone b's store file (byte $off)"

# The scrubber finds it...
scrub_logged() { grep -q "bad block: volume $vid chunk 2 block 2" "$TMP/chunkd-b.log"; }
wait_for "zone b's scrubber to log the bad block" 30 scrub_logged
log "zone b's scrubber logged the bad block"
# ...the writer hears of it and copies the chunk again...
grep_nbd() { grep -q "reports chunk 2 damaged" "$TMP/nbd-vol1.log"; }
wait_for "the writer to hear of the damaged chunk" 20 grep_nbd
block_repaired() { [ "$(find_block "$TMP/chunk-b.img")" -ge 0 ]; }
wait_for "zone b's copy of chunk 2 repaired" 30 block_repaired
log "the writer resynced chunk 2 to zone b"

# ...the replicas are identical (verify checks every block's checksum)...
# (the copy to zone b is acknowledged once it is there; other replicas
# may still be taking the version bump before it)
verified() { qbd volume verify vol1 >"$TMP/verify.out" 2>&1; }
wait_for "identical replicas (volume verify)" 30 verified
# ...the data reads back...
nbdcopy "$uri" "$TMP/read.bin" || fail "read back failed"
head -c 4194304 "$TMP/read.bin" | cmp - "$TMP/data.bin" || fail "data read back differs"

# ...and the counters moved: zone b found one bad block; every node
# scrubbed its chunks and completed passes.
counters() {
	qbd node list --json | python3 -c '
import json, sys
zones = {n["zone"]: n["scrub"] for n in json.load(sys.stdin)}
b = zones["b"]
ok = b["bad_blocks"] == 1 and all(
    s["bytes"] >= 4 * 1048576 and s["chunks"] >= 4 and s["passes"] >= 1 and s["errors"] == 0
    for s in zones.values())
sys.exit(0 if ok else 1)'
}
wait_for "scrub counters in the node records" 30 counters
qbd node list >"$TMP/nodes.out"
log "$(cat "$TMP/nodes.out")"
stop_pid "$NBD_PID"
qbd volume verify vol1 >/dev/null || fail "volume verify after detach"
log "PASS"
