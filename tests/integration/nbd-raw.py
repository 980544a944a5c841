# SPDX-License-Identifier: Apache-2.0
# Speak raw NBD to a server on a unix socket: malformed requests must get
# an NBD error and leave the connection usable; a bad magic must close it.
# Usage: python3 nbd-raw.py SOCKET EXPORT_SIZE
import socket
import struct
import sys

from nbdwire import recvn, request, reply

path, size = sys.argv[1], int(sys.argv[2])
EINVAL, ENOSPC = 22, 28


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    assert magic == 0x4E42444D41474943 and opt == 0x49484156454F5054, "bad greeting"
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    # An unknown option is refused and the handshake goes on.
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 999, 0))
    _, o, rtype, ln = struct.unpack(">QIII", recvn(s, 20))
    assert o == 999 and rtype == 0x80000001, f"unknown option answered {rtype:#x}"
    recvn(s, ln)
    # NBD_OPT_GO for the default export, no info requests.
    s.sendall(struct.pack(">QIIIH", 0x49484156454F5054, 7, 6, 0, 0))
    got_size = None
    while True:
        _, o, rtype, ln = struct.unpack(">QIII", recvn(s, 20))
        data = recvn(s, ln)
        if rtype == 3 and struct.unpack(">H", data[:2])[0] == 0:
            got_size = struct.unpack(">Q", data[2:10])[0]
        if rtype == 1:
            break
        assert rtype < 0x80000000, f"GO refused: {rtype:#x}"
    assert got_size == size, f"size {got_size}, want {size}"
    return s


s = connect()
cases = [
    (0, 0x8, 1, 0, 4096, EINVAL),          # READ with an unknown flag
    (0, 0, 2, 0, 0, EINVAL),               # READ of zero bytes
    (0, 0, 3, size, 4096, EINVAL),         # READ past the end
    (1, 0, 4, size - 512, 1024, ENOSPC),   # WRITE past the end (payload sent)
    (42, 0, 5, 0, 4096, EINVAL),           # unknown command
]
for typ, flags, cookie, off, ln, want in cases:
    request(s, typ, flags, cookie, off, ln, b"x" * ln if typ == 1 else b"")
    err, _ = reply(s, cookie)
    assert err == want, f"case {cookie}: error {err}, want {want}"
# The connection is still usable: write and read back.
request(s, 1, 1, 10, 8192, 4096, b"\xab" * 4096)
assert reply(s, 10)[0] == 0, "write after errors failed"
request(s, 0, 0, 11, 8192, 4096)
err, data = reply(s, 11, 4096)
assert err == 0 and data == b"\xab" * 4096, "read after errors wrong"
request(s, 2, 0, 12, 0, 0)  # DISC: the server closes
assert s.recv(1) == b"", "DISC did not close"
s.close()

# A bad request magic closes the connection.
s = connect()
s.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 1, 0, 4096))
try:
    closed = s.recv(16) == b""
except ConnectionResetError:
    closed = True
assert closed, "bad magic did not close the connection"
print("nbd-raw: ok")
