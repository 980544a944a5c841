#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""qbd's fault-injection suite: zones as network namespaces, real processes.

  tests/fault/fault.py [--short] [--seeds N] [--first-seed S]
                       [--scenarios A,B] [--duration S] [--results DIR]
                       [--nbd BINARY] [--expect-loss] BUILD_DIR

Each run of a scenario builds its own network: a namespace per zone (a, b,
c) holding that zone's chunk server and, when the scenario puts one there,
a writer (qbd-nbd); a namespace for etcd ("meta"); all joined by veth pairs
to a bridge in a namespace of their own. The membership scenarios (issue
18) add a fourth zone d, whose chunk server starts after the volume was
placed, and zone-lost-with-etcd runs three etcd members, one in each of
zones a, b, c, in place of "meta"'s. Faults are nftables rules in a
zone's namespace (isolation, flapping), signals to processes by PID (kill
-9, SIGSTOP, SIGTERM), a userspace TCP proxy that holds bytes (latency;
this kernel has no netem), the engine's EIO switch (QBD_ENGINE_FAULT_EIO),
and etcd stopped.

The workload (this process, libnbd) writes 4 KiB blocks whose contents
name the block, the writing thread, a sequence number and the run's seed,
through the writer's unix socket; every thread owns its blocks, so each
block's writes are ordered. It records every write (acknowledged, failed
or unknown), reads blocks back as it goes (a read must never return a
value older than the last acknowledged or observed one), and at the end
the checker reads every block through a writer that holds the volume
after the faults: a block whose acknowledged contents are gone is a lost
write. Replicas are compared chunk by chunk (`qbd volume verify`) once
resynced.

Prints one line per run and a table; writes RESULTS/results.md and
results.json. Exit status 0 when every run passed, 1 when one failed (or,
with --expect-loss, when no run lost a write), 77 when this machine
cannot run it (not root, no network namespaces or nftables).
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

try:
    import nbd
except ImportError:
    nbd = None

HERE = os.path.dirname(os.path.abspath(__file__))
BS = 4096
SUBNET = "10.201.0"
ADDR = {"a": SUBNET + ".1", "b": SUBNET + ".2", "c": SUBNET + ".3", "meta": SUBNET + ".10",
        "d": SUBNET + ".4"}  # d: a fourth zone, for the membership scenarios
ZONES = ["a", "b", "c"]
CHUNKD_PORT = 7800
PROXY_PORT = 7801
ETCD_PORT = 2379
VOLUME_BLOCKS = 16384  # 64 MiB
MAGIC = b"QBDFAULT"


class Skip(Exception):
    """This machine cannot run the suite (exit 77)."""


class Failed(Exception):
    """The run broke a check."""


def say(msg):
    print("fault: " + msg, flush=True)


def run(argv, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                 (r.stderr or r.stdout).strip()[-400:]))
    return r


# ---- the network ----

class Net:
    """A bridge namespace and one namespace per node, removed by down()."""

    def __init__(self, tag):
        self.p = "qbdf%s" % tag
        self.nodes = []

    def ns(self, node):
        return "%s-%s" % (self.p, node)

    def up(self, nodes):
        br = self.ns("net")
        run(["ip", "netns", "add", br])
        self.nodes.append("net")
        run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", br, "link", "set", "br0", "up"])
        for n in nodes:
            ns = self.ns(n)
            run(["ip", "netns", "add", ns])
            self.nodes.append(n)
            run(["ip", "-n", br, "link", "add", "v" + n, "type", "veth", "peer", "name",
                 "eth0", "netns", ns])
            run(["ip", "-n", br, "link", "set", "v" + n, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", ADDR[n] + "/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def isolate(self, node, peers=None, inbound_only=False):
        """Drop what node receives from peers (default: every other node,
        etcd included) and, unless inbound_only, what it sends them."""
        peers = peers or [n for n in ADDR if n != node]
        addrs = ", ".join(ADDR[p] for p in peers)
        rules = ("table inet qbdf {\n"
                 " chain in { type filter hook input priority 0; policy accept;"
                 " ip saddr { %s } drop; }\n" % addrs)
        if not inbound_only:
            rules += (" chain out { type filter hook output priority 0; policy accept;"
                      " ip daddr { %s } drop; }\n" % addrs)
        rules += "}\n"
        self.heal(node)
        run(["ip", "netns", "exec", self.ns(node), "nft", "-f", "-"], input=rules)

    def heal(self, node):
        run(["ip", "netns", "exec", self.ns(node), "nft", "delete", "table", "inet", "qbdf"],
            check=False)

    def down(self):
        for n in reversed(self.nodes):
            run(["ip", "netns", "del", self.ns(n)], check=False)
        self.nodes = []


# ---- processes ----

class Procs:
    """Every process the run starts, by PID; stopped at the end (TERM, then
    KILL after 10 s)."""

    def __init__(self, logs):
        self.logs = logs
        self.procs = {}

    def start(self, name, ns, argv, env=None):
        log = open(os.path.join(self.logs, name + ".log"), "ab")
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, env=e, start_new_session=True)
        log.close()
        self.procs[name] = p
        return p

    def signal(self, name, sig):
        p = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, sig)

    def kill(self, name):
        p = self.procs.pop(name)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()

    def stop(self, name, timeout=20):
        """SIGTERM (after SIGCONT, in case it was stopped); its exit status."""
        p = self.procs.pop(name)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                return -9
        return p.returncode

    def stop_all(self):
        for name in list(reversed(list(self.procs))):
            self.stop(name, 10)


def wait_until(what, timeout, fn, step=0.1):
    end = time.monotonic() + timeout
    while True:
        try:
            if fn():
                return
        except (OSError, RuntimeError):
            pass
        if time.monotonic() > end:
            raise Failed("timed out after %g s waiting for %s" % (timeout, what))
        time.sleep(step)


def port_open(ns, addr, port):
    r = subprocess.run(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c",
                        "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()",
                        addr, str(port)], capture_output=True)
    return r.returncode == 0


# ---- the cluster ----

class Cluster:
    def __init__(self, o, net, procs, tmp):
        self.o = o
        self.net = net
        self.procs = procs
        self.tmp = tmp
        self.etcd = "http://%s:%d" % (ADDR["meta"], ETCD_PORT)
        self.chunkd_env = {}
        self.delays = {}     # zone -> ms each way (a proxy in front of its chunk server)
        self.proxied = set()
        self.writers = {}    # name -> socket path
        self.writer_env = {}
        self.etcd_zones = False  # one etcd member per zone (a, b, c) instead of "meta"

    def bin(self, name):
        return os.path.join(self.o.build, name)

    def qbd(self, *args, check=True, timeout=60):
        r = subprocess.run(["ip", "netns", "exec", self.net.ns("meta"), self.bin("qbd")] +
                           list(args), capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, QBD_ETCD=self.etcd))
        if check and r.returncode != 0:
            raise RuntimeError("qbd %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                       (r.stderr or r.stdout).strip()[-400:]))
        return r

    def start_etcd3(self):
        """Three etcd members, one in each zone's namespace (as qbd dev up
        runs them), and every program given the three endpoints."""
        peers = ",".join("qbdf-%s=http://%s:2380" % (z, ADDR[z]) for z in ZONES)
        for z in ZONES:
            ip = ADDR[z]
            self.procs.start("etcd-" + z, self.net.ns(z), [
                "etcd", "--name", "qbdf-" + z, "--data-dir", os.path.join(self.tmp, "etcd-" + z),
                "--listen-client-urls", "http://%s:%d" % (ip, ETCD_PORT),
                "--advertise-client-urls", "http://%s:%d" % (ip, ETCD_PORT),
                "--listen-peer-urls", "http://%s:2380" % ip,
                "--initial-advertise-peer-urls", "http://%s:2380" % ip,
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", "qbdf"])
        self.etcd = ",".join("http://%s:%d" % (ADDR[z], ETCD_PORT) for z in ZONES)
        wait_until("etcd (three members)", 60,
                   lambda: self.qbd("node", "list", check=False).returncode == 0, 0.25)

    def start_etcd(self):
        if self.etcd_zones:
            return self.start_etcd3()
        ip = ADDR["meta"]
        self.procs.start("etcd", self.net.ns("meta"), [
            "etcd", "--name", "qbdf", "--data-dir", os.path.join(self.tmp, "etcd"),
            "--listen-client-urls", "http://%s:%d" % (ip, ETCD_PORT),
            "--advertise-client-urls", "http://%s:%d" % (ip, ETCD_PORT),
            "--listen-peer-urls", "http://%s:2380" % ip,
            "--initial-advertise-peer-urls", "http://%s:2380" % ip,
            "--initial-cluster", "qbdf=http://%s:2380" % ip])
        wait_until("etcd", 30, lambda: port_open(self.net.ns("meta"), ip, ETCD_PORT))

    def start_chunkd(self, z, env=None):
        argv = [self.bin("qbd-chunkd"), "--data", os.path.join(self.tmp, "chunk-%s.img" % z),
                "--size", "2G", "--listen", "%s:%d" % (ADDR[z], CHUNKD_PORT), "--zone", z,
                "--etcd", self.etcd]
        if z in self.proxied:
            argv += ["--advertise", "%s:%d" % (ADDR[z], PROXY_PORT)]
        e = dict(self.chunkd_env.get(z, {}))
        e.update(env or {})
        self.procs.start("chunkd-" + z, self.net.ns(z), argv, e)
        wait_until("chunk server %s" % z, 30,
                   lambda: port_open(self.net.ns(z), ADDR[z], CHUNKD_PORT))

    def start_proxy(self, z, delay_ms):
        """Zone z's chunk server behind a proxy holding every byte delay_ms
        each way (start before its chunk server: it advertises the proxy)."""
        self.proxied.add(z)
        self.procs.start("proxy-" + z, self.net.ns(z), [
            "/usr/bin/python3", os.path.join(HERE, "delay.py"), "%s:%d" % (ADDR[z], PROXY_PORT),
            "%s:%d" % (ADDR[z], CHUNKD_PORT), str(delay_ms)])
        wait_until("proxy %s" % z, 20, lambda: port_open(self.net.ns(z), ADDR[z], PROXY_PORT))

    def nodes_alive(self, n):
        r = self.qbd("node", "list", "--json", check=False)
        if r.returncode != 0:
            return False
        return sum(1 for x in json.loads(r.stdout) if x.get("alive")) >= n

    def up(self, volume, size_mb):
        self.start_etcd()
        for z, ms in self.delays.items():
            self.start_proxy(z, ms)
        for z in ZONES:
            self.start_chunkd(z)
        wait_until("3 chunk servers alive", 30, lambda: self.nodes_alive(3))
        self.qbd("volume", "create", volume, "--size", "%dM" % size_mb, "--replicas", "3",
                 "--write-quorum", "2")

    def start_writer(self, name, zone, volume, force=False, extra=()):
        sock = os.path.join(self.tmp, name + ".sock")
        argv = [self.nbd_bin(), "--etcd", self.etcd, "--volume", volume, "--socket", sock,
                "--zone", zone, "--run-dir", self.tmp] + list(extra)
        if force:
            argv.append("--force")
        p = self.procs.start(name, self.net.ns(zone), argv, self.writer_env)
        wait_until("writer %s" % name, 30,
                   lambda: p.poll() is None and os.path.exists(sock) and nbd_ok(sock))
        if p.poll() is not None:
            raise Failed("writer %s exited %d at start" % (name, p.returncode))
        self.writers[name] = sock
        return sock

    def nbd_bin(self):
        return self.o.nbd or self.bin("qbd-nbd")

    def status(self, volume):
        return self.qbd("volume", "status", volume, check=False).returncode

    def verify(self, volume):
        return self.qbd("volume", "verify", volume, check=False, timeout=120).returncode == 0


def nbd_ok(sock):
    h = nbd.NBD()
    try:
        h.connect_unix(sock)
        h.get_size()
        return True
    except nbd.Error:
        return False
    finally:
        del h  # the handle closes with its last reference


# ---- the workload ----

def contents(seed, block, thread, seq):
    head = MAGIC + struct.pack("<QQQQ", seed, block, thread, seq)
    body = hashlib.blake2b(head, digest_size=64).digest()
    return (head + body * (BS // 64))[:BS]


def decode(buf, seed):
    """(thread, seq) of a block's contents, (None, 0) for zeros, or raise
    Failed for anything else (torn or foreign contents)."""
    if buf == bytes(BS):
        return None, 0
    if buf[:8] != MAGIC:
        raise ValueError("foreign contents")
    s, block, thread, seq = struct.unpack("<QQQQ", buf[8:40])
    if s != seed or buf != contents(seed, block, thread, seq):
        raise ValueError("torn or corrupt contents")
    return thread, seq


class Block:
    """What a block may hold: the write `base` (the last one known to have
    taken effect: acknowledged, or read back), or a write sent after it
    whose outcome is not known (failed, or cut off)."""
    __slots__ = ("acked", "base", "issued", "unknown")

    def __init__(self):
        self.acked = 0      # seq of the last acknowledged write (0: none)
        self.base = 0       # seq known to have taken effect (0: zeros)
        self.issued = 0     # seq of the last write sent
        self.unknown = set()  # seqs sent after base, outcome not known

    def took_effect(self, seq):
        self.base = seq
        self.unknown = {s for s in self.unknown if s > seq}


class Client(threading.Thread):
    """One NBD connection at a time, one request at a time, on its own
    blocks. endpoint() names the writer's socket to use."""

    def __init__(self, wl, idx, blocks, endpoint):
        super().__init__(daemon=True)
        self.wl = wl
        self.idx = idx
        self.blocks = {b: Block() for b in blocks}
        self.endpoint = endpoint
        self.rng = random.Random(wl.seed * 1000 + idx)
        self.h = None
        self.acked = 0
        self.failed = 0
        self.reads = 0
        self.stale = []
        self.corrupt = []
        self.max_stall = 0.0
        self.last_ok = None
        self.seq = 0
        self.errors = []
        self.flushes = 0

    def connect(self):
        while not self.wl.stop.is_set():
            sock = self.endpoint()
            h = nbd.NBD()
            try:
                h.connect_unix(sock)
                self.h = h
                self.sock = sock
                return True
            except nbd.Error:
                del h
                time.sleep(0.05)
        return False

    def drop(self):
        if self.h:
            try:
                self.h.shutdown()
            except nbd.Error:
                pass
            self.h = None

    def wait(self, cookie, deadline):
        """True when the command succeeded, False when it failed, None when
        it is still in flight at the deadline or the stop."""
        while True:
            try:
                if self.h.aio_command_completed(cookie):
                    return True
            except nbd.Error as e:
                self.errors.append("%.3f s: %s" % (time.monotonic() - self.wl.t0, e))
                return False
            if (self.wl.stop.is_set() or time.monotonic() > deadline or
                    self.endpoint() != self.sock):
                return None  # outcome unknown: stopping, too slow, or a new writer
            try:
                self.h.poll(50)
            except nbd.Error as e:
                self.errors.append("%.3f s: %s" % (time.monotonic() - self.wl.t0, e))
                return False

    def issue(self, what, start):
        """Send a request (start() returns its cookie) and wait for it:
        True, False (failed, or not sent: counted as a client error), or
        None (cut off: a new writer, the deadline, or the end of the run,
        which is not an error)."""
        t0 = time.monotonic()
        try:
            cookie = start()
        except nbd.Error as e:
            self.errors.append("%.3f s: %s not sent: %s" % (t0 - self.wl.t0, what, e))
            self.failed += 1
            return False
        ok = self.wait(cookie, t0 + self.wl.op_timeout)
        if ok is False or (ok is None and not self.wl.stop.is_set()):
            self.failed += 1
        return ok

    def note_ok(self):
        now = time.monotonic()
        self.max_stall = max(self.max_stall, now - self.last_ok)
        self.last_ok = now

    def write(self, b):
        blk = self.blocks[b]
        self.seq += 1
        seq = self.seq
        buf = nbd.Buffer.from_bytearray(bytearray(contents(self.wl.seed, b, self.idx, seq)))
        blk.issued = seq
        blk.unknown.add(seq)
        t0 = time.monotonic()
        ok = self.issue("write", lambda: self.h.aio_pwrite(buf, b * BS))
        self.wl.record(("w", self.idx, b, seq, t0, time.monotonic(), ok))
        if not ok:
            return False
        blk.acked = seq
        blk.took_effect(seq)
        self.acked += 1
        self.note_ok()
        return True

    def check_value(self, b, buf, when):
        blk = self.blocks[b]
        try:
            thread, seq = decode(buf, self.wl.seed)
        except ValueError as e:
            self.corrupt.append("block %d (%s): %s" % (b, when, e))
            return
        if thread is not None and thread != self.idx:
            self.corrupt.append("block %d (%s): written by client %d" % (b, when, thread))
            return
        if seq != blk.base and seq not in blk.unknown:
            self.stale.append("block %d (%s): read write %d; last acknowledged %d, "
                              "known %d, unknown %s" %
                              (b, when, seq, blk.acked, blk.base, sorted(blk.unknown)))
            return
        if seq != blk.base:
            # A write whose outcome was unknown showed: it took effect,
            # and no read may go back before it.
            blk.took_effect(seq)

    def flush(self):
        t0 = time.monotonic()
        ok = self.issue("flush", self.h.aio_flush)
        self.wl.record(("f", self.idx, None, None, t0, time.monotonic(), ok))
        if not ok:
            return False
        self.flushes += 1
        self.note_ok()
        return True

    def read(self, b):
        buf = nbd.Buffer(BS)
        if not self.issue("read", lambda: self.h.aio_pread(buf, b * BS)):
            return False
        self.reads += 1
        self.note_ok()
        self.check_value(b, bytes(buf.to_bytearray()), "read during the run")
        return True

    def run(self):
        self.last_ok = time.monotonic()
        blocks = list(self.blocks)
        while not self.wl.stop.is_set():
            if not self.h and not self.connect():
                break
            b = self.rng.choice(blocks)
            blk = self.blocks[b]
            x = self.rng.random()
            if x < self.wl.flush_ratio:
                ok = self.flush()
            elif blk.issued and x < self.wl.flush_ratio + self.wl.read_ratio:
                ok = self.read(b)
            else:
                ok = self.write(b)
            if not ok:
                self.drop()
                time.sleep(0.05)
        self.max_stall = max(self.max_stall, time.monotonic() - self.last_ok)
        self.drop()


class Workload:
    def __init__(self, seed, op_timeout=30.0, read_ratio=0.2, flush_ratio=0.05):
        self.seed = seed
        self.flush_ratio = flush_ratio
        self.stop = threading.Event()
        self.clients = []
        self.op_timeout = op_timeout
        self.read_ratio = read_ratio
        self.log = []
        self.lock = threading.Lock()

    def record(self, rec):
        with self.lock:
            self.log.append(rec)

    def add(self, blocks, endpoint):
        c = Client(self, len(self.clients) + 1, blocks, endpoint)
        self.clients.append(c)
        return c

    def start(self):
        self.t0 = time.monotonic()
        for c in self.clients:
            c.start()

    def finish(self):
        self.stop.set()
        for c in self.clients:
            c.join(self.op_timeout + 10)

    def final_check(self, sock):
        """Read every block through sock: lost writes and stale values."""
        h = nbd.NBD()
        h.connect_unix(sock)
        lost = []
        try:
            for c in self.clients:
                for b, blk in c.blocks.items():
                    if not blk.issued:
                        continue
                    buf = h.pread(BS, b * BS)
                    before = len(c.stale) + len(c.corrupt)
                    c.check_value(b, buf, "final read")
                    if len(c.stale) + len(c.corrupt) > before:
                        lost.append(b)
        finally:
            h.shutdown()
        return lost


# ---- one run of a scenario ----

class Run:
    def __init__(self, o, scenario, seed, results):
        self.o = o
        self.name = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        self.dir = os.path.join(results, "%s-%d" % (scenario, seed))
        os.makedirs(self.dir, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="qbd-fault.", dir=os.environ.get("TMPDIR", "/tmp"))
        self.net = Net("%d%02d" % (os.getpid() % 10000, seed % 100))
        self.procs = Procs(self.dir)
        self.c = Cluster(o, self.net, self.procs, self.tmp)
        # A cluster secret of this run (every process started inherits
        # os.environ), and no settings file but an empty one.
        conf = os.path.join(self.tmp, "qbd.conf")
        open(conf, "w").close()
        os.environ["QBD_CONFIG"] = conf
        secret = os.path.join(self.tmp, "secret")
        subprocess.run([os.path.join(o.build, "qbd"), "secret", "create", secret],
                       check=True, stdout=subprocess.DEVNULL)
        os.environ["QBD_SECRET_FILE"] = secret
        self.volume = "fault"
        self.d = o.duration
        self.notes = []
        self.resync_s = None
        self.reprotect_s = None  # a membership change: request to cfg + 1 and healthy
        self.extra_ns = []       # namespaces beyond a, b, c and meta ("d")
        self.writer_a_args = []  # more arguments for the first writer
        self.checks = []     # (what, ok)

    def check(self, what, ok):
        self.checks.append((what, bool(ok)))
        if not ok:
            say("%s seed %d: check failed: %s" % (self.name, self.seed, what))

    def sleep_to(self, t0, frac):
        left = t0 + self.d * frac - time.monotonic()
        if left > 0:
            time.sleep(left)

    def mark_healed(self):
        """The fault is over: from now on, time until the writer reports
        every replica current (`qbd volume status` exits 0), polled as the
        load goes on: the time to resync."""
        self.healed = time.monotonic()

        def watch():
            end = self.healed + 180
            while time.monotonic() < end and not self.wl.stop.is_set():
                if self.c.status(self.volume) == 0:
                    self.healthy_at = time.monotonic()
                    return
                time.sleep(0.25)
        self.healthy_at = None
        self.watcher = threading.Thread(target=watch, daemon=True)
        self.watcher.start()

    def wait_resync(self, since):
        """Until every replica is current and identical; the seconds since
        `since`, or None if that did not happen within 180 s."""
        end = time.monotonic() + 180
        while time.monotonic() < end:
            if self.c.status(self.volume) == 0 and self.c.verify(self.volume):
                return time.monotonic() - since
            time.sleep(0.5)
        return None

    def execute(self):
        getattr(self, "setup_" + self.name.replace("-", "_"), lambda: None)()
        self.net.up(ZONES + self.extra_ns + ["meta"])
        self.c.up(self.volume, VOLUME_BLOCKS * BS >> 20)
        getattr(self, "up_" + self.name.replace("-", "_"), lambda: None)()
        sock = self.c.start_writer("writer-a", "a", self.volume, extra=self.writer_a_args)
        self.current = sock
        wl = self.wl = Workload(self.seed, op_timeout=self.o.duration + 30)
        # 4 clients on the volume's 64 chunks of 1 MiB: client i owns the
        # blocks i, i + 16, i + 32, ... (16 of every chunk).
        self.main_clients = [wl.add(range(i, VOLUME_BLOCKS, 16), lambda: self.current)
                             for i in range(4)]
        self.extra_clients()
        t0 = time.monotonic()
        wl.start()
        getattr(self, "fault_" + self.name.replace("-", "_"))(t0)
        self.sleep_to(t0, 1.0)
        wl.finish()
        self.after()
        lost = wl.final_check(self.current)
        return lost

    def extra_clients(self):
        pass

    def after(self):
        pass

    # -- scenarios: setup_X (optional), fault_X(t0), and their checks --

    def fault_zone_lost(self, t0):
        z = self.rng.choice(ZONES)
        self.notes.append("zone %s's chunk server killed (-9) for good" % z)
        self.sleep_to(t0, 0.25)
        self.procs.kill("chunkd-" + z)

    def fault_zone_back(self, t0):
        # Cut off longer than the writer's request timeout (10 s), so
        # that it gives the replica up and resyncs it after, rather than
        # catching up from its send queue.
        z = self.rng.choice(["b", "c"])
        cut = max(0.4 * self.d, 12.0)
        self.notes.append("zone %s isolated (nftables, both ways, etcd too) for %.0f s" % (z, cut))
        self.sleep_to(t0, 0.2)
        self.net.isolate(z)
        time.sleep(cut)
        self.net.heal(z)
        self.mark_healed()
        # Load goes on while it resyncs.
        time.sleep(max(0.0, t0 + self.d - time.monotonic(), 4.0))

    def fault_flapping(self, t0):
        z = self.rng.choice(["b", "c"])
        self.sleep_to(t0, 0.2)
        n = 0
        while time.monotonic() < t0 + self.d * 0.7:
            self.net.isolate(z)
            time.sleep(self.rng.uniform(0.3, 1.2))
            self.net.heal(z)
            time.sleep(self.rng.uniform(0.3, 1.2))
            n += 1
        self.mark_healed()
        self.notes.append("zone %s cut off and back %d times (0.3-1.2 s each)" % (z, n))

    def fault_rolling_restart(self, t0):
        self.sleep_to(t0, 0.15)
        self.restart_resync = 0.0
        for z in ZONES:
            rc = self.procs.stop("chunkd-" + z)
            self.check("chunk server %s exits 0 on SIGTERM (exit %s)" % (z, rc), rc == 0)
            time.sleep(0.5)
            self.c.start_chunkd(z)
            t = time.monotonic()
            # The next restart waits for this replica to be current again:
            # a rolling restart must not take two copies away at once.
            wait_until("volume healthy after restarting %s" % z, 120,
                       lambda: self.c.status(self.volume) == 0, 0.25)
            self.restart_resync = max(self.restart_resync, time.monotonic() - t)
        self.mark_healed()
        self.notes.append("chunk servers a, b, c restarted in turn (SIGTERM), each after the "
                          "volume was healthy again")

    def setup_eio(self):
        # Chunks 0-7 of the volume fail on zone a's disk, the replica the
        # writer (zone a) reads first.
        self.c.chunkd_env["a"] = {"QBD_ENGINE_FAULT_EIO": "0-7"}

    def fault_eio(self, t0):
        self.notes.append("zone a's disk fails reads and writes of chunks 0-7 with EIO")

    def after_eio(self):
        # The disk replaced: chunk server a restarted without the fault,
        # then resynced.
        self.procs.stop("chunkd-a")
        self.c.chunkd_env["a"] = {}
        self.c.start_chunkd("a")
        self.mark_healed()

    def setup_slow_zone(self):
        self.c.delays["c"] = 2

    def fault_slow_zone(self, t0):
        self.notes.append("zone c 2 ms away each way (userspace proxy); its chunk server "
                          "stopped (SIGSTOP) for 30% of the run")
        self.sleep_to(t0, 0.3)
        self.procs.signal("chunkd-c", signal.SIGSTOP)
        self.sleep_to(t0, 0.6)
        self.procs.signal("chunkd-c", signal.SIGCONT)
        self.mark_healed()

    def fault_etcd_down(self, t0):
        self.sleep_to(t0, 0.25)
        self.procs.signal("etcd", signal.SIGSTOP)
        t = time.monotonic()
        try:
            r = subprocess.run(["ip", "netns", "exec", self.net.ns("b"), self.c.nbd_bin(),
                                "--etcd", self.c.etcd, "--volume", self.volume, "--socket",
                                os.path.join(self.tmp, "refused.sock"), "--zone", "b", "--force",
                                "--run-dir", self.tmp], capture_output=True, text=True,
                               timeout=60)
            took = time.monotonic() - t
            msg = (r.stderr or r.stdout).strip().splitlines()
            self.check("a writer attaching while etcd is down fails (exit %d after %.1f s: %s)" %
                       (r.returncode, took, msg[-1] if msg else ""), r.returncode != 0)
        except subprocess.TimeoutExpired:
            took = time.monotonic() - t
            self.check("a writer attaching while etcd is down fails within 60 s", False)
        self.sleep_to(t0, 0.6)
        self.procs.signal("etcd", signal.SIGCONT)
        self.notes.append("etcd stopped (SIGSTOP) for 35%% of the run; an attach then failed "
                          "in %.1f s" % took)

    def fault_writer_partition(self, t0):
        self.sleep_to(t0, 0.2)
        self.net.isolate("a")
        time.sleep(1.0)
        self.current = self.c.start_writer("writer-b", "b", self.volume, force=True)
        self.failover = time.monotonic()
        self.sleep_to(t0, 0.6)
        self.net.heal("a")
        self.mark_healed()
        self.notes.append("zone a (the writer's) cut off from b, c and etcd; a writer in "
                          "zone b took over (--force); then a healed")

    def fault_writer_pause(self, t0):
        self.sleep_to(t0, 0.25)
        self.procs.signal("writer-a", signal.SIGSTOP)
        time.sleep(0.5)
        self.current = self.c.start_writer("writer-b", "b", self.volume, force=True)
        time.sleep(1.0)
        self.procs.signal("writer-a", signal.SIGCONT)
        self.notes.append("the writer stopped (SIGSTOP), a writer in zone b took over "
                          "(--force), then the first one continued")

    def extra_clients_for_old_writer(self):
        # Clients that stay with the first writer throughout: after the
        # takeover, nothing it acknowledges may be lost.
        old = self.c.writers["writer-a"]
        self.old_clients = [self.wl.add(range(i, VOLUME_BLOCKS, 16), lambda: old)
                            for i in (4, 5)]

    def fault_one_way(self, t0):
        z = self.rng.choice(["b", "c"])
        self.notes.append("zone %s drops what it receives from zone a (the writer's), one "
                          "direction only, for 40%% of the run" % z)
        self.sleep_to(t0, 0.2)
        self.net.isolate(z, ["a"], inbound_only=True)
        self.sleep_to(t0, 0.6)
        self.net.heal(z)
        self.mark_healed()

    def setup_clock_step(self):
        shim = os.path.join(self.o.build, "tests", "fault", "libclockstep.so")
        if not os.path.exists(shim):
            raise Failed("no %s (make all)" % shim)
        self.clock_file = os.path.join(self.tmp, "clockstep")
        with open(self.clock_file, "w") as f:
            f.write("0\n")
        env = {"LD_PRELOAD": shim, "QBD_CLOCKSTEP_FILE": self.clock_file,
               # a sanitizer build wants its runtime first
               "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}
        self.c.writer_env = env
        for z in ZONES:
            self.c.chunkd_env[z] = env

    def step_clock(self, seconds):
        with open(self.clock_file + ".new", "w") as f:
            f.write("%g\n" % seconds)
        os.rename(self.clock_file + ".new", self.clock_file)

    def fault_clock_step(self, t0):
        # The realtime clock of every qbd process (not etcd's) steps
        # forward 20 s, then back 30 s: timeouts and leases must not
        # notice (they must run on the monotonic clock). Meanwhile the
        # writer's attachment must stay in etcd (its lease kept alive).
        self.sleep_to(t0, 0.1)
        self.step_clock(20)
        self.lapsed = 0
        polls = 0
        stepped_back = False
        while time.monotonic() < t0 + self.d * 0.95:
            if not stepped_back and time.monotonic() > t0 + self.d * 0.6:
                self.step_clock(-10)
                stepped_back = True
            r = self.c.qbd("volume", "status", self.volume, "--json", check=False)
            try:
                polls += 1
                if json.loads(r.stdout).get("attachment") is None:
                    self.lapsed += 1
            except ValueError:
                pass
            time.sleep(0.5)
        self.check("the writer's attachment stayed in etcd (%d of %d polls without it)" %
                   (self.lapsed, polls), polls > 0 and self.lapsed == 0)
        self.notes.append("the realtime clock of the writer and the chunk servers stepped "
                          "forward 20 s at 10% of the run, then back 30 s at 60%")

    def fault_writer_kill(self, t0):
        self.sleep_to(t0, 0.3)
        self.procs.kill("writer-a")
        self.current = self.c.start_writer("writer-b", "b", self.volume, force=True)
        self.notes.append("the writer killed (-9); a writer in zone b took over (--force)")

    # -- membership changes (docs/protocol.md section 11): a fourth zone d,
    # whose chunk server starts after the volume was placed on a, b, c;
    # the writer carries out each change asked of it --

    def vinfo(self, volume=None):
        r = self.c.qbd("--json", "volume", "info", volume or self.volume, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def vstatus(self, volume=None):
        r = self.c.qbd("--json", "volume", "status", volume or self.volume, check=False)
        try:
            return r.returncode, json.loads(r.stdout)
        except ValueError:
            return r.returncode, None

    def node_list(self):
        r = self.c.qbd("node", "list", "--json")
        d = json.loads(r.stdout)
        return d["nodes"] if isinstance(d, dict) else d

    def node_of(self, zone):
        return [n["id"] for n in self.node_list() if n["zone"] == zone][0]

    @staticmethod
    def ids(info):
        return [n["id"] if isinstance(n, dict) else n for n in info["nodes"]]

    def start_zone_d(self):
        self.c.start_chunkd("d")
        wait_until("4 chunk servers alive", 30, lambda: self.c.nodes_alive(4))
        self.nid = {z: self.node_of(z) for z in ZONES + ["d"]}
        info = self.vinfo()
        self.check("the volume starts on a, b, c at configuration 1",
                   info and info.get("cfg", 1) == 1 and
                   sorted(self.ids(info)) == sorted(self.nid[z] for z in ZONES))

    def reprotected(self, volume, cfg, x, y=None):
        """The record at configuration cfg without node x (with y when
        given), no change standing, and the volume healthy."""
        info = self.vinfo(volume)
        if not info or info.get("cfg", 1) != cfg or info.get("change"):
            return False
        ids = self.ids(info)
        if x in ids or (y and y not in ids):
            return False
        return self.vstatus(volume)[0] == 0

    def wait_reprotect(self, since, volume=None, cfg=2, x=None, y=None, timeout=150):
        """Seconds from since until reprotected, or None (a failed check)."""
        volume = volume or self.volume
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.reprotected(volume, cfg, x, y):
                return time.monotonic() - since
            time.sleep(0.25)
        self.check("volume %s re-protected (configuration %d without node %s) within %d s: "
                   "record %s" % (volume, cfg, x, timeout, json.dumps(self.vinfo(volume))), False)
        return None

    def wait_change_standing(self, timeout=30, want=None):
        """Until the record holds a change (learner or joint; the phase
        want when given): its phase."""
        seen = {}

        def standing():
            info = self.vinfo()
            if info and info.get("change") and info["change"].get("phase") == (
                    want or info["change"].get("phase")):
                seen["phase"] = info["change"].get("phase")
                return True
            return False
        wait_until("the change to stand in the record" + (" (%s)" % want if want else ""),
                   timeout, standing, 0.05)
        return seen["phase"]

    def log_of(self, name):
        return open(os.path.join(self.dir, name + ".log"), errors="replace").read()

    # Seeds 1, 2 (mod 4) cut the first writer off in the learner phase,
    # seeds 3, 4 in the joint phase; odd seeds kill it, even ones cut its
    # zone off.
    ETCD_PROXY_PORT = 2390

    def joint_cut(self):
        return self.seed % 4 in (3, 0)

    def setup_replace_during_takeover(self):
        self.extra_ns = ["d"]
        # The first writer copies slowly (64 chunks at 8 MiB/s), so that
        # it is cut off while its learner is still being filled.
        self.writer_a_args = ["--resync-rate", "8M"]
        if self.joint_cut():
            # The joint configuration stands in the record from one
            # compare-and-swap of the first writer's keeper to its next,
            # a few milliseconds; its etcd 400 ms away each way holds it
            # there for a second or more, long enough to be seen.
            self.writer_a_args += ["--etcd", "http://%s:%d" % (ADDR["a"], self.ETCD_PROXY_PORT)]

    def up_replace_during_takeover(self):
        self.start_zone_d()
        if self.joint_cut():
            self.procs.start("etcd-proxy-a", self.net.ns("a"), [
                "/usr/bin/python3", os.path.join(HERE, "delay.py"),
                "%s:%d" % (ADDR["a"], self.ETCD_PROXY_PORT), "%s:%d" % (ADDR["meta"], ETCD_PORT),
                "400"])
            wait_until("etcd proxy in zone a", 20,
                       lambda: port_open(self.net.ns("a"), ADDR["a"], self.ETCD_PROXY_PORT))

    def fault_replace_during_takeover(self, t0):
        how = "killed" if self.seed % 2 else "cut off"  # odd seeds: kill -9
        self.sleep_to(t0, 0.2)
        t = time.monotonic()
        self.c.qbd("volume", "move", self.volume, "--from", self.nid["c"], "--to", self.nid["d"])
        if self.joint_cut():
            phase = self.wait_change_standing(want="joint", timeout=60)
        else:
            phase = self.wait_change_standing()
            time.sleep(1.0)  # a part of the learner copied
        info = self.vinfo()
        if how == "killed":
            self.procs.kill("writer-a")
        else:
            # Zone a (the writer and a's chunk server) cut off from the
            # others and etcd for 5 s: the volume cannot be healthy
            # before a is back, so the time to re-protect includes it.
            cut = time.monotonic()
            self.net.isolate("a")
        self.current = self.c.start_writer("writer-b", "b", self.volume, force=True)
        self.failover = time.monotonic()
        self.notes.append("qbd volume move c -> d; the writer %s in the change's %s phase "
                          "(record: %s), a writer in zone b took over (--force)%s" %
                          (how, (info.get("change") or {}).get("phase", phase),
                           json.dumps(info.get("change") if info else None),
                           "; zone a healed after 5 s" if how == "cut off" else ""))
        if how == "cut off":
            time.sleep(max(0.0, cut + 5.0 - time.monotonic()))
            self.net.heal("a")
            self.mark_healed()
        self.reprotect_s = self.wait_reprotect(t, x=self.nid["c"], y=self.nid["d"])
        if how == "cut off":
            # Healed, the first writer must not move the record any more.
            time.sleep(3.0)
            info = self.vinfo()
            self.check("with zone a healed, the record stays at configuration 2 with d",
                       info and info.get("cfg") == 2 and self.nid["d"] in self.ids(info))
        self.check("the writer that took over finished the change (its log: 'has left')",
                   "has left" in self.log_of("writer-b"))
        self.check("the change request is gone once done",
                   (self.vinfo() or {}).get("change_request") is None)

    def setup_removed_node_returns(self):
        self.extra_ns = ["d"]
        self.writer_a_args = ["--resync-rate", "8M"]

    def up_removed_node_returns(self):
        self.start_zone_d()

    def fault_removed_node_returns(self, t0):
        self.sleep_to(t0, 0.2)
        t = time.monotonic()
        self.c.qbd("volume", "move", self.volume, "--from", self.nid["c"], "--to", self.nid["d"])
        phase = self.wait_change_standing()
        rc = self.procs.stop("chunkd-c")
        self.check("chunk server c exits 0 on SIGTERM (exit %s)" % rc, rc == 0)
        self.reprotect_s = self.wait_reprotect(t, x=self.nid["c"], y=self.nid["d"])
        self.c.start_chunkd("c")
        wait_until("chunk server c alive again", 30, lambda: self.c.nodes_alive(4))
        back = time.monotonic()
        # A new writer attaches (takes over) with c back: the record it
        # reads has a, b, d, and nothing may reach c.
        self.current = self.c.start_writer("writer-b", "b", self.volume, force=True)
        self.failover = time.monotonic()
        wait_until("volume healthy under writer-b", 60, lambda: self.vstatus()[0] == 0, 0.25)
        rc, st = self.vstatus()
        used = [r["id"] for r in (st or {}).get("replica_status", [])]
        self.check("the writer's replicas are a, b, d, not c (%s)" % used,
                   self.nid["c"] not in used and self.nid["d"] in used)
        self.check("writer-b never named c's address (%s) in its log" % ADDR["c"],
                   ("%s:%d" % (ADDR["c"], CHUNKD_PORT)) not in self.log_of("writer-b"))
        node_c = [n for n in self.node_list() if n["id"] == self.nid["c"]][0]
        self.check("node c still holds its chunks until reclaim (used %s bytes)" %
                   node_c.get("used"), (node_c.get("used") or 0) > 0)
        self.notes.append("qbd volume move c -> d (%s phase when c stopped); c stopped "
                          "(SIGTERM) mid-move, the move completed without it, c restarted "
                          "%.1f s later; a writer in zone b then took over" %
                          (phase, back - t))

    def setup_zone_lost_with_etcd(self):
        self.extra_ns = ["d"]
        self.c.etcd_zones = True

    def etcd_leader_zone(self):
        """The zone whose etcd member leads, or None."""
        r = run(["ip", "netns", "exec", self.net.ns("meta"), "etcdctl", "--endpoints",
                 self.c.etcd, "endpoint", "status", "-w", "json"], check=False)
        try:
            st = json.loads(r.stdout)
        except ValueError:
            return None
        for z, e in zip(ZONES, st):
            if e["Status"]["leader"] == e["Status"]["header"]["member_id"]:
                return z
        return None

    def up_zone_lost_with_etcd(self):
        self.start_zone_d()
        # On odd seeds zone c's member leads when it is lost: the others
        # must elect a new leader first.
        if self.seed % 2 and self.etcd_leader_zone() != "c":
            r = run(["ip", "netns", "exec", self.net.ns("meta"), "etcdctl", "--endpoints",
                     self.c.etcd, "endpoint", "status", "-w", "json"])
            ids = {z: e["Status"]["header"]["member_id"]
                   for z, e in zip(ZONES, json.loads(r.stdout))}
            run(["ip", "netns", "exec", self.net.ns("meta"), "etcdctl", "--endpoints",
                 self.c.etcd, "move-leader", "%x" % ids["c"]])

    def fault_zone_lost_with_etcd(self, t0):
        self.sleep_to(t0, 0.2)
        leader = self.etcd_leader_zone()
        self.procs.kill("chunkd-c")
        self.procs.kill("etcd-c")
        lost = time.monotonic()
        self.sleep_to(t0, 0.3)
        t = time.monotonic()
        self.current = self.c.start_writer("writer-b", "b", self.volume, force=True)
        self.failover = time.monotonic()
        attach_s = self.failover - t
        t = time.monotonic()
        r = self.c.qbd("volume", "move", self.volume, "--from", self.nid["c"], check=False)
        self.check("qbd volume move of zone c's replica, zone c and its etcd member lost "
                   "(exit %d: %s)" % (r.returncode, (r.stderr or r.stdout).strip()[-200:]),
                   r.returncode == 0)
        self.reprotect_s = self.wait_reprotect(t, x=self.nid["c"], y=self.nid["d"])
        self.notes.append("three etcd members (a, b, c; the leader in %s); zone c's chunk "
                          "server and etcd member killed (-9); %.1f s later a writer in zone b attached "
                          "(--force) in %.1f s; qbd volume move of c's replica (placement: d)" %
                          (leader, t - lost - attach_s, attach_s))

    def setup_drain_under_load(self):
        self.extra_ns = ["d"]

    def up_drain_under_load(self):
        # A second volume on a, b, c with a writer of its own (no load):
        # the drain must move both.
        self.volume2 = "fault2"
        self.c.qbd("volume", "create", self.volume2, "--size", "16M", "--replicas", "3",
                   "--write-quorum", "2")
        self.c.start_writer("writer2", "b", self.volume2)
        self.start_zone_d()

    def fault_drain_under_load(self, t0):
        self.sleep_to(t0, 0.2)
        c = self.nid["c"]
        t = time.monotonic()
        self.c.qbd("node", "drain", c)
        states = []
        done = {}
        end = time.monotonic() + 150
        while time.monotonic() < end and len(done) < 2:
            st = [n.get("state") for n in self.node_list() if n["id"] == c][0]
            if not states or states[-1] != st:
                states.append(st)
            for v in (self.volume, self.volume2):
                if v not in done and self.reprotected(v, 2, c, self.nid["d"]):
                    done[v] = time.monotonic() - t
            time.sleep(0.25)
        final = [n for n in self.node_list() if n["id"] == c][0]
        self.check("the second volume's replicas identical (qbd volume verify %s)" %
                   self.volume2, len(done) == 2 and self.c.verify(self.volume2))
        self.check("both volumes moved off c (%s)" % done, len(done) == 2)
        self.reprotect_s = max(done.values()) if len(done) == 2 else None
        self.check("qbd node list showed c draining, then empty (%s; at the end %s, %s "
                   "replicas)" % (" -> ".join(states), final.get("state"), final.get("replicas")),
                   "draining" in states and final.get("state") == "empty" and
                   final.get("replicas") == 0)
        self.notes.append("qbd node drain c under load, two volumes attached (one loaded); "
                          "node c's state: %s" % " -> ".join(states))

    def setup_node_lost_remove(self):
        self.extra_ns = ["d"]

    def up_node_lost_remove(self):
        self.start_zone_d()

    def fault_node_lost_remove(self, t0):
        # What node-lost-forever does by itself, done by the operator.
        self.sleep_to(t0, 0.2)
        self.procs.kill("chunkd-c")
        os.unlink(os.path.join(self.tmp, "chunk-c.img"))
        self.sleep_to(t0, 0.3)
        t = time.monotonic()
        self.c.qbd("node", "remove", self.nid["c"], "--yes")
        self.reprotect_s = self.wait_reprotect(t, x=self.nid["c"], y=self.nid["d"])
        self.notes.append("zone c's chunk server killed (-9) and its store deleted; then "
                          "qbd node remove c --yes: rebuilt on d under load")


    # node-lost-forever: nobody types anything. qbd-managerd (down-out 5 s)
    # finds node c down past down-out and files the change; the attached
    # writer carries it out onto d under load.
    DOWN_OUT_S = 5

    def setup_node_lost_forever(self):
        self.extra_ns = ["d"]

    def up_node_lost_forever(self):
        self.start_zone_d()
        self.procs.start("managerd", self.net.ns("meta"), [
            self.c.bin("qbd-managerd"), "--etcd", self.c.etcd, "--down-out",
            "%ds" % self.DOWN_OUT_S, "--lease-ttl", "3", "--log-level", "info"])
        wait_until("qbd-managerd leading", 30,
                   lambda: "this instance leads" in self.log_of("managerd"), 0.25)

    def fault_node_lost_forever(self, t0):
        self.sleep_to(t0, 0.2)
        self.procs.kill("chunkd-c")
        os.unlink(os.path.join(self.tmp, "chunk-c.img"))
        t = time.monotonic()
        self.reprotect_s = self.wait_reprotect(t, x=self.nid["c"], y=self.nid["d"], timeout=180)
        log = self.log_of("managerd")
        self.check("qbd-managerd wrote the down-out request (its log)",
                   "has been down longer than" in log and self.nid["c"] in log)
        rc = self.procs.stop("managerd")
        self.check("qbd-managerd exits 0 on SIGTERM (exit %s)" % rc, rc == 0)
        self.notes.append("zone c's chunk server killed (-9) and its store deleted; "
                          "qbd-managerd (down-out %d s) filed the change, the writer rebuilt "
                          "on d under load; re-protect counts from the kill (lease expiry + "
                          "down-out + copy)" % self.DOWN_OUT_S)

SCENARIOS = ["zone-lost", "zone-back", "writer-partition", "writer-pause", "rolling-restart",
             "flapping", "eio", "slow-zone", "etcd-down", "writer-kill", "one-way", "clock-step",
             "replace-during-takeover", "removed-node-returns", "zone-lost-with-etcd",
             "drain-under-load", "node-lost-remove", "node-lost-forever"]
# Membership changes carried out by the writer (docs/protocol.md section
# 11); each reports its time to re-protect: from the operator's command to
# the record at the next configuration and the volume healthy.
MEMBERSHIP = ["replace-during-takeover", "removed-node-returns", "zone-lost-with-etcd",
              "drain-under-load", "node-lost-remove", "node-lost-forever"]
# Scenarios where the clients must see no error at all (one replica is
# lost, slow or failing at a time; the writer stays).
NO_ERRORS = ["zone-lost", "zone-back", "rolling-restart", "flapping", "eio", "slow-zone",
             "etcd-down", "one-way", "clock-step", "drain-under-load", "node-lost-remove",
             "node-lost-forever"]
# The short version in make check: what the issue names, once each.
SHORT = ["zone-lost", "zone-back", "writer-partition", "writer-pause", "rolling-restart",
         "flapping", "eio"]


def run_one(o, scenario, seed, results):
    r = Run(o, scenario, seed, results)
    out = {"scenario": scenario, "seed": seed, "acked": 0, "flushes": 0, "lost": None, "stale": 0,
           "errors": 0, "stall_s": None, "resync_s": None, "reprotect_s": None, "ok": False,
           "notes": r.notes,
           "checks": r.checks}
    t_start = time.monotonic()
    try:
        if scenario in ("writer-partition", "writer-pause"):
            r.extra_clients = r.extra_clients_for_old_writer
        if scenario == "eio":
            r.after = r.after_eio
        r.healed = None
        lost = r.execute()
        wl = r.wl
        main = [c for c in wl.clients if c not in getattr(r, "old_clients", [])]
        out["acked"] = sum(c.acked for c in wl.clients)
        out["flushes"] = sum(c.flushes for c in wl.clients)
        out["reads"] = sum(c.reads for c in wl.clients)
        out["lost"] = len(lost)
        out["stale"] = sum(len(c.stale) for c in wl.clients)
        out["corrupt"] = sum(len(c.corrupt) for c in wl.clients)
        out["errors"] = sum(c.failed for c in main)
        out["stall_s"] = max(c.max_stall for c in main)
        for c in wl.clients:
            for m in (c.stale + c.corrupt)[:5]:
                say("%s seed %d: client %d: %s" % (scenario, seed, c.idx, m))
            if c in main:
                for m in c.errors[:3]:
                    say("%s seed %d: client %d: I/O error at %s" % (scenario, seed, c.idx, m))
                    r.notes.append("client %d: I/O error at %s" % (c.idx, m))
        if getattr(r, "old_clients", None):
            out["old_acked_after"] = sum(
                1 for rec in wl.log if rec[1] in [c.idx for c in r.old_clients] and rec[6]
                and rec[4] > getattr(r, "failover", float("inf")))
            out["old_failed"] = sum(c.failed for c in r.old_clients)
            fenced = "fenced" in open(os.path.join(r.dir, "writer-a.log"), errors="replace").read()
            r.check("the first writer logged that it was fenced", fenced or scenario == "writer-partition")
        if scenario in NO_ERRORS:
            r.check("no I/O error reached the clients (%d)" % out["errors"], out["errors"] == 0)
        if scenario == "etcd-down":
            r.check("writes went on while etcd was down (longest stall %.1f s)" % out["stall_s"],
                    out["stall_s"] < 10)
        if scenario == "eio":
            # The clients saw no error because the writer went around the
            # failing disk, not because the disk did not fail.
            log = open(os.path.join(r.dir, "chunkd-a.log"), errors="replace").read()
            r.check("zone a's disk failed I/O with EIO (its log)",
                    "fault injection" in log and "Input/output error" in log)
        if scenario == "clock-step":
            log = open(os.path.join(r.dir, "writer-a.log"), errors="replace").read()
            r.check("the writer did not find its attachment lease expired",
                    "lease expired" not in log)
        out["reprotect_s"] = r.reprotect_s
        if scenario in MEMBERSHIP:
            r.check("time to re-protect measured", r.reprotect_s is not None)
        if scenario in ("zone-back", "flapping", "rolling-restart", "eio", "slow-zone",
                        "writer-partition", "one-way") + tuple(MEMBERSHIP):
            # Resynced under load (the watcher of mark_healed), then,
            # the load stopped, identical (qbd volume verify compares
            # chunk checksums on an idle volume).
            since = r.healed or time.monotonic()
            if getattr(r, "watcher", None):
                r.watcher.join(5)
            done = r.wait_resync(since)
            if scenario == "rolling-restart":
                out["resync_s"] = r.restart_resync  # the longest of the three
            elif getattr(r, "healthy_at", None):
                out["resync_s"] = r.healthy_at - since
            else:
                out["resync_s"] = done
            r.check("replicas current and identical (qbd volume verify) after the faults",
                    done is not None)
        r.check("no acknowledged write lost (%d blocks)" % len(lost), not lost)
        r.check("no stale or corrupt read", out["stale"] == 0 and out["corrupt"] == 0)
        r.check("writes acknowledged", out["acked"] > 0)
        out["ok"] = all(ok for _, ok in r.checks)
    except (Failed, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        say("%s seed %d: %s" % (scenario, seed, e))
        r.checks.append((str(e), False))
        out["ok"] = False
    finally:
        if getattr(r, "wl", None):
            r.wl.finish()
        r.procs.stop_all()
        r.net.down()
        shutil.rmtree(r.tmp, ignore_errors=True)
    out["seconds"] = time.monotonic() - t_start
    return out


def fmt(x, f="%.1f"):
    return "-" if x is None else f % x


def table(rows):
    lines = ["| scenario | seed | writes acked | flushes acked | writes lost | stale reads | "
             "client errors | longest stall (s) | time to resync (s) | "
             "time to re-protect (s) | result |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append("| %s | %d | %d | %d | %s | %d | %d | %s | %s | %s | %s |" % (
            r["scenario"], r["seed"], r["acked"], r["flushes"], fmt(r["lost"], "%d"),
            r["stale"], r["errors"], fmt(r["stall_s"], "%.2f"), fmt(r["resync_s"]),
            fmt(r.get("reprotect_s")), "pass" if r["ok"] else "FAIL"))
    return lines


def preflight():
    if os.geteuid() != 0:
        raise Skip("needs root (network namespaces)")
    if nbd is None:
        raise Skip("python3-libnbd missing (tools/install-deps)")
    for prog in ("ip", "nft", "etcd"):
        if not shutil.which(prog):
            raise Skip("%s missing (tools/install-deps)" % prog)
    ns = "qbdf-probe%d" % os.getpid()
    r = run(["ip", "netns", "add", ns], check=False)
    if r.returncode != 0:
        raise Skip("cannot create a network namespace: %s" % r.stderr.strip())
    try:
        r = run(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "probe"], check=False)
        if r.returncode != 0:
            raise Skip("nftables does not work here: %s" % r.stderr.strip())
    finally:
        run(["ip", "netns", "del", ns], check=False)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("build")
    p.add_argument("--short", action="store_true", help="make check's version")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--scenarios", default=None)
    p.add_argument("--duration", type=float, default=None, help="seconds of load per run")
    p.add_argument("--results", default=None)
    p.add_argument("--nbd", default=None, help="qbd-nbd binary to use (a mutant)")
    p.add_argument("--expect-loss", action="store_true",
                   help="succeed only if some run lost a write (for mutants)")
    o = p.parse_args(argv)
    o.build = os.path.abspath(o.build)
    # SIGTERM (a test runner's time limit) ends the run through its
    # finally blocks: processes stopped, namespaces removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    o.seeds = o.seeds or (1 if o.short else 3)
    o.duration = o.duration or (8.0 if o.short else 24.0)
    names = o.scenarios.split(",") if o.scenarios else (SHORT if o.short else SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            p.error("unknown scenario %s (one of %s)" % (n, ", ".join(SCENARIOS)))
    try:
        preflight()
    except Skip as e:
        say("SKIP: %s" % e)
        return 77
    results = os.path.abspath(o.results or tempfile.mkdtemp(prefix="qbd-fault-results."))
    os.makedirs(results, exist_ok=True)
    rows = []
    for seed in range(o.first_seed, o.first_seed + o.seeds):
        for n in names:
            r = run_one(o, n, seed, results)
            rows.append(r)
            say("%-16s seed %d: %s: %d writes acked, %s lost, %d stale, %d client errors, "
                "longest stall %s s, resync %s s, re-protect %s s (%.0f s)" % (
                    n, seed, "pass" if r["ok"] else "FAIL", r["acked"], fmt(r["lost"], "%d"),
                    r["stale"], r["errors"], fmt(r["stall_s"], "%.2f"), fmt(r["resync_s"]),
                    fmt(r["reprotect_s"]), r["seconds"]))
    lines = table(rows)
    print("\n".join(lines))
    worst = max((r["stall_s"] or 0 for r in rows), default=0)
    lost = sum(r["lost"] or 0 for r in rows)
    summary = "fault: %d/%d runs passed; writes lost %d; longest stall %.2f s" % (
        sum(r["ok"] for r in rows), len(rows), lost, worst)
    with open(os.path.join(results, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write("\n".join(["# qbd fault suite", "", "`%s`" % " ".join(["tests/fault/fault.py"] + argv),
                           ""] + lines + ["", summary, ""]) + "\n")
        for r in rows:
            f.write("- %s seed %d: %s\n" % (r["scenario"], r["seed"], "; ".join(r["notes"])))
            for what, ok in r["checks"]:
                f.write("  - %s: %s\n" % ("ok" if ok else "FAILED", what))
    print(summary)
    say("results in %s" % results)
    if o.expect_loss:
        return 0 if lost > 0 or any(r["stale"] for r in rows) else 1
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
