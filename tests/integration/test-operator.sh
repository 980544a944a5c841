#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd-operator against a FAKE API server (fake-kube-api.py: objects in
# memory, list, watch, create, update, delete; no validation, no
# controllers, no garbage collector: not Kubernetes) and a qbd CLI that
# records its arguments: the real one for `volume fence` (against a real
# etcd, where there is nothing to fence: the arguments are the real
# CLI's), a fake one for `node list` and `node remove`. The operator must:
#  - create the QbdCluster's objects and write its status;
#  - restart an outdated chunk server pod only once `qbd status` exits 0;
#  - fence the writers of a node tainted out-of-service, once;
#  - run `qbd node remove` with the address of a storage node deleted,
#    and delete that zone's DaemonSets; not for an address qbd does not
#    know (`qbd node list --json`);
#  - after its watches got 410 Gone, list again and still see changes;
#  - delete what it owns when the QbdCluster is deleted;
#  - with --leader-election, wait while another holds the Lease, take it
#    over once its holder stopped renewing, and release it at SIGTERM;
#  - exit 0 on SIGTERM; exit 1 when another candidate took its Lease.
. "$(dirname "$0")/lib.sh"
init_test "$@"
PY=/usr/bin/python3
[ -x $PY ] || skip "no /usr/bin/python3"
top=$(cd "$(dirname "$0")/../.." && pwd)
NS=qbd-system
TOKEN=test-token-$$

start_etcd    # the cluster's etcd, for the real qbd volume fence
echo "$TOKEN" >"$TMP/token"
: >"$TMP/actions.log"
$PY "$top/tests/integration/fake-kube-api.py" --port-file "$TMP/port" --log "$TMP/actions.log" \
	--token "$TOKEN" >"$TMP/fake-api.log" 2>&1 &
track_pid $! fake-api $TERM_DEATH
wait_for "the fake API server" 10 test -s "$TMP/port"
API=http://127.0.0.1:$(cat "$TMP/port")

# fake: POST /fake/... with a JSON body
fake() { # PATH [BODY]
	curl -sf -X POST -H 'Content-Type: application/json' --data-binary "${2:-{\}}" "$API$1" \
		>/dev/null || fail "fake API $1"
}
node_json() { # NAME ZONE STORAGE(true|false) IP [TAINTED]
	taints='[]'
	[ -n "${5:-}" ] && taints='[{"key":"node.kubernetes.io/out-of-service","value":"nodeshutdown","effect":"NoExecute"}]'
	storage=''
	[ "$3" = true ] && storage=',"qbd.io/storage":"true"'
	printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"%s","labels":{"topology.kubernetes.io/zone":"%s"%s}},"spec":{"taints":%s},"status":{"addresses":[{"type":"InternalIP","address":"%s"}],"conditions":[{"type":"Ready","status":"True"}]}}' \
		"$1" "$2" "$storage" "$taints" "$4"
}
put_node() { fake "/fake/put?c=/api/v1/nodes" "$(node_json "$@")"; }

put_node a1 zone-a true 10.0.0.1
put_node b1 zone-b true 10.0.0.2
put_node c1 zone-c true 10.0.0.3
put_node w1 zone-a false 10.0.1.1
fake "/fake/put?c=/api/v1/namespaces/$NS/secrets" \
	'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"qbd-secret"},"data":{"secret":"eA=="}}'
fake "/fake/put?c=/apis/qbd.io/v1alpha1/namespaces/$NS/qbdclusters" "{
  \"apiVersion\": \"qbd.io/v1alpha1\", \"kind\": \"QbdCluster\",
  \"metadata\": {\"name\": \"qbd\", \"namespace\": \"$NS\"},
  \"spec\": {\"etcd\": {\"endpoints\": [\"$QBD_ETCD\"]},
    \"storage\": {\"nodeSelector\": {\"qbd.io/storage\": \"true\"},
                  \"stores\": [{\"path\": \"/var/lib/qbd\", \"size\": \"10G\"}]},
    \"secretName\": \"qbd-secret\"}}"

# the qbd CLI: records its arguments; fence is the real qbd's; node list
# knows a1, b1 and c1 (not d1, added later)
cat >"$TMP/fake-qbd" <<EOF
#!/bin/sh
echo "\$*" >>"$TMP/qbd.calls"
case "\$*" in
*"volume fence"*)
	exec "$BUILD/qbd" "\$@" >>"$TMP/qbd-fence.out" 2>&1 ;;
*" status")
	exit \$(cat "$TMP/status-rc") ;;
*"node list --json"*)
	echo '[{"addr":"10.0.0.1:7800","state":"in"},{"addr":"10.0.0.2:7800","state":"in"},{"addr":"10.0.0.3:7800","state":"in"}]'
	exit 3 ;;
esac
EOF
chmod +x "$TMP/fake-qbd"
: >"$TMP/qbd.calls"
echo 3 >"$TMP/status-rc"        # qbd status: degraded

# Leader election: a Lease another candidate held, and renewed just now
# (it will not again: the operator takes it over after --lease-duration).
fake "/fake/put?c=/apis/coordination.k8s.io/v1/namespaces/$NS/leases" \
	"{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"qbd-operator\"},
	  \"spec\":{\"holderIdentity\":\"other\",\"leaseDurationSeconds\":3,
	  \"renewTime\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)\",\"leaseTransitions\":0}}"

POD_NAME=operator-1 qbd-operator --api "$API" --token-file "$TMP/token" --ca-file "" --namespace $NS \
	--qbd "$TMP/fake-qbd" --secret-file "$TMP/secret" --resync 30s --log-level debug \
	--leader-election --lease-duration 3s >"$TMP/operator.log" 2>&1 &
OP=$!
track_pid $OP qbd-operator

count() { # VERB [KIND [NAME]]: how many such actions the fake recorded
	$PY - "$TMP/actions.log" "$@" <<'EOF'
import json, sys
log, verb = sys.argv[1], sys.argv[2]
kind = sys.argv[3] if len(sys.argv) > 3 else None
name = sys.argv[4] if len(sys.argv) > 4 else None
n = 0
for line in open(log):
    a = json.loads(line)
    if a["verb"] == verb and (not kind or a["kind"] == kind) and (not name or a["name"] == name):
        n += 1
print(n)
EOF
}
count_is() { [ "$(count "$2" ${3:-} ${4:-})" -eq "$1" ]; }
count_ge() { [ "$(count "$2" ${3:-} ${4:-})" -ge "$1" ]; }
calls() { grep -c -x -- "$1" "$TMP/qbd.calls" || true; }
# another_loop: a change (node a1 written again), then wait for the loop
# it causes to have run
another_loop() {
	_nl=$(grep -c 'plan:' "$TMP/operator.log" || true)
	put_node a1 zone-a true 10.0.0.1
	wait_for "another loop" 30 sh -c "[ \$(grep -c 'plan:' '$TMP/operator.log') -gt $_nl ]"
}
calls_is() { [ "$(calls "$2")" -eq "$1" ]; }

# ---- first install: ConfigMap, 3 chunkd DaemonSets, 3 node plugin
# DaemonSets (zones a, b, c), managerd, CSI controller, CSIDriver,
# StorageClass; then the status
wait_for "the operator waiting for the Lease" 10 grep -q "held by other: waiting" "$TMP/operator.log"
wait_for "the Lease taken over" 30 grep -q "took the Lease $NS/qbd-operator over from other" "$TMP/operator.log"
wait_for "the objects created" 30 count_is 11 create
# nothing was created before the takeover
first_create=$(grep -n " create " "$TMP/operator.log" | head -1 | cut -d: -f1)
took=$(grep -n "took the Lease" "$TMP/operator.log" | cut -d: -f1)
[ "$first_create" -gt "$took" ] || fail "created objects before holding the Lease"
lease_holder() {
	curl -sf "$API/fake/get?c=/apis/coordination.k8s.io/v1/namespaces/$NS/leases&name=qbd-operator" |
		$PY -c 'import json,sys; print(json.load(sys.stdin)["spec"]["holderIdentity"])'
}
[ "$(lease_holder)" = operator-1 ] || fail "Lease holder: $(lease_holder)"
wait_for "the status written" 30 count_ge 1 status
for o in "ConfigMap qbd-config" "DaemonSet qbd-chunkd-zone-a" "DaemonSet qbd-chunkd-zone-c" \
	"DaemonSet qbd-csi-node-zone-b" "Deployment qbd-managerd" "Deployment qbd-csi-controller" \
	"CSIDriver qbd.csi.io" "StorageClass qbd"; do
	count_is 1 create $o || fail "not created: $o"
done
curl -sf "$API/fake/get?c=/apis/qbd.io/v1alpha1/namespaces/$NS/qbdclusters&name=qbd" >"$TMP/out"
$PY - "$TMP/out" <<'EOF' || fail "status: $(cat "$TMP/out")"
import json, sys
st = json.load(open(sys.argv[1]))["status"]
ready = [c for c in st["conditions"] if c["type"] == "Ready"][0]
assert ready["status"] == "False", ready
assert [n["name"] for n in st["storageNodes"]] == ["a1", "b1", "c1"], st
assert st["storageNodes"][1]["addresses"] == ["10.0.0.2:7800"], st
EOF
log "install: 11 objects created, status written"
[ ! -s "$TMP/qbd.calls" ] || fail "qbd ran at install: $(cat "$TMP/qbd.calls")"

# ---- chunk server pods from an older template, all ready: restarted one
# at a time, each only once qbd status exits 0 (healthy)
for z in a b c; do
	fake "/fake/put?c=/api/v1/namespaces/$NS/pods" "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",
	  \"metadata\":{\"name\":\"qbd-chunkd-zone-$z-x\",\"labels\":{\"app.kubernetes.io/name\":\"qbd-chunkd\",
	    \"app.kubernetes.io/part-of\":\"qbd\",\"topology.kubernetes.io/zone\":\"zone-$z\"},
	    \"annotations\":{\"qbd.io/template-hash\":\"0000000000000000\"},
	    \"ownerReferences\":[{\"apiVersion\":\"apps/v1\",\"kind\":\"DaemonSet\",\"name\":\"qbd-chunkd-zone-$z\",\"uid\":\"x\"}]},
	  \"spec\":{\"containers\":[{\"name\":\"chunkd\",\"image\":\"old\"}]},
	  \"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}"
done
wait_for "a restart waiting for qbd status" 30 grep -q "restart of Pod qbd-chunkd-zone-a-x waits: qbd status exits 3" "$TMP/operator.log"
count_is 0 delete Pod || fail "a chunk server restarted while qbd status said degraded"
echo 0 >"$TMP/status-rc"

wait_for "the restart once healthy" 30 count_is 1 delete Pod qbd-chunkd-zone-a-x
# one at a time: the others wait for the first to be back (it is not:
# this fake runs no DaemonSet controller), whatever the loops
another_loop
count_is 1 delete Pod || fail "more than one chunk server restarted"

# ---- a node tainted out-of-service: its writers fenced, once
put_node w1 zone-a false 10.0.1.1 tainted
want_fence="--etcd $QBD_ETCD --secret-file $TMP/secret volume fence --node w1"
wait_for "qbd volume fence --node w1" 30 calls_is 1 "$want_fence"
wait_for "the real qbd's answer" 10 grep -q "node w1: nothing to fence" "$TMP/qbd-fence.out"
log "fenced: $(grep "volume fence" "$TMP/qbd.calls"): $(cat "$TMP/qbd-fence.out")"
! grep -q "FenceFailed" "$TMP/operator.log" || fail "the fence failed: $(grep FenceFailed "$TMP/operator.log")"
# another change: a loop runs, the fence is not repeated
another_loop
calls_is 1 "$want_fence" || fail "fenced again: $(cat "$TMP/qbd.calls")"

# ---- storage node b1 deleted: qbd node remove of its chunk server,
# zone-b's DaemonSets deleted
fake "/fake/delete?c=/api/v1/nodes&name=b1"
want_remove="--etcd $QBD_ETCD --secret-file $TMP/secret node remove 10.0.0.2:7800 --yes"
wait_for "qbd node remove 10.0.0.2:7800" 30 calls_is 1 "$want_remove"
wait_for "zone-b's DaemonSets deleted" 30 count_is 1 delete DaemonSet qbd-chunkd-zone-b
wait_for "zone-b's node plugin deleted" 30 count_is 1 delete DaemonSet qbd-csi-node-zone-b
log "node b1 deleted: $(grep "node remove" "$TMP/qbd.calls")"

# ---- watches expired (410 Gone): listed again, changes still seen
fake /fake/expire
wait_for "the watches listing again" 30 grep -q "gone: listing again" "$TMP/operator.log"
put_node d1 zone-d true 10.0.0.4
wait_for "zone-d's chunk servers after the relist" 30 count_is 1 create DaemonSet qbd-chunkd-zone-d

# ---- storage node d1 deleted, which qbd never knew: nothing to remove
fake "/fake/delete?c=/api/v1/nodes&name=d1"
wait_for "d1 found unknown to qbd" 30 grep -q "qbd has no node 10.0.0.4:7800 in service" "$TMP/operator.log"
! grep -q "node remove 10.0.0.4" "$TMP/qbd.calls" || fail "qbd node remove of an address qbd does not know"

# ---- the QbdCluster deleted: what it owns is deleted (the cluster-scoped
# objects have no owner reference, so only the operator deletes them)
fake "/fake/delete?c=/apis/qbd.io/v1alpha1/namespaces/$NS/qbdclusters&name=qbd"
wait_for "the StorageClass deleted" 30 count_is 1 delete StorageClass qbd
wait_for "the CSIDriver deleted" 30 count_is 1 delete CSIDriver qbd.csi.io
wait_for "the ConfigMap deleted" 30 count_is 1 delete ConfigMap qbd-config
calls_is 1 "$want_fence" || fail "qbd calls: $(cat "$TMP/qbd.calls")"
[ "$(grep -c -v -e "node list --json" -e " status\$" "$TMP/qbd.calls")" -eq 2 ] || fail "qbd calls: $(cat "$TMP/qbd.calls")"

# ---- SIGTERM: a clean exit, 0
stop_pid $OP TERM 0
grep -q "stopped" "$TMP/operator.log" || fail "no 'stopped' in the log"
[ "$(lease_holder)" = "" ] || fail "the Lease was not released: holder $(lease_holder)"

# ---- a second operator takes the released Lease at once; when another
# candidate holds the Lease (its renewal lost), it stops acting: exit 1
POD_NAME=operator-2 qbd-operator --api "$API" --token-file "$TMP/token" --ca-file "" --namespace $NS \
	--qbd "$TMP/fake-qbd" --secret-file "$TMP/secret" --leader-election --lease-duration 3s \
	>"$TMP/operator-2.log" 2>&1 &
OP2=$!
track_pid $OP2 qbd-operator-2
wait_for "operator-2 holding the Lease" 10 sh -c '[ "$(curl -sf "$0" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)[\"spec\"][\"holderIdentity\"])")" = operator-2 ]' \
	"$API/fake/get?c=/apis/coordination.k8s.io/v1/namespaces/$NS/leases&name=qbd-operator"
fake "/fake/put?c=/apis/coordination.k8s.io/v1/namespaces/$NS/leases" \
	"{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"qbd-operator\"},
	  \"spec\":{\"holderIdentity\":\"thief\",\"leaseDurationSeconds\":3,
	  \"renewTime\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)\",\"leaseTransitions\":5}}"
wait_pid $OP2 1 20
grep -q "another candidate holds the Lease" "$TMP/operator-2.log" || fail "operator-2: $(tail -3 "$TMP/operator-2.log")"
[ "$(lease_holder)" = thief ] || fail "operator-2 released a Lease it did not hold"
log "PASS"
