#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Failover with real processes: three chunk servers and an NBD client
# (tests/helpers/nbd-stream, on libnbd) that logs every write the server
# acknowledged.
#  1. kill -9 the writer (qbd-nbd) mid-stream; a second qbd-nbd takes over
#     and every acknowledged write is there.
#  2. SIGSTOP a writer, take over from another one, write; SIGCONT the first
#     and write its pattern over the new writer's block and over older
#     data: read through the new writer, neither block holds it (proof by
#     content: a read that fails proves nothing), and the fenced writer's
#     writes and flush failed.
#  3. kill a chunk server, keep writing, restart it: it is resynced and all
#     replicas are identical (qbd volume verify compares chunk checksums).
#
# QBD_TEST_OLD_NBD: the program of the writer fenced in 2 (default
# qbd-nbd), to try a build with fencing broken in the writer. (The fault
# suite's qbd-nbd-mutant-NO_FENCE ignores a refusal only in write
# replies: here writer 2's pings meet the new epoch first and fence it,
# so that mutant passes; chunk servers that accept an older epoch fail
# the proof by content.)
. "$(dirname "$0")/lib.sh"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"
if [ -n "${QBD_TEST_OLD_NBD:-}" ]; then
	[ -x "$QBD_TEST_OLD_NBD" ] || fail "QBD_TEST_OLD_NBD=$QBD_TEST_OLD_NBD is not a program"
	log "writer 2 (fenced in part 2) runs $QBD_TEST_OLD_NBD"
fi

start_cluster a b c
qbd volume create vol1 --size 128M --replicas 3 >/dev/null

acked() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# ---- 1: kill -9 the writer mid-stream ----
sock1="$TMP/w1.sock"
start_nbd vol1 "$sock1" --zone a
w1=$NBD_PID
"$S" write "$(nbd_uri "$sock1")" "$TMP/acked1" 0 12000 11 16 2>"$TMP/stream1.err" &
spid=$!
track_pid $spid "nbd-stream write"
wait_for "1500 writes acknowledged" 30 sh -c "[ \$(wc -l <'$TMP/acked1' 2>/dev/null || echo 0) -ge 1500 ]"
stop_pid $w1 KILL
reap_pid $spid
[ $REAP_STATUS -eq 3 ] || fail "the write stream should have been cut by the kill (exit $REAP_STATUS)"
n1=$(acked "$TMP/acked1")
[ "$n1" -lt 12000 ] || fail "the kill landed after the stream ended"
log "writer killed after $n1 acknowledged writes"

# The dead writer's attachment lives until its lease runs out: a new writer
# is refused unless it forces the takeover.
rc=0
qbd-nbd --etcd "$QBD_ETCD" --volume vol1 --socket "$TMP/no.sock" >"$TMP/no.out" 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q "attached elsewhere" "$TMP/no.out" ||
	{ cat "$TMP/no.out" >&2; fail "a second writer attached without --force"; }
sock2="$TMP/w2.sock"
NBD_PROG=${QBD_TEST_OLD_NBD:-qbd-nbd}
start_nbd vol1 "$sock2" --zone b --force
NBD_PROG=qbd-nbd
w2=$NBD_PID
"$S" verify "$(nbd_uri "$sock2")" "$TMP/acked1" 0 12000 11 ||
	fail "acknowledged writes missing after the writer was killed"
log "second writer finds all $n1 acknowledged writes"

# ---- 2: SIGSTOP the writer, take over, SIGCONT it ----
mkfifo "$TMP/cmd2.in"
"$S" cmd "$(nbd_uri "$sock2")" <"$TMP/cmd2.in" >"$TMP/cmd2.out" 2>&1 &
cpid=$!
track_pid $cpid "nbd-stream cmd (writer 2)"
exec 3>"$TMP/cmd2.in"
ask() { # N COMMAND: send COMMAND, wait for answer number N, print it
	echo "$2" >&3
	wait_for "answer $1 to '$2'" 60 sh -c "[ \$(wc -l <'$TMP/cmd2.out') -ge $1 ]"
	sed -n "${1}p" "$TMP/cmd2.out"
}
[ "$(ask 1 'write 20000 5')" = ok ] || fail "writer 2 cannot write"
# Block 100 holds part 1's data (seed 11), in a chunk writer 3 will not
# write: there the versions writer 2 knows stay current, so nothing but
# fencing can keep writer 2's write out.
grep -qx 100 "$TMP/acked1" || fail "block 100 was not acknowledged in part 1"
kill -STOP $w2
log "writer 2 stopped"

sock3="$TMP/w3.sock"
# (3>&-: the new daemon must not hold the command pipe open)
start_nbd vol1 "$sock3" --zone c --force --resync-rate 2M 3>&-
w3=$NBD_PID
out=$(printf 'write 20000 6\nflush\nverify 20000 6\n' | "$S" cmd "$(nbd_uri "$sock3")")
[ "$out" = "$(printf 'ok\nok\nok')" ] || fail "writer 3 could not take over: $out"
log "writer 3 took over and wrote"

kill -CONT $w2
# Writer 2's pattern (seed 7) over writer 3's block and over block 100.
a_new=$(ask 2 'write 20000 7')
a_old=$(ask 3 'write 100 7')
a_flush=$(ask 4 'flush')
exec 3>&-
wait_pid $cpid
# Proof by content, through writer 3: each block must read back (within
# a minute), and hold what it held before writer 2 woke up, not writer
# 2's pattern.
holds() { # BLOCK SEED WHAT: BLOCK reads back as SEED's pattern
	_out=$(printf 'verify %s %s\nverify %s 7\n' "$1" "$2" "$1" |
		timeout 60 "$S" cmd "$(nbd_uri "$sock3")")
	[ "$(echo "$_out" | sed -n 1p)" = ok ] && return 0
	if [ "$(echo "$_out" | sed -n 2p)" = ok ]; then
		log "the fenced writer's data is on the volume: block $1 holds writer 2's pattern, not $3"
	else
		log "block $1 does not read back as $3 through writer 3: $(echo "$_out" |
			sed -n 1p | grep . || echo "no answer within 60 s")"
	fi
	return 1
}
bad=0
holds 100 11 "part 1's data" || bad=1
holds 20000 6 "writer 3's data" || bad=1
[ $bad -eq 0 ] || fail "writer 2 was not fenced (see above)"
log "writer 2's pattern is on neither block: writer 3's data and part 1's read back"
case "$a_new" in error*) ;; *) fail "fenced writer 2 could still write over writer 3's block: $a_new" ;; esac
case "$a_old" in error*) ;; *) fail "fenced writer 2 could still write: $a_old" ;; esac
case "$a_flush" in error*) ;; *) fail "fenced writer 2 could still flush: $a_flush" ;; esac
grep -q "fenced" "$TMP/nbd-vol1.log" || fail "writer 2 did not log that it was fenced"
stop_pid $w2
log "writer 2 fenced: its writes and flush failed after SIGCONT"

# ---- 3: kill a chunk server, keep writing, restart it ----
kill_chunkd a KILL
log "chunk server a killed"
"$S" write "$(nbd_uri "$sock3")" "$TMP/acked3" 24000 4000 21 ||
	fail "writes failed with one chunk server down"
"$S" write "$(nbd_uri "$sock3")" "$TMP/acked4" 0 1000 22 ||
	fail "overwrites failed with one chunk server down"
start_chunkd a
wait_for "chunk server a alive again" 20 nodes_alive 3
rc=0; qbd volume verify vol1 >"$TMP/verify-early.txt" || rc=$?
[ $rc -eq 3 ] || { cat "$TMP/verify-early.txt" >&2; fail "replica a should lack the writes it missed (verify exit $rc)"; }
log "right after the restart: $(tail -1 "$TMP/verify-early.txt")"
# The writer reports the resync in etcd: degraded (exit 3) until done.
status_is() { _rc=0; qbd volume status vol1 >"$TMP/status.txt" 2>&1 || _rc=$?; [ $_rc -eq "$1" ]; }
resyncing() { status_is 3 && grep -qE ' resync +[0-9]+ +[0-9]+/[0-9]+' "$TMP/status.txt"; }
wait_for "status: degraded, replica a resyncing" 30 resyncing
log "status during resync: $(grep -E '^ *0 ' "$TMP/status.txt" | tr -s ' ' | head -1)"
wait_for "replicas identical after resync" 120 qbd volume verify vol1
wait_for "status: healthy" 20 status_is 0
# The copies went replica to replica (PULL), not through the writer.
vid=$(qbd volume info vol1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
pulled=$(etcdctl_ get --print-value-only "/qbd/status/$vid" |
	python3 -c 'import json,sys; print(sum(r.get("pulled_chunks", 0) for r in json.load(sys.stdin)["replicas"]))')
[ "$pulled" -ge 21 ] || fail "only $pulled chunks were pulled replica to replica"
log "$pulled chunks resynced replica to replica"
log "$(qbd volume verify vol1 | tail -1)"
"$S" verify "$(nbd_uri "$sock3")" "$TMP/acked3" 24000 4000 21 || fail "writes made while a was down are lost"
"$S" verify "$(nbd_uri "$sock3")" "$TMP/acked4" 0 1000 22 || fail "overwrites made while a was down are lost"
stop_pid $w3
qbd volume verify vol1 >/dev/null || fail "replicas differ after a clean stop"
log "PASS"
