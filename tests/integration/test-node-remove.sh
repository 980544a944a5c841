#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A node dies for good and is replaced (issue: "a dead node is replaced,
# not mourned"). Three zones, one volume attached through qbd-nbd, 48 MiB
# written; then, with fio (nbd engine, verify) writing all along:
#  1. zone c's chunk server is killed and its store deleted; a new chunk
#     server starts in zone c (a new node, empty);
#  2. `qbd node remove` of the dead node: the writer adds the new node as
#     a learner and rebuilds it from a and b (rate-limited here, so the
#     copy takes seconds); its status shows the copy moving;
#  3. the writer is killed mid-rebuild; the next writer carries the change
#     on from the record and copies only what was left (its total is the
#     first one's less what was copied: both printed); then the new
#     node's chunk server is restarted mid-copy, and the copy goes on
#     from what it holds, not from zero;
#  4. the record ends at configuration 2 with the new node; the volume is
#     healthy; `qbd volume verify` finds a, b and the new node identical;
#  5. zone a's chunk server is stopped: every block still reads back right
#     from b and the new node.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
command -v fio >/dev/null 2>&1 || skip "fio not installed"
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"
BLOCKS=12288 # 48 MiB from block 0

# change_says EXPR: the writer's status document has a "change" that
# satisfies EXPR (Python, over c); its copied and total chunks go to
# $TMP/change.
change_says() {
	etcdctl_ get --print-value-only "/qbd/status/$vid" >"$TMP/doc.json" 2>/dev/null &&
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); c = d.get("change")
if not c: sys.exit(1)
open(sys.argv[3], "w").write("%d %d\n" % (c["copied_chunks"], c["total_chunks"]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$TMP/doc.json" "$1" "$TMP/change"
}
fio_start() { # name offset: random writes with verify, in the background
	# --thread: one process, so that stopping it stops its job too
	fio --name="$1" --thread --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=4 \
		--offset="$2" --size=8M --io_size=64M --rate_iops=300 \
		--verify=crc32c --verify_state_save=0 --verify_fatal=1 --do_verify=1 \
		--output="$TMP/fio-$1.txt" &
	FIO_PID=$!
	track_pid $FIO_PID "fio $1"
}
fio_end() { # pid name
	wait_pid "$1"
	grep -q 'err= 0' "$TMP/fio-$2.txt" || { cat "$TMP/fio-$2.txt" >&2; fail "fio $2 reported errors"; }
}

start_cluster a b c
expect_rc 0 qbd volume create v --size 256M
qbd --json volume info v >"$TMP/info.json"
vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/info.json")
nc=$(node_in c)

mport=$(free_port)
start_nbd v "$TMP/w1.sock" --zone a --resync-rate 6M --metrics "127.0.0.1:$mport"
w1=$NBD_PID
uri=$(nbd_uri "$TMP/w1.sock")
"$S" write "$uri" "$TMP/acked" 0 $BLOCKS 31 || fail "writes failed"
[ "$(printf 'flush\n' | "$S" cmd "$uri")" = ok ] || fail "flush failed"
log "48 MiB written and flushed on three replicas"

# ---- 1: zone c dies for good; a new node in zone c ----
fio_start during1 200M
f1=$FIO_PID
kill_chunkd c
rm -f "$TMP/chunk-c.img"
start_chunkd c
# new_node_in_c: a node other than the dead one is alive in zone c ($nc2).
new_node_in_c() {
	qbd --json node list >"$TMP/nodes.json" 2>/dev/null && nc2=$(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); d = d["nodes"] if isinstance(d, dict) else d
print([n["id"] for n in d if n["zone"] == "c" and n["alive"] and n["id"] != sys.argv[2]][0])' \
		"$TMP/nodes.json" "$nc" 2>/dev/null) && [ -n "$nc2" ]
}
wait_for "a new node alive in zone c" 20 new_node_in_c
log "zone c: node $nc dead and its store gone; new node $nc2"

# ---- 2: node remove; the rebuild moves ----
expect_rc 0 qbd node remove "$nc" --yes
wait_for "the writer's status to show the copy to the new node moving" 60 \
	change_says "c['to'] == '$nc2' and c['copied_chunks'] > 2 and c['phase'] == 'learner'"
read -r done1 total1 <"$TMP/change"
log "rebuild under way: $done1 of $total1 chunks copied"
[ "$(metric "$mport" qbd_volume_change_phase)" = 1 ] || fail "qbd-nbd's metrics do not show the copy"
expect_rc 3 qbd volume status v
out_has '^Copying: *learner: .* of .* copied ([0-9]*%), .*/s'
expect_rc 3 qbd --json volume status v
json_check 'd["change_progress"]["phase"] == "learner" and d["change_progress"]["total_bytes"] > 0 and d["change"]["phase"] == "learner"'
expect_rc 3 qbd status
out_has "^  moving:   v: slot [0-9], node $nc -> $nc2, learner: "
expect_rc 3 qbd --json status
json_check 'd["changes"][0]["volume"] == "v" and d["changes"][0]["progress"]["copied_bytes"] >= 0'
log "status: $(qbd volume status v | grep Copying)"
[ "$(metric "$mport" qbd_volume_change_total_bytes)" -gt 0 ] || fail "qbd-nbd's metrics show nothing to copy"

# ---- 3: the writer killed mid-rebuild; the next carries on ----
# fio's nbd engine may spin on a server that died under it: it goes first
# (its writes were acknowledged or not; the blocks checked are nbd-stream's).
stop_pid "$f1" KILL
stop_pid "$w1" KILL
info_says "d['cfg'] == 1" || fail "the change finished before the writer was killed: $(cat "$TMP/poll.json")"
# Slow (1 MiB/s) until the learner's restart below, then its own 6M.
expect_rc 0 qbd volume set v --rebuild-rate 1M
start_nbd v "$TMP/w2.sock" --zone a --force --resync-rate 6M
w2=$NBD_PID
uri=$(nbd_uri "$TMP/w2.sock")
# Until the learner's OPEN is in, the second writer counts it stale for
# every chunk; its list then clears what it holds already.
wait_for "the second writer to count only what the learner lacks (fewer than $total1 chunks)" 30 \
	change_says "0 < c['total_chunks'] < $total1"
read -r done2 total2 <"$TMP/change"
log "the second writer: $total2 chunks left to copy (the first had copied $done1 of $total1)"

# ---- 3b: the new replica's chunk server restarted mid-copy ----
# What it holds was copied with FUA: its OPEN after the restart lists it,
# and the writer copies only the rest.
wait_for "a part of the second writer's copy done" 30 change_says "c['copied_chunks'] >= 2"
read -r done3 total3 <"$TMP/change"
ups() { grep -c "node $nc2 .* up at epoch" "$TMP/nbd-v.log"; }
ups0=$(ups)
stop_chunkd c
start_chunkd c
learner_up() { [ "$(ups)" -gt "$ups0" ]; }
wait_for "the writer to reconnect to the learner" 30 learner_up
held=$(grep "node $nc2 .* up at epoch" "$TMP/nbd-v.log" | tail -n 1 |
	sed -n 's/.* \([0-9]*\) chunks listed.*/\1/p')
[ -n "$held" ] && [ "$held" -ge "$done3" ] ||
	fail "the restarted learner listed '$held' chunks, fewer than the $done3 copied to it"
expect_rc 0 qbd volume set v --rebuild-rate default
log "the learner's chunk server restarted with $done3 of $total3 copied: its OPEN listed $held chunks, copied on from there"
fio_start during2 220M
f2=$FIO_PID

# ---- 4: the change completes ----
wait_for "the record to name the new node (configuration 2)" 120 \
	info_says "d['cfg'] == 2 and '$nc2' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']]"
fio_end "$f2" during2
wait_for "volume v healthy" 30 health_is 0 healthy
"$S" verify "$uri" "$TMP/acked" 0 $BLOCKS 31 || fail "the data does not read back after the rebuild"
[ "$(printf 'flush\n' | "$S" cmd "$uri")" = ok ] || fail "flush failed"
stop_pid "$w2"
expect_rc 0 qbd volume verify v
log "rebuilt: verify finds a, b and $nc2 identical"

# ---- 5: without a survivor ----
stop_chunkd a
start_nbd v "$TMP/w3.sock" --zone b
w3=$NBD_PID
"$S" verify "$(nbd_uri "$TMP/w3.sock")" "$TMP/acked" 0 $BLOCKS 31 ||
	fail "with zone a stopped, the data does not read back from b and the new node"
stop_pid "$w3"
log "PASS: node $nc replaced by $nc2 under writes; $done1 of $total1 chunks copied before the writer died, $total2 left for the next; the learner restarted listing $held chunks"
