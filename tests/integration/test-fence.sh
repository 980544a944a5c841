#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd volume fence: an operator fences a dead node's writer out of
# service (Kubernetes' non-graceful node shutdown).
#  1. A writer (qbd-nbd, driven by tests/helpers/nbd-stream) writes and
#     flushes, then is SIGSTOPped: a zombie. `qbd volume fence vol1`
#     names it and tells every replica. SIGCONT: its next writes and its
#     flush fail, it logs that it is fenced, and a new writer attaches
#     without --force and reads exactly what was acknowledged before the
#     fence (proof by content: the zombie's pattern is on no block).
#  2. Fencing again, and fencing a volume nobody attached: exit 0.
#  3. --node: a volume whose CSI publish record names the node is fenced,
#     the others are left alone; a node with nothing: exit 0, "nothing to
#     fence"; a writer found by its attachment's host.
#  4. With two of three replicas down the fence does not hold (R=3, W=2
#     needs 2 replicas to promise): exit 1, saying so.
. "$(dirname "$0")/lib.sh"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"

start_cluster a b c
qbd volume create vol1 --size 64M --replicas 3 >/dev/null

# ---- 1: a zombie writer, fenced ----
sock1="$TMP/w1.sock"
start_nbd vol1 "$sock1"
w1=$NBD_PID
mkfifo "$TMP/cmd1.in"
"$S" cmd "$(nbd_uri "$sock1")" <"$TMP/cmd1.in" >"$TMP/cmd1.out" 2>&1 &
cpid=$!
track_pid $cpid "nbd-stream cmd (writer 1)"
exec 3>"$TMP/cmd1.in"
ask() { # N COMMAND: send COMMAND, wait for answer number N, print it
	echo "$2" >&3
	wait_for "answer $1 to '$2'" 60 sh -c "[ \$(wc -l <'$TMP/cmd1.out') -ge $1 ]"
	sed -n "${1}p" "$TMP/cmd1.out"
}
# Block 100 and block 8000 (another chunk), acknowledged and flushed.
[ "$(ask 1 'write 100 1')" = ok ] || fail "writer 1 cannot write"
[ "$(ask 2 'write 8000 2')" = ok ] || fail "writer 1 cannot write"
[ "$(ask 3 'flush')" = ok ] || fail "writer 1 cannot flush"
epoch1=$(qbd --json volume status vol1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["attachment"]["epoch"])')
kill -STOP $w1
log "writer 1 (pid $w1, epoch $epoch1) wrote blocks 100 and 8000, then was stopped"

expect_rc 0 qbd volume fence vol1
cat "$TMP/out" >&2
out_has "volume vol1: fenced at epoch $((epoch1 + 1))"
out_has "pid $w1 (epoch $epoch1), attachment removed"
out_has "replicas told: 3 of 3 (2 needed)"
expect_rc 0 qbd --json volume status vol1
json_check 'd["attachment"] is None and d["epoch"] == '"$((epoch1 + 1))"
log "fenced: no attachment record, epoch $((epoch1 + 1))"

kill -CONT $w1
# The zombie's pattern (seed 7) over both blocks, then a flush.
a1=$(ask 4 'write 100 7')
a2=$(ask 5 'write 8000 7')
a3=$(ask 6 'flush')
exec 3>&-
wait_pid $cpid
log "writer 1 after SIGCONT: write '$a1', write '$a2', flush '$a3'"

# A new writer, without --force: the record is gone.
sock2="$TMP/w2.sock"
start_nbd vol1 "$sock2"
w2=$NBD_PID
grep -q "writes wait" "$TMP/nbd-vol1.log" ||
	fail "the new writer did not wait out the old writer's read lease"
holds() { # BLOCK SEED WHAT: BLOCK reads back as SEED's pattern through writer 2
	_out=$(printf 'verify %s %s\nverify %s 7\n' "$1" "$2" "$1" |
		timeout 60 "$S" cmd "$(nbd_uri "$sock2")")
	[ "$(echo "$_out" | sed -n 1p)" = ok ] && return 0
	if [ "$(echo "$_out" | sed -n 2p)" = ok ]; then
		log "the fenced writer's write landed: block $1 holds its pattern, not $3"
	else
		log "block $1 does not read back as $3: $(echo "$_out" | sed -n 1p)"
	fi
	return 1
}
bad=0
holds 100 1 "the data acknowledged before the fence" || bad=1
holds 8000 2 "the data acknowledged before the fence" || bad=1
[ $bad -eq 0 ] || fail "a write of the fenced writer landed (see above)"
log "new writer attached without --force; blocks 100 and 8000 hold what was acknowledged"
# (After the proof by content, which says more when it fails.)
case "$a1" in error*) ;; *) fail "the fenced writer could still write: $a1" ;; esac
case "$a2" in error*) ;; *) fail "the fenced writer could still write: $a2" ;; esac
case "$a3" in error*) ;; *) fail "the fenced writer could still flush: $a3" ;; esac
grep -q "fenced" "$TMP/nbd-vol1.log" || fail "writer 1 did not log that it is fenced"
stop_pid $w1
grep -q "stopped; fenced" "$TMP/nbd-vol1.log" || fail "writer 1 did not stop as fenced"

# ---- 2: fence again (writer 2 this time), and a volume nobody attached ----
qbd volume create vol3 --size 16M --replicas 3 >/dev/null
expect_rc 0 qbd volume fence vol3
out_has "volume vol3: fenced at epoch 1; no writer attached; replicas told: 3 of 3"
expect_rc 0 qbd volume fence vol3
out_has "volume vol3: fenced at epoch 2; no writer attached"
expect_rc 0 qbd --json volume fence vol3
json_check 'd["volume"] == "vol3" and d["fenced"] and d["epoch"] == 3 and d["writer"] is None'
expect_rc 1 qbd volume fence nosuch
grep -q "no such volume" "$TMP/err" || fail "no clear error for a missing volume: $(cat "$TMP/err")"
expect_rc 2 qbd volume fence
expect_rc 2 qbd volume fence vol1 --node x
log "fencing an unattached volume just bumps its epoch; usage errors exit 2"

# ---- 3: --node ----
qbd volume create vol2 --size 16M --replicas 3 >/dev/null
sock3="$TMP/w3.sock"
start_nbd vol2 "$sock3"
w3=$NBD_PID
etcdctl_ put /qbd/csi/publish/vol2 '{"node":"k8s-dead-1","readonly":false,"since":1}' >/dev/null
host=$(qbd --json volume status vol1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["attachment"]["host"])')
[ "$host" != k8s-dead-1 ] || skip "this machine is called k8s-dead-1"
expect_rc 0 qbd volume fence --node nobody-here
out_has "node nobody-here: nothing to fence"
expect_rc 0 qbd --json volume fence --node nobody-here
json_check 'd == {"node": "nobody-here", "volumes": []}'
expect_rc 0 qbd --json volume fence --node k8s-dead-1
json_check '[v["volume"] for v in d["volumes"]] == ["vol2"]'
json_check 'd["volumes"][0]["fenced"] and d["volumes"][0]["published_on_node"]'
json_check 'd["volumes"][0]["writer"]["pid"] == '"$w3"' and d["volumes"][0]["attachment_removed"]'
json_check 'd["volumes"][0]["refusing"] == 3 and all(r["status"] == "promised" for r in d["volumes"][0]["replicas"])'
out=$(printf 'write 10 3\n' | timeout 60 "$S" cmd "$(nbd_uri "$sock3")")
case "$out" in error*) ;; *) fail "the writer of vol2 could still write after the fence: $out" ;; esac
out=$(printf 'write 10 3\nflush\nverify 10 3\n' | timeout 60 "$S" cmd "$(nbd_uri "$sock2")")
[ "$out" = "$(printf 'ok\nok\nok')" ] || fail "vol1's writer was touched by fencing another node: $out"
log "--node k8s-dead-1 fenced vol2 (its CSI publish record) and left vol1 alone"
stop_pid $w3
# By the attachment's host: writer 2 of vol1 (vol2 has no writer now).
expect_rc 0 qbd volume fence --node "$host"
cat "$TMP/out" >&2
out_has "volume vol1: fenced at epoch"
out_has "pid $w2 "
if grep -q "volume vol2" "$TMP/out"; then fail "vol2 has no writer on $host: $(cat "$TMP/out")"; fi
out=$(printf 'write 10 4\n' | timeout 60 "$S" cmd "$(nbd_uri "$sock2")")
case "$out" in error*) ;; *) fail "vol1's writer could still write after --node $host: $out" ;; esac
stop_pid $w2
log "--node $host fenced vol1's writer by its attachment's host"

# ---- 4: too few replicas to fence ----
kill_chunkd a TERM
kill_chunkd b TERM
expect_rc 1 qbd volume fence vol3
cat "$TMP/err" >&2
grep -q "does not hold: 1 of 3 replicas promised it, 2 needed" "$TMP/err" ||
	fail "no clear error when the fence does not hold: $(cat "$TMP/err")"
expect_rc 1 qbd --json volume fence vol3
json_check 'not d["fenced"] and d["refusing"] == 1 and d["needed"] == 2 and "does not hold" in d["error"]'
log "with 2 of 3 replicas down the fence does not hold: exit 1"
log "PASS"
