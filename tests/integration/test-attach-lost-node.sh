#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A volume whose dead member's node record is gone, or whose address does
# not resolve, still attaches with the other replicas; the running writer
# finds the node when a chunk server registers it again, here or
# elsewhere (docs/design.md, "Quorum core and libqbd"). Three zones, one
# volume, data written and flushed (tests/helpers/nbd-stream), then:
#  1. chunk server c stopped and its node record deleted: qbd-nbd
#     attaches with a and b, says why c is down once, reads the data back
#     and writes; `qbd volume status` shows c's node unknown ("?") and the
#     volume degraded; `volume info` shows "?", `volume verify` names the
#     missing record (exit 4).
#  2. a chunk server for zone c on the same store but another port: it
#     registers the same node id; the same writer (no restart) finds it
#     there, resyncs it, and the volume becomes healthy.
#  3. zone b's record names a host that does not resolve: the attach goes
#     on with a and c; b's chunk server back under its real address is
#     found the same way.
#  4. two records gone: fewer than W replicas can promise, so the attach
#     is refused, saying why, before it takes an epoch; `volume delete`
#     warns for each replica without a record, and deletes.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"
LOG="$TMP/nbd-v.log"

# status_says RC EXPR: volume v's status exits RC and its --json output
# satisfies EXPR (Python, over d).
status_says() {
	_rc=0; qbd --json volume status v >"$TMP/poll.json" 2>/dev/null || _rc=$?
	[ "$_rc" -eq "$1" ] && python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$TMP/poll.json" "$2"
}
# node_of ZONE: the id of the node holding v's replica in ZONE.
node_of() {
	python3 -c 'import json,sys
print([n["id"] for n in json.load(open(sys.argv[1]))["nodes"] if n["zone"] == sys.argv[2]][0])' \
		"$TMP/info.json" "$1"
}
# record_addr_is ID ADDR: node ID's record in etcd names ADDR.
record_addr_is() {
	etcdctl_ get --print-value-only "/qbd/nodes/$1" >"$TMP/rec.json" &&
	python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["addr"] != sys.argv[2])' \
		"$TMP/rec.json" "$2"
}
# forget_node ID: delete node ID's record (the node is gone for good).
forget_node() {
	if [ -n "$(etcdctl_ get --keys-only "/qbd/nodes/$1")" ]; then
		log "node $1's record outlives its stopped chunk server (the lease held only /qbd/alive/): deleting it"
	else
		log "node $1's record went with its chunk server"
	fi
	etcdctl_ del "/qbd/nodes/$1" >/dev/null
	[ -z "$(etcdctl_ get --keys-only "/qbd/nodes/$1")" ] || fail "node $1's record is still there"
}
# log_count PATTERN: lines of the writers' log matching PATTERN.
log_count() { grep -cE -- "$1" "$LOG" || true; }

start_cluster a b c
expect_rc 0 qbd volume create v --size 64M
qbd --json volume info v >"$TMP/info.json"
vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/info.json")
nb=$(node_of b); nc=$(node_of c)

start_nbd v "$TMP/w1.sock" --zone a
w1=$NBD_PID
"$S" write "$(nbd_uri "$TMP/w1.sock")" "$TMP/acked1" 0 2000 11 || fail "first writes failed"
[ "$(printf 'flush\n' | "$S" cmd "$(nbd_uri "$TMP/w1.sock")")" = ok ] || fail "flush failed"
stop_pid "$w1"
log "2000 blocks written and flushed on three replicas"

# ---- 1: c's chunk server stopped, its node record gone ----
stop_chunkd c
forget_node "$nc"
start_nbd v "$TMP/w2.sock" --zone a
w2=$NBD_PID
uri2=$(nbd_uri "$TMP/w2.sock")
[ "$(log_count "replica [0-9] node $nc: no node record in etcd: it starts down")" -eq 1 ] ||
	fail "the writer did not say once why replica c is down: $(grep "$nc" "$LOG")"
"$S" verify "$uri2" "$TMP/acked1" 0 2000 11 || fail "data written before does not read back"
"$S" write "$uri2" "$TMP/acked2" 4000 1000 12 || fail "writes failed with c's record gone"
"$S" write "$uri2" "$TMP/acked3" 0 300 13 || fail "overwrites failed with c's record gone"
log "attached without c's node record: reads back, writes"

wait_for "volume v degraded, c down in the writer's status" 20 status_says 3 \
	'd["health"]=="degraded" and [r for r in d["replica_status"] if r["id"]=="'"$nc"'" and r.get("state")=="down"]'
expect_rc 3 qbd --json volume status v
json_check '[r for r in d["replica_status"] if r["id"]=="'"$nc"'" and not r["known"] and r["zone"]=="?" and r["addr"]=="?" and not r["usable"] and r["state"]=="down"] and d["usable"]==2'
expect_rc 3 qbd volume status v
grep -qE "^ +[0-9] +$nc +\? +\? +\? +\? +down" "$TMP/out" ||
	fail "status does not show c's node unknown: $(cat "$TMP/out")"
out_has '^Health: *degraded (2 of 3 replicas usable'
expect_rc 0 qbd volume info v
grep -qE "^ +[0-9] +$nc +\? +\? +\? " "$TMP/out" || fail "info does not show c unknown: $(cat "$TMP/out")"
expect_rc 4 qbd volume verify v
grep -q "node $nc): no node record in etcd" "$TMP/err" || fail "verify does not name the missing record: $(cat "$TMP/err")"
expect_rc 3 qbd status
log "status: c's node unknown, volume degraded; info and verify say so"

# ---- 2: c's store back on another port, found by the running writer ----
old_port=$CHUNKD_PORT_c
CHUNKD_PORT_c=$(free_port)
[ "$CHUNKD_PORT_c" != "$old_port" ] || CHUNKD_PORT_c=$(free_port)
start_chunkd c
wait_for "node $nc registered again at 127.0.0.1:$CHUNKD_PORT_c" 20 \
	record_addr_is "$nc" "127.0.0.1:$CHUNKD_PORT_c"
wait_for "the writer to find c at its new port" 30 \
	grep -qE "replica [0-9] node $nc: found at 127.0.0.1:$CHUNKD_PORT_c " "$LOG"
wait_for "volume v healthy (c resynced)" 120 health_is 0 healthy
pid_gone "$w2" && fail "the writer exited"
"$S" verify "$uri2" "$TMP/acked2" 4000 1000 12 || fail "writes made without c do not read back"
"$S" verify "$uri2" "$TMP/acked3" 0 300 13 || fail "overwrites made without c do not read back"
stop_pid "$w2"
expect_rc 0 qbd volume verify v
log "c registered again on port $CHUNKD_PORT_c (was $old_port): the running writer resynced it; replicas identical"

# ---- 3: b's record names a host that does not resolve ----
stop_chunkd b
etcdctl_ get --print-value-only "/qbd/nodes/$nb" |
	python3 -c 'import json,sys; r=json.load(sys.stdin); r["addr"]="no-such-host.invalid:1"; print(json.dumps(r))' \
	>"$TMP/bogus.json"
etcdctl_ put "/qbd/nodes/$nb" "$(cat "$TMP/bogus.json")" >/dev/null
record_addr_is "$nb" no-such-host.invalid:1 || fail "could not put b's bogus record"
start_nbd v "$TMP/w3.sock" --zone a
w3=$NBD_PID
uri3=$(nbd_uri "$TMP/w3.sock")
[ "$(log_count "replica [0-9] node $nb: cannot resolve 'no-such-host.invalid:1'.*: it starts down")" -eq 1 ] ||
	fail "the writer did not say once why replica b is down: $(grep "$nb" "$LOG")"
"$S" verify "$uri3" "$TMP/acked2" 4000 1000 12 || fail "data does not read back with b unresolvable"
"$S" write "$uri3" "$TMP/acked4" 8000 500 14 || fail "writes failed with b unresolvable"
wait_for "volume v degraded with b unresolvable" 20 health_is 3 degraded
start_chunkd b
wait_for "the writer to find b at its real address" 30 \
	grep -qE "replica [0-9] node $nb: found at 127.0.0.1:$CHUNKD_PORT_b " "$LOG"
wait_for "volume v healthy (b resynced)" 120 health_is 0 healthy
[ "$(log_count "cannot resolve 'no-such-host.invalid:1'")" -eq 1 ] ||
	fail "the unresolvable address was not said exactly once: $(grep no-such-host "$LOG")"
"$S" verify "$uri3" "$TMP/acked4" 8000 500 14 || fail "writes made without b do not read back"
stop_pid "$w3"
expect_rc 0 qbd volume verify v
log "b's name did not resolve: attached with a and c; b found once registered"

# ---- 4: two records gone: refused, and no epoch taken ----
epoch0=$(etcdctl_ get --print-value-only "/qbd/epochs/$vid")
stop_chunkd b
stop_chunkd c
forget_node "$nb"
forget_node "$nc"
rc=0
timeout 60 qbd-nbd --etcd "$QBD_ETCD" --volume v --socket "$TMP/no.sock" >"$TMP/no.out" 2>&1 ||
	rc=$?
[ $rc -ne 0 ] || fail "attached with one replica of three"
[ "$(etcdctl_ get --print-value-only "/qbd/epochs/$vid")" = "$epoch0" ] ||
	fail "a refused attach took an epoch: $(cat "$TMP/no.out")"
grep -q "only 1 of 3 replicas have a node record with an address that resolves, need 2" "$TMP/no.out" ||
	fail "the refusal does not say why: $(cat "$TMP/no.out")"
expect_rc 0 qbd volume delete v
[ "$(grep -c 'not cleaned: no node record in etcd' "$TMP/err")" -eq 2 ] ||
	fail "delete does not warn for both replicas without a record: $(cat "$TMP/err")"
log "two records gone: attach refused (epoch $epoch0 kept); delete warns twice and deletes"
log "PASS"
