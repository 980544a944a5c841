#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd-managerd (docs/design.md, "Manager"):
#  1. election: two instances, one leads (/qbd/manager names it, its
#     metric says 1, the other's 0, and the other never claims to lead
#     while the leader lives); the leader is killed with SIGKILL and the
#     other takes over once the dead one's lease has expired (a 4 s
#     lease here: within lease + the follower's 2 s retry);
#  2. a volume nobody has attached, with a `qbd volume move` request, is
#     moved by the manager: the leader is killed mid-copy, and the next
#     one (a third instance) carries the change on, copying only what the
#     learner lacks; the record at configuration 2 with the new node,
#     `qbd volume verify` identical, the data written before reads back;
#  3. down-out: a chunk server is killed; after its alive key expires and
#     down-out (5 s) passes, the manager writes a down-out change request
#     for each of its volumes and carries it out: the volume ends on
#     three live nodes, identical, and its data reads back.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"
TTL=4

# start_manager NAME: one qbd-managerd (down-out and give-up from
# [qbd-managerd] of the test's qbd.conf); sets MGR_PID_<name>, MGR_PORT_<name>.
start_manager() {
	_mp=$(free_port)
	qbd-managerd --etcd "$QBD_ETCD" --metrics "127.0.0.1:$_mp" --lease-ttl $TTL \
		>>"$TMP/manager-$1.log" 2>&1 &
	_mpid=$!
	track_pid $_mpid "qbd-managerd $1"
	eval "MGR_PID_$1=$_mpid MGR_PORT_$1=$_mp"
	wait_for "manager $1's metrics" 20 has_metric "$_mp" qbd_managerd_leader
}
has_metric() { [ -n "$(metric "$1" "$2")" ]; }
metric_is() { [ "$(metric "$1" "$2")" = "$3" ]; }
leader_is() { [ "$(metric "$1" qbd_managerd_leader)" = 1 ]; }
two_leaders() { leader_is "$MGR_PORT_1" && leader_is "$MGR_PORT_2"; }
logged() { grep -q -- "$2" "$TMP/manager-$1.log"; }
key_names() { etcdctl_ get --print-value-only /qbd/manager | grep -q "\"pid\":$1[,}]"; }
no_attachment() { [ -z "$(etcdctl_ get --prefix --keys-only /qbd/attachments/)" ]; }
a_change_request() { [ -n "$(etcdctl_ get --prefix --keys-only /qbd/changes/)" ]; }
# change_says EXPR: the status document of v's writer (the manager's) has
# a "change" satisfying EXPR (Python, over c); its copied and total chunks
# go to $TMP/change.
change_says() {
	etcdctl_ get --print-value-only "/qbd/status/$vid" >"$TMP/doc.json" 2>/dev/null &&
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); c = d.get("change")
if not c: sys.exit(1)
open(sys.argv[3], "w").write("%d %d\n" % (c["copied_chunks"], c["total_chunks"]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$TMP/doc.json" "$1" "$TMP/change"
}
downout_request() {
	etcdctl_ get --prefix --print-value-only /qbd/changes/ | grep -q '"reason":"down-out"'
}

# Settings: qbd.conf's [qbd-managerd], checked; a bad one named.
cat >>"$TMP/qbd.conf" <<CONF
[qbd-managerd]
down-out = 5s
give-up = 30s
CONF

T0=$(date +%s)
since() { echo "$(( $(date +%s) - T0 ))s"; }
start_cluster a b c
expect_rc 0 qbd-managerd --check-config
printf '[qbd-managerd]\ndown-out = soon\n' >"$TMP/bad.conf"
expect_rc 1 qbd-managerd --config "$TMP/bad.conf" --etcd http://127.0.0.1:1 --check-config
grep -q "bad.conf:2 (down-out in \[qbd-managerd\]): 'soon'" "$TMP/err" ||
	fail "no precise message for a bad down-out: $(cat "$TMP/err")"
# Created before d exists: its replicas are on a, b and c.
expect_rc 0 qbd volume create v --size 64M
start_chunkd d
wait_for "4 chunk servers alive" 20 nodes_alive 4
na=$(node_in a); nc=$(node_in c); nd=$(node_in d)

# ---- 1: election ----
start_manager 1
wait_for "manager 1 to lead" 20 leader_is "$MGR_PORT_1"
start_manager 2
campaigned() { logged 2 "following: the leader is on host" || logged 2 "this instance leads"; }
wait_for "manager 2 to campaign" 20 campaigned
# A follower retry (every 2 s) with both alive: never two leaders.
if poll_until 3 two_leaders; then fail "two leaders at once (both metrics say 1)"; fi
logged 2 "this instance leads" && fail "two leaders: manager 2 claimed to lead while manager 1 led"
logged 1 "no longer the leader" && fail "manager 1 lost its leadership while it lived"
key_names "$MGR_PID_1" || fail "/qbd/manager does not name manager 1: $(etcdctl_ get /qbd/manager)"
leader_is "$MGR_PORT_1" || fail "manager 1 no longer leads"
t0=$(date +%s)
stop_pid "$MGR_PID_1" KILL
wait_for "manager 2 to take over" $((TTL + 10)) leader_is "$MGR_PORT_2"
took=$(( $(date +%s) - t0 ))
# The lease expires at most TTL after the kill, the follower tries every
# 2 s, the metric is rendered every second, and date counts whole seconds.
[ $took -le $((TTL + 5)) ] || fail "took over after ${took}s, want lease ($TTL s) + retry"
key_names "$MGR_PID_2" || fail "/qbd/manager does not name manager 2"
log "1: one leader; after kill -9 the other took over in ${took}s (lease ${TTL}s) [$(since)]"

# ---- 2: the manager moves a volume nobody has attached ----
start_nbd v "$TMP/w1.sock" --zone a
uri1=$(nbd_uri "$TMP/w1.sock")
"$S" write "$uri1" "$TMP/acked1" 0 3000 21 || fail "writes failed"
[ "$(printf 'flush\n' | "$S" cmd "$uri1")" = ok ] || fail "flush failed"
stop_pid "$NBD_PID"
wait_for "no attachment" 20 no_attachment
# The leader is killed mid-copy; the next one carries the change on from
# what the learner holds. The copy is slow (1 MiB/s) until then.
start_manager 3
vid=$(qbd --json volume info v | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
expect_rc 0 qbd volume set v --rebuild-rate 1M
expect_rc 0 qbd volume move v --from "$nc" --to "$nd"
wait_for "manager 2's copy under way" 30 change_says "c['copied_chunks'] >= 2"
read -r done1 total1 <"$TMP/change"
logged 2 "volume 'v' is attached nowhere: carrying out its change" ||
	fail "the manager did not say it carried the change out"
logged 2 "joins as a learner" || fail "no learner joined in the manager's log"
stop_pid "$MGR_PID_2" KILL
wait_for "manager 3 to take over" $((TTL + 10)) leader_is "$MGR_PORT_3"
# Its writer attaches once the dead one's attachment has expired; until
# the learner's OPEN is in, it counts every chunk.
wait_for "manager 3's writer to copy only what the learner lacks (fewer than $total1 chunks)" 60 \
	change_says "0 < c['total_chunks'] < $total1"
read -r done2 total2 <"$TMP/change"
expect_rc 0 qbd volume set v --rebuild-rate default
wait_for "the manager to move c's replica to d (configuration 2)" 60 \
	info_says "d['cfg'] == 2 and '$nd' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']] and not d.get('change')"
wait_for "the manager to detach" 30 no_attachment
logged 3 "volume 'v' is attached nowhere: carrying out its change" ||
	fail "manager 3 did not say it carried the change on"
wait_for "the change counted done" 10 metric_is "$MGR_PORT_3" qbd_managerd_changes_done_total 1
log "2a: manager 2 killed with $done1 of $total1 chunks copied; manager 3 had $total2 left to copy [$(since)]"
a_change_request && fail "the move's request is still there"
expect_rc 0 qbd volume verify v
start_nbd v "$TMP/w2.sock" --zone a
"$S" verify "$(nbd_uri "$TMP/w2.sock")" "$TMP/acked1" 0 3000 21 ||
	fail "data written before the move does not read back"
stop_pid "$NBD_PID"
wait_for "no attachment" 20 no_attachment
log "2: the manager moved v's replica from c to d; verify identical; data reads back [$(since)]"

# ---- 3: down-out ----
# c holds no replica now; stopped, it cannot be chosen, and a fifth node
# in zone e is the only one placement can pick for a's slot.
stop_chunkd c
start_chunkd e
wait_for "chunk server e alive" 20 nodes_alive 4
ne=$(node_in e)
kill_chunkd a
wait_for "a down-out change request for v" 40 downout_request
logged 3 "has been down longer than 5 s: volume 'v' gets a change request" ||
	fail "the manager did not log the down-out request"
log "3: a down-out request for v [$(since)]"
wait_for "the manager to replace a's replica (configuration 3)" 60 \
	info_says "d['cfg'] == 3 and '$na' not in [n['id'] for n in d['nodes']] and '$ne' in [n['id'] for n in d['nodes']] and not d.get('change')"
wait_for "the manager to detach" 30 no_attachment
[ "$(metric "$MGR_PORT_3" qbd_managerd_downout_requests_total)" = 1 ] ||
	fail "down-out requests metric: $(metric "$MGR_PORT_3" qbd_managerd_downout_requests_total), want 1"
expect_rc 0 qbd volume verify v
start_nbd v "$TMP/w3.sock" --zone b
"$S" verify "$(nbd_uri "$TMP/w3.sock")" "$TMP/acked1" 0 3000 21 ||
	fail "after down-out, the data does not read back"
stop_pid "$NBD_PID"
stop_pid "$MGR_PID_3"
logged 3 "stepped down: lease revoked" || fail "the leader did not revoke its lease at SIGTERM"
log "PASS: election and failover, a detached volume moved, down-out carried out [$(since)]"
