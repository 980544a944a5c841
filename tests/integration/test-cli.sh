#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The qbd CLI against a real etcd with fake chunk-server records (put with
# etcdctl, addresses nobody listens on): node list, volume
# create/list/info/delete, the errors an operator meets (duplicate name,
# too few zones, bad size, unknown volume, etcd down), exit statuses, and
# delete fencing (epoch bumped) before it forgets the volume, warning about
# replicas it cannot reach. Then, if qbd-chunkd is built, qbd dev up /
# status / down. Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
init_test "$@"

start_etcd
# Fake nodes: zone a (1 up), zone b (2 up), zone c (1 down). Their ports
# are free, so the wire client meets "connection refused".
fake_node() { # id zone alive
	etcdctl_ put "/qbd/nodes/$1" \
		"{\"id\":\"$1\",\"addr\":\"127.0.0.1:$(free_port)\",\"zone\":\"$2\",\"capacity\":1073741824,\"used\":0,\"chunk_size\":1048576}" >/dev/null
	[ "$3" = 0 ] || etcdctl_ put "/qbd/alive/$1" 1 >/dev/null
}
etcdctl_ put /qbd/cluster '{"id":"00000000c0ffee00"}' >/dev/null
fake_node 00000000000000a1 a 1
fake_node 00000000000000b1 b 1
fake_node 00000000000000b2 b 1
fake_node 00000000000000c1 c 0

# one node down: exit 3 (degraded)
expect_rc 3 qbd node list
[ "$(grep -c ' up ' "$TMP/out")" -eq 3 ] || fail "node list does not show 3 nodes up: $(cat "$TMP/out")"
[ "$(grep -c ' down ' "$TMP/out")" -eq 1 ] || fail "node list does not show 1 node down"
expect_rc 3 qbd node list --json
json_check 'len(d)==4 and sum(x["alive"] for x in d)==3 and {"id","zone","addr","alive","capacity","used","held","free_slots","scrub","io"}<=set(d[0]) and d[0]["capacity"]==1073741824'

expect_rc 1 qbd volume create v3 --size 1G
grep -q 'need 3 zones with a live node, found 2 (a, b)' "$TMP/err" || fail "too-few-zones message: $(cat "$TMP/err")"
expect_rc 2 qbd volume create v --size 1000
grep -q 'multiple' "$TMP/err" || fail "bad size message: $(cat "$TMP/err")"
expect_rc 2 qbd volume create v --size 0
expect_rc 2 qbd volume create v --size 1G --replicas 6
expect_rc 2 qbd volume create v --size 1G --replicas 2 --write-quorum 3
expect_rc 2 qbd volume create 'bad/name' --size 1G
expect_rc 2 qbd volume create v
expect_rc 0 qbd volume create v2 --size 64M --replicas 2
expect_rc 1 qbd volume create v2 --size 64M --replicas 2
grep -q 'already exists' "$TMP/err" || fail "duplicate name message"
expect_rc 0 qbd volume create v1 --size 4096 --replicas 1
expect_rc 0 qbd volume list
grep -q '^v2 ' "$TMP/out" || fail "volume list does not show v2"
grep -q '^v1 ' "$TMP/out" || fail "volume list does not show v1"
expect_rc 0 qbd volume list --json
json_check '[v["name"] for v in d]==["v1","v2"]'
expect_rc 0 qbd volume info v1 --json
json_check 'd["replicas"]==1 and d["write_quorum"]==1 and d["size"]==4096'
expect_rc 0 qbd volume info v2
grep -q '^Replicas:' "$TMP/out" || fail "volume info has no Replicas: table"
[ "$(grep -c ' up$' "$TMP/out")" -eq 2 ] || fail "volume info: 2 replicas up: $(cat "$TMP/out")"
expect_rc 0 qbd volume info v2 --json
json_check 'd["replicas"]==2 and d["write_quorum"]==2 and d["epoch"]==0 and d["chunk_size"]==1048576 and {n["zone"] for n in d["nodes"]}=={"a","b"}'
v2id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/out")
[ "$(etcdctl_ get --print-value-only "/qbd/volume-ids/$v2id")" = v2 ] || fail "no id index for v2"
expect_rc 1 qbd volume info nosuch
grep -q 'no such volume' "$TMP/err" || fail "unknown volume message"

# Zone c comes up: the default R=3, W=2 now fits.
etcdctl_ put /qbd/alive/00000000000000c1 1 >/dev/null
expect_rc 0 qbd volume create v3 --size 1G
expect_rc 0 qbd volume info v3 --json
json_check 'd["replicas"]==3 and d["write_quorum"]==2 and len({n["zone"] for n in d["nodes"]})==3'

# Delete: watch etcd to see the epoch bump happen before the records go.
ETCDCTL_API=3 etcdctl --endpoints="$QBD_ETCD" watch --prefix /qbd/ >"$TMP/watch" 2>&1 &
WATCH_PID=$!
track_pid $WATCH_PID "etcdctl watch" $TERM_DEATH
# The watch may start after a first marker: put one each poll until the
# watch has printed one.
marker_seen() { etcdctl_ put /qbd/marker 1 >/dev/null; grep -q '^/qbd/marker$' "$TMP/watch"; }
wait_for "etcdctl watch ready" 10 marker_seen
expect_rc 0 qbd volume delete v2
[ "$(grep -c 'not cleaned' "$TMP/err")" -eq 2 ] || fail "delete did not warn about both unreachable replicas: $(cat "$TMP/err")"
expect_rc 1 qbd volume info v2
[ -z "$(etcdctl_ get --prefix --keys-only "/qbd/epochs/$v2id")" ] || fail "epoch key of v2 left behind"
[ -z "$(etcdctl_ get --prefix --keys-only "/qbd/volume-ids/$v2id")" ] || fail "id index of v2 left behind"
wait_for "watch sees the volume record deleted" 10 grep -q '^/qbd/volumes/v2$' "$TMP/watch"
python3 - "$TMP/watch" "$v2id" <<'EOF' || fail "epoch not bumped to 1 before the volume record was deleted: $(cat "$TMP/watch")"
import sys
lines = open(sys.argv[1]).read().split("\n")
ep = "/qbd/epochs/" + sys.argv[2]
bump = next(i for i in range(len(lines) - 2) if lines[i] == "PUT" and lines[i + 1] == ep and lines[i + 2] == "1")
gone = next(i for i in range(1, len(lines)) if lines[i - 1] == "DELETE" and lines[i] == "/qbd/volumes/v2")
sys.exit(0 if bump < gone else 1)
EOF
stop_pid "$WATCH_PID"
expect_rc 1 qbd volume delete v2
grep -q 'no such volume' "$TMP/err" || fail "delete of a deleted volume"

# Usage and connection errors.
expect_rc 0 qbd --etcd "$QBD_ETCD" --help
expect_rc 0 qbd volume create --help
expect_rc 2 qbd frobnicate
expect_rc 2 qbd volume info
expect_rc 2 env -u QBD_ETCD qbd volume list
port=$(free_port)
expect_rc 1 qbd --etcd "http://127.0.0.1:$port" volume list
grep -qi 'refused' "$TMP/err" || fail "etcd down message: $(cat "$TMP/err")"
# An etcd that answers with an error, as one shutting down does (HTTP 408
# with a JSON body): a clear message and exit 1.
cat >"$TMP/etcd-408.py" <<'PY'
import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error":"grpc: the client connection is closing","code":1}'
        self.send_response(408)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Answer)
s.serve_forever()
PY
python3 "$TMP/etcd-408.py" "$port" &
e408=$!
track_pid $e408 "etcd answering 408" $TERM_DEATH
wait_for "the erring etcd on port $port" 10 port_open "$port"
expect_rc 1 qbd --etcd "http://127.0.0.1:$port" volume list
grep -q 'HTTP 408' "$TMP/err" || fail "etcd error message: $(cat "$TMP/err")"
stop_pid $e408

# qbd dev: a local cluster of its own (needs qbd-chunkd).
if [ -x "$BUILD/qbd-chunkd" ]; then
	DEV="$TMP/dev"
	dev_cleanup() { qbd dev down --state "$DEV" >/dev/null 2>&1 || true; }
	on_exit dev_cleanup
	expect_rc 0 qbd dev up --state "$DEV" --zones a,b --size 256M
	# three etcd members by default (more than the zones: numbered)
	[ "$(grep -c '^etcd-[123] [0-9]' "$DEV/pids")" -eq 3 ] ||
		fail "want 3 etcd members in $DEV/pids: $(cat "$DEV/pids")"
	grep -q '^chunkd-b [0-9]' "$DEV/pids" || fail "no chunkd-b in $DEV/pids"
	grep -q '^managerd [0-9]' "$DEV/pids" || fail "no managerd in $DEV/pids"
	u='http://127\.0\.0\.1:[0-9]*'
	grep -q "^QBD_ETCD=$u,$u,$u\$" "$DEV/env" || fail "bad $DEV/env: $(cat "$DEV/env")"
	expect_rc 1 qbd dev up --state "$DEV" --zones a,b --size 256M
	grep -q 'already running' "$TMP/err" || fail "second dev up: $(cat "$TMP/err")"
	expect_rc 0 qbd dev status --state "$DEV"
	[ "$(grep -c ' up$' "$TMP/out")" -eq 6 ] || fail "dev status: $(cat "$TMP/out")"
	expect_rc 0 qbd --etcd "$(sed -n 's/^QBD_ETCD=//p' "$DEV/env")" node list --json
	json_check 'len(d)==2 and all(x["alive"] for x in d)'
	pids=$(awk '{print $2}' "$DEV/pids")
	expect_rc 0 qbd dev down --state "$DEV"
	[ ! -e "$DEV/pids" ] || fail "dev down left $DEV/pids"
	# (a zombie counts as stopped: PID 1 may be slow to reap it)
	for p in $pids; do
		ps -o stat= -p "$p" 2>/dev/null | grep -qv Z && fail "pid $p still running after dev down"
	done
	[ -f "$DEV/chunk-a.img" ] || fail "dev down removed data"
	expect_rc 1 qbd dev status --state "$DEV"
	# the members' ports are kept for the next dev up: a different
	# member count is refused before anything starts
	expect_rc 1 qbd dev up --state "$DEV" --zones a,b --etcd-members 1
	grep -q 'holds an etcd cluster of 3 member' "$TMP/err" || fail "dev up -1: $(cat "$TMP/err")"
	[ ! -s "$DEV/pids" ] || fail "dev up --etcd-members 1 started something"
else
	log "no qbd-chunkd in $BUILD: qbd dev not tested"
fi
log "PASS"
