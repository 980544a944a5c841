#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd-csi, the CSI driver (docs/design.md, "The CSI driver"), driven over
# its unix socket by python3-grpcio (tests/csi/test_csi.py):
#  1. bad settings: exit 1 with the reason; a stale socket is replaced,
#     a live one (a second driver) refused;
#  2. Identity: plugin info, capabilities, Probe ready; an unknown method
#     is UNIMPLEMENTED, an undecodable request INVALID_ARGUMENT; 20
#     concurrent Probes all answered;
#  2b. Node calls that need no NBD device: info, capabilities, bad
#     arguments (INVALID_ARGUMENT), publish of what is not staged
#     (FAILED_PRECONDITION), unpublish and unstage of nothing (OK), stats
#     and expand of an unknown path (NOT_FOUND);
#  3. etcd stopped: Probe answers ready=false; etcd back: ready=true;
#  4. SIGTERM while 20 clients probe: qbd-csi exits 0 and has removed
#     its socket; the clients' calls end UNAVAILABLE or CANCELLED.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null ||
	skip "no python3-grpcio or python3-protobuf"
command -v protoc >/dev/null 2>&1 || skip "no protoc (protobuf-compiler)"
init_test "$@"
T="$(dirname "$0")/../csi/test_csi.py"
SOCK="$TMP/csi/csi.sock"
mkdir -p "$TMP/csi"

csi_test() { PATH=/usr/bin:$PATH /usr/bin/python3 "$T" "$SOCK" "$@" || fail "test_csi.py $*"; }

# 1. settings
expect_rc 1 qbd-csi --endpoint "tcp://127.0.0.1:1" --etcd http://127.0.0.1:1
grep -q "only unix sockets" "$TMP/err" || fail "no reason for a tcp endpoint: $(cat "$TMP/err")"
expect_rc 1 qbd-csi --endpoint "$SOCK" --etcd http://127.0.0.1:1 --mode node
grep -q "needs this node's zone" "$TMP/err" || fail "no reason for a missing zone: $(cat "$TMP/err")"
printf '[csi]\nmode = sideways\n' >"$QBD_CONFIG"
expect_rc 1 qbd-csi --endpoint "$SOCK" --etcd http://127.0.0.1:1
grep -q "qbd.conf:2 (mode in \\[csi\\]): 'sideways'" "$TMP/err" || fail "qbd.conf's bad mode not named: $(cat "$TMP/err")"
: >"$QBD_CONFIG"
expect_rc 1 qbd-csi --endpoint "unix://$TMP/no-such-dir/csi.sock" --etcd http://127.0.0.1:1 \
	--mode controller
grep -q "the socket's directory $TMP/no-such-dir: No such file" "$TMP/err" ||
	fail "no reason for a missing directory: $(cat "$TMP/err")"
expect_rc 0 qbd-csi --version
out_has "qbd-csi "

start_etcd_cluster a
for z in a b c; do start_chunkd "$z"; done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3

# A socket left by a driver that died is replaced.
/usr/bin/python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$SOCK"
[ -S "$SOCK" ] || fail "no stale socket made"
qbd-csi --endpoint "unix://$SOCK" --etcd "$QBD_ETCD" --mode all --node-id node-a --zone a \
	--state-dir "$TMP/csi-state" \
	>>"$TMP/csi.log" 2>&1 &
CSI_PID=$!
track_pid $CSI_PID qbd-csi
wait_for "qbd-csi serving on $SOCK" 20 grep -q "serving qbd.csi.io" "$TMP/csi.log"
grep -q "removing the stale socket" "$TMP/csi.log" || fail "stale socket not reported"
# A second driver on the same socket is refused; the first keeps it.
expect_rc 1 qbd-csi --endpoint "$SOCK" --etcd "$QBD_ETCD" --mode controller
grep -q "another server listens on $SOCK" "$TMP/err" || fail "second driver: $(cat "$TMP/err")"

# 2. Identity, bad calls, concurrency
csi_test

# Node calls that need no NBD device (the kernel test attaches).
csi_test node_calls
[ -d "$TMP/csi-state" ] || fail "qbd-csi made no state directory"

# 3. Probe follows etcd
stop_pid "$ETCD_PID_a"
csi_test probe_not_ready
grep -q "not ready: etcd does not answer" "$TMP/csi.log" || fail "no log of etcd unreachable"
start_etcd_member a
csi_test probe_ready
grep -q "ready: etcd answers again" "$TMP/csi.log" || fail "no log of etcd back"

# 4. SIGTERM while 20 threads probe: exit 0, socket removed; the
# clients' calls fail UNAVAILABLE or CANCELLED, none is left hanging.
PATH=/usr/bin:$PATH /usr/bin/python3 "$T" "$SOCK" probes_until_stopped >"$TMP/load.log" 2>&1 &
LOAD_PID=$!
track_pid $LOAD_PID "test_csi.py probes_until_stopped"
wait_for "20 threads probing" 30 grep -q "20 threads probing" "$TMP/load.log"
stop_pid $CSI_PID
wait_pid $LOAD_PID 0 30
cat "$TMP/load.log" >&2
[ ! -e "$SOCK" ] || fail "qbd-csi left its socket $SOCK"
grep -q "stopped" "$TMP/csi.log" || fail "qbd-csi did not log its stop"
log "PASS"
