#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd-csi --mode node whose registration in etcd (/qbd/csi/nodes/<node
# id>, docs/design.md, "The CSI driver") fails at start, etcd being
# stopped: it says so in its log, serves all the same, and registers by
# itself once etcd is back (no NodeGetInfo call comes to help), saying so.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
init_test "$@"
SOCK="$TMP/csi/csi.sock"
mkdir -p "$TMP/csi"

registered() { etcdctl_ get --print-value-only "/qbd/csi/nodes/$1" | grep -q '"zone"'; }

start_etcd_cluster a
stop_pid "$ETCD_PID_a"
qbd-csi --endpoint "unix://$SOCK" --etcd "$QBD_ETCD" --mode node --node-id node-r --zone a \
	--state-dir "$TMP/csi-state" >>"$TMP/csi.log" 2>&1 &
CSI_PID=$!
track_pid $CSI_PID qbd-csi
wait_for "qbd-csi serving on $SOCK" 20 grep -q "serving qbd.csi.io" "$TMP/csi.log"
grep -q "node node-r: cannot register in etcd" "$TMP/csi.log" ||
	fail "the failed registration is not logged: $(cat "$TMP/csi.log")"

start_etcd_member a
wait_for "etcd back" 30 etcdctl_ endpoint health
wait_for "node-r registered in etcd without a NodeGetInfo" 40 registered node-r
grep -q "node node-r: registered in etcd" "$TMP/csi.log" ||
	fail "the late registration is not logged: $(tail -5 "$TMP/csi.log")"
kill -0 "$CSI_PID" 2>/dev/null || fail "qbd-csi exited"
grep "node node-r" "$TMP/csi.log" >&2
stop_pid $CSI_PID
grep -q "stopped" "$TMP/csi.log" || fail "qbd-csi did not log its stop"
log "PASS"
