#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The CLI verbs that ask for membership changes, against a real etcd with
# fake chunk-server records (put with etcdctl): `qbd node remove|drain|
# undrain` and `qbd volume move`, their outputs, errors and exit
# statuses, the node states and change requests they leave in etcd, the
# STATE column of `qbd node list` (in, draining, removed, empty), and the
# configuration, change and request `qbd volume info|status` show. The
# writer that carries the changes out is played by etcdctl (it rewrites
# the volume record as it would). Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
init_test "$@"

start_etcd
fake_node() { # id zone
	etcdctl_ put "/qbd/nodes/$1" \
		"{\"id\":\"$1\",\"addr\":\"127.0.0.1:$(free_port)\",\"zone\":\"$2\",\"capacity\":1073741824,\"used\":0,\"chunk_size\":1048576}" >/dev/null
	etcdctl_ put "/qbd/alive/$1" 1 >/dev/null
}
etcdctl_ put /qbd/cluster '{"id":"00000000c0ffee00"}' >/dev/null
A1=00000000000000a1 B1=00000000000000b1 B2=00000000000000b2
C1=00000000000000c1 D1=00000000000000d1 B3=00000000000000b3
fake_node $A1 a; fake_node $B1 b; fake_node $B2 b; fake_node $C1 c; fake_node $D1 d

# Equal use everywhere: placement takes the lowest ids, a1 b1 c1 and a1 b1.
expect_rc 0 qbd volume create v1 --size 64M
expect_rc 0 qbd volume create v2 --size 64M --replicas 2
qbd volume info v1 --json >"$TMP/v1.json"
V1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/v1.json")
qbd volume info v2 --json >"$TMP/v2.json"
V2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/v2.json")
expect_rc 0 qbd volume info v1 --json
json_check '[n["id"] for n in d["nodes"]]==["'$A1'","'$B1'","'$C1'"] and d["cfg"]==1 and d["change"] is None and d["change_request"] is None'
out_json_v1() { etcdctl_ get --print-value-only "/qbd/volumes/v1"; }

# node list: every node in service
expect_rc 0 qbd node list
head -1 "$TMP/out" | grep -q ' UP  *STATE ' || fail "node list header: $(head -1 "$TMP/out")"
[ "$(grep -c ' up  *in ' "$TMP/out")" -eq 5 ] || fail "node list: 5 nodes up, in: $(cat "$TMP/out")"
expect_rc 0 qbd node list --json
json_check 'all(n["state"]=="in" for n in d) and {n["id"]:n["replicas"] for n in d}=={"'$A1'":2,"'$B1'":2,"'$C1'":1,"'$D1'":0,"'$B2'":0}'

# remove, while the node is up: refused without --yes (stdin is no terminal)
expect_rc 1 qbd node remove $B1 </dev/null
grep -q "node $B1 is up.*--yes" "$TMP/err" || fail "remove of a live node: $(cat "$TMP/err")"
[ -z "$(etcdctl_ get --prefix --keys-only /qbd/node-state/)$(etcdctl_ get --prefix --keys-only /qbd/changes/)" ] ||
	fail "a refused remove changed etcd"

# b1 dies for good: remove it. Same zone first: b2 takes both replicas.
etcdctl_ del "/qbd/alive/$B1" >/dev/null
expect_rc 0 qbd node remove b1
out_has "^node $B1: removed"
out_has "^volume v1: replica 1 on node $B1 (zone b) -> node $B2 (zone b): change requested"
out_has "^volume v2: replica 1 on node $B1 (zone b) -> node $B2 (zone b): change requested"
out_has "^2 changes requested; it is carried out by the volume's writer or qbd-managerd"
[ "$(etcdctl_ get --print-value-only /qbd/node-state/$B1)" = removed ] || fail "b1 not marked removed"
etcdctl_ get --print-value-only "/qbd/changes/$V1" >"$TMP/out"
json_check 'd["kind"]=="replace" and d["from"]=="'$B1'" and d["to"]=="'$B2'" and d["reason"]=="remove" and d["created"]>0'

# node list: removed (and down: exit 3)
expect_rc 3 qbd node list
grep -q "^$B1 .* down  *removed " "$TMP/out" || fail "node list: b1 removed: $(cat "$TMP/out")"
expect_rc 3 qbd node list --json
json_check '[n["state"] for n in d if n["id"]=="'$B1'"]==["removed"]'

# info and status show the request
expect_rc 0 qbd volume info v1
out_has '^Configuration: 1$'
out_has "^Requested:     replica on node $B1 -> node $B2 (zone b), reason remove, at .*; it is carried out by the volume's writer or qbd-managerd"
expect_rc 3 qbd volume status v1 --json
json_check 'd["cfg"]==1 and d["change"] is None and d["change_request"]["from"]=="'$B1'" and d["change_request"]["to"]=="'$B2'" and d["change_request"]["reason"]=="remove"'

# again: nothing new to ask
expect_rc 0 qbd node remove $B1
out_has "volume v1: replica 1 on node $B1: a change is requested already (reason remove)"
! grep -q 'change requested$' "$TMP/out" || fail "a second remove wrote requests: $(cat "$TMP/out")"

# drain c1 while v1 has another change requested: refused, nothing changed
expect_rc 1 qbd node drain $C1
grep -q "volume v1: another change is requested (replica on node $B1, reason remove); only one at a time" "$TMP/err" ||
	fail "drain over a pending request: $(cat "$TMP/err")"
grep -q "nothing was changed" "$TMP/err" || fail "drain refusal: $(cat "$TMP/err")"
[ -z "$(etcdctl_ get --keys-only /qbd/node-state/$C1)" ] || fail "a refused drain set c1's state"

# The writers carry the removal out (played here): b2 takes slot 1, cfg 2.
complete() { # volume json-edit (python over r)
	etcdctl_ put "/qbd/volumes/$1" "$(etcdctl_ get --print-value-only "/qbd/volumes/$1" |
		python3 -c 'import json,sys; r=json.load(sys.stdin); '"$2"'; print(json.dumps(r))')" >/dev/null
}
complete v1 'r["nodes"][1]="'$B2'"; r["cfg"]=2'
complete v2 'r["nodes"][1]="'$B2'"; r["cfg"]=2'
etcdctl_ del "/qbd/changes/$V1" >/dev/null
etcdctl_ del "/qbd/changes/$V2" >/dev/null

# drain c1: zone c has no other node, d is unused (node list exits 3
# from here on: b1 is down)
expect_rc 0 qbd node drain $C1
out_has "^node $C1: draining"
out_has "^volume v1: replica 2 on node $C1 (zone c) -> node $D1 (zone d): change requested"
out_has "^1 change requested; it is carried out by the volume's writer or qbd-managerd"
expect_rc 3 qbd node list
grep -q "^$C1 .* up  *draining " "$TMP/out" || fail "node list: c1 draining: $(cat "$TMP/out")"

# The writer starts it: learner d1 for slot 2
etcdctl_ del "/qbd/changes/$V1" >/dev/null
complete v1 'r["change"]={"phase":"learner","slot":2,"node":"'$D1'","reason":"drain","started":1765000000}'
expect_rc 0 qbd volume info v1
out_has '^Configuration: 2$'
out_has "^Change:        learner: replica 2, node $C1 -> node $D1 (zone d), reason drain, since "
expect_rc 0 qbd volume status v1 --json
json_check 'd["cfg"]==2 and d["change"]=={"phase":"learner","slot":2,"from":"'$C1'","to":"'$D1'","to_zone":"d","reason":"drain","started":1765000000} and d["change_request"] is None'
expect_rc 0 qbd volume status v1
out_has "^Change:        learner: replica 2"
# draining again while it moves: nothing new
expect_rc 0 qbd node drain $C1
out_has "volume v1: replica 2 on node $C1 is being replaced already (learner, by node $D1)"

# and completes it: c1 holds nothing, "empty"
complete v1 'r["nodes"][2]="'$D1'"; r["cfg"]=3; del r["change"]'
expect_rc 3 qbd node list
grep -q "^$C1 .* up  *empty " "$TMP/out" || fail "node list: c1 empty: $(cat "$TMP/out")"
expect_rc 3 qbd node list --json
json_check '[(n["state"],n["replicas"]) for n in d if n["id"]=="'$C1'"]==[("empty",0)]'

# undrain: back in service; a removed node cannot come back, nor drain
expect_rc 0 qbd node undrain $C1
out_has "^node $C1: in service"
[ -z "$(etcdctl_ get --keys-only /qbd/node-state/$C1)" ] || fail "undrain left c1's state"
expect_rc 0 qbd node undrain $C1
out_has "is in service already"
expect_rc 1 qbd node undrain $B1
grep -q "node $B1 was removed for good" "$TMP/err" || fail "undrain of removed: $(cat "$TMP/err")"
expect_rc 1 qbd node drain $B1
grep -q "node $B1 is removed: it cannot be drained" "$TMP/err" || fail "drain of removed: $(cat "$TMP/err")"

# undrain withdraws a drain request no writer has started
expect_rc 0 qbd node drain $A1
out_has "^2 changes requested"
expect_rc 0 qbd node undrain $A1
out_has "^volume v1: drain request withdrawn"
out_has "^volume v2: drain request withdrawn"
[ -z "$(etcdctl_ get --prefix --keys-only /qbd/changes/)" ] || fail "undrain left requests"

# volume move: v2 is on a1 and b2 now; the address names a node too
ADDR_C1=$(etcdctl_ get --print-value-only "/qbd/nodes/$C1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["addr"])')
expect_rc 0 qbd volume move v2 --from $A1 --to "$ADDR_C1"
out_has "^volume v2: replica 0 on node $A1 (zone a) -> node $C1 (zone c): change requested"
out_has "it is carried out by the volume's writer or qbd-managerd"
etcdctl_ get --print-value-only "/qbd/changes/$V2" >"$TMP/out"
json_check 'd["from"]=="'$A1'" and d["to"]=="'$C1'" and d["reason"]=="move"'
expect_rc 1 qbd volume move v2 --from $B2
grep -q "another change is requested" "$TMP/err" || fail "second move: $(cat "$TMP/err")"
etcdctl_ del "/qbd/changes/$V2" >/dev/null
# placement chooses without --to: zones c and d unused, both empty: c1
expect_rc 0 qbd volume move v2 --from $A1
out_has "-> node $C1 (zone c): change requested"
etcdctl_ del "/qbd/changes/$V2" >/dev/null
# --to refused: a zone another replica uses, a member, a removed node,
# an unknown node; --from a node without a replica; no such volume
fake_node $B3 b
expect_rc 1 qbd volume move v2 --from $A1 --to $B3
grep -q "replica 0 cannot go there: node $B3: zone b holds replica 1 already" "$TMP/err" || fail "--to same zone: $(cat "$TMP/err")"
expect_rc 1 qbd volume move v2 --from $A1 --to $B2
grep -q "node $B2: holds replica 1" "$TMP/err" || fail "--to member: $(cat "$TMP/err")"
expect_rc 1 qbd volume move v2 --from $A1 --to $B1
grep -q "node $B1: removed" "$TMP/err" || fail "--to removed: $(cat "$TMP/err")"
expect_rc 1 qbd volume move v2 --from $A1 --to 00000000000000ee
grep -q "no node '00000000000000ee'" "$TMP/err" || fail "--to unknown: $(cat "$TMP/err")"
expect_rc 1 qbd volume move v2 --from $D1
grep -q "volume v2 has no replica on node $D1" "$TMP/err" || fail "--from non-member: $(cat "$TMP/err")"
expect_rc 1 qbd volume move nope --from $A1
grep -q "no such volume" "$TMP/err" || fail "move of unknown volume: $(cat "$TMP/err")"
[ -z "$(etcdctl_ get --prefix --keys-only /qbd/changes/)" ] || fail "a refused move wrote a request"

# No room anywhere: v1 is on a1 b2 d1; c1 draining, zone d has no other
# node. Draining d1 is refused, naming each zone and why; nothing changes.
expect_rc 0 qbd node drain $C1
expect_rc 1 qbd node drain $D1
grep -q "qbd: volume v1: no node can take replica 2 (node $D1, zone d); zone d: $D1 the node replaced; zone a: holds replica 0; zone b: holds replica 1; zone c: $C1 draining; add a node in zone d or in a zone the volume does not use" "$TMP/err" ||
	fail "no-room message: $(cat "$TMP/err")"
[ -z "$(etcdctl_ get --keys-only /qbd/node-state/$D1)" ] || fail "a refused drain set d1's state"
[ -z "$(etcdctl_ get --keys-only /qbd/changes/$V1)" ] || fail "a refused drain wrote a request"

# remove of a live node with --yes; a node with no replica
expect_rc 0 qbd node remove $B3 --yes
out_has "^node $B3: removed"
out_has "holds no replica: nothing to move"

# usage errors: 2
expect_rc 2 qbd node drain
expect_rc 2 qbd node remove $A1 $B2
expect_rc 2 qbd node frob
expect_rc 2 qbd volume move v1
expect_rc 2 qbd volume move v1 --from
expect_rc 1 qbd node drain nosuchnode
grep -q "no node 'nosuchnode'" "$TMP/err" || fail "unknown node: $(cat "$TMP/err")"
log "PASS"
