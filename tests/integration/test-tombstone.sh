#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A replica removed from a volume that comes back is used by no writer
# (docs/protocol.md, section 11): zone c's chunk server is stopped while
# writer A serves vol1, its store gets a tombstone for vol1 (what a node
# removed from the volume keeps; qbd-tombstone makes it offline), and it
# starts again. A reconnects, its OPEN is refused with EIDRM (logged once
# by the chunk server), and A fences itself: it writes no more. A new
# writer B attaches with zones a and b, zone c not counted as a
# promiser, reads what A wrote and writes. Then zone b gets a TOMBSTONE
# over the wire (one below the epoch is refused first), and B, refused
# at its next request to zone b, fences itself too.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v qemu-io >/dev/null || skip "qemu-io not installed"

start_cluster a b c
qbd volume create vol1 --size 64M --replicas 3 >/dev/null
vid=$(qbd volume info vol1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

qio() { # uri commands...: succeed only if every command succeeded
	_u=$1; shift
	out=$(qemu-io -f raw "$_u" "$@" 2>&1) || { echo "$out" >&2; return 1; }
	if echo "$out" | grep -qiE 'fail|error'; then echo "$out" >&2; return 1; fi
}

start_nbd vol1 "$TMP/a.sock"; pid_a=$NBD_PID
qio "$(nbd_uri "$TMP/a.sock")" -c 'write -P 0x11 0 65536' -c 'flush' ||
	fail "writer A cannot write"

stop_chunkd c
qio "$(nbd_uri "$TMP/a.sock")" -c 'write -P 0x22 0 65536' -c 'flush' ||
	fail "writer A cannot write with zone c down"
epoch=$(qbd-tombstone "$TMP/chunk-c.img" "$vid") || fail "no tombstone in zone c's store"
log "zone c's store has a tombstone for vol1 at epoch $epoch"
start_chunkd c

wait_for "writer A fenced by zone c's refusal" 30 \
	grep -q "removed from volume $vid .* refused after attach.* is fenced" "$TMP/nbd-vol1.log"
if qio "$(nbd_uri "$TMP/a.sock")" -c 'write -P 0x44 0 65536' 2>/dev/null; then
	fail "writer A could still write after zone c refused it"
fi
n=$(grep -c "OPEN of volume $vid at epoch [0-9]* refused (EIDRM)" "$TMP/chunkd-c.log")
[ "$n" = 1 ] || fail "zone c logged its refusal $n times: $(grep EIDRM "$TMP/chunkd-c.log")"
log "writer A is fenced: $(grep 'refused after attach' "$TMP/nbd-vol1.log" | sed 's/.*error client: //')"

start_nbd vol1 "$TMP/b.sock" --force; pid_b=$NBD_PID
grep -q "removed from volume $vid .* not counted as a promiser" "$TMP/nbd-vol1.log" ||
	fail "writer B does not say zone c was not counted: $(cat "$TMP/nbd-vol1.log")"
qio "$(nbd_uri "$TMP/b.sock")" -c 'read -P 0x22 0 65536' ||
	fail "writer B does not read A's acknowledged write"
qio "$(nbd_uri "$TMP/b.sock")" -c 'write -P 0x33 0 65536' -c 'flush' \
	-c 'read -P 0x33 0 65536' || fail "writer B cannot write with zones a and b"
log "writer B attached with zones a and b: $(grep 'not counted as a promiser' "$TMP/nbd-vol1.log" | sed 's/.*warn client: //')"

# The writer that removes a node tells it so over the wire (TOMBSTONE):
# below the volume's epoch it is refused (EPERM) and changes nothing; at
# it, zone b serves vol1 no more, and writer B, which still counts zone b,
# is refused (EIDRM) at its next request to it and fences itself.
if qbd-tombstone --etcd "$QBD_ETCD" vol1 b 1 2>"$TMP/tomb.err"; then
	fail "zone b took a TOMBSTONE below its promised epoch"
fi
grep -q "(EPERM)" "$TMP/tomb.err" || fail "not refused with EPERM: $(cat "$TMP/tomb.err")"
qio "$(nbd_uri "$TMP/b.sock")" -c 'write -P 0x55 0 65536' -c 'flush' ||
	fail "writer B cannot write after a refused TOMBSTONE"
epoch_b=$(qbd-tombstone --etcd "$QBD_ETCD" vol1 b) || fail "zone b refused the TOMBSTONE"
log "zone b has a tombstone for vol1 at epoch $epoch_b (over the wire)"
wait_for "writer B fenced by zone b's tombstone" 30 \
	grep -q "removed from volume $vid .* at epoch $epoch_b refused after attach.* is fenced" \
	"$TMP/nbd-vol1.log"
if qio "$(nbd_uri "$TMP/b.sock")" -c 'write -P 0x66 0 65536' 2>/dev/null; then
	fail "writer B could still write after zone b refused it"
fi
grep -q "volume $vid: tombstone at epoch $epoch_b" "$TMP/chunkd-b.log" ||
	fail "zone b's log does not say it: $(grep -i tomb "$TMP/chunkd-b.log")"
log "writer B is fenced: $(grep "at epoch $epoch_b refused after attach" "$TMP/nbd-vol1.log" | sed 's/.*error client: //')"

stop_pid "$pid_a"
stop_pid "$pid_b"
log "PASS"
