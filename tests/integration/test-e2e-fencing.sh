#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Fencing through real processes: qbd-nbd A serves a volume; qbd-nbd B
# opens the same volume (a newer epoch). From then on A can neither write
# nor flush, while B can, and B reads what B wrote.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v qemu-io >/dev/null || skip "qemu-io not installed"

start_cluster a b c
qbd volume create vol1 --size 64M --replicas 3 >/dev/null

qio() { # uri commands...: succeed only if every command succeeded
	_u=$1; shift
	out=$(qemu-io -f raw "$_u" "$@" 2>&1) || { echo "$out" >&2; return 1; }
	if echo "$out" | grep -qiE 'fail|error'; then echo "$out" >&2; return 1; fi
}

start_nbd vol1 "$TMP/a.sock"; pid_a=$NBD_PID
qio "$(nbd_uri "$TMP/a.sock")" -c 'write -P 0x11 0 65536' -c 'flush' ||
	fail "writer A cannot write before being fenced"

# A holds the attachment: B is refused, with a clear message, unless forced.
rc=0
qbd-nbd --etcd "$QBD_ETCD" --volume vol1 --socket "$TMP/refused.sock" \
	>"$TMP/refused.out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "a second writer attached without --force"
grep -q "attached elsewhere" "$TMP/refused.out" || { cat "$TMP/refused.out" >&2; fail "no clear refusal"; }
grep -q "is attached on host" "$TMP/refused.out" || { cat "$TMP/refused.out" >&2; fail "refusal does not name the holder"; }
[ ! -e "$TMP/refused.sock" ] || fail "the refused writer created its socket"
log "writer B refused without --force: $(grep 'is attached on host' "$TMP/refused.out" | sed 's/.*error attach: //')"

start_nbd vol1 "$TMP/b.sock" --force; pid_b=$NBD_PID
log "writer B took over with a newer epoch (--force)"

if qio "$(nbd_uri "$TMP/a.sock")" -c 'write -P 0x22 0 65536' 2>/dev/null; then
	fail "fenced writer A could still write"
fi
if qio "$(nbd_uri "$TMP/a.sock")" -c 'flush' 2>/dev/null; then
	fail "fenced writer A could still flush"
fi
log "writer A is fenced"

qio "$(nbd_uri "$TMP/b.sock")" -c 'read -P 0x11 0 65536' ||
	fail "B does not see A's acknowledged write"
qio "$(nbd_uri "$TMP/b.sock")" -c 'write -P 0x33 0 65536' -c 'flush' \
	-c 'read -P 0x33 0 65536' || fail "writer B cannot write"
log "writer B reads A's acknowledged data and writes"

# A fenced qbd-nbd still shuts down cleanly.
stop_pid "$pid_a"
stop_pid "$pid_b"
log "PASS"
