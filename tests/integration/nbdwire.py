# SPDX-License-Identifier: Apache-2.0
# Raw NBD transmission-phase helpers shared by the nbd-*-raw.py tests.
import struct

REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698


def recvn(s, n):
    """Exactly n bytes from socket s; EOFError if it closes first."""
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("connection closed")
        b += c
    return b


def request(s, typ, flags, cookie, off, ln, payload=b""):
    """Send one request header (and a WRITE's payload)."""
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, typ, cookie, off, ln) + payload)


def reply(s, cookie, data_len=0):
    """Read one simple reply for cookie: (error, data of a successful read)."""
    magic, err, ck = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE_REPLY_MAGIC, f"reply magic {magic:#x}: not a simple reply"
    assert ck == cookie, f"reply for cookie {ck}, want {cookie}"
    data = recvn(s, data_len) if err == 0 and data_len else b""
    return err, data
