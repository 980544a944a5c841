#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Thin provisioning through real processes: the space a volume holds is
# reported per replica (`qbd volume info`, USAGE) and per chunk server
# (`qbd node list`, republished node records); a TRIM of written data
# lowers both and the store files' allocated blocks; WRITE_ZEROES and
# reads of ranges never written cost the chunk servers no data I/O (their
# engines' counters, in the node records).
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v nbdcopy >/dev/null || skip "nbdcopy not installed"
PYNBD=""
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import nbd' 2>/dev/null; then PYNBD=$p; break; fi
done
[ -n "$PYNBD" ] || skip "python3-libnbd not installed"

MiB=1048576
start_etcd
# No scrub: its reads would count as data I/O.
for z in a b c; do start_chunkd "$z" --scrub-rate 0; done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
qbd volume create vol1 --size 64M --replicas 3 >/dev/null
sock="$TMP/vol1.sock"
start_nbd vol1 "$sock"
uri=$(nbd_uri "$sock")

# node_check EXPR: EXPR holds for every node record (n: its JSON).
node_check() {
	qbd node list --json | python3 -c '
import json, sys
sys.exit(0 if all(eval(sys.argv[1]) for n in json.load(sys.stdin)) else 1)' "$1"
}
# vol_check EXPR: EXPR holds for `qbd volume info vol1 --json` (d).
vol_check() {
	qbd volume info vol1 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"
}
allocated() { # bytes a store file takes on disk
	echo $(( $(stat -c '%b * %B' "$TMP/chunk-$1.img") ))
}
nbd_run() { # python with h, a libnbd handle on the volume
	"$PYNBD" -c "
import nbd
h = nbd.NBD()
h.connect_uri('$uri')
$1
h.shutdown()"
}

# 8 MiB of data: chunks 0-7, every block written.
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 13 + 7) % 251 + 1 for i in range(8 << 20)))' \
	>"$TMP/data.bin"
for z in a b c; do eval "alloc0_$z=$(allocated $z)"; done
nbdcopy "$TMP/data.bin" "$uri" || fail "writing 8 MiB"
# (W replicas acknowledged each write; the third may still be writing.)
wait_for "volume info: 8 MiB held on each replica" 20 \
	vol_check "d['held'] == 24 * $MiB and all(n['held'] == 8 * $MiB and n['chunks'] == 8 for n in d['nodes'])"
wait_for "node records with 8 MiB held" 20 node_check "n['held'] == 8 * $MiB and n['used'] == 8 * $MiB"
for z in a b c; do
	eval "a0=\$alloc0_$z"
	a1=$(allocated $z)
	[ $((a1 - a0)) -ge $((8 * MiB)) ] || fail "zone $z's store file grew by $((a1 - a0)) bytes for 8 MiB"
	eval "alloc1_$z=$a1"
done
log "8 MiB written: 8 MiB held on each replica, 24 MiB in all"

# TRIM 4 MiB of it (chunks 2-5): held drops, the store files shrink; the
# chunks keep their slots (their versions must persist).
nbd_run "h.trim(4 * $MiB, 2 * $MiB)" || fail "trim"
wait_for "volume info: 4 MiB held on each replica after the trim" 20 \
	vol_check "d['held'] == 12 * $MiB and all(n['held'] == 4 * $MiB and n['chunks'] == 8 for n in d['nodes'])"
wait_for "node records with 4 MiB held" 20 node_check "n['held'] == 4 * $MiB and n['used'] == 8 * $MiB"
for z in a b c; do
	eval "a1=\$alloc1_$z"
	a2=$(allocated $z)
	[ $((a1 - a2)) -ge $((4 * MiB)) ] || fail "zone $z's store file shrank by $((a1 - a2)) bytes for a 4 MiB trim"
done
qbd volume info vol1 | grep -q '^Held: *12.0 MiB' || fail "volume info text: $(qbd volume info vol1)"
log "trimmed 4 MiB: 4 MiB held on each replica, store files smaller by 4 MiB"

# WRITE_ZEROES (never written, and over written data) and reads of
# ranges never written (or trimmed) issue no data I/O. A FLUSH at the end
# moves the sync counters: the node records published after it count
# everything before it.
io() { # the nodes' data I/O counters and syncs, one line per node
	qbd node list --json | python3 -c '
import json, sys
for n in json.load(sys.stdin):
    i = n["io"]
    print(n["zone"], i["data_reads"], i["data_read_bytes"], i["data_writes"], i["data_write_bytes"], i["syncs"])'
}
# Settled: the same numbers across 4 s. A quiet window, not a wait for
# an event: a chunk server republishes its record only when a number
# changed, at most every keepalive period (3 s), so no event says "no
# more changes"; a window longer than the period does.
nodes_settled() { io >"$TMP/io.1"; sleep 4; io >"$TMP/io.2"; cmp -s "$TMP/io.1" "$TMP/io.2"; }
wait_for "node records to settle" 30 nodes_settled
cp "$TMP/io.2" "$TMP/io.before"
nbd_run "
h.zero(8 * $MiB, 16 * $MiB)
h.zero(1 * $MiB, 6 * $MiB)
b = h.pread(8 * $MiB, 32 * $MiB)
assert b == bytes(8 * $MiB), 'never-written range not zeros'
b = h.pread(4 * $MiB, 2 * $MiB)
assert b == bytes(4 * $MiB), 'trimmed range not zeros'
b = h.pread(1 * $MiB, 6 * $MiB)
assert b == bytes($MiB), 'zeroed range not zeros'
h.flush()" || fail "zeroing and reading holes"
synced() {
	io >"$TMP/io.after"
	python3 - "$TMP/io.before" "$TMP/io.after" <<'PY'
import sys
b = {l.split()[0]: list(map(int, l.split()[1:])) for l in open(sys.argv[1])}
a = {l.split()[0]: list(map(int, l.split()[1:])) for l in open(sys.argv[2])}
sys.exit(0 if all(a[z][4] > b[z][4] for z in b) else 1)
PY
}
wait_for "node records published after the flush" 20 synced
python3 - "$TMP/io.before" "$TMP/io.after" <<'PY' || fail "data I/O while zeroing and reading holes: $(cat "$TMP/io.before" "$TMP/io.after")"
import sys
b = {l.split()[0]: list(map(int, l.split()[1:])) for l in open(sys.argv[1])}
a = {l.split()[0]: list(map(int, l.split()[1:])) for l in open(sys.argv[2])}
sys.exit(0 if all(a[z][:4] == b[z][:4] for z in b) else 1)
PY
wait_for "volume info: 9 MiB held after zeroing" 20 vol_check "d['held'] == 9 * $MiB"
log "WRITE_ZEROES and reads of holes: no data I/O on any chunk server"

# Reading written data does count (the counters are not stuck).
h=$(qbd node list --json | python3 -c 'import json,sys; print(sum(n["io"]["data_reads"] for n in json.load(sys.stdin)))')
nbd_run "assert h.pread(4096, 0) == open('$TMP/data.bin', 'rb').read(4096)" || fail "read back"
wait_for "a data read counted" 20 sh -c "[ \$(qbd node list --json | python3 -c 'import json,sys; print(sum(n[\"io\"][\"data_reads\"] for n in json.load(sys.stdin)))') -gt $h ]"
stop_pid "$NBD_PID"
qbd volume verify vol1 >/dev/null || fail "volume verify"
log "PASS"
