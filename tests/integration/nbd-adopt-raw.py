# SPDX-License-Identifier: Apache-2.0
# Speak to adopted connections the way the kernel's nbd driver does: no
# handshake, requests from the first byte, simple replies. Run by
# tests/helpers/nbd-adopt, which passes the connections on fds 3, 4 (the
# first two) and 5 (a spare the server adopts once fd 3 is closed without
# NBD_CMD_DISC). Usage: python3 nbd-adopt-raw.py EXPORT_SIZE
import os
import socket
import struct
import sys

from nbdwire import recvn, request, reply

size = int(sys.argv[1])
EINVAL, ENOSPC = 22, 28
READ, WRITE, DISC, FLUSH, TRIM, WZ = 0, 1, 2, 3, 4, 6
FUA, NO_HOLE = 1, 2


def call(s, typ, flags, cookie, off, ln, payload=b"", want=0):
    request(s, typ, flags, cookie, off, ln, payload)
    err, data = reply(s, cookie, ln if typ == READ else 0)
    assert err == want, f"cookie {cookie} (cmd {typ}): error {err}, want {want}"
    return data


c0 = socket.socket(fileno=3)
c1 = socket.socket(fileno=4)
spare = socket.socket(fileno=5)
for s in (c0, c1, spare):
    s.settimeout(20)

a, b = b"\xa1" * 8192, b"\xb2" * 4096
call(c0, WRITE, FUA, 1, 0, 8192, a)
assert call(c0, READ, 0, 2, 0, 8192) == a, "read after FUA write differs"
call(c1, WRITE, 0, 3, 65536, 4096, b)
call(c1, FLUSH, 0, 4, 0, 0)
assert call(c0, READ, 0, 5, 65536, 4096) == b, "write of one connection not seen on the other"
call(c0, TRIM, 0, 6, 4096, 4096)
call(c0, WZ, NO_HOLE, 7, 65536 + 1000, 1000)
call(c0, WZ, FUA, 8, 1 << 20, 1 << 20)
got = call(c1, READ, 0, 9, 0, 8192)
assert got == a[:4096] + b"\0" * 4096, "trimmed block does not read as zeros"
got = call(c1, READ, 0, 10, 65536, 4096)
assert got == b[:1000] + b"\0" * 1000 + b[2000:], "WRITE_ZEROES NO_HOLE range wrong"
# Malformed requests: an error reply, and the connection goes on.
call(c0, READ, 0, 11, 0, 0, want=EINVAL)
call(c0, READ, 0, 12, size, 4096, want=EINVAL)
call(c0, WRITE, 0, 13, size - 512, 1024, b"x" * 1024, want=ENOSPC)
call(c0, 42, 0, 14, 0, 4096, want=EINVAL)
call(c0, FLUSH, FUA, 15, 0, 0, want=EINVAL)
# Several requests in flight on one connection, replies in any order.
for i in range(16):
    request(c1, WRITE, 0, 100 + i, (2 << 20) + i * 4096, 4096, bytes([i]) * 4096)
seen = set()
for i in range(16):
    magic, err, ck = struct.unpack(">IIQ", recvn(c1, 16))
    assert magic == 0x67446698 and err == 0 and 100 <= ck < 116, f"bad reply {ck} {err}"
    seen.add(ck)
assert len(seen) == 16, "replies lost or duplicated"
# The kernel gives up on a socket by closing it: the server adopts the
# spare, whose requests were sent before it was adopted.
request(spare, READ, 0, 20, 0, 8192)
c0.close()
err, data = reply(spare, 20, 8192)
assert err == 0 and data == a[:4096] + b"\0" * 4096, "read on the adopted spare wrong"
assert call(spare, READ, 0, 21, (2 << 20) + 5 * 4096, 4096) == bytes([5]) * 4096
# DISC: replies in flight are sent first, then the server closes.
request(c1, WRITE, 0, 30, 3 << 20, 4096, b"\xcc" * 4096)
request(c1, DISC, 0, 31, 0, 0)
err, _ = reply(c1, 30)
assert err == 0, "write before DISC failed"
assert c1.recv(1) == b"", "DISC did not close"
# A reply far larger than the socket buffer, then DISC at once: the whole
# reply arrives before the close.
big = 8 << 20
request(spare, READ, 0, 32, 2 << 20, big)
request(spare, DISC, 0, 33, 0, 0)
err, data = reply(spare, 32, big)
assert err == 0 and data[:4096] == bytes([0]) * 4096 and len(data) == big, "read before DISC"
assert spare.recv(1) == b"", "DISC did not close the spare"
print("nbd-adopt-raw: ok")
