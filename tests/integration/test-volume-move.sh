#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The attached writer carries out a membership change (docs/protocol.md
# section 11): `qbd volume move` asks for the replica in zone c to move to
# a fourth node in zone d, while qbd-nbd serves the volume and a client
# writes. The writer adds d as a learner, copies every chunk to it, takes
# the joint rule, and the record ends with d in c's slot (configuration
# 2); then:
#  1. the data written before and during the move reads back;
#  2. the volume's status is healthy with d's node and without c's;
#  3. `qbd volume verify` finds the three replicas (a, b, d) identical;
#  4. with c stopped, a new writer attaches under the new configuration,
#     and with b stopped too every block still reads back from a and d (d
#     really holds the data).
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
init_test "$@"
S="$BUILD/tests/helpers/nbd-stream"
[ -x "$S" ] || fail "no tests/helpers/nbd-stream in $BUILD (make all builds it)"

start_cluster a b c
expect_rc 0 qbd volume create v --size 64M
na=$(node_in a); nb=$(node_in b); nc=$(node_in c)
start_chunkd d
wait_for "4 chunk servers alive" 20 nodes_alive 4
nd=$(node_in d)
info_says "d['cfg'] == 1" || fail "a new volume is not at configuration 1: $(cat "$TMP/poll.json")"

start_nbd v "$TMP/w1.sock" --zone a
w1=$NBD_PID
uri1=$(nbd_uri "$TMP/w1.sock")
"$S" write "$uri1" "$TMP/acked1" 0 3000 21 || fail "first writes failed"
[ "$(printf 'flush\n' | "$S" cmd "$uri1")" = ok ] || fail "flush failed"
log "3000 blocks written and flushed"

expect_rc 0 qbd volume move v --from "$nc" --to "$nd"
# Writes go on while the change runs.
"$S" write "$uri1" "$TMP/acked2" 4000 1500 22 &
wpid=$!
track_pid $wpid "writes during the move"
wait_for "the record to name node d in c's slot (configuration 2)" 90 \
	info_says "d['cfg'] == 2 and '$nd' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']]"
wait_pid $wpid
grep -q "joins as a learner" "$TMP/nbd-v.log" || fail "the writer did not say the learner joined"
grep -q "has left" "$TMP/nbd-v.log" || fail "the writer did not say c's slot left"
log "the writer moved the replica from c to d"
# c was told to keep a tombstone for the volume (and free its chunks).
wait_for "c to keep a tombstone for the volume" 10 \
	grep -q "tombstone at epoch [0-9]* (asked at epoch" "$TMP/chunkd-c.log"
grep -q "told to keep a tombstone" "$TMP/nbd-v.log" || fail "the writer did not send c its tombstone"

# ---- 1: data ----
"$S" verify "$uri1" "$TMP/acked1" 0 3000 21 || fail "data written before the move does not read back"
"$S" verify "$uri1" "$TMP/acked2" 4000 1500 22 || fail "data written during the move does not read back"
# ---- 2: status ----
wait_for "volume v healthy" 30 health_is 0 healthy
python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); ids = [r["id"] for r in d["replica_status"]]
sys.exit(0 if sys.argv[2] in ids and sys.argv[3] not in ids else 1)' "$TMP/st.json" "$nd" "$nc" ||
	fail "status does not show d instead of c: $(cat "$TMP/st.json")"
# ---- 3: verify ----
[ "$(printf 'flush\n' | "$S" cmd "$uri1")" = ok ] || fail "flush failed"
stop_pid "$w1"
expect_rc 0 qbd volume verify v
log "verify: a, b and d identical"
# ---- 4: without c, then without b ----
stop_chunkd c
start_nbd v "$TMP/w2.sock" --zone a
w2=$NBD_PID
uri2=$(nbd_uri "$TMP/w2.sock")
stop_chunkd b
"$S" verify "$uri2" "$TMP/acked1" 0 3000 21 || fail "with b and c stopped, the data does not read back"
"$S" verify "$uri2" "$TMP/acked2" 4000 1500 22 || fail "with b and c stopped, the data does not read back"
stop_pid "$w2"
log "PASS: moved under writes; d holds the data"
