#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""qbd-csi over its socket, with python3-grpcio (tests/csi/csi_client.py).

    test_csi.py SOCKET [CASE...]

Runs the named cases (default: every case in DEFAULT, which need nothing
from outside), one function each, and prints one line per case and the
summary `csi: N passed, M failed`; exit 1 on any failure. Cases that
need the harness to act first (etcd stopped) are named by it.
`test_csi.py SOCKET --bench N` times N Probes instead.
"""
import concurrent.futures
import os
import sys
import threading
import time
import traceback

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import csi_client  # noqa: E402

pb = csi_client.pb
OK, code = grpc.StatusCode.OK, grpc.StatusCode
VERSION_FILE = os.path.join(csi_client.TOP, 'Makefile')


class Fail(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Fail(what)


def want_status(c, fn, req, want):
    got, details, resp = c.call_status(fn, req)
    expect(got == want, '%s: got %s (%s), want %s' % (fn, got, details, want))
    return details, resp


def make_version():
    for line in open(VERSION_FILE):
        if line.startswith('VERSION'):
            return line.split('=', 1)[1].strip()
    raise Fail('no VERSION in the Makefile')


# ---- Identity ----

def case_plugin_info(c):
    r = c.Identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=10)
    expect(r.name == 'qbd.csi.io', 'name %r' % r.name)
    expect(r.vendor_version == make_version(),
           'vendor_version %r, want %r' % (r.vendor_version, make_version()))


def case_capabilities(c):
    r = c.Identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=10)
    S, E = pb.PluginCapability.Service, pb.PluginCapability.VolumeExpansion
    got = set()
    for cap in r.capabilities:
        kind = cap.WhichOneof('type')
        if kind == 'service':
            got.add(('service', S.Type.Name(cap.service.type)))
        elif kind == 'volume_expansion':
            got.add(('expansion', E.Type.Name(cap.volume_expansion.type)))
        else:
            raise Fail('a capability without a type: %s' % cap)
    want = {('service', 'CONTROLLER_SERVICE'),
            ('service', 'VOLUME_ACCESSIBILITY_CONSTRAINTS'),
            ('expansion', 'ONLINE')}
    expect(got == want and len(r.capabilities) == 3, 'capabilities %s, want %s' % (got, want))


def probe_ready(c):
    r = c.Identity.Probe(pb.ProbeRequest(), timeout=10)
    expect(r.HasField('ready'), 'Probe without ready')
    return r.ready.value


def poll_probe(c, want, limit=15):
    end = time.monotonic() + limit
    while True:
        got = probe_ready(c)
        if got == want:
            return
        expect(time.monotonic() < end, 'Probe says ready=%s for %d s, want %s' % (got, limit, want))
        time.sleep(0.2)


def case_probe_ready(c):
    poll_probe(c, True)


def case_probe_not_ready(c):
    """etcd stopped by the harness: ready=false, answered, not an error."""
    poll_probe(c, False)


def case_unknown_method(c):
    for m in ('/csi.v1.Identity/NoSuchMethod', '/other.v1.Service/Probe'):
        try:
            c.raw(m, b'')
        except grpc.RpcError as e:
            expect(e.code() == code.UNIMPLEMENTED, '%s: %s (%s)' % (m, e.code(), e.details()))
            continue
        raise Fail('%s answered' % m)


def case_garbage_request(c):
    # 0x0f: field 1 with wire type 7, which does not exist; then a
    # length-delimited field 1 claiming 5 bytes of which 2 follow.
    for m, body in (('/csi.v1.Identity/Probe', b'\x0f'),
                    ('/csi.v1.Identity/GetPluginInfo', b'\x0a\x05ab')):
        try:
            c.raw(m, body)
        except grpc.RpcError as e:
            expect(e.code() == code.INVALID_ARGUMENT, '%s: %s (%s)' % (m, e.code(), e.details()))
            continue
        raise Fail('%s accepted %r' % (m, body))
    expect(probe_ready(c), 'Probe after garbage')


def case_concurrent_probes(c, n=20):
    start = threading.Barrier(n)

    def one(_):
        start.wait()
        return probe_ready(c)

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        got = list(ex.map(one, range(n)))
    expect(got == [True] * n, '%d Probes: %s' % (n, got))


def case_probes_until_stopped(c, n=20):
    """Probes from n threads while the harness stops the driver: each
    thread probes until a call fails, which must be a stop's failure."""
    codes, lock, going = {}, threading.Lock(), [0]

    def loop(_):
        ok = 0
        while True:
            try:
                c.Identity.Probe(pb.ProbeRequest(), timeout=10)
                ok += 1
                if ok == 1:
                    with lock:
                        going[0] += 1
                        if going[0] == n:   # the harness waits for this line
                            print('csi: %d threads probing' % n, flush=True)
            except grpc.RpcError as e:
                with lock:
                    codes[e.code()] = codes.get(e.code(), 0) + 1
                return ok

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        answered = sum(ex.map(loop, range(n)))
    print('csi: %d Probes answered before the stop; then %s' %
          (answered, {k.name: v for k, v in codes.items()}))
    expect(answered > 0, 'no Probe answered')
    expect(set(codes) <= {code.UNAVAILABLE, code.CANCELLED}, 'a stop failed calls with %s' % codes)


# ---- Node, on a host where nothing attaches (the kernel test attaches) ----

def node_cap(fs='ext4', flags=(), mode=None):
    A = pb.VolumeCapability.AccessMode
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs, mount_flags=list(flags)),
        access_mode=A(mode=mode or A.SINGLE_NODE_WRITER))


def case_node_calls(c):
    """Node calls that need no NBD device: info, capabilities, the
    arguments' codes, idempotent unpublish and unstage of nothing."""
    r = c.Node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=10)
    expect(r.node_id == 'node-a', 'node_id %r' % r.node_id)
    expect(dict(r.accessible_topology.segments) == {'topology.qbd.io/zone': 'a'},
           'topology %s' % r.accessible_topology)
    R = pb.NodeServiceCapability.RPC.Type
    r = c.Node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest(), timeout=10)
    got = {R.Name(x.rpc.type) for x in r.capabilities}
    want = {'STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION'}
    expect(got == want, 'node capabilities %s' % got)
    st = '/nonexistent-qbd/staging'
    bad = [
        pb.NodeStageVolumeRequest(staging_target_path=st, volume_capability=node_cap()),
        pb.NodeStageVolumeRequest(volume_id='v', volume_capability=node_cap()),
        pb.NodeStageVolumeRequest(volume_id='v', staging_target_path=st),
        pb.NodeStageVolumeRequest(volume_id='v', staging_target_path=st,
                                  volume_capability=node_cap(fs='vfat')),
        pb.NodeStageVolumeRequest(volume_id='v', staging_target_path=st,
                                  volume_capability=node_cap(flags=['bind'])),
        pb.NodeStageVolumeRequest(
            volume_id='v', staging_target_path=st, volume_capability=node_cap(
                mode=pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER)),
    ]
    for req in bad:
        want_status(c, c.Node.NodeStageVolume, req, code.INVALID_ARGUMENT)
    want_status(c, c.Node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id='v'),
                code.INVALID_ARGUMENT)
    # The first field missing is named.
    required = [
        (c.Node.NodeStageVolume, pb.NodeStageVolumeRequest(staging_target_path=st),
         'volume_id'),
        (c.Node.NodeStageVolume, pb.NodeStageVolumeRequest(volume_id='v'), 'staging_target_path'),
        (c.Node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id='v'),
         'staging_target_path'),
        (c.Node.NodePublishVolume, pb.NodePublishVolumeRequest(volume_id='v'), 'target_path'),
        (c.Node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(target_path=st), 'volume_id'),
        (c.Node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(volume_id='v'), 'volume_path'),
        (c.Node.NodeExpandVolume, pb.NodeExpandVolumeRequest(volume_path=st), 'volume_id'),
    ]
    for fn, req, field in required:
        d, _ = want_status(c, fn, req, code.INVALID_ARGUMENT)
        expect(d == field + ' is required', '%s: message %r, want %r' %
               (fn, d, field + ' is required'))
    want_status(c, c.Node.NodePublishVolume, pb.NodePublishVolumeRequest(
        volume_id='not-staged', staging_target_path=st, target_path='/nonexistent-qbd/t',
        volume_capability=node_cap()), code.FAILED_PRECONDITION)
    want_status(c, c.Node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(
        volume_id='v', target_path='/nonexistent-qbd/t'), OK)
    want_status(c, c.Node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(
        volume_id='v', staging_target_path=st), OK)
    # A volume_path that does not exist, then one that does (/) of a
    # volume not staged here: NOT_FOUND, saying which.
    for fn, rq in ((c.Node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest),
                   (c.Node.NodeExpandVolume, pb.NodeExpandVolumeRequest)):
        d, _ = want_status(c, fn, rq(volume_id='v', volume_path='/nonexistent-qbd/t'),
                           code.NOT_FOUND)
        expect(d == 'volume_path /nonexistent-qbd/t: No such file or directory',
               '%s: message %r' % (fn, d))
        d, _ = want_status(c, fn, rq(volume_id='v', volume_path='/'), code.NOT_FOUND)
        expect(d == 'volume v is not staged on node node-a', '%s: message %r' % (fn, d))


DEFAULT = ['plugin_info', 'capabilities', 'probe_ready', 'unknown_method',
           'garbage_request', 'concurrent_probes']


def bench(c, n):
    probe_ready(c)
    t = time.monotonic()
    for _ in range(n):
        c.Identity.Probe(pb.ProbeRequest(), timeout=10)
    d = time.monotonic() - t
    print('csi: %d Probes in %.3f s: %.0f us each' % (n, d, d / n * 1e6))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    c = csi_client.Client(sys.argv[1])
    if sys.argv[2:3] == ['--bench']:
        bench(c, int(sys.argv[3]))
        return
    names = sys.argv[2:] or DEFAULT
    passed = failed = 0
    for n in names:
        fn = globals().get('case_' + n)
        if not fn:
            print('csi: no case %s' % n)
            failed += 1
            continue
        try:
            fn(c)
            print('csi: %s: ok' % n)
            passed += 1
        except Fail as e:
            print('csi: %s: FAIL: %s' % (n, e))
            failed += 1
        except Exception:
            print('csi: %s: FAIL:' % n)
            traceback.print_exc()
            failed += 1
    c.close()
    print('csi: %d passed, %d failed' % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
