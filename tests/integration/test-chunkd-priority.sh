#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Chunk servers put background copies behind client I/O (admit.c).
#
# Three chunk servers with their metrics; a volume of three replicas
# written whole over 48 chunks. Zone c's chunk server is stopped, the 48
# chunks written again (c is stale for each), then a client writes 4 KiB
# blocks at queue depth 1 without a pause while c comes back and is
# resynced (PULLs: sparse reads at a and b, RESYNC writes at c):
#
# - the chunk servers' qbd_chunkd_background_waited_total counts
#   background requests that waited behind the client's writes, and the
#   wait histogram counts as many admitted;
# - none is left waiting once the resync is done;
# - SIGTERM to zone c's chunk server in the middle of a second such
#   resync, once requests waited there, drains it and it exits 0;
# - `qbd volume verify` finds the three replicas identical.
#
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
need_pynbd

CHUNKS=48

start_etcd
for z in a b c; do
	eval "MPORT_$z=$(free_port)"
	eval "CHUNKD_ARGS_$z='--scrub-rate 0 --metrics 127.0.0.1:'\$MPORT_$z"
	start_chunkd "$z"
done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
qbd volume create vol1 --size 128M --replicas 3 >/dev/null
vid=$(qbd volume info vol1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
sock="$TMP/vol1.sock"
start_nbd vol1 "$sock" --zone a
uri=$(nbd_uri "$sock")

# fill SEED: write the first $CHUNKS chunks whole (1 MiB writes).
fill() {
	"$PYNBD" - "$uri" "$1" "$CHUNKS" <<'PY' || fail "nbd fill failed"
import sys
import nbd
uri, seed, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
h = nbd.NBD()
h.connect_uri(uri)
for ch in range(n):
    h.pwrite(((b"%s:%08d;" % (seed, ch)) * (1 << 17))[:1 << 20], ch << 20)
h.flush()
h.shutdown()
PY
}

# start_client: a client writing 4 KiB blocks at queue depth 1, past the
# chunks being copied (lib.sh, start_nbd_writes).
start_client() { start_nbd_writes "$uri" 4096 $((64 << 20)) 4096; }

# total NAME: the sum of metric NAME over the three chunk servers.
total() {
	_t=0
	for z in a b c; do
		eval "_p=\$MPORT_$z"
		_v=$(metric "$_p" "$1" 2>/dev/null | cut -d. -f1)
		_t=$((_t + ${_v:-0}))
	done
	echo "$_t"
}

fill one
wait_for "every replica current" 20 status_says 'all(r["stale_chunks"] == 0 and r["state"] == "up" for r in d["replicas"])'
stop_chunkd c
wait_for "the writer to see zone c down" 20 status_says 'z["c"]["state"] == "down"'
fill two
log "zone c away: $CHUNKS chunks written whole"

start_client
sleep 1
before=$(total qbd_chunkd_background_waited_total)
start_chunkd c
wait_for "zone c back and resynced" 60 \
	status_says 'z["c"]["state"] == "up" and z["c"]["stale_chunks"] == 0'
touch "$TMP/client.stop"
wait_pid "$CLIENT_PID" 0 30
log "client wrote $(cat "$TMP/client.out") blocks at QD1 during the resync"

sleep 1.5 # the metrics are rendered once a second
waited=$(total qbd_chunkd_background_waited_total)
admitted=$(total qbd_chunkd_background_wait_seconds_count)
waiting=$(total qbd_chunkd_background_waiting)
for z in a b c; do
	eval "_p=\$MPORT_$z"
	log "zone $z: $(metric "$_p" qbd_chunkd_background_waited_total) background requests waited" \
	    "($(metric "$_p" qbd_chunkd_background_wait_seconds_sum) s in all)"
done
[ "$waited" -gt "$before" ] ||
	fail "no background request waited behind the client's writes ($waited, $before before the resync)"
[ "$waiting" -eq 0 ] || fail "$waiting background requests still waiting after the resync"
[ "$admitted" -gt 0 ] && [ "$admitted" -le "$waited" ] ||
	fail "$waited waited but $admitted were admitted"

# SIGTERM in the middle of a resync, once requests have waited: the
# chunk server drains and exits 0 (under the sanitizers, with nothing
# leaked), then comes back and is resynced.
stop_chunkd c
wait_for "the writer to see zone c down" 20 status_says 'z["c"]["state"] == "down"'
fill three
start_client
start_chunkd c
c_waited() {
	_w=$(metric "$MPORT_c" qbd_chunkd_background_waited_total 2>/dev/null)
	[ "${_w:-0}" -gt 0 ]
}
if poll_until 30 c_waited; then
	log "zone c: SIGTERM after $(metric "$MPORT_c" qbd_chunkd_background_waited_total) requests waited"
else
	log "zone c: no request waited there this time; SIGTERM all the same"
fi
stop_chunkd c
start_chunkd c
wait_for "zone c back and resynced again" 60 \
	status_says 'z["c"]["state"] == "up" and z["c"]["stale_chunks"] == 0'
touch "$TMP/client.stop"
wait_pid "$CLIENT_PID" 0 30

stop_pid "$NBD_PID"
expect_rc 0 qbd volume verify vol1
log "PASS"
