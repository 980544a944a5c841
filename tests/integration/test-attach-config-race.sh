#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A writer's attach when the volume record changes between the moment
# the writer read it and its attach transaction (docs/protocol.md
# section 11: no writer attaches with a configuration that has changed
# since it read it). A proxy in front of etcd (etcd-race-proxy.py)
# rewrites the record just before the attach reaches etcd. A change that
# keeps the replicas (a resize) is read again and the attach retried:
# the writer then works with the record as it is now (a write past the
# old size succeeds). A change of the replicas fails the open, saying
# so, with nothing taken (the epoch unchanged). A record that keeps
# changing fails it after four attempts. Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null && command -v etcdctl >/dev/null || skip "etcd not installed"
init_test "$@"
for p in qbd-chunkd tests/helpers/qbd-io; do
	[ -x "$BUILD/$p" ] || fail "no $p in $BUILD (make all builds it)"
done
MiB=1048576

start_cluster a b c
expect_rc 0 qbd volume create v --size 8M
VID=$(etcdctl_ get --print-value-only /qbd/volumes/v | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
epoch() { etcdctl_ get --print-value-only "/qbd/epochs/$VID"; }

# start_proxy MODE TIMES: the proxy, its URL in PROXY
start_proxy() {
	rm -f "$TMP/proxy.port"
	python3 "$(dirname "$0")/etcd-race-proxy.py" "$TMP/proxy.port" "$QBD_ETCD" v "$1" "$2" \
		"$TMP/proxy.log" 2>>"$TMP/proxy.err" &
	PROXY_PID=$!
	track_pid $PROXY_PID "etcd-race-proxy $1"
	wait_for "the proxy's port" 10 test -s "$TMP/proxy.port"
	PROXY="http://127.0.0.1:$(cat "$TMP/proxy.port")"
}
io() { qbd-io --etcd "$PROXY" --volume v "$@"; }

# A resize lands between the read and the attach: read again, attach.
start_proxy size 1
io write $((12 * MiB)) 4096 7 2>"$TMP/io.err" ||
	fail "write past the old size after a re-read: $(cat "$TMP/io.err")"
grep -q "rewrote /qbd/volumes/v (size)" "$TMP/proxy.log" || fail "the proxy did not fire"
grep -q "its record changed while attaching (same replicas); attaching again" "$TMP/io.err" ||
	fail "no re-read said: $(cat "$TMP/io.err")"
[ "$(epoch)" = 1 ] || fail "epoch $(epoch) after one attach, want 1"
stop_pid $PROXY_PID
log "a resize during the attach: read again, attached at epoch 1, wrote past the old size"

# The replicas change between the read and the attach: the open fails.
etcdctl_ get --print-value-only /qbd/volumes/v >"$TMP/record"
: >"$TMP/proxy.log"
start_proxy members 1
io write 0 4096 8 2>"$TMP/io.err" && fail "attached with replicas that changed"
grep -q "its replicas changed while attaching (configuration 1 -> 2); open it again" "$TMP/io.err" ||
	fail "replica change message: $(cat "$TMP/io.err")"
[ "$(epoch)" = 1 ] || fail "a refused attach took an epoch ($(epoch))"
[ -z "$(etcdctl_ get --keys-only "/qbd/attachments/$VID")" ] || fail "a refused attach left a record"
stop_pid $PROXY_PID
log "the replicas changed during the attach: refused, nothing taken"

# The record as it was; then one that changes at every attempt.
etcdctl_ put /qbd/volumes/v "$(cat "$TMP/record")" >/dev/null
: >"$TMP/proxy.log"
start_proxy size 100
io write 0 4096 9 2>"$TMP/io.err" && fail "attached while the record kept changing"
grep -q "its configuration kept changing while attaching (4 times); try again" "$TMP/io.err" ||
	fail "kept-changing message: $(cat "$TMP/io.err")"
[ "$(grep -c rewrote "$TMP/proxy.log")" -eq 4 ] || fail "attempts: $(cat "$TMP/proxy.log")"
[ "$(epoch)" = 1 ] || fail "refused attaches took an epoch ($(epoch))"
stop_pid $PROXY_PID
log "PASS"
