#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A rebuild copies what was written, not whole chunks, and its rate
# follows `qbd volume set --rebuild-rate` while the volume is attached.
#
# Three chunk servers advertise host names (localhost:PORT), so the pulls
# between them resolve a name. A volume is written sparsely: one 4 KiB
# block in each of many chunks. Zone c's chunk server is stopped; a
# block is written in each of 100 chunks (and the blocks c still holds
# in 10 of them are zeroed); c comes back and is resynced:
#
# - at the writer's own rate from qbd.conf (4K/s), the copy crawls;
#   `qbd volume set vol1 --rebuild-rate 0` (unlimited) is picked up by
#   the running writer within seconds and the copy completes;
# - the writer's counters say the bytes copied to c are about the bytes
#   written while it was away (blocks and bitmaps), not 100 chunks of
#   1 MiB, and that c pulled them (by host name) from the other two;
# - `qbd volume verify` finds the three replicas identical: the blocks
#   zeroed while c was away are holes on c too, not its old data.
#
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
need_pynbd

MiB=1048576
KiB=4096
STALE=100               # chunks written while c is away
ZEROED=10               # of those, chunks whose block 0 c holds and the others zero

# The writer's own (cluster default) rate: slow enough to be seen.
printf '[nbd]\nresync-rate = 4K\n' >"$QBD_CONFIG"

start_etcd
for z in a b c; do
	p=$(free_port)
	eval "CHUNKD_PORT_$z=$p CHUNKD_ARGS_$z='--advertise localhost:$p --scrub-rate 0'"
	start_chunkd "$z"
done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
qbd volume create vol1 --size 256M --replicas 3 >/dev/null
vid=$(qbd volume info vol1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
sock="$TMP/vol1.sock"
start_nbd vol1 "$sock" --zone a
uri=$(nbd_uri "$sock")

# nbdio OP FIRST COUNT OFFSET: OP (write|zero) the 4 KiB block at OFFSET
# in each of COUNT chunks from FIRST; written blocks carry their chunk
# number and offset.
nbdio() {
	"$PYNBD" - "$uri" "$@" <<'PY' || fail "nbd $2 of chunks $3.. failed"
import sys
import nbd
uri, op, first, count, off = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
h = nbd.NBD()
h.connect_uri(uri)
for ch in range(first, first + count):
    pos = ch * 1048576 + off
    if op == "write":
        h.pwrite(((b"%08d:%08d;" % (ch, off)) * 228)[:4096], pos)
    else:
        h.zero(4096, pos)
h.flush()
h.shutdown()
PY
}


wait_for "the writer's status at its own rate (4K)" 20 status_says 'd["resync_rate"] == 4096'

# Before: block 0 of the chunks to be zeroed, and of chunks nobody
# touches later (c keeps them current).
nbdio write 0 $ZEROED 0
nbdio write 200 50 0
wait_for "every replica current" 20 status_says 'all(r["stale_chunks"] == 0 and r["state"] == "up" for r in d["replicas"])'

stop_chunkd c
wait_for "the writer to see zone c down" 20 status_says 'z["c"]["state"] == "down"'
nbdio zero 0 $ZEROED 0
nbdio write 0 $STALE 8192
written=$((STALE * KiB))
log "zone c away: $STALE blocks written ($written bytes), $ZEROED zeroed"

start_chunkd c
wait_for "zone c back and behind by $STALE chunks" 30 \
	status_says 'z["c"]["state"] in ("up", "resync") and z["c"]["resync_total_chunks"] >= '$STALE
# At 4K/s a chunk (a block and its bitmap) every second or so: the copy
# must not be done 8 s later (an unlimited one takes well under one).
if poll_until 8 status_says 'z["c"]["stale_chunks"] == 0'; then
	fail "the resync finished within 8 s at 4K/s: the rate did not hold"
fi
slow=$(status_value 'z["c"]["resync_done_chunks"]')
log "at 4K/s: $slow of $STALE chunks copied after 8 s"

qbd volume set vol1 --rebuild-rate 0 >"$TMP/out" || fail "qbd volume set"
out_has 'unlimited'
wait_for "the writer to pick up the unlimited rate" 10 status_says 'd["resync_rate"] == 0'
wait_for "zone c current again" 30 status_says 'z["c"]["stale_chunks"] == 0 and z["c"]["state"] == "up"'
grep -q "rebuild rate 0 bytes/s (unlimited), the volume's setting" "$TMP/nbd-vol1.log" ||
	fail "the writer did not log the new rate"

# What crossed: each stale chunk holds one written block now (its block
# 0 was zeroed or never written), so a copy is a block and a 32-byte
# bitmap: about the bytes written, far from $STALE MiB.
copied=$(status_value 'z["c"]["resync_bytes"]')
pulled=$(status_value 'z["c"]["pulled_chunks"]')
log "copied to zone c: $copied bytes for $written bytes written ($pulled chunks pulled; a whole-chunk copy: $((STALE * MiB)))"
[ "$copied" -ge "$written" ] || fail "copied $copied bytes, less than the $written written"
[ "$copied" -le $((written * 3 / 2)) ] || fail "copied $copied bytes for $written written"
[ "$pulled" -ge $((STALE / 2)) ] ||
	fail "only $pulled chunks pulled replica to replica (host names not resolved?)"
grep -q 'not numeric\|does not resolve' "$TMP"/chunkd-*.log &&
	fail "a chunk server could not reach a peer by name"
for z in a b; do
	[ "$(status_value 'z["'$z'"]["resync_bytes"]')" = 0 ] || fail "zone $z was copied to"
done

# Identical replicas (every chunk's bytes and version): the blocks
# zeroed while c was away are holes on c, not its old data.
stop_pid "$NBD_PID"
expect_rc 0 qbd volume verify vol1
qbd volume set vol1 --rebuild-rate default >"$TMP/out" || fail "qbd volume set default"
out_has 'default'
[ -z "$(etcdctl_ get --keys-only "/qbd/volume-settings/$vid")" ] ||
	fail "the settings key is still there after 'default'"
log "PASS"
