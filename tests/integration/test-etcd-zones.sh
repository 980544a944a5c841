#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# etcd in every zone: a three-member etcd cluster (one member per zone),
# chunk servers and a qbd-nbd given the whole endpoint list. Zone a's
# member, the one every program talks to first, is stopped: the CLI still
# lists and creates volumes, every chunk server's lease and the writer's
# attachment lease are renewed on another member (the same leases, past
# the time they would have lapsed), a second volume attaches, the writer
# keeps writing. Then zone b's member is stopped too (no quorum): writes
# through the running qbd-nbd still succeed, and the CLI fails with an
# error naming every endpoint it tried. Zone b's member comes back and
# the CLI works again, the attachment still in place.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v etcdctl >/dev/null 2>&1 || skip "no etcdctl"
command -v qemu-io >/dev/null 2>&1 || skip "qemu-io not installed"
init_test "$@"

TTL=10  # the chunk servers' and the writer's lease (chunkd.h, attach.c)

qio() { # volume commands...: succeed only if every command succeeded
	_u=$(nbd_uri "$TMP/$1.sock"); shift
	out=$(qemu-io -f raw "$_u" "$@" 2>&1) || { echo "$out" >&2; return 1; }
	if echo "$out" | grep -qiE 'fail|error'; then echo "$out" >&2; return 1; fi
}
# leases PREFIX: the (hex) lease of every key under PREFIX.
leases() {
	etcdctl_ get --prefix "$1" -w json | python3 -c '
import json, sys
for kv in json.load(sys.stdin).get("kvs", []):
    print("%x" % kv["lease"])'
}
# renewed_since LEASE T0: LEASE was kept alive after time T0. Unrenewed
# it would lapse by T0 + TTL, or a little later when a new etcd leader
# extends every lease by an election timeout (1 s): an expiry
# (now + remaining) past T0 + TTL + 5 can only come from a keepalive
# sent after T0.
renewed_since() {
	_rem=$(etcdctl_ lease timetolive "$1" | sed -n 's/.*remaining(\([0-9]*\)s).*/\1/p')
	[ -n "$_rem" ] && [ $(( $(date +%s) + _rem )) -ge $(( $2 + TTL + 5 )) ]
}

# A bad list is refused where it is set, and says where that was.
expect_rc 2 qbd --etcd "http://127.0.0.1:1,,http://127.0.0.1:2" volume list
grep -q -- "--etcd: etcd '.*': endpoint 2 is empty" "$TMP/err" || fail "bad list: $(cat "$TMP/err")"
expect_rc 2 env QBD_ETCD=127.0.0.1:2379 qbd volume list
grep -q -- "QBD_ETCD: .*is not an http:// or https:// URL" "$TMP/err" ||
	fail "bad \$QBD_ETCD: $(cat "$TMP/err")"
expect_rc 1 qbd-chunkd --check-config --etcd "http://127.0.0.1:1,http://127.0.0.1:1" \
	--zone a --data "$TMP/none.img" --listen 127.0.0.1:1
grep -q -- "--etcd: .*is listed twice" "$TMP/err" || fail "chunkd bad list: $(cat "$TMP/err")"
rc=0
qbd-nbd --etcd "http://127.0.0.1:1/,ftp://x" --volume v --socket "$TMP/x.sock" \
	>"$TMP/out" 2>"$TMP/err" || rc=$?
[ $rc -ne 0 ] && grep -q -- "--etcd: etcd .*endpoint 2 'ftp://x'" "$TMP/err" ||
	fail "qbd-nbd bad list (exit $rc): $(cat "$TMP/err")"

start_etcd_cluster a b c
log "etcd members: $QBD_ETCD"
for z in a b c; do start_chunkd "$z"; done
wait_for "3 chunk servers alive in etcd" 20 nodes_alive 3
expect_rc 0 qbd volume create vol1 --size 64M
expect_rc 0 qbd volume info vol1 --json
vid1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/out")
start_nbd vol1 "$TMP/vol1.sock" --zone a; nbd1=$NBD_PID
qio vol1 -c 'write -P 0x11 0 65536' -c flush || fail "cannot write vol1"
node_leases=$(leases /qbd/alive/)
[ "$(echo "$node_leases" | grep -c .)" -eq 3 ] || fail "want 3 node leases: $node_leases"
writer_lease=$(leases "/qbd/attachments/$vid1")
[ -n "$writer_lease" ] || fail "vol1 has no attachment record"

# Zone a's member goes: it is first in every program's list.
t0=$(date +%s)
stop_pid "$ETCD_PID_a"
log "etcd-a ($ETCD_URL_a) stopped"
expect_rc 0 qbd volume list --json
json_check '[v["name"] for v in d]==["vol1"]'
expect_rc 0 qbd volume create vol2 --size 64M
log "the CLI lists and creates volumes with one member lost"
for l in $node_leases; do
	wait_for "chunk server lease $l kept alive on another member" 30 renewed_since "$l" "$t0"
done
nodes_alive 3 || fail "a chunk server is no longer alive in etcd"
[ "$(leases /qbd/alive/ | sort)" = "$(echo "$node_leases" | sort)" ] ||
	fail "a chunk server registered again under a new lease"
log "every chunk server kept its lease past its TTL"
wait_for "the writer's lease $writer_lease kept alive" 30 renewed_since "$writer_lease" "$t0"
[ "$(leases "/qbd/attachments/$vid1")" = "$writer_lease" ] ||
	fail "vol1's attachment record is gone or under another lease"
log "the writer kept its lease and its attachment"
qio vol1 -c 'write -P 0x22 65536 65536' -c flush || fail "vol1's writer cannot write"
start_nbd vol2 "$TMP/vol2.sock" --zone b; nbd2=$NBD_PID
qio vol2 -c 'write -P 0x44 0 65536' -c flush -c 'read -P 0x44 0 65536' ||
	fail "vol2 attached with one member lost cannot write"
log "a new attach (vol2) works with one member lost"

# Zone b's member goes too: no quorum. The data path goes on.
stop_pid "$ETCD_PID_b"
log "etcd-b ($ETCD_URL_b) stopped: no quorum"
qio vol1 -c 'write -P 0x33 131072 65536' -c flush -c 'read -P 0x11 0 65536' \
	-c 'read -P 0x22 65536 65536' -c 'read -P 0x33 131072 65536' ||
	fail "vol1's writer cannot write without an etcd quorum"
log "writes through the running qbd-nbd go on without an etcd quorum"
expect_rc 1 qbd volume list
for u in "$ETCD_URL_a" "$ETCD_URL_b" "$ETCD_URL_c"; do
	grep -qF "$u" "$TMP/err" || fail "the error does not name $u: $(cat "$TMP/err")"
done
log "the CLI fails clearly: $(grep -m1 'no etcd endpoint' "$TMP/err")"

# Zone b's member is back: a quorum again.
start_etcd_member b
wait_for "the CLI with a quorum again" 30 qbd volume list
[ "$(leases "/qbd/attachments/$vid1")" = "$writer_lease" ] ||
	fail "vol1's attachment did not survive the loss of quorum"
qio vol1 -c 'read -P 0x33 131072 65536' || fail "vol1 after quorum came back"
# Stop the clients while etcd has its quorum (the cleanup would stop the
# restarted member first: it is the newest process).
stop_pid "$nbd2"
stop_pid "$nbd1"
for z in a b c; do stop_chunkd "$z"; done
log "PASS"
