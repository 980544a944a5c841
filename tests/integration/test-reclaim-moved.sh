#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Reclaim of a replica moved away (docs/design.md, "Reclaim"): volume v
# is written through qbd-nbd on zones a, b and c; zone c's chunk server
# stops; `qbd volume move v --from C --to D` is carried out by the
# attached writer without c (the record ends at configuration 2 with d
# in c's slot), so c is never told to keep a tombstone. When c comes
# back (with a short reclaim grace), its reclaim finds that v's
# configuration no longer lists it: `qbd node list` shows the space as
# orphaned, "not a member"; two scans the grace apart at the same
# configuration, it frees v's chunks and leaves a tombstone (logged,
# counted in its node record). Zones a, b and d reclaim nothing, and the
# data still reads back through the writer.
#
# QBD_TEST_RECLAIM_GRACE (default 6s) is the returning chunk server's
# --reclaim-grace.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdcopy >/dev/null 2>&1 || skip "nbdcopy not installed"
init_test "$@"
grace=${QBD_TEST_RECLAIM_GRACE:-6s}
MiB=1048576

# node_says ZONE EXPR: EXPR holds for ZONE's node record (n).
node_says() {
	qbd --json node list >"$TMP/nodes.json" 2>/dev/null && python3 -c 'import json,sys
n = [n for n in json.load(open(sys.argv[1])) if n["zone"] == sys.argv[2]][0]
sys.exit(0 if eval(sys.argv[3]) else 1)' "$TMP/nodes.json" "$1" "$2"
}

start_cluster a b c
expect_rc 0 qbd volume create v --size 64M
start_chunkd d
wait_for "4 chunk servers alive" 20 nodes_alive 4
nc=$(node_in c); nd=$(node_in d)
vid=$(qbd --json volume info v | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# 8 MiB on a, b and c.
start_nbd v "$TMP/v.sock" --zone a
w=$NBD_PID
uri=$(nbd_uri "$TMP/v.sock")
python3 -c 'import sys
sys.stdout.buffer.write(bytes((i * 13 + 7) % 251 + 1 for i in range(8 << 20)))' >"$TMP/data.bin"
nbdcopy "$TMP/data.bin" "$uri" || fail "writing v"
wait_for "8 MiB of v on each replica" 20 \
	info_says "all(n['held'] == 8 * $MiB and n['chunks'] == 8 for n in d['nodes'])"

# Zone c goes down; the writer moves its replica to d without it.
stop_chunkd c
expect_rc 0 qbd volume move v --from "$nc" --to "$nd"
wait_for "the record to name d in c's slot (configuration 2)" 90 \
	info_says "d['cfg'] == 2 and not d.get('change') and \
'$nd' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']]"
! grep -q "told to keep a tombstone" "$TMP/nbd-v.log" ||
	fail "the writer told someone to keep a tombstone with c down: $(grep tombstone "$TMP/nbd-v.log")"
log "v moved from c to d while c was down"

# Zone c comes back: v exists, but its configuration does not list c.
mport=$(free_port)
start_chunkd c --reclaim-grace "$grace" --metrics "127.0.0.1:$mport"
wait_for "zone c alive again" 20 nodes_alive 4
wait_for "zone c's node record with 8 MiB orphaned, not a member" 30 node_says c \
	"n['orphaned']['moved'] == 1 and n['orphaned']['moved_held'] == 8 * $MiB and \
n['orphaned']['volumes'] == 1 or n['orphaned']['reclaimed'] == 1"
grep -q "volume $vid: its configuration 2 (revision [0-9]*) does not list this node" \
	"$TMP/chunkd-c.log" || fail "zone c did not log v as not a member: $(grep reclaim "$TMP/chunkd-c.log")"
if node_says c "n['orphaned']['reclaimed'] == 0"; then
	qbd node list >"$TMP/nodes.out"
	grep -q "^orphaned on $nc (zone c): 8.0 MiB in 1 volume: 0 deleted, 1 not a member (moved away, 8.0 MiB)" \
		"$TMP/nodes.out" || fail "node list does not say c's 8 MiB is not a member: $(cat "$TMP/nodes.out")"
	log "node list: $(grep "^orphaned" "$TMP/nodes.out")"
fi

# Zone c reclaims v's chunks and keeps a tombstone.
wait_for "zone c to reclaim v" 60 node_says c \
	"n['orphaned']['reclaimed'] == 1 and n['orphaned']['reclaimed_bytes'] == 8 * $MiB and \
n['orphaned']['held'] == 0 and n['orphaned']['moved'] == 0 and n['held'] == 0"
grep -q "reclaimed volume $vid: 8 chunks, 8.0 MiB .* freed, a tombstone at epoch [0-9]* left; not a member at configuration 2 since" \
	"$TMP/chunkd-c.log" ||
	fail "zone c's log does not say it reclaimed v, leaving a tombstone: $(grep reclaim "$TMP/chunkd-c.log")"
log "$(grep "reclaimed volume" "$TMP/chunkd-c.log")"
[ "$(metric "$mport" qbd_chunkd_reclaimed_volumes_total)" = 1 ] &&
[ "$(metric "$mport" qbd_chunkd_orphaned_bytes)" = 0 ] ||
	fail "zone c's metrics: $(scrape "$mport" | grep -e reclaim -e orphan)"
qbd node list >"$TMP/nodes.out"
! grep -q "^orphaned on $nc" "$TMP/nodes.out" ||
	fail "node list still shows orphaned space on c: $(cat "$TMP/nodes.out")"
for z in a b d; do
	! grep -q "reclaimed volume\|does not list this node" "$TMP/chunkd-$z.log" ||
		fail "zone $z judged v: $(grep reclaim "$TMP/chunkd-$z.log")"
done

# The data reads back through the writer, from a, b and d.
nbdcopy "$uri" "$TMP/read.bin" || fail "reading v back"
head -c $((8 * MiB)) "$TMP/read.bin" | cmp - "$TMP/data.bin" || fail "v reads back wrong"
info_says "all(n['held'] == 8 * $MiB for n in d['nodes'])" ||
	fail "v's replicas: $(cat "$TMP/poll.json")"
stop_pid "$w"
log "PASS: c's replica of v reclaimed, a tombstone left; v reads back"
