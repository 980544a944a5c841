#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The NBD protocol of qbd-nbd, checked by clients we did not write, and
# nbd_serve's adopted connections (kernel mode) driven over socketpairs.
. "$(dirname "$0")/lib.sh"
init_test "$@"
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$BUILD/tests/helpers/nbd-adopt" ] || skip "no nbd-adopt helper in $BUILD"

start_cluster a b c
SIZE=$((64 * 1024 * 1024))

# --- adopted connections: transmission phase at once, simple replies,
# a replacement adopted from on_conn_end, stop after DISC.
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

log "PASS"
