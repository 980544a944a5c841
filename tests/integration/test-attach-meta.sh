#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Attachment records and `qbd volume status` against a real etcd, with fake
# chunk-server records and attachment / status documents put by hand with
# etcdctl under a lease (as a writer would): health and exit statuses
# (0 healthy, 3 degraded, 4 failed, 1 error, 2 usage), the text and
# --json output, a stale status document ignored, `qbd volume delete`
# refused while attached (without fencing the writer) and allowed once the
# writer's lease is gone, removing the status document too. Exit 0 pass,
# 1 fail, 77 skip.
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
fake_node 00000000000000a1 a
fake_node 00000000000000b1 b
fake_node 00000000000000c1 c

expect_rc 0 qbd volume create v --size 64M
expect_rc 0 qbd volume info v --json
vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/out")
# replica index -> node id, as placed
node_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][int(sys.argv[2])]["id"])' "$TMP/info" "$1"; }
qbd volume info v --json >"$TMP/info"
n0=$(node_of 0); n1=$(node_of 1); n2=$(node_of 2)

# Not attached: health follows the nodes' alive keys.
expect_rc 0 qbd volume status v
out_has '^Attached: *not attached'
out_has '^Health: *healthy'
expect_rc 0 qbd volume status v --json
json_check 'd["attachment"] is None and d["health"]=="healthy" and d["usable"]==3 and len(d["replica_status"])==3 and all(r["alive"] and r["usable"] for r in d["replica_status"]) and d["replica_status"][1]["id"]=="'"$n1"'"'
etcdctl_ del "/qbd/alive/$n2" >/dev/null
expect_rc 3 qbd volume status v
out_has '^Health: *degraded'
etcdctl_ del "/qbd/alive/$n1" >/dev/null
expect_rc 4 qbd volume status v --json
json_check 'd["health"]=="failed" and d["usable"]==1'
etcdctl_ put "/qbd/alive/$n1" 1 >/dev/null
etcdctl_ put "/qbd/alive/$n2" 1 >/dev/null

# A writer attaches (by hand): epoch 1, record and status under its lease.
lease=$(etcdctl_ lease grant 60 | awk '{print $2}')
[ -n "$lease" ] || fail "no lease"
etcdctl_ put "/qbd/epochs/$vid" 1 >/dev/null
now=$(date +%s)
etcdctl_ put --lease="$lease" "/qbd/attachments/$vid" \
	"{\"volume\":\"v\",\"volume_id\":\"$vid\",\"epoch\":1,\"host\":\"hostx\",\"zone\":\"a\",\"pid\":4321,\"since\":$now}" >/dev/null
status_doc() { # epoch state0 state1 state2 stale2 done2 total2
	etcdctl_ put --lease="$lease" "/qbd/status/$vid" \
		"{\"epoch\":$1,\"updated\":$now,\"replicas\":[
		{\"index\":0,\"node\":\"$n0\",\"zone\":\"a\",\"addr\":\"x\",\"state\":\"$2\",\"stale_chunks\":0,\"resync_done_chunks\":0,\"resync_total_chunks\":0},
		{\"index\":1,\"node\":\"$n1\",\"zone\":\"b\",\"addr\":\"x\",\"state\":\"$3\",\"stale_chunks\":0,\"resync_done_chunks\":0,\"resync_total_chunks\":0},
		{\"index\":2,\"node\":\"$n2\",\"zone\":\"c\",\"addr\":\"x\",\"state\":\"$4\",\"stale_chunks\":$5,\"resync_done_chunks\":$6,\"resync_total_chunks\":$7}],
		\"write_quorum\":2,\"chunks\":64}" >/dev/null
}
# attached, no status yet: unknown, never healthy on a guess
expect_rc 3 qbd volume status v
out_has '^Attached: *host hostx, zone a, pid 4321, epoch 1'
out_has 'no status from the writer yet'
out_has '^Health: *unknown'
expect_rc 3 qbd volume status v --json
json_check 'd["health"]=="unknown" and d["status_updated"] is None'
# ... but a node known down is known trouble: degraded
etcdctl_ del "/qbd/alive/$n2" >/dev/null
expect_rc 3 qbd volume status v --json
json_check 'd["health"]=="degraded"'
etcdctl_ put "/qbd/alive/$n2" 1 >/dev/null

status_doc 1 up up up 0 0 0
expect_rc 0 qbd volume status v --json
json_check 'd["attachment"]=={"host":"hostx","zone":"a","pid":4321,"epoch":1,"since":'"$now"'} and d["health"]=="healthy" and d["status_updated"]=='"$now"' and all(r["state"]=="up" for r in d["replica_status"])'

status_doc 1 up up resync 12 30 42
expect_rc 3 qbd volume status v
out_has '^Health: *degraded (2 of 3 replicas usable'
out_has ' resync *12  30/42 71%'
grep -q '\[#' "$TMP/out" && fail "progress bar printed to a pipe"
expect_rc 3 qbd volume status v --json
json_check 'd["replica_status"][2]["state"]=="resync" and d["replica_status"][2]["stale_chunks"]==12 and d["replica_status"][2]["resync_done_chunks"]==30 and d["replica_status"][2]["resync_total_chunks"]==42 and d["replica_status"][2]["resync_percent"]==71 and not d["replica_status"][2]["usable"]'

# up but stale: usable, not current -> degraded
status_doc 1 up up up 5 0 0
expect_rc 3 qbd volume status v --json
json_check 'd["usable"]==3 and d["health"]=="degraded"'

status_doc 1 up down down 0 0 0
expect_rc 4 qbd volume status v
out_has '^Health: *failed (1 of 3'

# the writer says up, but the node's alive key is gone: not usable
status_doc 1 up up up 0 0 0
etcdctl_ del "/qbd/alive/$n0" >/dev/null
expect_rc 3 qbd volume status v
etcdctl_ put "/qbd/alive/$n0" 1 >/dev/null

# a status document from another epoch is ignored (with a warning):
# this writer has not published one, so health is unknown
status_doc 0 down down down 0 0 0
expect_rc 3 qbd volume status v
out_has '^Health: *unknown'
grep -q 'status document of epoch 0' "$TMP/err" || fail "no stale-status warning: $(cat "$TMP/err")"

# Delete is refused while attached, and does not fence the writer.
expect_rc 1 qbd volume delete v
grep -q 'volume v is attached on host hostx (pid 4321, epoch 1); detach it first' "$TMP/err" ||
	fail "delete-while-attached message: $(cat "$TMP/err")"
[ "$(etcdctl_ get --print-value-only "/qbd/epochs/$vid")" = 1 ] || fail "refused delete bumped the epoch"
expect_rc 0 qbd volume info v

# Errors.
expect_rc 1 qbd volume status nosuch
grep -q 'no such volume' "$TMP/err" || fail "unknown volume message"
expect_rc 2 qbd volume status
expect_rc 0 qbd volume --help
out_has 'qbd volume status NAME'
etcdctl_ put --lease="$lease" "/qbd/attachments/$vid" 'not json' >/dev/null
expect_rc 1 qbd volume status v

# The writer's lease ends: record and status vanish; delete works and
# leaves neither attachment nor status behind.
etcdctl_ lease revoke "$lease" >/dev/null
expect_rc 0 qbd volume status v
out_has '^Attached: *not attached'
etcdctl_ put "/qbd/status/$vid" '{"epoch":1,"replicas":[]}' >/dev/null
expect_rc 0 qbd volume delete v
[ -z "$(etcdctl_ get --prefix --keys-only "/qbd/status/$vid")" ] || fail "status document left behind"
[ -z "$(etcdctl_ get --prefix --keys-only "/qbd/attachments/$vid")" ] || fail "attachment left behind"
[ -z "$(etcdctl_ get --prefix --keys-only "/qbd/epochs/$vid")" ] || fail "epoch left behind"
expect_rc 1 qbd volume status v
log "PASS"
