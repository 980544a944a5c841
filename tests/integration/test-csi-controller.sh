#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd-csi's Controller service (docs/design.md, "The CSI driver",
# "Controller") driven over its socket by python3-grpcio
# (tests/csi/test_controller.py) against etcd and chunk servers in zones
# a, b and c, with node plugins node-a and node-b registered as the Node
# service registers itself (/qbd/csi/nodes/<node id>): every Controller
# call, idempotency, bad arguments and their codes, too few zones,
# concurrent calls on one volume, ListVolumes' pages, GetCapacity's
# formula, expansion; the takeover of a published volume is logged with
# both nodes' names; with etcd stopped, CreateVolume, DeleteVolume and
# ControllerPublishVolume are UNAVAILABLE naming etcd, and work again
# once it is back.
# CSI_CASES="create publish" runs those cases only.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null ||
	skip "no python3-grpcio or python3-protobuf"
command -v protoc >/dev/null 2>&1 || skip "no protoc (protobuf-compiler)"
init_test "$@"
T="$(dirname "$0")/../csi/test_controller.py"
SOCK="$TMP/csi/csi.sock"
mkdir -p "$TMP/csi"

start_etcd_cluster a
# Zones of three sizes, so that GetCapacity's formula shows which zone
# it took.
CHUNKD_SIZE=1G; start_chunkd a
CHUNKD_SIZE=2G; start_chunkd b
CHUNKD_SIZE=3G; start_chunkd c
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
etcdctl_ put /qbd/csi/nodes/node-a '{"zone":"a","since":1}' >/dev/null
etcdctl_ put /qbd/csi/nodes/node-b '{"zone":"b","since":1}' >/dev/null

qbd-csi --endpoint "unix://$SOCK" --etcd "$QBD_ETCD" --mode controller >>"$TMP/csi.log" 2>&1 &
CSI_PID=$!
track_pid $CSI_PID qbd-csi
wait_for "qbd-csi serving on $SOCK" 20 grep -q "serving qbd.csi.io" "$TMP/csi.log"

# shellcheck disable=SC2086 # CSI_CASES: case names, split on purpose
PATH=/usr/bin:$PATH /usr/bin/python3 "$T" "$SOCK" ${CSI_CASES:-} || {
	tail -40 "$TMP/csi.log" >&2
	fail "test_controller.py"
}
[ -n "${CSI_CASES:-}" ] && { stop_pid $CSI_PID; log "PASS (cases: $CSI_CASES)"; exit 0; }
grep -q "volume pvc-pub: takeover: published to node node-b (zone b) while node node-a holds it" \
	"$TMP/csi.log" || fail "the takeover was not logged with both nodes"
grep -q "the new writer's epoch fences" "$TMP/csi.log" || fail "the takeover's log says nothing of fencing"

# etcd stopped: CreateVolume, DeleteVolume and ControllerPublishVolume
# are UNAVAILABLE, naming etcd; started again: they work.
csi_cases() {
	PATH=/usr/bin:$PATH /usr/bin/python3 "$T" "$SOCK" "$@" || {
		tail -20 "$TMP/csi.log" >&2
		fail "test_controller.py $*"
	}
}
csi_cases etcd_setup
stop_pid "$ETCD_PID_a"
csi_cases etcd_down
start_etcd_member a
wait_for "etcd back" 30 etcdctl_ endpoint health
wait_for "3 chunk servers alive in etcd again" 30 nodes_alive 3
csi_cases etcd_back
stop_pid $CSI_PID
log "PASS"
