#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The NBD protocol of qbd-nbd, checked by clients we did not write:
#  - nbd_serve's adopted connections (kernel mode) driven over socketpairs
#    with raw transmission-phase requests (tests/helpers/nbd-adopt);
#  - nbdinfo: block sizes, CAN_MULTI_CONN, DF, base:allocation, --map of
#    a fresh volume, after writes, trims and zeroing;
#  - zeroing and trimming never-written ranges allocates nothing on any
#    replica (chunk servers restarted: their stores report the slots used);
#  - raw structured replies and option errors (nbd-structured-raw.py);
#  - libnbd (nbdsh's library): structured replies, BLOCK_STATUS, DF,
#    malformed requests with strict mode off, several connections
#    (nbd-libnbd.py);
#  - nbdcopy with 4 connections in and out, qemu-img convert and compare,
#    qemu-io write -z (with and without NO_HOLE), discard, read -P.
. "$(dirname "$0")/lib.sh"
init_test "$@"
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$BUILD/tests/helpers/nbd-adopt" ] || fail "no tests/helpers/nbd-adopt in $BUILD (make all builds it)"
for c in nbdinfo nbdcopy qemu-img qemu-io etcd; do
	command -v $c >/dev/null || skip "$c not installed"
done
# python3-libnbd belongs to the system python, which may not be first in
# PATH.
PYNBD=""
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import nbd' 2>/dev/null; then PYNBD=$p; break; fi
done
[ -n "$PYNBD" ] || skip "python3-libnbd not installed"

start_cluster a b c
SIZE=$((64 * 1024 * 1024))
M=1048576

# Chunk slots used in ZONE's store, as the engine reports at start.
slots_used() {
	grep -o '[0-9]* of [0-9]* chunk slots used' "$TMP/chunkd-$1.log" | tail -n 1 | cut -d' ' -f1
}

# map URI: nbdinfo --map as "offset length type" lines.
map() { nbdinfo --map "$1" | awk '{ print $1, $2, $3 }'; }

qio() {
	out=$(qemu-io -f raw "$@" 2>&1) || { echo "$out" >&2; return 1; }
	if echo "$out" | grep -qiE 'fail|error|mismatch'; then echo "$out" >&2; return 1; fi
}

# --- adopted connections: transmission phase at once, simple replies,
# a replacement adopted from on_conn_end, stop after DISC. The volume
# gets chunks 0, 2 and 3 written; chunk 1 is only zeroed.
qbd volume create kvol --size $SIZE --replicas 3 >/dev/null
nbd-adopt --volume kvol --conns 2 -- python3 "$here/nbd-adopt-raw.py" $SIZE \
	>"$TMP/adopt.out" 2>"$TMP/adopt.log" || {
	cat "$TMP/adopt.out" >&2; fail "adopted connections (see adopt.log)"; }
grep -q '^nbd-adopt-raw: ok$' "$TMP/adopt.out" || fail "raw requests on adopted connections"
grep -q '^end 0 nodisc$' "$TMP/adopt.out" || fail "no nodisc end reported for connection 0"
grep -q '^adopted 2$' "$TMP/adopt.out" || fail "spare not adopted from on_conn_end"
grep -q '^end 1 disc$' "$TMP/adopt.out" && grep -q '^end 2 disc$' "$TMP/adopt.out" ||
	fail "DISC ends not reported"
log "adopted connections ok"

# --- nbdinfo, and allocation: a fresh volume is one hole; one written
# block is data; zeroing and trimming never-written ranges (whole chunks,
# parts of chunks, with and without NO_HOLE) leaves holes and allocates
# nothing.
qbd volume create svol --size $SIZE --replicas 3 >/dev/null
start_nbd svol "$TMP/svol.sock"
uri=$(nbd_uri "$TMP/svol.sock")
nbdinfo --json "$uri" >"$TMP/info.json"
python3 - "$TMP/info.json" <<'PY' || fail "nbdinfo: wrong export information"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
want = {"block_size_minimum": 1, "block_size_preferred": 4096,
        "block_size_maximum": 32 << 20, "can_multi_conn": True, "can_df": True,
        "can_trim": True, "can_zero": True, "can_fua": True, "can_flush": True,
        "is_read_only": False}
bad = {k: e.get(k) for k, v in want.items() if e.get(k) != v}
if bad or "base:allocation" not in e.get("contexts", []):
    print("nbdinfo:", bad, e.get("contexts"))
    sys.exit(1)
PY
[ "$(map "$uri")" = "0 $SIZE 3" ] || { map "$uri" >&2; fail "fresh volume is not one hole"; }
qio "$uri" -c 'write -P 0xaa 0 4096' -c "write -z $((8 * M)) $((8 * M))" \
	-c "write -z -u $((20 * M)) $((3 * M))" -c "discard $((30 * M)) $((5 * M))" \
	-c "write -z $((40 * M + 100)) 1000" -c 'discard 65536 65536' \
	-c 'write -z -u 8192 4096' || fail "qemu-io zeroing never-written ranges"
qio "$uri" -c 'read -P 0xaa 0 4096' -c "read -P 0 4096 $((64 * M - 4096))" ||
	fail "zeroed ranges do not read as zeros"
want=$(printf '0 4096 0\n4096 %d 3' $((SIZE - 4096)))
[ "$(map "$uri")" = "$want" ] || { map "$uri" >&2; fail "map after zeroing never-written ranges"; }
# Trimmed and zeroed written blocks become holes; a partial zero keeps
# its block's data.
qio "$uri" -c "write -P 0x33 $((2 * M)) 65536" -c "discard $((2 * M)) 8192" \
	-c "write -z $((2 * M + 16384)) 4096" -c "write -z -u $((2 * M + 24576)) 4096" \
	-c "write -z $((2 * M + 32768 + 10)) 100" -c "read -P 0 $((2 * M)) 8192" \
	-c "read -P 0x33 $((2 * M + 8192)) 8192" -c "read -P 0 $((2 * M + 32778)) 100" ||
	fail "qemu-io trim and zero of written blocks"
want=$(printf '%s\n' "0 4096 0" "4096 $((2 * M + 8192 - 4096)) 3" "$((2 * M + 8192)) 8192 0" "$((2 * M + 16384)) 4096 3" "$((2 * M + 20480)) 4096 0" \
	"$((2 * M + 24576)) 4096 3" "$((2 * M + 28672)) 36864 0" \
	"$((2 * M + 65536)) $((SIZE - 2 * M - 65536)) 3")
[ "$(map "$uri")" = "$want" ] || { map "$uri" >&2; fail "map after trim and zero"; }
log "nbdinfo --map: fresh hole, data after writes, holes after trim and zero"
stop_pid "$NBD_PID"
# Every replica holds kvol's chunks 0, 2 and 3 and svol's chunks 0 and 2:
# nothing for the ranges only zeroed. The stores say so at start.
for z in a b c; do
	stop_chunkd $z
	start_chunkd $z
	n=$(slots_used $z)
	[ "$n" = 5 ] || fail "zone $z: $n chunk slots used, want 5 (zeroing allocated)"
done
wait_for "3 chunk servers alive again" 20 nodes_alive 3
log "zeroing never-written ranges allocated nothing on any replica"

# --- raw structured replies and option errors, on a fresh volume.
qbd volume create rvol --size $SIZE --replicas 3 >/dev/null
start_nbd rvol "$TMP/rvol.sock"
python3 "$here/nbd-structured-raw.py" "$TMP/rvol.sock" $SIZE ||
	fail "raw structured replies"
stop_pid "$NBD_PID"
log "raw structured replies, meta context options ok"

# --- libnbd, then nbdcopy and qemu-img, on one more fresh volume.
qbd volume create lvol --size $SIZE --replicas 3 >/dev/null
start_nbd lvol "$TMP/lvol.sock"
uri=$(nbd_uri "$TMP/lvol.sock")
"$PYNBD" "$here/nbd-libnbd.py" "$uri" $SIZE || fail "libnbd"
# nbdsh itself (it runs the python3 of PATH: put the one with libnbd first).
PATH="$(dirname "$(command -v "$PYNBD")"):$PATH" nbdsh --base-allocation -u "$uri" \
	-c 'assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION) and h.can_multi_conn()' \
	-c 'h.pwrite(b"\x42" * 4096, 50 << 20); h.flush()' \
	-c 'e = []; h.block_status(8192, (50 << 20) - 4096, lambda c, o, x, err: e.extend(x))' \
	-c 'assert e[:4] == [4096, 3, 4096, 0], e' || fail "nbdsh"
log "nbdsh: base:allocation, write, flush, block status ok"
log "libnbd: structured replies, block status, strict mode off, multi-conn ok"

# 24 MiB of data, then a hole, through 4 connections each way. nbdcopy
# zeroes the destination's holes, which must stay holes.
head -c $((24 * M)) /dev/urandom >"$TMP/in.raw"
truncate -s $SIZE "$TMP/in.raw"
nbdcopy --connections=4 "$TMP/in.raw" "$uri" || fail "nbdcopy into the volume"
nbdcopy --connections=4 "$uri" "$TMP/out.raw" || fail "nbdcopy out of the volume"
cmp "$TMP/in.raw" "$TMP/out.raw" || fail "nbdcopy: data read back differs"
want=$(printf '0 %d 0\n%d %d 3' $((24 * M)) $((24 * M)) $((SIZE - 24 * M)))
[ "$(map "$uri")" = "$want" ] || { map "$uri" >&2; fail "map after nbdcopy"; }
log "nbdcopy --connections=4 round trip ok, holes kept"

qemu-img convert -f raw -O raw "$uri" "$TMP/conv.raw" || fail "qemu-img convert out"
qemu-img compare -f raw -F raw "$uri" "$TMP/conv.raw" >/dev/null ||
	fail "qemu-img compare: volume and its copy differ"
cmp "$TMP/in.raw" "$TMP/conv.raw" || fail "qemu-img convert: copy differs from the data"
head -c $((3 * M)) /dev/urandom | dd of="$TMP/conv.raw" bs=1M seek=40 conv=notrunc 2>/dev/null
qemu-img convert -n -f raw -O raw "$TMP/conv.raw" "$uri" || fail "qemu-img convert in"
qemu-img compare -f raw -F raw "$TMP/conv.raw" "$uri" >/dev/null ||
	fail "qemu-img compare after converting into the volume"
qio "$uri" -c "read -P 0 $((24 * M)) $((16 * M))" -c "read -P 0 $((43 * M)) $((21 * M))" ||
	fail "qemu-io: holes after qemu-img convert"
log "qemu-img convert and compare ok"
rm -f "$TMP/in.raw" "$TMP/out.raw" "$TMP/conv.raw"

stop_pid "$NBD_PID"
for v in kvol svol lvol; do
	qbd volume verify $v >/dev/null || fail "replicas of $v differ"
done
log "PASS"
