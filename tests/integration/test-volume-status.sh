#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `qbd volume status` never says healthy on a guess, and its exit statuses
# keep their meanings apart, against a real cluster (etcd, three chunk
# servers, a qbd-nbd serving a volume on a unix socket):
#
# - attached but without a status document from the writer: health
#   "unknown", exit 3, not healthy (also in `qbd status`);
# - the writer's document back: healthy, exit 0;
# - a replica that stops answering (its chunk server frozen with SIGSTOP)
#   is shown silent, with for how long, and the volume degraded, well
#   before the writer's request timeout (10 s) drops it;
# - a usage error exits 2, a degraded volume (one chunk server of three
#   stopped) exits 3: a script can tell them apart.
#
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
[ -x "$BUILD/qbd-chunkd" ] || fail "no qbd-chunkd in $BUILD (run make)"
[ -x "$BUILD/qbd-nbd" ] || fail "no qbd-nbd in $BUILD (run make)"

start_cluster a b c
expect_rc 0 qbd volume create v --size 64M
expect_rc 0 qbd volume info v --json
vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/out")
start_nbd v "$TMP/v.sock" --zone a
nbd_pid=$NBD_PID
wait_for "volume v healthy with the writer's status (exit 0)" 20 health_is 0 healthy

# ---- attached, no status document yet: unknown, not healthy ----
# The writer publishes its first document a moment after it attaches,
# too soon to be caught. To hold that moment, freeze the writer
# (SIGSTOP stops its keeper thread, the only one that writes to etcd)
# and remove its document: etcd then holds what it holds between attach
# and the first publication, an attachment record under the writer's
# live lease (10 s) and no /qbd/status/<id>. The checks below take well
# under a second; each asserts that the attachment is still there, so an
# expired lease fails the test instead of passing it for the wrong
# reason.
kill -STOP "$nbd_pid"
thaw_writer() { kill -CONT "$nbd_pid" 2>/dev/null || true; }
on_exit thaw_writer
etcdctl_ del "/qbd/status/$vid" >/dev/null
[ -z "$(etcdctl_ get --keys-only "/qbd/status/$vid")" ] || fail "status document still there"
expect_rc 3 qbd volume status v --json
json_check 'd["attachment"] is not None and d["attachment"]["pid"]=='"$nbd_pid"' and d["status_updated"] is None and d["health"]=="unknown"'
expect_rc 3 qbd volume status v
out_has '^Attached: *host '
out_has '^Status: *no status from the writer yet'
out_has '^Health: *unknown'
grep -q '^Health: *healthy' "$TMP/out" && fail "said healthy without a status document"
expect_rc 3 qbd --json status
json_check 'd["health"]=="HEALTH_WARN" and d["volumes"]["unknown"]==1 and d["volumes"]["healthy"]==0 and d["volumes"]["attached"]==1'
[ -n "$(etcdctl_ get --keys-only "/qbd/attachments/$vid")" ] ||
	fail "the writer's lease ran out during the checks (they prove nothing)"
kill -CONT "$nbd_pid"
# Running again, the writer publishes within its period (2 s).
wait_for "volume v healthy again once the writer publishes" 20 health_is 0 healthy
log "attached without a status document: unknown (exit 3), then healthy"

# ---- a replica that stopped answering: silent, not healthy ----
# A frozen chunk server keeps its connections open and answers nothing:
# the writer still counts it up until the request timeout (10 s), and a
# status that said healthy meanwhile would let a rolling restart take a
# second copy away. The writer pings every replica (read lease), so an
# idle volume shows it too.
# doc_silent ZONE: the writer's document says ZONE's replica is silent.
# (Polled in etcd: each `qbd volume status` spends its 3 s admin timeout
# on the frozen server, and the checks must end before the writer's
# request timeout turns silent into down.)
doc_silent() {
	etcdctl_ get --print-value-only "/qbd/status/$vid" >"$TMP/doc.json" &&
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if any(r["zone"] == sys.argv[2] and r["state"] == "silent"
		  for r in d["replicas"]) else 1)' "$TMP/doc.json" "$1"
}
kill -STOP "$CHUNKD_PID_b"
thaw_b() { kill -CONT "$CHUNKD_PID_b" 2>/dev/null || true; }
on_exit thaw_b
t0=$(date +%s)
wait_for "the writer to report zone b silent while its server is frozen" 8 doc_silent b
log "reported silent after $(( $(date +%s) - t0 )) s"
expect_rc 3 qbd --json volume status v
json_check 'd["health"]=="degraded" and [r for r in d["replica_status"] if r["zone"]=="b" and r["state"]=="silent" and not r["usable"] and r["silent_s"]>=1]'
expect_rc 3 qbd volume status v
out_has '^Silent: *replica [0-9] (zone b) has not answered for [0-9]* s'
out_has '^Health: *degraded'
kill -CONT "$CHUNKD_PID_b"
wait_for "volume v healthy once zone b answers again" 30 health_is 0 healthy
log "a frozen chunk server: silent (exit 3) within its request timeout, then healthy"

# ---- a usage error (2) is not a degraded volume (3) ----
expect_rc 2 qbd volume status
expect_rc 2 qbd volume status v --no-such-option
expect_rc 2 qbd volume status v extra
stop_chunkd c
wait_for "volume v degraded (exit 3) with chunk server c stopped" 30 health_is 3 degraded
expect_rc 3 qbd volume status v
out_has '^Health: *degraded (2 of 3 replicas usable'
expect_rc 3 qbd status
log "usage error exits 2, degraded volume exits 3"

stop_pid "$nbd_pid"
log "PASS"
