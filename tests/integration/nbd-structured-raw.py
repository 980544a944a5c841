# SPDX-License-Identifier: Apache-2.0
# Raw NBD bytes for what libnbd hides: option errors (STRUCTURED_REPLY
# with data, SET_META_CONTEXT before it, malformed or foreign meta context
# requests), LIST and SET of base:allocation, the transmission flags, and
# the exact structured chunks of READ (OFFSET_DATA), errors (ERROR) and
# BLOCK_STATUS (context id, extents, REQ_ONE); simple replies for other
# commands; DISC. Usage: python3 nbd-structured-raw.py SOCKET EXPORT_SIZE
# on a volume never written.
import socket
import struct
import sys

from nbdwire import recvn

path, size = sys.argv[1], int(sys.argv[2])
IHAVEOPT = 0x49484156454F5054
EINVAL = 22
ACK, SERVER, INFO, META = 1, 2, 3, 4
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN = 0x80000001, 0x80000003, 0x80000006
O_GO, O_SR, O_LIST, O_SET = 7, 8, 9, 10
HOLE = 3


def opt(s, o, data=b""):
    """Send an option; return its replies up to ACK or an error."""
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)
    out = []
    while True:
        magic, ro, rtype, ln = struct.unpack(">QIII", recvn(s, 20))
        assert magic == 0x3E889045565A9 and ro == o, "bad option reply"
        out.append((rtype, recvn(s, ln)))
        if rtype == ACK or rtype >= 0x80000000:
            return out


def meta(name, queries, count=None):
    b = struct.pack(">I", len(name)) + name
    b += struct.pack(">I", len(queries) if count is None else count)
    for q in queries:
        b += struct.pack(">I", len(q)) + q
    return b


def expect(cond, msg):
    if not cond:
        print("nbd-structured-raw: FAIL: " + msg)
        sys.exit(1)


s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(path)
recvn(s, 18)
s.sendall(struct.pack(">I", 3))

r = opt(s, O_SR, b"x")
expect(r[-1][0] == ERR_INVALID, "STRUCTURED_REPLY with data: %r" % r)
r = opt(s, O_SET, meta(b"", [b"base:allocation"]))
expect(r[-1][0] == ERR_INVALID, "SET_META_CONTEXT before STRUCTURED_REPLY: %r" % r)
for q in ([], [b"base:"], [b"base:allocation"]):
    r = opt(s, O_LIST, meta(b"", q))
    expect(r == [(META, struct.pack(">I", 0) + b"base:allocation"), (ACK, b"")],
           "LIST_META_CONTEXT %r: %r" % (q, r))
r = opt(s, O_LIST, meta(b"", [b"qemu:dirty-bitmap:a"]))
expect(r == [(ACK, b"")], "LIST of an unknown context: %r" % r)
r = opt(s, O_LIST, meta(b"no-such-export", []))
expect(r[-1][0] == ERR_UNKNOWN, "LIST for an unknown export: %r" % r)
r = opt(s, O_LIST, meta(b"", [b"base:allocation"], count=2))
expect(r[-1][0] == ERR_INVALID, "LIST with a missing query: %r" % r)
r = opt(s, O_LIST, meta(b"", []) + b"junk")
expect(r[-1][0] == ERR_INVALID, "LIST with trailing bytes: %r" % r)
r = opt(s, 11)   # NBD_OPT_EXTENDED_HEADERS: not supported, goes on
expect(r[-1][0] == ERR_UNSUP, "EXTENDED_HEADERS: %r" % r)
r = opt(s, O_SR)
expect(r == [(ACK, b"")], "STRUCTURED_REPLY: %r" % r)
r = opt(s, O_SET, meta(b"", [b"nope:x", b"base:", b"base:allocation"]))
expect(len(r) == 2 and r[0][0] == META and r[0][1][4:] == b"base:allocation" and
       r[1][0] == ACK, "SET_META_CONTEXT: %r" % r)
ctx = struct.unpack(">I", r[0][1][:4])[0]
expect(ctx != 0, "context id 0")
r = opt(s, O_GO, struct.pack(">IH", 0, 0))
flags = None
for rtype, d in r:
    if rtype == INFO and struct.unpack(">H", d[:2])[0] == 0:
        esize, flags = struct.unpack(">QH", d[2:12])
        expect(esize == size, "export size %d" % esize)
    if rtype == INFO and struct.unpack(">H", d[:2])[0] == 3:
        expect(struct.unpack(">III", d[2:14]) == (1, 4096, 32 << 20), "block sizes")
expect(r[-1][0] == ACK and flags is not None, "GO: %r" % r)
expect(flags & (1 << 7) and flags & (1 << 8), "flags %#x lack SEND_DF or CAN_MULTI_CONN" % flags)


def request(typ, flags, cookie, off, ln, payload=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, typ, cookie, off, ln) + payload)


def simple(cookie):
    magic, err, ck = struct.unpack(">IIQ", recvn(s, 16))
    expect(magic == 0x67446698 and ck == cookie, "want a simple reply for %d" % cookie)
    return err


def chunk(cookie):
    magic, fl, typ, ck, ln = struct.unpack(">IHHQI", recvn(s, 20))
    expect(magic == 0x668E33EF and ck == cookie, "want a structured chunk for %d" % cookie)
    return fl, typ, recvn(s, ln)


request(1, 0, 1, 4096, 8192, b"\x5a" * 8192)
expect(simple(1) == 0, "write")
request(0, 1 << 2, 2, 4096, 4096)  # READ with DF
fl, typ, d = chunk(2)
expect(fl == 1 and typ == 1 and d == struct.pack(">Q", 4096) + b"\x5a" * 4096,
       "READ: one OFFSET_DATA chunk, DONE")
request(0, 0, 3, size, 4096)
fl, typ, d = chunk(3)
expect(fl == 1 and typ == 0x8001 and struct.unpack(">I", d[:4])[0] == EINVAL and
       struct.unpack(">H", d[4:6])[0] == len(d) - 6 > 0, "READ past the end: ERROR chunk")
request(7, 0, 4, 0, 16384)
fl, typ, d = chunk(4)
ext = struct.unpack(">I" + "II" * ((len(d) - 4) // 8), d)
expect(fl == 1 and typ == 5 and ext == (ctx, 4096, HOLE, 8192, 0, 4096, HOLE),
       "BLOCK_STATUS: %r" % (ext,))
request(7, 1 << 3, 5, 6000, 10000)  # REQ_ONE
fl, typ, d = chunk(5)
expect(d == struct.pack(">III", ctx, 12288 - 6000, 0), "REQ_ONE: %r" % d)
request(7, 0, 6, size - 4096, 8192)
fl, typ, d = chunk(6)
expect(typ == 0x8001 and struct.unpack(">I", d[:4])[0] == EINVAL, "BLOCK_STATUS past the end")
request(7, 1, 7, 0, 4096)  # FUA is not a BLOCK_STATUS flag
fl, typ, d = chunk(7)
expect(typ == 0x8001 and struct.unpack(">I", d[:4])[0] == EINVAL, "BLOCK_STATUS with FUA")
request(42, 0, 8, 0, 4096)
expect(simple(8) == EINVAL, "unknown command")
request(3, 0, 9, 0, 0)
expect(simple(9) == 0, "flush")
request(2, 0, 10, 0, 0)  # DISC
expect(s.recv(1) == b"", "DISC did not close")
print("nbd-structured-raw: ok")
