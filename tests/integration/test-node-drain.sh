#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `qbd node drain` empties a live node: zones a, b, c and a second node in
# zone c; two volumes, both attached through qbd-nbd and written. Draining
# the first node of zone c moves both volumes' replicas to the second one
# (the same zone: placement's first choice), while the drained node serves
# as a source; `qbd node list` shows it draining, then empty; every block
# reads back and `qbd volume verify` finds each volume's replicas
# identical. A drained node takes no new volume; undrain puts it back in
# service.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"

nodes_json() {
	qbd --json node list >"$TMP/nodes.json" 2>/dev/null
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); d = d["nodes"] if isinstance(d, dict) else d
json.dump(d, open(sys.argv[1], "w"))' "$TMP/nodes.json"
}
node_in() { # ZONE: the first node of the zone, by id
	nodes_json && python3 -c 'import json,sys
print(sorted(n["id"] for n in json.load(open(sys.argv[1])) if n["zone"] == sys.argv[2])[0])' \
		"$TMP/nodes.json" "$1"
}
state_is() { # NODE STATE
	nodes_json && python3 -c 'import json,sys
s = [n.get("state") for n in json.load(open(sys.argv[1])) if n["id"] == sys.argv[2]]
sys.exit(0 if s and s[0] == sys.argv[3] else 1)' "$TMP/nodes.json" "$1" "$2"
}
on_node() { # VOLUME NODE: the volume has a replica on NODE
	qbd --json volume info "$1" >"$TMP/vi.json" 2>/dev/null && python3 -c 'import json,sys
sys.exit(0 if sys.argv[2] in [n["id"] for n in json.load(open(sys.argv[1]))["nodes"]] else 1)' \
		"$TMP/vi.json" "$2"
}
moved_off() { ! on_node v1 "$1" && ! on_node v2 "$1"; }

start_cluster a b c
expect_rc 0 qbd volume create v1 --size 64M
expect_rc 0 qbd volume create v2 --size 32M
CHUNKD_PORT_c2=$(free_port)
start_chunkd c2 --zone c
wait_for "4 chunk servers alive" 20 nodes_alive 4
nodes_json
x=$(python3 -c 'import json,sys
v = json.load(open(sys.argv[1]))
print([n["id"] for n in v["nodes"] if n["zone"] == "c"][0])' "$(qbd --json volume info v1 >"$TMP/v1.json"; echo "$TMP/v1.json")")
on_node v2 "$x" || fail "v1 and v2 do not share zone c's node $x"

start_nbd v1 "$TMP/v1.sock" --zone a
p1=$NBD_PID
start_nbd v2 "$TMP/v2.sock" --zone a
p2=$NBD_PID
"$S" write "$(nbd_uri "$TMP/v1.sock")" "$TMP/a1" 0 4000 41 || fail "v1 writes failed"
"$S" write "$(nbd_uri "$TMP/v2.sock")" "$TMP/a2" 0 2000 42 || fail "v2 writes failed"

expect_rc 0 qbd node drain "$x"
state_is "$x" draining || fail "node list does not show $x draining: $(cat "$TMP/nodes.json")"
# Placement avoids a draining node.
expect_rc 0 qbd volume create v3 --size 16M
on_node v3 "$x" && fail "a new volume was placed on draining node $x"
expect_rc 0 qbd volume delete v3
# Writes go on during the drain.
"$S" write "$(nbd_uri "$TMP/v1.sock")" "$TMP/a1b" 8000 2000 43 || fail "v1 writes during the drain failed"
wait_for "both volumes moved off $x" 90 moved_off "$x"
wait_for "node list to show $x empty" 30 state_is "$x" empty
log "drained: both volumes moved off $x, which shows empty"

"$S" verify "$(nbd_uri "$TMP/v1.sock")" "$TMP/a1" 0 4000 41 || fail "v1 does not read back"
"$S" verify "$(nbd_uri "$TMP/v1.sock")" "$TMP/a1b" 8000 2000 43 || fail "v1 does not read back"
"$S" verify "$(nbd_uri "$TMP/v2.sock")" "$TMP/a2" 0 2000 42 || fail "v2 does not read back"
for s in v1 v2; do
	[ "$(printf 'flush\n' | "$S" cmd "$(nbd_uri "$TMP/$s.sock")")" = ok ] || fail "flush of $s failed"
done
stop_pid "$p1"
stop_pid "$p2"
expect_rc 0 qbd volume verify v1
expect_rc 0 qbd volume verify v2
expect_rc 0 qbd node undrain "$x"
state_is "$x" in || fail "undrain did not put $x back in service: $(cat "$TMP/nodes.json")"
log "PASS: drain moved v1 and v2 off $x under writes"
