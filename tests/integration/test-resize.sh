#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `qbd volume resize` grows a volume while it is attached, against a real
# cluster (etcd, three chunk servers, a qbd-nbd serving the volume on a
# unix socket):
#
# - data written before the resize, up to the old end (which is not on a
#   chunk boundary), reads back intact afterwards;
# - the command returns once the writer serves the new size, and a new
#   NBD connection sees it (nbdinfo, qemu-img info), without a detach;
# - the new region, including the rest of the old last chunk, reads as
#   zeros and takes writes (qemu-io), also across the old end;
# - a shrink is refused, attached (exit 1, naming the host) and detached
#   (exit 1): a volume only grows; nothing changed either way;
# - the rest of the volume record (its configuration number, here set
#   to 7) survives the compare-and-swap of the size;
# - bad sizes are usage errors (exit 2), an unknown volume an error (1);
# - a writer that does not take the size in time (frozen) makes the
#   command exit 1 and `qbd volume status` show what it still serves;
# - after a detach, the next writer opens the grown volume with the data.
#
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
command -v qemu-img >/dev/null 2>&1 || skip "no qemu-img"
command -v qemu-io >/dev/null 2>&1 || skip "no qemu-io"
init_test "$@"
[ -x "$BUILD/qbd-chunkd" ] || fail "no qbd-chunkd in $BUILD (run make)"
[ -x "$BUILD/qbd-nbd" ] || fail "no qbd-nbd in $BUILD (run make)"

OLD=5505024     # 5.25 MiB: the old end is inside chunk 5
NEW=12582912    # 12 MiB

# qio ARGS...: qemu-io on a new connection; fails on any error it prints.
qio() {
	_out=$(qemu-io -f raw "$uri" "$@" 2>&1) || { echo "$_out" >&2; return 1; }
	if echo "$_out" | grep -qiE 'fail|error'; then echo "$_out" >&2; return 1; fi
}
# record_size: the size in the volume's record in etcd.
record_size() {
	etcdctl_ get --print-value-only /qbd/volumes/r |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])'
}
# nbd_size_is N: a new NBD connection is offered N bytes.
nbd_size_is() { [ "$(nbdinfo --size "$uri")" = "$1" ]; }

start_cluster a b c
expect_rc 0 qbd volume create r --size "$OLD"
sock="$TMP/r.sock"
uri=$(nbd_uri "$sock")
start_nbd r "$sock" --zone a
nbd_size_is "$OLD" || fail "nbdinfo: $(nbdinfo --size "$uri"), want $OLD"

# Data up to the old end: a pattern over all of it, another at its end.
qio -c "write -P 0xa7 0 $OLD" -c "write -P 0x5e $((OLD - 8192)) 8192" -c flush ||
	fail "qemu-io: writing the old extent"
# Beyond the end: refused, before the resize.
if qemu-io -f raw "$uri" -c "read $OLD 4096" 2>&1 | grep -q 'read 4096/4096'; then
	fail "a read past the old end succeeded"
fi

# The rest of the record survives the resize: its configuration number
# (an etcd edit stands in for seven completed membership changes).
etcdctl_ get --print-value-only /qbd/volumes/r |
	python3 -c 'import json,sys; d=json.load(sys.stdin); d["cfg"]=7; print(json.dumps(d))' \
	>"$TMP/rec.json"
etcdctl_ put /qbd/volumes/r "$(cat "$TMP/rec.json")" >/dev/null

# ---- refused: usage errors, an unknown volume, a shrink while attached ----
expect_rc 2 qbd volume resize r
expect_rc 2 qbd volume resize r --size 12345
expect_rc 2 qbd volume resize r --size 0
expect_rc 2 qbd volume resize r --size 12M --timeout 0
expect_rc 1 qbd volume resize nosuch --size 12M
grep -q 'no such volume' "$TMP/err" || fail "unknown volume: $(cat "$TMP/err")"
expect_rc 1 qbd volume resize r --size 4M
grep -q 'cannot shrink while attached' "$TMP/err" ||
	fail "shrink while attached: $(cat "$TMP/err")"
grep -q "on host $(hostname)" "$TMP/err" || fail "the refusal names no host: $(cat "$TMP/err")"
[ "$(record_size)" = "$OLD" ] || fail "refused shrink changed the record: $(record_size)"
expect_rc 0 qbd volume resize r --size "$OLD"
out_has 'already'
log "usage errors exit 2; unknown volume and shrink while attached exit 1"

# ---- grow while attached ----
t0=$(date +%s%N)
expect_rc 0 qbd volume resize r --size 12M
t1=$(date +%s%N)
out_has 'grown from 5.2'
out_has 'serves it'
log "resize returned after $(( (t1 - t0) / 1000000 )) ms (writer reads etcd every 2 s)"
[ "$(record_size)" = "$NEW" ] || fail "record size $(record_size), want $NEW"
etcdctl_ get --print-value-only /qbd/volumes/r | grep -q '"cfg": *7' ||
	fail "the resize lost a field of the record: $(etcdctl_ get --print-value-only /qbd/volumes/r)"
# The writer served it when the command returned: no wait here.
nbd_size_is "$NEW" || fail "nbdinfo after resize: $(nbdinfo --size "$uri"), want $NEW"
qemu-img info -f raw --output=json "$uri" >"$TMP/out" || fail "qemu-img info"
json_check "d['virtual-size'] == $NEW"
expect_rc 0 qbd --json volume status r
json_check "d['size'] == $NEW and d['writer_size'] == $NEW and d['attachment'] is not None"
expect_rc 0 qbd volume status r
out_has '^Status: *updated'
grep -qE '^Serving:|no status from the writer' "$TMP/out" && fail "status: $(cat "$TMP/out")"
expect_rc 0 qbd --json volume info r
json_check "d['size'] == $NEW"
expect_rc 0 qbd volume info r
out_has "^Size: .*($NEW bytes)"
log "a new connection sees $NEW bytes (nbdinfo, qemu-img); status and info agree"

# Old data intact; the new region reads as zeros, the rest of the old
# last chunk included, and takes writes, also across the old end.
qio -c "read -P 0xa7 0 $((OLD - 8192))" -c "read -P 0x5e $((OLD - 8192)) 8192" ||
	fail "the data written before the resize changed"
qio -c "read -P 0 $OLD $((NEW - OLD))" || fail "the new region does not read as zeros"
qio -c "write -P 0x3c $((OLD - 4096)) 8192" -c "write -P 0xd1 $((NEW - 1048576 - 512)) 1049088" \
	-c flush || fail "qemu-io: writing the new region"
qio -c "read -P 0x3c $((OLD - 4096)) 8192" -c "read -P 0xd1 $((NEW - 1048576 - 512)) 1049088" \
	-c "read -P 0 $((OLD + 4096)) 4096" -c "read -P 0xa7 0 $((OLD - 8192))" ||
	fail "reading back the writes of the new region"
if qemu-io -f raw "$uri" -c "read $NEW 4096" 2>&1 | grep -q 'read 4096/4096'; then
	fail "a read past the new end succeeded"
fi
log "old data intact; new region zeros, then written and read back"

# ---- a writer that does not take the size in time ----
# Frozen (its keeper too) for a few seconds, well inside its lease: the
# resize is recorded, the command says the writer has not served it
# (exit 1), status shows what the writer still serves; thawed, the
# writer takes it.
kill -STOP "$NBD_PID"
thaw_writer() { kill -CONT "$NBD_PID" 2>/dev/null || true; }
on_exit thaw_writer
expect_rc 1 qbd volume resize r --size 14M --timeout 1
grep -q 'has not served the new size within 1 s' "$TMP/err" ||
	fail "resize with a frozen writer said: $(cat "$TMP/err")"
qbd volume status r >"$TMP/out" 2>&1 || true
out_has '^Serving: *12'
out_has '^Status: *updated'
grep -q 'no status from the writer' "$TMP/out" && fail "status: $(cat "$TMP/out")"
kill -CONT "$NBD_PID"
wait_for "the thawed writer to serve 14 MiB" 20 nbd_size_is 14680064
log "a frozen writer: resize exits 1, status shows 'Serving:'; thawed, it takes the size"

# ---- detached: a shrink is still refused; the next writer has it all ----
stop_pid "$NBD_PID"
wait_for "the attachment gone" 20 sh -c '! qbd volume status r 2>/dev/null | grep -q "^Attached: *host"'
expect_rc 1 qbd volume resize r --size 8M
grep -q 'a volume only grows' "$TMP/err" || fail "detached shrink: $(cat "$TMP/err")"
[ "$(record_size)" = 14680064 ] || fail "refused shrink changed the record: $(record_size)"
expect_rc 0 qbd volume resize r --size 16M
out_has 'grown from 14'
start_nbd r "$sock" --zone b
nbd_size_is 16777216 || fail "next writer: $(nbdinfo --size "$uri"), want 16777216"
qio -c "read -P 0xa7 0 $((OLD - 8192))" -c "read -P 0x3c $((OLD - 4096)) 8192" \
	-c "read -P 0xd1 $((NEW - 1048576 - 512)) 1049088" -c "read -P 0 $NEW 4194304" ||
	fail "the next writer does not read what was written"
log "detached: shrink refused, grow to 16 MiB; the next writer reads everything back"
log "PASS"
