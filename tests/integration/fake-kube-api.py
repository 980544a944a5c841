#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# A fake of the Kubernetes API server, for tests/integration/test-operator.sh:
# NOT an API server. It keeps objects in memory by URL path and serves the
# few REST calls qbd-operator makes, as the API server answers them:
#   GET  COLLECTION[?labelSelector=k=v,...]        a List with resourceVersion
#   GET  COLLECTION?watch=1&resourceVersion=RV     newline-delimited JSON
#        events after RV ({"type":"ERROR", 410} when RV is older than the
#        history kept)
#   GET  OBJECT                                    the object, or 404
#   POST COLLECTION                                create (409 if it exists)
#   PUT  OBJECT[/status]                           update (409 on a stale
#        metadata.resourceVersion)
#   DELETE OBJECT                                  delete (404 if absent)
# No validation, defaulting, admission, RBAC, garbage collection or
# controllers. Every request needs "Authorization: Bearer TOKEN".
# Each create, update, delete and status write by a client is appended to
# LOG as one JSON line {"verb", "path", "kind", "name"}.
# The test changes the world through /fake/ (not logged):
#   POST /fake/put?c=COLLECTION     body: an object, created or replaced
#   POST /fake/delete?c=COLLECTION&name=NAME
#   POST /fake/expire               forget the event history and end every
#                                   watch: the next watch from an old
#                                   resourceVersion gets 410 Gone
#   GET  /fake/get?c=COLLECTION&name=NAME
#
#   fake-kube-api.py --port-file F --log LOG --token TOKEN
import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Condition()
store = {}          # collection path -> {name: object}
history = []        # (rv, collection, type, object)
oldest = 0          # history holds every event after this rv
rv = 100
epoch = 0           # bumped by /fake/expire: ends open watches
args = None


def split(path):
    """An object path -> (collection, name, subresource)."""
    parts = path.rstrip("/").split("/")
    if parts[-1] == "status" and len(parts) > 4:
        return "/".join(parts[:-2]), parts[-2], "status"
    return "/".join(parts[:-1]), parts[-1], None


PLURALS = {"nodes", "pods", "secrets", "services", "configmaps", "events", "daemonsets",
           "deployments", "statefulsets", "csidrivers", "storageclasses", "qbdclusters",
           "leases"}


def is_collection(path):
    return path.rstrip("/").split("/")[-1] in PLURALS


def selector_match(obj, sel):
    if not sel:
        return True
    labels = obj.get("metadata", {}).get("labels", {}) or {}
    for term in sel.split(","):
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    return True


def record(coll, typ, obj):
    """Under lock: a change of the world, for watches."""
    global rv
    rv += 1
    obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
    history.append((rv, coll, typ, json.loads(json.dumps(obj))))
    lock.notify_all()


def put(coll, obj, typ=None):
    meta = obj.setdefault("metadata", {})
    parts = coll.split("/")
    if "namespaces" in parts:
        meta["namespace"] = parts[parts.index("namespaces") + 1]
    objs = store.setdefault(coll, {})
    old = objs.get(meta["name"])
    meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
    meta.setdefault("creationTimestamp",
                    old["metadata"].get("creationTimestamp") if old else
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta.setdefault("generation", 1)
    objs[meta["name"]] = obj
    record(coll, typ or ("MODIFIED" if old else "ADDED"), obj)


def delete(coll, name):
    obj = store.get(coll, {}).pop(name, None)
    if obj is not None:
        record(coll, "DELETED", obj)
    return obj


def log_action(verb, path, obj):
    with open(args.log, "a") as f:
        f.write(json.dumps({"verb": verb, "path": path, "kind": obj.get("kind"),
                            "name": obj.get("metadata", {}).get("name")}) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def status(self, code, reason, msg):
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "reason": reason, "message": msg, "code": code})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    def authorized(self):
        if self.headers.get("Authorization") == "Bearer " + args.token:
            return True
        self.status(401, "Unauthorized", "no or wrong bearer token")
        return False

    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        path = u.path.rstrip("/")
        if path == "/fake/get":
            with lock:
                obj = store.get(q["c"], {}).get(q["name"])
            return self.reply(200, obj) if obj else self.status(404, "NotFound", "no")
        if not self.authorized():
            return
        if q.get("watch") in ("1", "true"):
            return self.watch(path, q)
        with lock:
            if is_collection(path):
                items = [o for o in store.get(path, {}).values()
                         if selector_match(o, q.get("labelSelector"))]
                return self.reply(200, {"kind": "List", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": str(rv)},
                                        "items": items})
            coll, name, _ = split(path)
            obj = store.get(coll, {}).get(name)
        if obj is None:
            return self.status(404, "NotFound", f"{path} not found")
        self.reply(200, obj)

    def watch(self, path, q):
        sel = q.get("labelSelector")
        since = int(q.get("resourceVersion") or 0)
        deadline = time.time() + int(q.get("timeoutSeconds") or 300)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(ev):
            data = (json.dumps(ev) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        try:
            with lock:
                my_epoch = epoch
                if since < oldest:
                    send({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                      "reason": "Expired",
                                                      "message": "too old resource version"}})
                    self.wfile.write(b"0\r\n\r\n")
                    return
            while True:
                with lock:
                    evs = [h for h in history if h[0] > since and h[1] == path]
                    if not evs:
                        if epoch != my_epoch or time.time() > deadline:
                            break
                        lock.wait(0.5)
                        continue
                for (r, _, typ, obj) in evs:
                    since = r
                    if selector_match(obj, sel):
                        send({"type": typ, "object": obj})
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self):
        global oldest, epoch
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        path = u.path.rstrip("/")
        if path.startswith("/fake/"):
            with lock:
                if path == "/fake/put":
                    put(q["c"], self.body())
                elif path == "/fake/delete":
                    delete(q["c"], q["name"])
                elif path == "/fake/expire":
                    oldest = rv
                    history.clear()
                    epoch += 1
                    lock.notify_all()
            return self.reply(200, {})
        if not self.authorized():
            return
        obj = self.body()
        meta = obj.setdefault("metadata", {})
        if "name" not in meta and "generateName" in meta:
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        with lock:
            if meta["name"] in store.get(path, {}):
                return self.status(409, "AlreadyExists", f"{meta['name']} already exists")
            put(path, obj, "ADDED")
        log_action("create", path, obj)
        self.reply(201, obj)

    def do_PUT(self):
        path = urlparse(self.path).path.rstrip("/")
        if not self.authorized():
            return
        obj = self.body()
        coll, name, sub = split(path)
        with lock:
            old = store.get(coll, {}).get(name)
            if old is None:
                return self.status(404, "NotFound", f"{path} not found")
            want = obj.get("metadata", {}).get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                return self.status(409, "Conflict", "the object has been modified")
            if sub == "status":
                new = json.loads(json.dumps(old))
                new["status"] = obj.get("status")
            else:
                new = obj
                if "status" in old:
                    new["status"] = old["status"]
            put(coll, new)
        log_action("status" if sub else "update", path, new)
        self.reply(200, new)

    def do_DELETE(self):
        path = urlparse(self.path).path.rstrip("/")
        if not self.authorized():
            return
        coll, name, _ = split(path)
        with lock:
            obj = delete(coll, name)
        if obj is None:
            return self.status(404, "NotFound", f"{path} not found")
        log_action("delete", path, obj)
        self.reply(200, obj)


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--token", required=True)
    args = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
