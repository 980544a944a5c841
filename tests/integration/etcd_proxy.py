# SPDX-License-Identifier: Apache-2.0
"""What the proxies in front of etcd's JSON gateway share
(etcd-race-proxy.py, etcd-delay-proxy.py): listen on a free loopback
port, written to PORTFILE once listening; forward every POST to etcd
after the caller's hook has seen it; exit 0 on SIGTERM."""
import http.server
import os
import signal
import sys
import threading
import urllib.error
import urllib.request


def serve(portfile, etcd, before):
    """before(path, body) runs first for each POST (it may take its time:
    each request has a thread)."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            before(self.path, body)
            req = urllib.request.Request(etcd + self.path, data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    code, out = r.status, r.read()
            except urllib.error.HTTPError as e:
                code, out = e.code, e.read()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()
    sys.exit(0)
