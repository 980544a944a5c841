#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd-nbd's exit status says whether its final flush worked (qbd_close's
# result): writes that no client flushed, then SIGTERM. With the write
# quorum intact the flush succeeds and qbd-nbd exits 0; with two of the
# three replicas killed after the writes (W = 2) the flush fails and it
# exits 3, saying so in its log. A daemon that exits 0 whatever its
# flush did fails the second half; one that always fails, the first.
# Usage: test-nbd-exit.sh BUILD_DIR. Exit 0 ok, 1 failure, 77 skipped.
. "$(dirname "$0")/lib.sh"
init_test "$@"

PYNBD=""
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import nbd' 2>/dev/null; then PYNBD=$p; break; fi
done
[ -n "$PYNBD" ] || skip "python3-libnbd not installed"

# write_unflushed SOCKET BYTE: 1 MiB of BYTE at offset 0, acknowledged,
# then NBD_CMD_DISC without a flush (libnbd sends none of its own).
write_unflushed() {
	"$PYNBD" - "$(nbd_uri "$1")" "$2" <<'PY' || fail "write through $1"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes([int(sys.argv[2])]) * (1 << 20), 0)
h.shutdown()
PY
}

start_cluster a b c
qbd volume create vol1 --size 64M --replicas 3 >/dev/null

# Quorum intact: the final flush succeeds, exit 0.
start_nbd vol1 "$TMP/ok.sock"
write_unflushed "$TMP/ok.sock" 17
# stop_pid fails the test, naming the status, unless qbd-nbd exits 0.
stop_pid "$NBD_PID" TERM 0
grep -q "final flush failed" "$TMP/nbd-vol1.log" &&
	fail "qbd-nbd reported a failed flush with the quorum intact"
log "quorum intact: SIGTERM, flushed, exit 0"

# Quorum lost after the writes: the final flush fails, exit 3.
start_nbd vol1 "$TMP/lost.sock"
write_unflushed "$TMP/lost.sock" 34
kill_chunkd b KILL
kill_chunkd c KILL
log "chunk servers b and c killed: 1 of 3 replicas left, write quorum 2"
# ... and here unless it exits 3.
stop_pid "$NBD_PID" TERM 3
grep -q "final flush failed" "$TMP/nbd-vol1.log" ||
	fail "qbd-nbd's log does not say its final flush failed"
log "quorum lost: SIGTERM, flush failed, exit 3"
log "PASS"
