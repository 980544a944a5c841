#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The writer's warning when a leaving replica's TOMBSTONE cannot be sent
# before the close (replicator/client/change.c, loop_leave;
# docs/protocol.md section 11): the replica in zone c moves to zone d
# while a client writes 1 MiB blocks without a pause. c is reached
# through a TCP proxy (tcp-stall-proxy.py, its --advertise address), and
# the writer's etcd through a proxy that holds each write of the
# volume's record back 2 s (etcd-delay-proxy.py). Once the writer has
# written the record's joint step, the proxy stops reading what the
# writer sends c: its socket fills with writes while the final step is
# held back, so at the leave, about 2 s later, c's connection is up (the
# writer drops a replica only when a request is 10 s old) and the
# TOMBSTONE stays queued behind the writes. The writer must say so (a
# warning naming c's node, "its socket stayed full") and not claim c was
# told; the move completes. A run in which c's connection was down at
# the leave checked nothing: it fails, and says so.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
need_pynbd
D=$(dirname "$0")

start_etcd
start_chunkd a
start_chunkd b
# c, advertised at the proxy's port.
CHUNKD_PORT_c=$(free_port)
python3 "$D/tcp-stall-proxy.py" "$TMP/stall.port" "$CHUNKD_PORT_c" 2>>"$TMP/stall.err" &
STALL_PID=$!
track_pid $STALL_PID tcp-stall-proxy
wait_for "the stall proxy's port" 10 test -s "$TMP/stall.port"
# shellcheck disable=SC2034 # read by start_chunkd
CHUNKD_ARGS_c="--advertise 127.0.0.1:$(cat "$TMP/stall.port")"
start_chunkd c
wait_for "3 chunk servers alive" 20 nodes_alive 3
expect_rc 0 qbd volume create v --size 256M
nc=$(node_in c)
start_chunkd d
wait_for "4 chunk servers alive" 20 nodes_alive 4
nd=$(node_in d)

python3 "$D/etcd-delay-proxy.py" "$TMP/delay.port" "$QBD_ETCD" v 2 2>>"$TMP/delay.err" &
DELAY_PID=$!
track_pid $DELAY_PID etcd-delay-proxy
wait_for "the etcd proxy's port" 10 test -s "$TMP/delay.port"
QBD_ETCD="http://127.0.0.1:$(cat "$TMP/delay.port")" start_nbd v "$TMP/w.sock" --zone a
uri=$(nbd_uri "$TMP/w.sock")

# The client: 1 MiB writes over the volume until told to stop.
start_nbd_writes "$uri" $((1 << 20)) 0 256
sleep 1

expect_rc 0 qbd volume move v --from "$nc" --to "$nd"
wait_for "the record's joint step" 60 grep -q "configuration: joint" "$TMP/nbd-v.log"
kill -USR1 $STALL_PID
log "c's proxy stops reading from the writer"
wait_for "c's slot to leave" 30 grep -q "has left" "$TMP/nbd-v.log"
# The premise: c's connection was up at the leave. The writer then says
# one of two things about the tombstone (within its 500 ms wait); if it
# says neither, it had dropped c before (its lines about c since the
# joint step say why).
if ! poll_until 5 grep -q "node $nc: its tombstone could not be sent\|node $nc told to keep a tombstone" \
	"$TMP/nbd-v.log"; then
	sed -n '/configuration: joint/,/has left/p' "$TMP/nbd-v.log" | grep "$nc" >&2 || :
	fail "c's connection was down at the leave: the writer had no tombstone to send c, so this run checked nothing"
fi
wait_for "the record to name d in c's slot" 30 \
	info_says "'$nd' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']]"
touch "$TMP/client.stop"
wait_pid "$CLIENT_PID" 0 60
log "the client wrote $(cat "$TMP/client.out") MiB"
grep "its tombstone\|keep a tombstone" "$TMP/nbd-v.log" >&2
grep -q "node $nc: its tombstone could not be sent (its socket stayed full)" "$TMP/nbd-v.log" ||
	fail "no warning that c's tombstone stayed queued"
grep -q "node $nc told to keep a tombstone" "$TMP/nbd-v.log" &&
	fail "the writer says c was told to keep a tombstone"
kill -USR2 $STALL_PID
stop_pid "$NBD_PID"
log "PASS"
