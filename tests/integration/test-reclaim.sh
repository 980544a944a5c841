#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Reclaim: a volume deleted while one of its chunk servers was down leaves
# its chunks there (`qbd volume delete` warns); when that chunk server is
# back, `qbd node list` shows the space as orphaned, and once the volume
# has been seen absent from etcd for the grace the chunk server deletes
# the chunks itself (logged, counted in its node record and metrics). A
# second volume created on the same nodes in the meantime, between the
# chunk server's scans, is not touched: its data reads back and its
# replicas stay identical.
#
# QBD_TEST_RECLAIM_GRACE (default 20s) is the returning chunk server's
# --reclaim-grace; with 0 (reclaim off) the test must fail.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v nbdcopy >/dev/null || skip "nbdcopy not installed"
grace=${QBD_TEST_RECLAIM_GRACE:-20s}
MiB=1048576

start_etcd
for z in a b c; do start_chunkd "$z" --scrub-rate 0; done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
node_c=$(qbd node list --json |
	python3 -c 'import json,sys; print([n["id"] for n in json.load(sys.stdin) if n["zone"] == "c"][0])')

# vol_check VOL EXPR: EXPR holds for `qbd volume info VOL --json` (d).
vol_check() {
	qbd volume info "$1" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if eval(sys.argv[1]) else 1)' "$2"
}
# node_c_check EXPR: EXPR holds for zone c's node record (n).
node_c_check() {
	qbd node list --json | python3 -c '
import json, sys
n = [n for n in json.load(sys.stdin) if n["zone"] == "c"][0]
sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"
}
# data FILE MIB SEED: MIB MiB of bytes no other seed gives.
data() {
	python3 -c 'import sys; n, s = int(sys.argv[2]), int(sys.argv[3])
sys.stdout.buffer.write(bytes((i * 13 + s) % 251 + 1 for i in range(n << 20)))' \
		"$1" "$2" "$3" >"$1"
}

# vol1: 8 MiB on each of the three chunk servers.
qbd volume create vol1 --size 64M --replicas 3 >/dev/null
vid1=$(qbd volume info vol1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
start_nbd vol1 "$TMP/vol1.sock"
data "$TMP/data1.bin" 8 7
nbdcopy "$TMP/data1.bin" "$(nbd_uri "$TMP/vol1.sock")" || fail "writing vol1"
wait_for "8 MiB of vol1 on each replica" 20 \
	vol_check vol1 "all(n['held'] == 8 * $MiB and n['chunks'] == 8 for n in d['nodes'])"
stop_pid "$NBD_PID"

# Zone c goes down; vol1 is deleted without it.
stop_chunkd c
expect_rc 0 qbd volume delete vol1
grep -q "replica on node $node_c not cleaned" "$TMP/err" ||
	fail "volume delete did not warn about zone c: $(cat "$TMP/err")"
log "vol1 ($vid1) deleted while zone c was down: $(cat "$TMP/err")"

# Zone c comes back: its 8 MiB of vol1 show as orphaned.
mport=$(free_port)
start_chunkd c --scrub-rate 0 --reclaim-grace "$grace" --metrics "127.0.0.1:$mport"
wait_for "zone c alive again" 20 nodes_alive 3
wait_for "zone c's node record with 8 MiB orphaned" 30 \
	node_c_check "n['orphaned']['held'] == 8 * $MiB and n['orphaned']['volumes'] == 1"
# (the text: zone c's row under ORPHANED, a right-aligned column)
qbd node list >"$TMP/nodes.out"
python3 - "$TMP/nodes.out" <<'PY' || fail "node list does not show zone c's 8 MiB orphaned: $(cat "$TMP/nodes.out")"
import sys
head, *rows = open(sys.argv[1]).read().splitlines()
at = head.index("ORPHANED")
row = [r for r in rows if r.split()[1] == "c"][0]
sys.exit(0 if row[at - 2:at + 8].strip() == "8.0 MiB" else 1)
PY
grep -q "volume $vid1 is not in etcd" "$TMP/chunkd-c.log" ||
	fail "zone c did not log the orphaned volume"
log "node list: $(grep -e NODE -e ' c  ' "$TMP/nodes.out")"

# Meanwhile, between zone c's scans, vol2 is created on the same nodes
# and written.
qbd volume create vol2 --size 64M --replicas 3 >/dev/null
vol_check vol2 "'$node_c' in [n['id'] for n in d['nodes']]" || fail "vol2 is not on zone c"
start_nbd vol2 "$TMP/vol2.sock"
data "$TMP/data2.bin" 4 11
nbdcopy "$TMP/data2.bin" "$(nbd_uri "$TMP/vol2.sock")" || fail "writing vol2"
wait_for "4 MiB of vol2 on each replica" 20 \
	vol_check vol2 "all(n['held'] == 4 * $MiB and n['chunks'] == 4 for n in d['nodes'])"
node_c_check "n['orphaned']['reclaimed'] == 0" ||
	fail "zone c reclaimed vol1 before vol2 was written: grace $grace is too short here"
log "vol2 written while zone c still holds vol1's chunks"

# Zone c reclaims vol1's chunks, and only those.
wait_for "zone c to reclaim vol1" 120 node_c_check \
	"n['orphaned']['reclaimed'] == 1 and n['orphaned']['reclaimed_bytes'] == 8 * $MiB and \
n['orphaned']['held'] == 0 and n['held'] == 4 * $MiB"
grep -q "reclaimed volume $vid1: 8 chunks, 8.0 MiB .* freed, a tombstone at epoch" \
	"$TMP/chunkd-c.log" ||
	fail "zone c's log does not say it reclaimed vol1, leaving a tombstone: $(grep reclaim "$TMP/chunkd-c.log")"
log "$(grep "reclaimed volume" "$TMP/chunkd-c.log")"
scans=$(metric "$mport" qbd_chunkd_reclaim_scans_total)
[ "$(metric "$mport" qbd_chunkd_reclaimed_volumes_total)" = 1 ] &&
[ "$(metric "$mport" qbd_chunkd_reclaimed_bytes_total)" = $((8 * MiB)) ] &&
[ "$(metric "$mport" qbd_chunkd_orphaned_bytes)" = 0 ] ||
	fail "zone c's metrics: $(scrape "$mport" | grep -e reclaim -e orphan)"
for z in a b; do
	! grep -q "reclaimed volume" "$TMP/chunkd-$z.log" || fail "zone $z reclaimed something"
done

# vol2 is whole: zone c holds its 4 MiB, it reads back, and every replica
# (zone c's too) has the same chunks.
vol_check vol2 "all(n['held'] == 4 * $MiB and n['chunks'] == 4 for n in d['nodes'])" ||
	fail "vol2's space changed: $(qbd volume info vol2)"
nbdcopy "$(nbd_uri "$TMP/vol2.sock")" "$TMP/read2.bin" || fail "reading vol2 back"
head -c $((4 * MiB)) "$TMP/read2.bin" | cmp - "$TMP/data2.bin" || fail "vol2 reads back wrong"
stop_pid "$NBD_PID"
expect_rc 0 qbd volume verify vol2
# The tombstone left for vol1 is nothing later scans count as orphaned.
scans_from() { [ "$(metric "$mport" qbd_chunkd_reclaim_scans_total)" -ge "$1" ]; }
wait_for "two more scans of zone c" 60 scans_from $((scans + 2))
[ "$(grep -c "volume $vid1 is not in etcd" "$TMP/chunkd-c.log")" = 1 ] ||
	fail "zone c saw vol1 absent again after its reclaim: $(grep "$vid1" "$TMP/chunkd-c.log")"
log "PASS"
