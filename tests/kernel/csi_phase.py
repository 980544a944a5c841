#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The kernel test's CSI phase (tests/kernel/scenario.sh, phase csi), run
in the guest: a pod's volume moves from node a (zone a) to node b (zone b)
through qbd-csi's Node service, driven over its sockets with python3-grpcio
(tests/csi/csi_client.py).

Both nodes run in this one kernel, each qbd-csi in a mount and UTS
namespace of its own (host names node-a and node-b, so the attachment
records name two hosts; mounts private to each node). Node b's namespace
hides node a's NBD device under a tmpfs, as another machine would not see
it: qbd attach on node b then takes a device of its own. Node a's writer is
stopped (SIGSTOP: a node that is gone, but can come back), not detached.

    csi_phase.py VOLUME

Prints "qbd-kernel: ..." step lines (scenario.sh's form) and the zone
move's figures; exit 0, or 1 with the reason in /tmp/fail-reason.
"""
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.environ.get('QBD_CSI_TESTS', '/qbd/tests/csi'))
import csi_client  # noqa: E402

pb = csi_client.pb
VOL = sys.argv[1] if len(sys.argv) > 1 else 'csivol'
SIZE_MB, GROWN_MB = 128, 256
ETCD = os.environ['QBD_ETCD']
T0 = time.monotonic()


def uptime():
    return open('/proc/uptime').read().split()[0]


def step(msg):
    open('/tmp/step', 'w').write(msg + '\n')
    print('qbd-kernel: [%s] %s' % (uptime(), msg), flush=True)


def note(msg):
    print('qbd-kernel: [%s]   %s' % (uptime(), msg), flush=True)


class Fail(Exception):
    pass


def sh(cmd, ns=None, check=True, timeout=300):
    """Run cmd (a shell line), in the mount namespace of pid ns if given."""
    argv = ['sh', '-c', cmd]
    if ns:
        argv = ['nsenter', '-t', str(ns), '-m', '--'] + argv
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    out = p.stdout.decode(errors='replace')
    if check and p.returncode != 0:
        raise Fail("'%s'%s exited %d: %s" % (cmd, ' (ns %s)' % ns if ns else '',
                                            p.returncode, out.strip()[-400:]))
    return p.returncode, out


class Log:
    """Lines of a stream or a growing file, each with the monotonic time
    it was seen (50 ms polling for files)."""

    def __init__(self, path):
        self.path, self.lines, self.stop = path, [], False

    def follow_pipe(self, pipe):
        def run():
            with open(self.path, 'a') as f:
                for raw in pipe:
                    line = raw.decode(errors='replace').rstrip('\n')
                    self.lines.append((time.monotonic(), line))
                    f.write('[%.3f] %s\n' % (time.monotonic() - T0, line))
                    f.flush()
        threading.Thread(target=run, daemon=True).start()
        return self

    def follow_file(self):
        def run():
            pos = 0
            while not self.stop:
                try:
                    with open(self.path, 'rb') as f:
                        f.seek(pos)
                        data = f.read()
                except FileNotFoundError:
                    data = b''
                if data:
                    keep = data.rfind(b'\n') + 1
                    pos += keep
                    now = time.monotonic()
                    for line in data[:keep].decode(errors='replace').splitlines():
                        self.lines.append((now, line))
                time.sleep(0.05)
        threading.Thread(target=run, daemon=True).start()
        return self

    def first(self, pattern, after=0.0):
        for t, line in list(self.lines):
            if t >= after and re.search(pattern, line):
                return t, line
        return None, None

    def wait(self, pattern, seconds=10):
        """first(pattern), waiting for the line to be read."""
        end = time.monotonic() + seconds
        while True:
            t, line = self.first(pattern)
            if t or time.monotonic() > end:
                return t, line
            time.sleep(0.05)


class Node:
    """A qbd-csi node plugin in namespaces of its own."""

    def __init__(self, name, zone, hide_device=None):
        self.name, self.zone = name, zone
        self.dir = '/run/csi-%s' % name
        self.run_dir = '/run/qbd-%s' % name
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        self.sock = self.dir + '/csi.sock'
        self.staging = '/var/lib/kubelet/plugins/kubernetes.io/csi/qbd.csi.io/%s/globalmount' % name
        self.target = '/var/lib/kubelet/pods/pod-%s/volumes/kubernetes.io~csi/pv/mount' % name
        pre = 'hostname node-%s' % name
        if hide_device:
            # Another machine would not see this kernel's other device.
            pre += ' && mount -t tmpfs -o size=1k hidden /sys/devices/virtual/block/%s' % \
                hide_device
        env = dict(os.environ, QBD_RUN_DIR=self.run_dir)
        cmd = ('%s && exec qbd-csi --endpoint unix://%s --etcd %s --mode node --node-id node-%s '
               '--zone %s --state-dir /var/lib/qbd-csi-%s --log-level debug' %
               (pre, self.sock, ETCD, name, zone, name))
        self.proc = subprocess.Popen(['unshare', '-m', '-u', '--propagation', 'private',
                                      'sh', '-c', cmd], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.log = Log('/tmp/csi-%s.log' % name).follow_pipe(self.proc.stdout)
        self.nbdlog = Log('%s/%s.log' % (self.run_dir, VOL)).follow_file()
        deadline = time.monotonic() + 60
        while not self.log.first('serving qbd.csi.io')[0]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Fail('qbd-csi of node %s did not start: %s' %
                           (name, '\n'.join(l for _, l in self.log.lines[-5:])))
            time.sleep(0.1)
        self.c = csi_client.Client(self.sock, timeout=240)
        self.ns = self.proc.pid

    def cap(self):
        return pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(fs_type='ext4', mount_flags=['noatime']),
            access_mode=pb.VolumeCapability.AccessMode(
                mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))

    def stage(self):
        self.c.Node.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=VOL, publish_context={'volume': VOL},
            staging_target_path=self.staging, volume_capability=self.cap()))

    def publish(self):
        self.c.Node.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=VOL, staging_target_path=self.staging, target_path=self.target,
            volume_capability=self.cap()))

    def unpublish(self):
        self.c.Node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(
            volume_id=VOL, target_path=self.target))

    def unstage(self):
        self.c.Node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(
            volume_id=VOL, staging_target_path=self.staging))

    def device(self):
        import json
        rec = json.load(open('/var/lib/qbd-csi-%s/%s.json' % (self.name, VOL)))
        return rec['device']

    def writer_pid(self):
        import json
        dev = self.device()
        rt = json.load(open('%s/%s.json' % (self.run_dir, os.path.basename(dev))))
        return rt['pid']


class Controller:
    """qbd-csi's controller plugin, as the CSI controller Deployment runs it:
    ControllerPublishVolume records which node may attach, as the CO's
    attacher does before it stages a volume on a node."""

    def __init__(self):
        self.sock = '/run/csi-ctl/csi.sock'
        os.makedirs(os.path.dirname(self.sock), exist_ok=True)
        self.proc = subprocess.Popen(
            ['qbd-csi', '--endpoint', 'unix://' + self.sock, '--etcd', ETCD,
             '--mode', 'controller', '--log-level', 'debug'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log = Log('/tmp/csi-ctl.log').follow_pipe(self.proc.stdout)
        deadline = time.monotonic() + 60
        while not self.log.first('serving qbd.csi.io')[0]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Fail('the controller plugin did not start: %s' %
                           '\n'.join(l for _, l in self.log.lines[-5:]))
            time.sleep(0.1)
        self.c = csi_client.Client(self.sock, timeout=60)

    def publish(self, node):
        return self.c.Controller.ControllerPublishVolume(pb.ControllerPublishVolumeRequest(
            volume_id=VOL, node_id='node-%s' % node.name, volume_capability=node.cap()))


def sums(node):
    _, out = sh('cd %s && find . -type f | LC_ALL=C sort | xargs sha256sum' % node.target,
                ns=node.ns)
    return out


def expect(cond, what):
    if not cond:
        raise Fail(what)


def main():
    step('csi: qbd volume create %s --size %dM; qbd-csi node a (zone a)' % (VOL, SIZE_MB))
    sh('qbd volume create %s --size %dM' % (VOL, SIZE_MB))
    a = Node('a', 'a')
    info = a.c.Node.NodeGetInfo(pb.NodeGetInfoRequest())
    expect(info.node_id == 'node-a' and
           dict(info.accessible_topology.segments) == {'topology.qbd.io/zone': 'a'},
           'NodeGetInfo: %s' % info)
    note('NodeGetInfo: node_id %s, topology %s, max_volumes_per_node %d' %
         (info.node_id, dict(info.accessible_topology.segments), info.max_volumes_per_node))
    expect(info.max_volumes_per_node > 0, 'max_volumes_per_node 0 with nbd loaded')

    ctl = Controller()
    step('csi: ControllerPublishVolume to node a, NodeStageVolume + NodePublishVolume on '
         'node a (empty volume: mkfs.ext4)')
    ctl.publish(a)
    t = time.monotonic()
    a.stage()
    t_stage = time.monotonic() - t
    a.stage()   # idempotent
    a.publish()
    a.publish()   # idempotent
    dev_a = a.device()
    expect(a.log.wait('was empty: made ext4')[0], 'node a did not say it made ext4')
    note('staged on %s in %.1f s (mkfs included), published at %s' % (dev_a, t_stage, a.target))

    step('csi: write files on node a, sync, record their checksums')
    sh('mkdir -p {t}/d && for i in 1 2 3; do dd if=/dev/urandom of={t}/d/r$i bs=1M count=2 '
       '2>/dev/null || exit 1; done && cp -a /etc {t}/d/ && sync'.format(t=a.target),
       ns=a.ns)
    before = sums(a)
    note('%d files' % len(before.splitlines()))

    # node b's plugin runs before node a dies, as a DaemonSet's would
    b = Node('b', 'b', hide_device=os.path.basename(dev_a))
    step('csi: node a dies: SIGSTOP its writer (qbd-nbd) with the filesystem mounted')
    wpid = a.writer_pid()
    os.kill(wpid, signal.SIGSTOP)
    t_dead = time.monotonic()
    step('csi: ControllerPublishVolume to node b (the CO\'s force-detach from node a)')
    ctl.publish(b)
    _, ctl_line = ctl.log.wait('takeover: published to node node-b')
    expect(ctl_line and 'while node node-a holds it' in ctl_line,
           'the controller did not log the takeover naming both nodes: %s' % ctl_line)
    note('controller: ' + ctl_line.split('mode=controller ', 1)[-1])
    step('csi: NodeStageVolume on node b (zone b): takeover, recovery, mount')
    t0 = time.monotonic()
    b.stage()
    t1 = time.monotonic()
    b.publish()
    dev_b = b.device()
    expect(dev_b != dev_a, 'node b got node a\'s device %s' % dev_a)
    att, att_line = b.log.wait('attached as')
    mnt, mnt_line = b.log.wait('mounted on')
    took, took_line = b.log.first('is published to node node-b')
    opened, _ = b.nbdlog.wait('opened volume')
    served, _ = b.nbdlog.wait('attached as /dev')
    _, wait_line = b.nbdlog.first('writes wait')
    note('writer stopped %.1f s before the stage' % (t0 - t_dead))
    # published to node b: the attach takes over at once (--force), never
    # refused first by node a's live attachment
    expect(took, 'node b did not see the volume published to it: no takeover at once')
    _, refused = b.nbdlog.first('is attached on host node-a')
    expect(not refused, 'node b\'s attach was refused first: %s' % refused)
    _, over = b.nbdlog.first('taking over from host node-a')
    expect(over, 'node b\'s writer did not say it took the volume over from node-a '
           '(stopped %.1f s before, its attachment lives 10 s)' % (t0 - t_dead))
    note(took_line.split('zone=b ', 1)[-1])
    note('writer: ' + over.split(': ', 1)[-1])
    expect(wait_line, 'node b\'s writer did not wait for the old writer\'s read lease')
    note('writer: %s' % wait_line.split(': ', 1)[-1])
    m = re.search(r'in ([0-9.]+) s', mnt_line or '')
    mount_s = float(m.group(1)) if m else float('nan')
    print('qbd-kernel: [%s] ZONE MOVE: NodeStageVolume on node b -> filesystem mounted: '
          '%.2f s' % (uptime(), t1 - t0), flush=True)
    note('  until the publish record is read (node b: takeover at once): %.2f s' %
         (took - t0))
    note('  attach --force until the writer opened the volume (new epoch; recovery): '
         '%.2f s' % ((opened or att) - took))
    note('  until the device served (%s): %.2f s' % (dev_b, (served or att) - (opened or took)))
    note('  mount (ext4 journal replay; writes wait for the old read lease): %.2f s' % mount_s)
    note('  rest (records, probe of the first 128 KiB, gRPC): %.2f s' %
         ((t1 - t0) - ((att or t1) - t0) - (mount_s if mount_s == mount_s else 0)))

    step('csi: every file intact on node b')
    after = sums(b)
    expect(after == before, 'files differ on node b: %d lines before, %d after; first '
           'difference: %s' % (len(before.splitlines()), len(after.splitlines()),
                               next((x for x in after.splitlines()
                                     if x not in before.splitlines()), '(missing files)')))
    note('%d files intact' % len(after.splitlines()))

    step('csi: node a\'s writer resumed (SIGCONT): its write must fail (fenced)')
    pattern = os.urandom(4096)
    open('/tmp/fence-pattern', 'wb').write(pattern)
    os.kill(wpid, signal.SIGCONT)
    off = 96 * 256   # 4 KiB blocks: at 96 MiB, inside the 128 MiB volume
    rc, out = sh('dd if=/tmp/fence-pattern of=%s bs=4096 count=1 seek=%d oflag=direct '
                 'conv=fsync' % (dev_a, off), ns=a.ns, check=False, timeout=200)
    expect(rc != 0, 'the old writer wrote after the takeover: %s' % out.strip())
    expect(re.search('i/o|input/output', out, re.I),
           'the old writer\'s write failed, but not with an I/O error: %s' % out.strip())
    note('old writer refused: dd exited %d: %s' % (rc, out.strip().splitlines()[0]
                                                   if out.strip() else ''))
    rc, out = sh('dd if=%s bs=4096 count=1 skip=%d iflag=direct 2>/dev/null | sha256sum' %
                 (dev_b, off), timeout=120)
    expect(out.split()[0] != hashlib.sha256(pattern).hexdigest(),
           'the old writer\'s block reached the volume')
    note('its block is not on the volume (read on node b\'s %s)' % dev_b)

    step('csi: NodeUnpublish, umount the staging path, e2fsck -fn on node b\'s device')
    b.unpublish()
    sh('umount %s' % b.staging, ns=b.ns)
    sh('e2fsck -fn %s' % dev_b)
    note('e2fsck clean')
    step('csi: NodeStage (the filesystem kept: no mkfs) + NodePublish again on node b')
    b.stage()
    b.publish()
    expect(not b.log.first('was empty')[0], 'node b made a filesystem')
    expect(b.log.wait('volume %s staged' % VOL)[0], 'node b did not log its stage')
    expect(sums(b) == before, 'files differ after staging again')

    step('csi: qbd volume resize %s --size %dM while published; NodeExpandVolume' %
         (VOL, GROWN_MB))
    df = lambda: int(sh('df -k %s | awk \'NR == 2 { print $2 }\'' % b.target, ns=b.ns)[1])
    kb0 = df()
    sh('qbd volume resize %s --size %dM' % (VOL, GROWN_MB))
    r = b.c.Node.NodeExpandVolume(pb.NodeExpandVolumeRequest(
        volume_id=VOL, volume_path=b.target, staging_target_path=b.staging,
        capacity_range=pb.CapacityRange(required_bytes=GROWN_MB << 20),
        volume_capability=b.cap()))
    kb1 = df()
    expect(r.capacity_bytes == GROWN_MB << 20, 'capacity_bytes %d' % r.capacity_bytes)
    expect(kb1 > kb0 + 100 * 1024, 'df: %d kB before, %d kB after' % (kb0, kb1))
    note('capacity_bytes %d; df: %d MiB -> %d MiB' % (r.capacity_bytes, kb0 // 1024,
                                                      kb1 // 1024))
    st = b.c.Node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
        volume_id=VOL, volume_path=b.target))
    u = {x.unit: x for x in st.usage}
    note('NodeGetVolumeStats: bytes %d/%d used, inodes %d/%d, condition abnormal=%s (%s)' %
         (u[1].used, u[1].total, u[2].used, u[2].total, st.volume_condition.abnormal,
          st.volume_condition.message))
    expect(u[1].total >= (kb1 - 1024) * 1024, 'stats total %d' % u[1].total)
    expect(not st.volume_condition.abnormal, 'abnormal with every replica up: %s' %
           st.volume_condition.message)

    step('csi: kill -9 the chunk server of zone c: NodeGetVolumeStats says abnormal')
    state = os.environ.get('QBD_DEV_STATE', '/tmp/qbd-dev')
    pid = [ln.split()[1] for ln in open(state + '/pids') if ln.split()[:1] == ['chunkd-c']][-1]
    os.kill(int(pid), signal.SIGKILL)
    sh('dd if=/dev/urandom of=%s/after-c bs=4k count=16 conv=fsync 2>/dev/null' % b.target,
       ns=b.ns)
    deadline = time.monotonic() + 120
    while True:
        st = b.c.Node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
            volume_id=VOL, volume_path=b.target))
        if st.volume_condition.abnormal or time.monotonic() > deadline:
            break
        time.sleep(2)
    expect(st.volume_condition.abnormal, 'still normal 120 s after zone c\'s chunk server '
           'died: %s' % st.volume_condition.message)
    expect('zone c' in st.volume_condition.message,
           'the condition does not name zone c: %s' % st.volume_condition.message)
    note('condition: %s' % st.volume_condition.message)

    step('csi: unpublish, umount, e2fsck -fn, unstage on node b (twice: idempotent)')
    b.unpublish()
    b.unpublish()
    sh('umount %s' % b.staging, ns=b.ns)
    sh('e2fsck -fn %s' % dev_b)
    b.unstage()
    b.unstage()
    expect(not os.path.exists(b.target), 'target path left after unpublish')
    _, out = sh('cat /sys/block/%s/size' % os.path.basename(dev_b))
    expect(out.strip() == '0', '%s still attached after unstage' % dev_b)
    note('detached; phase done in %.1f s' % (time.monotonic() - T0))


if __name__ == '__main__':
    try:
        main()
    except Exception as e:  # noqa: BLE001
        msg = 'csi phase: %s: %s' % (type(e).__name__, e)
        open('/tmp/fail-reason', 'w').write(msg + '\n')
        print('qbd-kernel: [%s] FAIL: %s' % (uptime(), msg), flush=True)
        sys.exit(1)
