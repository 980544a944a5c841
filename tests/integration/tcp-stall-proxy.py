# SPDX-License-Identifier: Apache-2.0
"""A TCP proxy whose clients' bytes can be left unread.

  tcp-stall-proxy.py PORTFILE TARGET_PORT

Listens on a free loopback port (written to PORTFILE once it listens)
and forwards each connection to 127.0.0.1:TARGET_PORT, both ways.
SIGUSR1: from then on nothing more is read from the connected clients
(their sends fill the socket buffers; the connections stay open), until
SIGUSR2. The sockets it accepts have small receive buffers, so that a
client's socket fills soon. Exits 0 on SIGTERM.
"""
import os
import signal
import socket
import sys
import threading
import time

portfile, target = sys.argv[1], int(sys.argv[2])
stalled = threading.Event()
signal.signal(signal.SIGUSR1, lambda *a: stalled.set())
signal.signal(signal.SIGUSR2, lambda *a: stalled.clear())
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))


def pump(src, dst, stallable):
    try:
        while True:
            if stallable and stalled.is_set():
                time.sleep(0.02)
                continue
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = ls.accept()
    try:
        s = socket.create_connection(("127.0.0.1", target), 5)
    except OSError:
        c.close()
        continue
    # The connect's timeout must not stay on the socket: while stalled,
    # the server gets nothing and so answers nothing, and a recv that
    # timed out would close the connection the stall is meant to keep.
    s.settimeout(None)
    threading.Thread(target=pump, args=(c, s, True), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, False), daemon=True).start()
