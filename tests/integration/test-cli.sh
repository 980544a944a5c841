#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The qbd CLI against a real etcd and chunk servers: node list, volume
# create/list/info/delete, the errors an operator meets (duplicate name,
# too few zones, bad size, unknown volume), exit statuses, and delete
# reaching every replica (or saying which it could not).
. "$(dirname "$0")/lib.sh"
init_test "$@"

expect_rc() { # want cmd...: run, compare exit status
	_want=$1; shift
	_rc=0; "$@" >"$TMP/out" 2>"$TMP/err" || _rc=$?
	[ "$_rc" -eq "$_want" ] || { cat "$TMP/out" "$TMP/err" >&2; fail "'$*' exited $_rc, want $_want"; }
}

start_cluster a b
expect_rc 0 qbd node list
[ "$(grep -c ' up ' "$TMP/out")" -eq 2 ] || fail "node list does not show 2 nodes up"
expect_rc 0 qbd node list --json
python3 -c 'import json,sys; n=json.load(open(sys.argv[1])); assert len(n)==2 and all(x["alive"] for x in n)' "$TMP/out" ||
	fail "node list --json"

expect_rc 1 qbd volume create v3 --size 1G --replicas 3
grep -q 'need 3 zones with a live node, found 2 (a, b)' "$TMP/err" || fail "too-few-zones message: $(cat "$TMP/err")"
expect_rc 2 qbd volume create v --size 1000
expect_rc 2 qbd volume create 'bad/name' --size 1G
expect_rc 2 qbd volume create v
expect_rc 0 qbd volume create v2 --size 64M --replicas 2
expect_rc 1 qbd volume create v2 --size 64M --replicas 2
grep -q 'already exists' "$TMP/err" || fail "duplicate name message"
expect_rc 0 qbd volume list
grep -q '^v2 ' "$TMP/out" || fail "volume list does not show v2"
expect_rc 0 qbd volume info v2 --json
python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["replicas"]==2 and v["write_quorum"]==2 and len({n["zone"] for n in v["nodes"]})==2' "$TMP/out" ||
	fail "volume info --json"
expect_rc 1 qbd volume info nosuch
grep -q 'no such volume' "$TMP/err" || fail "unknown volume message"

# Write through libqbd so the replicas allocate chunks, then delete.
qbd-io --volume v2 write 0 3145728 1 || fail "write to v2"
expect_rc 0 qbd volume delete v2
grep -q 'not cleaned' "$TMP/err" && fail "delete did not reach every replica: $(cat "$TMP/err")"
expect_rc 1 qbd volume info v2
# With a replica down, delete still removes the volume and says what it
# could not clean.
expect_rc 0 qbd volume create v4 --size 64M --replicas 2
kill_chunkd b
expect_rc 0 qbd volume delete v4
grep -q 'not cleaned' "$TMP/err" || fail "delete with a replica down gave no warning"
expect_rc 1 qbd volume info v4
expect_rc 0 qbd --etcd "$QBD_ETCD" --help
expect_rc 2 qbd frobnicate
log "PASS"
