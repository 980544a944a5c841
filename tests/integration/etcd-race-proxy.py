# SPDX-License-Identifier: Apache-2.0
"""A proxy in front of etcd's JSON gateway that changes a volume's record
just before a writer's attach transaction reaches etcd: the race the
attach's compare of the record's revision exists for.

  etcd-race-proxy.py PORTFILE ETCD_URL VOLUME MODE TIMES LOGFILE

Listens on a free loopback port (written to PORTFILE once it listens)
and forwards every POST to ETCD_URL. A transaction that puts a key under
/qbd/attachments/ is an attach: for the first TIMES of them, the proxy
first rewrites /qbd/volumes/VOLUME through etcd itself:
  size     double "size" (a resize: the replicas stay the same)
  members  replace the last node with 00000000000000ee, cfg + 1 (a
           change that completed: the replicas are not the same any more)
and logs one line per rewrite to LOGFILE. Exits 0 on SIGTERM.
"""
import base64
import json
import sys
import threading
import urllib.request

import etcd_proxy

portfile, etcd, volume, mode, times, logfile = sys.argv[1:7]
times = int(times)
fired = 0
lock = threading.Lock()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def etcd_post(path, body):
    req = urllib.request.Request(etcd + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def rewrite():
    key = "/qbd/volumes/" + volume
    kv = etcd_post("/v3/kv/range", {"key": b64(key)})["kvs"][0]
    rec = json.loads(base64.b64decode(kv["value"]))
    if mode == "size":
        rec["size"] = int(rec["size"]) * 2
    else:
        rec["nodes"][-1] = "00000000000000ee"
        rec["cfg"] = int(rec.get("cfg", 1)) + 1
    etcd_post("/v3/kv/put", {"key": b64(key), "value": b64(json.dumps(rec))})
    with open(logfile, "a") as f:
        f.write("rewrote %s (%s) at revision %s\n" % (key, mode, kv["mod_revision"]))


def is_attach(body):
    try:
        req = json.loads(body)
        for op in req.get("success", []):
            put = op.get("requestPut")
            if put and base64.b64decode(put["key"]).decode().startswith("/qbd/attachments/"):
                return True
    except (ValueError, KeyError, TypeError):
        pass
    return False


def before(path, body):
    global fired
    if path == "/v3/kv/txn" and is_attach(body):
        with lock:
            if fired < times:
                fired += 1
                rewrite()


etcd_proxy.serve(portfile, etcd, before)
