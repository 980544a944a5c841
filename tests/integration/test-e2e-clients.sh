#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A replicated volume through qbd-nbd, driven by clients we did not write:
# nbdinfo reports the size, nbdcopy moves 256 MiB of random data in and out
# unchanged, qemu-io writes and reads patterns at odd offsets and across
# chunk boundaries, and SIGTERM stops qbd-nbd cleanly.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v nbdcopy >/dev/null || skip "nbdcopy not installed"
command -v qemu-io >/dev/null || skip "qemu-io not installed"

# Zone b's chunk server with a single registered buffer: most of its
# requests, nbdcopy's four connections at once, take buffers of their own.
CHUNKD_ARGS_b="--buffers 1"
start_cluster a b c
qbd volume create vol1 --size 1G --replicas 3 >/dev/null
sock="$TMP/vol1.sock"
start_nbd vol1 "$sock"
uri=$(nbd_uri "$sock")

size=$(nbdinfo --size "$uri")
[ "$size" = 1073741824 ] || fail "nbdinfo size $size, want 1073741824"
log "nbdinfo size ok"

head -c 256M /dev/urandom >"$TMP/in.bin"
nbdcopy "$TMP/in.bin" "$uri" || fail "nbdcopy into the volume failed"
nbdcopy "$uri" "$TMP/out.bin" || fail "nbdcopy out of the volume failed"
head -c 256M "$TMP/out.bin" | cmp - "$TMP/in.bin" || fail "data read back differs from data written"
# The rest of the volume was never written: it must read as zeros.
[ "$(tail -c +268435457 "$TMP/out.bin" | tr -d '\0' | head -c 1 | wc -c)" -eq 0 ] ||
	fail "never-written range does not read as zeros"
rm -f "$TMP/in.bin" "$TMP/out.bin"
log "nbdcopy 256 MiB round trip ok"

qio() {
	out=$(qemu-io -f raw "$uri" "$@" 2>&1) || { echo "$out" >&2; return 1; }
	if echo "$out" | grep -qiE 'fail|error'; then echo "$out" >&2; return 1; fi
}
# Past the nbdcopy data (512 MiB on): odd offsets, a chunk boundary
# (chunks are 1 MiB), and a range spanning three chunks.
qio -c 'write -P 0xa5 536871912 5000' -c 'read -P 0xa5 536871912 5000' \
	-c 'read -P 0 536870912 1000' -c 'read -P 0 536876912 4000' ||
	fail "qemu-io pattern at offset 1000 length 5000"
qio -c 'write -P 0x3c 537918912 1000' -c 'read -P 0x3c 537918912 1000' ||
	fail "qemu-io write across the first chunk boundary"
qio -c 'write -P 0x77 538966912 2200000' -c 'read -P 0x77 538966912 2200000' ||
	fail "qemu-io write spanning three chunks"
qio -c 'write -z 538968064 65536' -c 'read -P 0 538968064 65536' \
	-c 'read -P 0x77 538966912 1152' || fail "qemu-io write -z"
qio -c 'discard 537919488 1048576' -c 'read -P 0 537919488 1048576' ||
	fail "qemu-io discard"
qio -c 'flush' || fail "qemu-io flush"
# Reads past the end get an error, and the server keeps serving.
if qemu-io -f raw "$uri" -c 'read 1073741824 4096' 2>&1 | grep -q 'read 4096/4096'; then
	fail "read past the end succeeded"
fi
qio -c 'read -P 0xa5 536871912 5000' || fail "server unusable after an out-of-range read"
log "qemu-io patterns ok"

python3 "$(dirname "$0")/nbd-raw.py" "$sock" 1073741824 ||
	fail "raw NBD requests: malformed input not handled"
log "malformed requests get NBD errors; the connection survives"

stop_pid "$NBD_PID"
[ ! -e "$sock" ] || fail "qbd-nbd left its socket behind"
log "PASS"
