#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# fio (nbd engine, verify=crc32c) keeps passing while one chunk server is
# killed with SIGKILL, and again after it is restarted: writes complete on
# the two replicas left (W=2) and every block verifies.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v fio >/dev/null || skip "fio not installed"
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"

start_cluster a b c
qbd volume create vol1 --size 512M --replicas 3 >/dev/null
sock="$TMP/vol1.sock"
mport=$(free_port)
start_nbd vol1 "$sock" --metrics "127.0.0.1:$mport"
uri=$(nbd_uri "$sock")

run_fio() { # name offset
	fio --name="$1" --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k \
		--iodepth=8 --offset="$2" --size=48M --io_size=24M \
		--verify=crc32c --verify_state_save=0 --verify_fatal=1 --do_verify=1 \
		--output="$TMP/fio-$1.txt" || { cat "$TMP/fio-$1.txt" >&2; fail "fio $1 failed"; }
	grep -q 'err= 0' "$TMP/fio-$1.txt" || { cat "$TMP/fio-$1.txt" >&2; fail "fio $1 reported errors"; }
}

# 1: all three replicas up.
run_fio healthy 0
log "fio with 3 replicas ok"

# 2: kill zone c's chunk server while fio runs.
w0=$(metric $mport 'qbd_nbd_bytes_total{op="write"}')
fio --name=during --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k \
	--iodepth=8 --offset=64M --size=48M --io_size=48M \
	--verify=crc32c --verify_state_save=0 --verify_fatal=1 --do_verify=1 \
	--output="$TMP/fio-during.txt" &
fio_pid=$!
track_pid $fio_pid "fio (during the kill)"
# The kill must land mid-stream: once qbd-nbd has taken 8 of fio's 48
# MiB (its metrics say so), and before fio is done.
fio_sent() { echo $(( $(metric $mport 'qbd_nbd_bytes_total{op="write"}') - w0 )); }
fio_going() { [ "$(fio_sent)" -ge $((8 << 20)) ]; }
wait_for "fio to write 8 MiB" 60 fio_going
pid_gone $fio_pid && fail "fio ended before the kill: the kill would not be mid-stream"
kill_chunkd c KILL
log "killed chunk server c mid-stream, after fio wrote $(($(fio_sent) >> 20)) MiB"
reap_pid $fio_pid
[ $REAP_STATUS -eq 0 ] || { cat "$TMP/fio-during.txt" >&2; fail "fio failed while a chunk server died (exit $REAP_STATUS)"; }
grep -q 'err= 0' "$TMP/fio-during.txt" || fail "fio during the kill reported errors"
log "fio across a SIGKILL of one replica ok"

# 3: with c still down.
run_fio degraded 128M
log "fio with 2 replicas ok"

# 4: restart c; the client reconnects and keeps going.
start_chunkd c
wait_for "chunk server c alive again" 20 nodes_alive 3
run_fio restarted 192M
log "fio after restart ok"

# Everything written in phases 1-4 still verifies.
fio --name=reverify --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k \
	--iodepth=8 --offset=0 --size=48M --io_size=24M --verify=crc32c --verify_state_save=0 \
	--verify_only --verify_fatal=1 --output="$TMP/fio-reverify.txt" ||
	{ cat "$TMP/fio-reverify.txt" >&2; fail "re-verify of phase 1 data failed"; }
stop_pid "$NBD_PID"
log "PASS"
