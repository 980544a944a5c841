#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A node removed from a volume comes back through a writer
# (docs/protocol.md section 11): the replica in zone c moves to a fourth
# node in zone d (configuration 2), and c keeps a tombstone for the
# volume at the writer's epoch. The same writer then moves the replica
# back from d to c while it serves the volume and a client writes. Its
# OPEN to c carries ADD at the tombstone's own epoch: c clears the
# tombstone ("added back at epoch"), is resynced as a learner, the writer
# is not fenced, and the record ends with c in d's slot (configuration
# 3); then:
#  1. the data written before and during the moves reads back;
#  2. `qbd volume verify` finds the three replicas (a, b, c) identical;
#  3. with d stopped, a new writer in zone c (it reads from c first) and
#     b stopped too, every block still reads back: from a and c.
# The data is written and read with nbdcopy and qemu-io, and checked
# against an image of the volume kept here.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"
command -v etcd >/dev/null 2>&1 || skip "no etcd"
command -v nbdinfo >/dev/null 2>&1 || skip "no nbdinfo (libnbd-bin)"
command -v nbdcopy >/dev/null 2>&1 || skip "no nbdcopy (libnbd-bin)"
command -v qemu-io >/dev/null 2>&1 || skip "no qemu-io"
init_test "$@"

# qio URI COMMANDS...: qemu-io on the volume; fails unless every command
# succeeded.
qio() {
	_u=$1; shift
	_out=$(qemu-io -f raw "$_u" "$@" 2>&1) || { echo "$_out" >&2; return 1; }
	if echo "$_out" | grep -qiE 'fail|error'; then echo "$_out" >&2; return 1; fi
}
# image_put OFFSET_MIB FILE: FILE's bytes at OFFSET_MIB in the image.
image_put() {
	dd if="$2" of="$TMP/image" bs=1M seek="$1" conv=notrunc status=none
}
# reads_back URI WHAT: the whole volume read with nbdcopy equals the image.
reads_back() {
	rm -f "$TMP/read"
	nbdcopy "$1" "$TMP/read" || fail "nbdcopy could not read the volume ($2)"
	cmp "$TMP/image" "$TMP/read" || fail "the volume does not read back ($2)"
}

start_cluster a b c
expect_rc 0 qbd volume create v --size 64M
nc=$(node_in c)
start_chunkd d
wait_for "4 chunk servers alive" 20 nodes_alive 4
nd=$(node_in d)
info_says "d['cfg'] == 1" || fail "a new volume is not at configuration 1: $(cat "$TMP/poll.json")"
vid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/poll.json")

# The image of the volume: 12 MiB of random data at 0, zeros elsewhere.
truncate -s 64M "$TMP/image"
head -c 12M /dev/urandom >"$TMP/d1"
image_put 0 "$TMP/d1"

start_nbd v "$TMP/w1.sock" --zone a
w1=$NBD_PID
uri1=$(nbd_uri "$TMP/w1.sock")
nbdcopy "$TMP/image" "$uri1" || fail "nbdcopy could not write the volume"
qio "$uri1" -c flush || fail "flush failed"
log "12 MiB written with nbdcopy"

# ---- c removed: d in its slot, c keeps a tombstone ----
expect_rc 0 qbd volume move v --from "$nc" --to "$nd"
wait_for "the record to name d in c's slot (configuration 2)" 60 \
	info_says "d['cfg'] == 2 and '$nd' in [n['id'] for n in d['nodes']] and '$nc' not in [n['id'] for n in d['nodes']]"
wait_for "c to keep a tombstone for the volume" 10 \
	grep -q "volume $vid: tombstone at epoch [0-9]* (asked at epoch" "$TMP/chunkd-c.log"
tomb=$(sed -n "s/.*volume $vid: tombstone at epoch \([0-9]*\) (asked at epoch.*/\1/p" \
	"$TMP/chunkd-c.log" | tail -n 1)
grep -q "told to keep a tombstone" "$TMP/nbd-v.log" || fail "the writer did not send c its tombstone"
grep -q "added back" "$TMP/chunkd-c.log" && fail "c says it was added back before it was"
log "c removed: d holds its slot, c has a tombstone at epoch $tomb"

reads_back "$uri1" "after c was removed"

# ---- c added back by the writer that removed it, under writes ----
# Its ADD comes at the tombstone's own epoch (docs/protocol.md, the OPEN
# row of the table of section 2): accepted, since no other writer holds
# that epoch.
expect_rc 0 qbd volume move v --from "$nd" --to "$nc"
# Writes go on while the change runs: a MiB at a time over 20..28 MiB,
# each with its own byte, until the record is at configuration 3.
end=$(( $(date +%s) + 60 )); i=0
while :; do
	p=$(( (i * 7 + 0x21) % 256 )); off=$(( 20 + i % 8 ))
	qio "$uri1" -c "write -P $p ${off}M 1M" || fail "write $i during the move failed"
	head -c 1M /dev/zero | tr '\000' "\\$(printf %03o $p)" >"$TMP/blk"
	image_put "$off" "$TMP/blk"
	i=$((i + 1))
	info_says "d['cfg'] == 3" && break
	[ "$(date +%s)" -lt "$end" ] || fail "timed out after 60s waiting for configuration 3: $(cat "$TMP/poll.json")"
done
info_says "'$nc' in [n['id'] for n in d['nodes']] and '$nd' not in [n['id'] for n in d['nodes']]" ||
	fail "configuration 3 does not name c instead of d: $(cat "$TMP/poll.json")"
log "$i writes of 1 MiB while c was added back"
grep -q "volume $vid: added back at epoch [0-9]* (its tombstone is cleared)" "$TMP/chunkd-c.log" ||
	fail "c did not say its tombstone was cleared: $(grep -i "tomb\|added" "$TMP/chunkd-c.log")"
back=$(sed -n "s/.*volume $vid: added back at epoch \([0-9]*\) (its tombstone.*/\1/p" \
	"$TMP/chunkd-c.log" | tail -n 1)
[ "$back" -eq "$tomb" ] || fail "c was added back at epoch $back, not at its tombstone's $tomb (the same writer)"
grep -q "fenced" "$TMP/nbd-v.log" && fail "the writer fenced itself: $(grep fenced "$TMP/nbd-v.log")"
grep -q "zone c) joins as a learner" "$TMP/nbd-v.log" || fail "the writer did not say c joined as a learner"
log "c added back at epoch $back (tombstone at $tomb), resynced as a learner"

# ---- 1: data, through the writer and through a new one ----
qio "$uri1" -c flush || fail "flush failed"
reads_back "$uri1" "the writer that added c back"
stop_pid "$w1"
start_nbd v "$TMP/w2.sock" --zone b
w2=$NBD_PID
reads_back "$(nbd_uri "$TMP/w2.sock")" "a new writer"
stop_pid "$w2"
# ---- 2: verify ----
expect_rc 0 qbd volume verify v
log "verify: a, b and c identical"
# ---- 3: without d, then without b: from a and c ----
stop_chunkd d
start_nbd v "$TMP/w3.sock" --zone c
w3=$NBD_PID
uri3=$(nbd_uri "$TMP/w3.sock")
stop_chunkd b
reads_back "$uri3" "with b and d stopped"
stop_pid "$w3"
log "PASS: c added back under writes holds the data"
