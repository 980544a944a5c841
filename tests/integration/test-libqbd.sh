#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# libqbd against a real cluster: etcd + three qbd-chunkd (zones a, b, c),
# one R=3 W=2 volume. Pattern write/verify (odd offsets, chunk-crossing),
# fencing, one replica killed (writes go on with W=2) and restarted.
# Usage: test-libqbd.sh BUILD_DIR. Exit 0 ok, 1 failure, 77 skipped.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null && command -v etcdctl >/dev/null || skip "etcd not installed"
init_test "$@"
# Built by make all: missing means a broken build, not a skip.
for p in qbd-chunkd tests/helpers/qbd-io; do
	[ -x "$BUILD/$p" ] || fail "no $p in $BUILD (make all builds it)"
done

VOL=vol1
SIZE=$((256 * 1024 * 1024))

start_cluster a b c
# Authenticated like every other test (init_test made the secret).
! grep -q "links to this chunk server are not authenticated" "$TMP"/chunkd-*.log ||
	fail "the chunk servers run without the cluster secret"

# Chunk size from the node records (every node has the same one).
CS=$(etcdctl_ get --prefix --print-value-only /qbd/nodes/ |
	python3 -c 'import sys,json; print(json.loads(sys.stdin.readline())["chunk_size"])')
[ -n "$CS" ] || fail "no chunk size in node records"
log "chunk size $CS"

qbd volume create "$VOL" --size "$SIZE" --replicas 3 --write-quorum 2 >"$TMP/create.log" 2>&1 ||
	fail "qbd volume create: $(cat "$TMP/create.log")"

io() { qbd-io --etcd "$QBD_ETCD" --volume "$VOL" "$@" 2>>"$TMP/qbd-io.log"; }

w() { io write "$1" "$2" "$3" || fail "write $*"; }
v() { io verify "$1" "$2" "$3" || fail "verify $*"; }

# Patterns: aligned, odd offsets, chunk-crossing, multi-chunk.
w 0 4096 1;                  v 0 4096 1
w 12345 777 2;               v 12345 777 2
w $((CS - 1000)) 3000 3;     v $((CS - 1000)) 3000 3
w $((3 * CS - 5)) $((2 * CS + 11)) 4; v $((3 * CS - 5)) $((2 * CS + 11)) 4
v 0 4096 1                   # earlier data untouched
v 2048 1024 1                # sub-range of a written range
io read 12345 777 >"$TMP/r.bin" || fail "read"
[ "$(wc -c <"$TMP/r.bin")" -eq 777 ] || fail "read returned a wrong length"
io write $SIZE 1 9 && fail "write past the end succeeded"
io flush || fail "flush"
log "patterns ok"

io fence-test || fail "fence-test"
v 0 8192 77                  # fence-test wrote seed 77 at 0 (A) and 4096 (B)
log "fencing ok"

kill_chunkd a
w $((CS + 100)) 5000 5;      v $((CS + 100)) 5000 5
v $((3 * CS - 5)) $((2 * CS + 11)) 4
log "writes and reads ok with zone a down"

start_chunkd a
wait_for "3 chunk servers alive" 20 nodes_alive 3
w $((5 * CS + 3)) 100000 6;  v $((5 * CS + 3)) 100000 6
v $((CS + 100)) 5000 5
v 0 4096 77
io flush || fail "flush after restart"
log "PASS"
