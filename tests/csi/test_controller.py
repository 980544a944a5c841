#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""qbd-csi's Controller service over its socket, with python3-grpcio.

    test_controller.py SOCKET [CASE...]

Runs against a dev cluster (tests/integration/test-csi-controller.sh:
etcd, chunk servers in zones a, b and c, node plugins node-a and node-b
registered under /qbd/csi/nodes/); $QBD_ETCD names etcd, `qbd` and
`etcdctl` are on PATH. One function per case, in the spirit of
csi-sanity's controller cases; prints one line per case and
`csi-controller: N passed, M failed`; exit 1 on any failure.
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import traceback

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import csi_client  # noqa: E402
from test_csi import Fail, expect  # noqa: E402

pb = csi_client.pb
code = grpc.StatusCode
ZONE_KEY = 'topology.qbd.io/zone'
MiB, GiB = 1 << 20, 1 << 30
Mode = pb.VolumeCapability.AccessMode


def cap(mode=Mode.SINGLE_NODE_WRITER, block=False, fs=''):
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=mode))
    if block:
        c.block.SetInParent()
    else:
        c.mount.fs_type = fs
    return c


def create_req(name, required=0, limit=0, params=None, caps=None):
    r = pb.CreateVolumeRequest(name=name, parameters=params or {},
                               volume_capabilities=caps if caps is not None else [cap()])
    if required or limit:
        r.capacity_range.required_bytes = required
        r.capacity_range.limit_bytes = limit
    return r


def want_status(c, fn, req, want):
    """The call's (details, response), its code checked; a failure names
    the method and the request."""
    got, details, resp = c.call_status(fn, req)
    expect(got == want, '%s(%s): got %s (%s), want %s' %
           (fn._method.decode().rsplit('/', 1)[1], str(req).replace('\n', ' ').strip(),
            got.name, details, want.name))
    return details, resp


def want_message(c, fn, req, want_code, message):
    """want_status, and the message is exactly message."""
    d, _ = want_status(c, fn, req, want_code)
    expect(d == message, '%s: message %r, want %r' %
           (fn._method.decode().rsplit('/', 1)[1], d, message))


def etcdctl(*args):
    env = dict(os.environ, ETCDCTL_API='3')
    return subprocess.run(['etcdctl', '--endpoints=' + os.environ['QBD_ETCD']] + list(args),
                          env=env, check=True, capture_output=True, text=True).stdout


def qbd_info(name):
    p = subprocess.run(['qbd', 'volume', 'info', name, '--json'], capture_output=True, text=True)
    expect(p.returncode == 0, 'qbd volume info %s: %s' % (name, p.stderr.strip()))
    return json.loads(p.stdout)


def volume_exists(name):
    return bool(etcdctl('get', '--keys-only', '/qbd/volumes/' + name).strip())


def zones_of(vol):
    return sorted(t.segments[ZONE_KEY] for t in vol.accessible_topology)


def delete(c, name):
    want_status(c, c.Controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=name), code.OK)


# ---- cases ----

def case_capabilities(c):
    r = c.Controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    T = pb.ControllerServiceCapability.RPC.Type
    got = {T.Name(x.rpc.type) for x in r.capabilities}
    want = {'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY',
            'EXPAND_VOLUME', 'LIST_VOLUMES_PUBLISHED_NODES'}
    expect(got == want, 'capabilities %s, want %s' % (got, want))


def case_create(c):
    _, r = want_status(c, c.Controller.CreateVolume,
                       create_req('pvc-create', required=10 * MiB + 1), code.OK)
    v = r.volume
    expect(v.volume_id == 'pvc-create', 'volume_id %r' % v.volume_id)
    expect(v.capacity_bytes == 10 * MiB + 4096, 'capacity %d, want 10 MiB + 4 KiB' %
           v.capacity_bytes)
    expect(zones_of(v) == ['a', 'b', 'c'], 'topology %s' % zones_of(v))
    info = qbd_info('pvc-create')
    expect(info['size'] == 10 * MiB + 4096 and info['replicas'] == 3,
           'qbd volume info: %s' % info)
    # Again, the same: the same volume.
    _, r2 = want_status(c, c.Controller.CreateVolume,
                        create_req('pvc-create', required=10 * MiB + 1), code.OK)
    expect(r2.volume == v, 'second create: %s, first %s' % (r2.volume, v))
    # Smaller required, no limit: the existing volume answers it.
    want_status(c, c.Controller.CreateVolume, create_req('pvc-create', required=MiB), code.OK)
    # Bigger, or other parameters: ALREADY_EXISTS.
    d, _ = want_status(c, c.Controller.CreateVolume,
                       create_req('pvc-create', required=20 * MiB), code.ALREADY_EXISTS)
    expect('below required_bytes' in d, 'message %r' % d)
    d, _ = want_status(c, c.Controller.CreateVolume,
                       create_req('pvc-create', required=10 * MiB, params={'replicas': '2'}),
                       code.ALREADY_EXISTS)
    expect('replicas' in d, 'message %r' % d)
    delete(c, 'pvc-create')
    expect(not volume_exists('pvc-create'), 'pvc-create still in etcd')
    delete(c, 'pvc-create')     # twice: OK


def case_create_defaults(c):
    """No capacity_range: 1 GiB; the provisioner's own keys ignored;
    block access; parameters and rebuildRate."""
    params = {'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'x',
              'replicas': '2', 'writeQuorum': '2', 'rebuildRate': '10M'}
    _, r = want_status(c, c.Controller.CreateVolume,
                       create_req('pvc-defaults', params=params, caps=[cap(block=True)]), code.OK)
    expect(r.volume.capacity_bytes == GiB, 'capacity %d, want 1 GiB' % r.volume.capacity_bytes)
    expect(len(zones_of(r.volume)) == 2, 'topology %s' % zones_of(r.volume))
    info = qbd_info('pvc-defaults')
    expect(info['replicas'] == 2 and info['write_quorum'] == 2, 'qbd volume info: %s' % info)
    got = etcdctl('get', '--print-value-only', '/qbd/volume-settings/' + info['id']).strip()
    expect(json.loads(got) == {'rebuild_rate': 10 * MiB}, 'settings %r' % got)
    # limit only, below the default: the limit.
    _, r = want_status(c, c.Controller.CreateVolume,
                       create_req('pvc-limit', limit=8 * MiB + 100), code.OK)
    expect(r.volume.capacity_bytes == 8 * MiB, 'capacity %d, want 8 MiB' %
           r.volume.capacity_bytes)
    delete(c, 'pvc-defaults')
    delete(c, 'pvc-limit')


def case_create_bad(c):
    C = c.Controller.CreateVolume
    cases = [
        (create_req(''), code.INVALID_ARGUMENT, 'without a name'),
        (create_req('pvc-bad', caps=[]), code.INVALID_ARGUMENT, 'volume_capabilities'),
        (create_req('pvc-bad', caps=[cap(Mode.MULTI_NODE_MULTI_WRITER)]), code.INVALID_ARGUMENT,
         'MULTI_NODE_MULTI_WRITER'),
        (create_req('pvc-bad', caps=[cap(Mode.SINGLE_NODE_WRITER),
                                     cap(Mode.MULTI_NODE_READER_ONLY)]),
         code.INVALID_ARGUMENT, 'MULTI_NODE_READER_ONLY'),
        (create_req('pvc-bad', caps=[cap(fs='ntfs')]), code.INVALID_ARGUMENT, 'ntfs'),
        (create_req('pvc-bad', caps=[pb.VolumeCapability()]), code.INVALID_ARGUMENT,
         'access type'),
        (create_req('pvc-bad', required=10 * MiB, limit=5 * MiB), code.OUT_OF_RANGE, 'limit_bytes'),
        (create_req('pvc-bad', required=10 * MiB + 1, limit=10 * MiB + 2), code.OUT_OF_RANGE,
         '4 KiB'),
        (create_req('pvc-bad', required=(1 << 63) - 1), code.OUT_OF_RANGE, 'largest size'),
        (create_req('pvc-bad', params={'colour': 'blue'}), code.INVALID_ARGUMENT, 'colour'),
        (create_req('pvc-bad', params={'replicas': '9'}), code.INVALID_ARGUMENT, 'replicas'),
        (create_req('pvc-bad', params={'replicas': '2', 'writeQuorum': '3'}),
         code.INVALID_ARGUMENT, 'writeQuorum'),
        (create_req('pvc-bad', params={'rebuildRate': 'fast'}), code.INVALID_ARGUMENT,
         'rebuildRate'),
        (create_req('pvc/with/slashes'), code.INVALID_ARGUMENT, 'letters, digits'),
        (create_req('pvc-bad', params={'replicas': '4'}), code.RESOURCE_EXHAUSTED, 'zone'),
    ]
    for req, want, words in cases:
        d, _ = want_status(c, C, req, want)
        expect(words in d, '%s: message %r does not say %r' % (want, d, words))
    expect(not volume_exists('pvc-bad'), 'a refused CreateVolume left pvc-bad')


def case_delete_bad(c):
    want_message(c, c.Controller.DeleteVolume, pb.DeleteVolumeRequest(), code.INVALID_ARGUMENT,
                 'DeleteVolume without a volume_id')
    delete(c, 'pvc-never-was')
    delete(c, 'not/a/qbd/name')


def case_publish(c):
    want_status(c, c.Controller.CreateVolume, create_req('pvc-pub', required=MiB), code.OK)
    P, U = c.Controller.ControllerPublishVolume, c.Controller.ControllerUnpublishVolume

    def pub(node, ro=False, vol='pvc-pub', capability=None):
        return pb.ControllerPublishVolumeRequest(volume_id=vol, node_id=node, readonly=ro,
                                                 volume_capability=capability or cap())

    _, r = want_status(c, P, pub('node-a'), code.OK)
    expect(dict(r.publish_context) == {'volume': 'pvc-pub'}, 'context %s' % r.publish_context)
    want_status(c, P, pub('node-a'), code.OK)          # twice: OK
    want_status(c, P, pub('node-a', ro=True), code.ALREADY_EXISTS)
    want_message(c, P, pub('node-a', vol='pvc-none'), code.NOT_FOUND, 'no volume pvc-none')
    d, _ = want_status(c, P, pub('node-z'), code.NOT_FOUND)
    expect('node-z has not registered' in d, 'message %r' % d)
    want_status(c, P, pub(''), code.INVALID_ARGUMENT)
    want_message(c, P, pub('node-a', vol=''), code.INVALID_ARGUMENT,
                 'ControllerPublishVolume without a volume_id')
    want_status(c, P, pb.ControllerPublishVolumeRequest(volume_id='pvc-pub', node_id='node-a'),
                code.INVALID_ARGUMENT)
    want_status(c, P, pub('node-a', capability=cap(Mode.MULTI_NODE_MULTI_WRITER)),
                code.INVALID_ARGUMENT)
    rec = json.loads(etcdctl('get', '--print-value-only', '/qbd/csi/publish/pvc-pub'))
    expect(rec['node'] == 'node-a' and rec['readonly'] is False, 'record %s' % rec)
    d, _ = want_status(c, c.Controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id='pvc-pub'),
                       code.FAILED_PRECONDITION)
    expect('node-a' in d, 'message %r' % d)
    # The zone move: node-b takes it over while node-a holds it.
    want_status(c, P, pub('node-b'), code.OK)
    rec = json.loads(etcdctl('get', '--print-value-only', '/qbd/csi/publish/pvc-pub'))
    expect(rec['node'] == 'node-b', 'record after the takeover %s' % rec)
    # node-a's late unpublish leaves node-b's record.
    want_status(c, U, pb.ControllerUnpublishVolumeRequest(volume_id='pvc-pub', node_id='node-a'),
                code.OK)
    r = c.Controller.ListVolumes(pb.ListVolumesRequest())
    nodes = [list(e.status.published_node_ids) for e in r.entries if e.volume.volume_id == 'pvc-pub']
    expect(nodes == [['node-b']], 'published_node_ids %s' % nodes)
    for _ in range(2):          # twice: OK
        want_status(c, U, pb.ControllerUnpublishVolumeRequest(volume_id='pvc-pub',
                                                              node_id='node-b'), code.OK)
    expect(not etcdctl('get', '/qbd/csi/publish/pvc-pub').strip(), 'record left')
    want_status(c, U, pb.ControllerUnpublishVolumeRequest(volume_id='pvc-none', node_id='node-b'),
                code.OK)
    want_message(c, U, pb.ControllerUnpublishVolumeRequest(), code.INVALID_ARGUMENT,
                 'ControllerUnpublishVolume without a volume_id')
    delete(c, 'pvc-pub')


def case_validate(c):
    want_status(c, c.Controller.CreateVolume, create_req('pvc-val', required=MiB), code.OK)
    V = c.Controller.ValidateVolumeCapabilities
    _, r = want_status(c, V, pb.ValidateVolumeCapabilitiesRequest(
        volume_id='pvc-val', volume_capabilities=[cap(), cap(block=True)]), code.OK)
    expect(r.HasField('confirmed') and len(r.confirmed.volume_capabilities) == 2,
           'not confirmed: %s' % r)
    _, r = want_status(c, V, pb.ValidateVolumeCapabilitiesRequest(
        volume_id='pvc-val', volume_capabilities=[cap(Mode.MULTI_NODE_MULTI_WRITER)]), code.OK)
    expect(not r.HasField('confirmed') and 'MULTI_NODE_MULTI_WRITER' in r.message,
           'an unsupported mode: %s' % r)
    _, r = want_status(c, V, pb.ValidateVolumeCapabilitiesRequest(
        volume_id='pvc-val', volume_capabilities=[cap()], parameters={'replicas': '2'}), code.OK)
    expect(not r.HasField('confirmed') and 'replicas' in r.message, 'other replicas: %s' % r)
    _, r = want_status(c, V, pb.ValidateVolumeCapabilitiesRequest(
        volume_id='pvc-val', volume_capabilities=[cap()],
        parameters={'replicas': '3', 'csi.storage.k8s.io/fstype': 'ext4'}), code.OK)
    expect(r.HasField('confirmed'), 'its own parameters: %s' % r)
    want_message(c, V, pb.ValidateVolumeCapabilitiesRequest(
        volume_id='pvc-none', volume_capabilities=[cap()]), code.NOT_FOUND,
        'no volume pvc-none')
    want_status(c, V, pb.ValidateVolumeCapabilitiesRequest(volume_id='pvc-val'),
                code.INVALID_ARGUMENT)
    want_message(c, V, pb.ValidateVolumeCapabilitiesRequest(volume_capabilities=[cap()]),
                 code.INVALID_ARGUMENT, 'ValidateVolumeCapabilities without a volume_id')
    delete(c, 'pvc-val')


def case_list_paging(c):
    names = ['pvc-list-%d' % i for i in range(7)]
    for n in names:
        want_status(c, c.Controller.CreateVolume, create_req(n, required=MiB), code.OK)
    every = [e.volume.volume_id for e in c.Controller.ListVolumes(pb.ListVolumesRequest()).entries]
    expect(set(names) <= set(every), 'ListVolumes: %s' % every)
    got, token, pages = [], '', 0
    while True:
        r = c.Controller.ListVolumes(pb.ListVolumesRequest(max_entries=3, starting_token=token))
        expect(len(r.entries) <= 3, 'a page of %d' % len(r.entries))
        for e in r.entries:
            expect(e.volume.capacity_bytes == MiB or e.volume.volume_id not in names,
                   'entry %s' % e)
            expect(len(e.volume.accessible_topology) > 0, 'no topology: %s' % e)
        got += [e.volume.volume_id for e in r.entries]
        pages += 1
        token = r.next_token
        if not token:
            break
    expect(got == every and pages == (len(every) + 2) // 3,
           '%d pages: %s, want %s' % (pages, got, every))
    want_status(c, c.Controller.ListVolumes, pb.ListVolumesRequest(starting_token='bogus'),
                code.ABORTED)
    want_status(c, c.Controller.ListVolumes, pb.ListVolumesRequest(max_entries=-1),
                code.INVALID_ARGUMENT)
    for n in names:
        delete(c, n)


def node_free_by_zone():
    alive = {k.rsplit('/', 1)[1] for k in etcdctl('get', '--prefix', '--keys-only',
                                                  '/qbd/alive/').split()}
    free = {}
    for line in etcdctl('get', '--prefix', '--print-value-only', '/qbd/nodes/').splitlines():
        if not line.strip():
            continue
        n = json.loads(line)
        if n['id'] in alive:
            free[n['zone']] = free.get(n['zone'], 0) + max(0, int(n['capacity']) - int(n['used']))
    return free


def capacity_formula(free, replicas, zone=None):
    """GetCapacity's answer (docs/design.md, "Controller")."""
    if zone is not None:
        if zone not in free:
            return 0
        others = sorted((v for k, v in free.items() if k != zone), reverse=True)
        if replicas == 1:
            return free[zone]
        return min(free[zone], others[replicas - 2]) if len(others) >= replicas - 1 else 0
    z = sorted(free.values(), reverse=True)
    return z[replicas - 1] if len(z) >= replicas else 0


def case_capacity(c):
    G = c.Controller.GetCapacity

    def get(zone=None, replicas=None):
        req = pb.GetCapacityRequest(volume_capabilities=[cap()])
        if replicas:
            req.parameters['replicas'] = str(replicas)
        if zone:
            req.accessible_topology.segments[ZONE_KEY] = zone
        return G(req).available_capacity

    free = node_free_by_zone()
    expect(sorted(free) == ['a', 'b', 'c'] and len(set(free.values())) == 3,
           'zones of three sizes: %s' % free)
    expect(get() > 0 and get() == capacity_formula(free, 3), 'overall %d, free %s' %
           (get(), free))
    for r in (1, 2, 3):
        for z in (None, 'a', 'b', 'c'):
            want = capacity_formula(free, r, z)
            expect(want > 0 and get(z, r) == want, 'zone %s, %d replicas: %d, want %d (%s)' %
                   (z, r, get(z, r), want, free))
    # The zone matters: c with 2 replicas is bounded by b, not by c.
    expect(get('c', 2) == free['b'] < free['c'], 'zone c, 2 replicas: %d (%s)' %
           (get('c', 2), free))
    expect(get(replicas=4) == 0, 'four replicas in three zones')
    expect(get('nowhere') == 0, 'an unknown zone')
    r = G(pb.GetCapacityRequest(volume_capabilities=[cap(Mode.MULTI_NODE_MULTI_WRITER)]))
    expect(r.available_capacity == 0, 'an unsupported mode: %d' % r.available_capacity)
    want_status(c, G, pb.GetCapacityRequest(parameters={'colour': 'blue'}), code.INVALID_ARGUMENT)


def case_expand(c):
    want_status(c, c.Controller.CreateVolume, create_req('pvc-grow', required=16 * MiB), code.OK)
    E = c.Controller.ControllerExpandVolume

    def req(required, limit=0, capability=None, vol='pvc-grow'):
        r = pb.ControllerExpandVolumeRequest(volume_id=vol)
        r.capacity_range.required_bytes = required
        r.capacity_range.limit_bytes = limit
        if capability:
            r.volume_capability.CopyFrom(capability)
        return r

    _, r = want_status(c, E, req(64 * MiB, capability=cap()), code.OK)
    expect(r.capacity_bytes == 64 * MiB and r.node_expansion_required,
           'mount: %s' % r)
    expect(qbd_info('pvc-grow')['size'] == 64 * MiB, 'qbd volume info: %s' % qbd_info('pvc-grow'))
    _, r = want_status(c, E, req(96 * MiB + 1, capability=cap(block=True)), code.OK)
    expect(r.capacity_bytes == 96 * MiB + 4096 and not r.node_expansion_required,
           'block: %s' % r)
    # Smaller than the volume: it is that big already.
    _, r = want_status(c, E, req(32 * MiB), code.OK)
    expect(r.capacity_bytes == 96 * MiB + 4096, 'smaller: %s' % r)
    want_status(c, E, req(32 * MiB, limit=48 * MiB), code.OUT_OF_RANGE)
    want_status(c, E, req(200 * MiB, limit=150 * MiB), code.OUT_OF_RANGE)
    want_status(c, E, req((1 << 63) - 1), code.OUT_OF_RANGE)  # 4 KiB-rounded: past int64
    want_message(c, E, req(64 * MiB, vol='pvc-none'), code.NOT_FOUND, 'no volume pvc-none')
    want_message(c, E, req(64 * MiB, vol=''), code.INVALID_ARGUMENT,
                 'ControllerExpandVolume without a volume_id')
    want_status(c, E, pb.ControllerExpandVolumeRequest(volume_id='pvc-grow'), code.INVALID_ARGUMENT)
    expect(qbd_info('pvc-grow')['size'] == 96 * MiB + 4096, 'size after the refusals')
    delete(c, 'pvc-grow')


def race(n, fn):
    """fn() from n threads released at once: their answers."""
    start = threading.Barrier(n)

    def one(_):
        start.wait()
        return fn()

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


def case_concurrent(c, n=8, rounds=3):
    """n CreateVolume calls of one volume at once, then n DeleteVolume:
    each OK or ABORTED, never another answer, one volume."""
    for _ in range(rounds):
        res = race(n, lambda: c.call_status(c.Controller.CreateVolume,
                                               create_req('pvc-race', required=MiB)))
        codes = [x[0] for x in res]
        expect(set(codes) <= {code.OK, code.ABORTED} and code.OK in codes,
               'concurrent creates: %s' % [(x[0], x[1]) for x in res])
        ids = {x[2].volume.volume_id for x in res if x[0] == code.OK}
        expect(ids == {'pvc-race'}, 'ids %s' % ids)
        vols = [e.volume.volume_id for e in c.Controller.ListVolumes(pb.ListVolumesRequest()).entries]
        expect(vols.count('pvc-race') == 1, 'ListVolumes: %s' % vols)
        res = race(n, lambda: c.call_status(c.Controller.DeleteVolume,
                                               pb.DeleteVolumeRequest(volume_id='pvc-race')))
        codes = [x[0] for x in res]
        expect(set(codes) <= {code.OK, code.ABORTED} and code.OK in codes,
               'concurrent deletes: %s' % [(x[0], x[1]) for x in res])
        delete(c, 'pvc-race')
        expect(not volume_exists('pvc-race'), 'pvc-race left')
    print('csi-controller: concurrent: last round %s' %
          {k.name: codes.count(k) for k in set(codes)})


# etcd stopped between etcd_setup and etcd_down, started again before
# etcd_back (test-csi-controller.sh): each call that needs etcd is
# UNAVAILABLE with a message naming it, and works once etcd is back.

def etcd_calls(c):
    return [
        ('CreateVolume', c.Controller.CreateVolume, create_req('pvc-etcd-new', required=MiB)),
        ('DeleteVolume', c.Controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id='pvc-etcd')),
        ('ControllerPublishVolume', c.Controller.ControllerPublishVolume,
         pb.ControllerPublishVolumeRequest(volume_id='pvc-etcd', node_id='node-a',
                                           volume_capability=cap())),
    ]


def case_etcd_setup(c):
    want_status(c, c.Controller.CreateVolume, create_req('pvc-etcd', required=MiB), code.OK)


def case_etcd_down(c):
    for name, fn, req in etcd_calls(c):
        d, _ = want_status(c, fn, req, code.UNAVAILABLE)
        expect('etcd' in d, '%s with etcd stopped: message %r does not name etcd' % (name, d))
        print('csi-controller: etcd_down: %s: %s' % (name, d), flush=True)


def case_etcd_back(c):
    calls = {name: (fn, req) for name, fn, req in etcd_calls(c)}
    for name in ('CreateVolume', 'ControllerPublishVolume'):
        want_status(c, calls[name][0], calls[name][1], code.OK)
    want_status(c, c.Controller.ControllerUnpublishVolume,
                pb.ControllerUnpublishVolumeRequest(volume_id='pvc-etcd', node_id='node-a'),
                code.OK)
    want_status(c, calls['DeleteVolume'][0], calls['DeleteVolume'][1], code.OK)
    expect(not volume_exists('pvc-etcd'), 'pvc-etcd left')
    delete(c, 'pvc-etcd-new')


DEFAULT = ['capabilities', 'create', 'create_defaults', 'create_bad', 'delete_bad', 'publish',
           'validate', 'list_paging', 'capacity', 'expand', 'concurrent']


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    c = csi_client.Client(sys.argv[1], timeout=30)
    passed = failed = 0
    for n in sys.argv[2:] or DEFAULT:
        fn = globals().get('case_' + n)
        if not fn:
            print('csi-controller: no case %s' % n)
            failed += 1
            continue
        try:
            fn(c)
            print('csi-controller: %s: ok' % n, flush=True)
            passed += 1
        except Fail as e:
            print('csi-controller: %s: FAIL: %s' % (n, e), flush=True)
            failed += 1
        except Exception:
            print('csi-controller: %s: FAIL:' % n)
            traceback.print_exc()
            failed += 1
    c.close()
    print('csi-controller: %d passed, %d failed' % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
