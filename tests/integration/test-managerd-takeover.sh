#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A writer meets the manager mid-change (docs/design.md, "Manager"): the
# manager carries out a `qbd volume move` of a volume nobody attached,
# its copy slowed down (resync-rate 1M) so that the change stands a
# while. Meanwhile:
#  1. qbd-nbd without --force is refused: the volume is attached on the
#     manager's host, with the manager's pid;
#  2. qbd-nbd --force takes it over and carries the change on to its end
#     (configuration 2 with the new node), the manager saying who took
#     over and letting go (its attachment is gone, nothing counted done);
#  3. the data written before reads back, and `qbd volume verify` finds
#     the three replicas identical.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"

attached_by() {
	etcdctl_ get --prefix --print-value-only /qbd/attachments/ | grep -q "\"pid\":$1[,}]"
}
no_attachment() { [ -z "$(etcdctl_ get --prefix --keys-only /qbd/attachments/)" ]; }
logged() { grep -q -- "$1" "$TMP/manager.log"; }

cat >>"$TMP/qbd.conf" <<CONF
[qbd-managerd]
resync-rate = 1M
give-up = 60s
CONF
start_cluster a b c
expect_rc 0 qbd volume create v --size 64M
start_chunkd d
wait_for "4 chunk servers alive" 20 nodes_alive 4
nc=$(node_in c); nd=$(node_in d)

start_nbd v "$TMP/w1.sock" --zone a
"$S" write "$(nbd_uri "$TMP/w1.sock")" "$TMP/acked1" 0 3000 31 || fail "writes failed"
[ "$(printf 'flush\n' | "$S" cmd "$(nbd_uri "$TMP/w1.sock")")" = ok ] || fail "flush failed"
stop_pid "$NBD_PID"
wait_for "no attachment" 20 no_attachment

mport=$(free_port)
qbd-managerd --etcd "$QBD_ETCD" --metrics "127.0.0.1:$mport" --lease-ttl 4 \
	>>"$TMP/manager.log" 2>&1 &
MGR=$!
track_pid $MGR qbd-managerd
wait_for "the manager to lead" 20 logged "this instance leads"
expect_rc 0 qbd volume move v --from "$nc" --to "$nd"
wait_for "the manager to hold v with the change standing" 30 sh -c \
	"$(command -v qbd) --json volume info v | grep -q '\"phase\"'"
attached_by "$MGR" || fail "v is not attached by the manager (pid $MGR)"

# ---- 1: refused without --force ----
rc=0
qbd-nbd --etcd "$QBD_ETCD" --volume v --socket "$TMP/busy.sock" --zone a \
	>"$TMP/busy.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "qbd-nbd attached a volume the manager holds"
grep -q "is attached on host .*pid $MGR" "$TMP/busy.log" ||
	fail "the refusal does not name the manager: $(cat "$TMP/busy.log")"
info_says "d.get('change')" || fail "the change ended before the takeover (copy too fast?)"
log "1: without --force: $(grep -m1 'is attached on host' "$TMP/busy.log" | sed 's/.*: //')"

# ---- 2: --force takes the change over ----
start_nbd v "$TMP/w2.sock" --zone a --force
wait_for "the manager to let go" 20 logged "took it over: it carries the change on"
wait_for "the new writer to finish the move (configuration 2)" 60 \
	info_says "d['cfg'] == 2 and '$nd' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']] and not d.get('change')"
grep -q "a change stands" "$TMP/nbd-v.log" ||
	fail "the new writer did not find the change standing"
[ "$(metric "$mport" qbd_managerd_changes_done_total)" = 0 ] ||
	fail "the manager counted a change it did not finish"
# Letting go ends with closing its handle (qbd_close), which takes a
# moment after the log line (longer under the sanitizers).
not_driving() { [ "$(metric "$mport" qbd_managerd_driving)" = 0 ]; }
wait_for "the manager to close its handle of v" 15 not_driving
log "2: the forced writer carried the change on; the manager let go"

# ---- 3: data ----
"$S" verify "$(nbd_uri "$TMP/w2.sock")" "$TMP/acked1" 0 3000 31 ||
	fail "data written before does not read back"
stop_pid "$NBD_PID"
expect_rc 0 qbd volume verify v
stop_pid "$MGR"
log "PASS: the manager's change taken over with --force and finished by the new writer"
