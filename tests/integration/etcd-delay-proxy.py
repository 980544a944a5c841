# SPDX-License-Identifier: Apache-2.0
"""A proxy in front of etcd's JSON gateway that holds back each write of
one volume's record.

  etcd-delay-proxy.py PORTFILE ETCD_URL VOLUME SECONDS

Listens on a free loopback port (written to PORTFILE once it listens)
and forwards every POST to ETCD_URL; a transaction that puts
/qbd/volumes/VOLUME (a writer's step of a membership change) is sent on
SECONDS later. Exits 0 on SIGTERM.
"""
import base64
import http.server
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

portfile, etcd, volume, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
KEY = "/qbd/volumes/" + volume


def puts_record(body):
    try:
        req = json.loads(body)
        for op in req.get("success", []):
            put = op.get("requestPut")
            if put and base64.b64decode(put["key"]).decode() == KEY:
                return True
    except (ValueError, KeyError, TypeError):
        pass
    return False


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v3/kv/txn" and puts_record(body):
            time.sleep(delay)
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
