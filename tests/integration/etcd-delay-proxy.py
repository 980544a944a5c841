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
import json
import sys
import time

import etcd_proxy

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


def before(path, body):
    if path == "/v3/kv/txn" and puts_record(body):
        time.sleep(delay)


etcd_proxy.serve(portfile, etcd, before)
