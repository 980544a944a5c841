# SPDX-License-Identifier: Apache-2.0
"""A CSI client for qbd-csi's tests, written on Debian's python3-grpcio.

The messages come from csi/proto/csi.proto, compiled by protoc
--python_out into a temporary directory when this module is loaded (no
grpc_tools needed); the stubs are plain unary-unary callables made from
the services of that file:

    c = Client('/tmp/x/csi.sock')
    info = c.Identity.GetPluginInfo(c.pb.GetPluginInfoRequest())
    code, details = c.call_status(c.Identity.Probe, c.pb.ProbeRequest())
    c.raw('/csi.v1.Identity/Probe', b'...')   # bytes in, bytes out
"""
import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
PROTO = os.path.join(TOP, 'csi', 'proto', 'csi.proto')


def _compile():
    out = tempfile.mkdtemp(prefix='qbd-csi-pb.')
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(['protoc', '-I', os.path.dirname(PROTO), '--python_out', out, PROTO],
                   check=True)
    sys.path.insert(0, out)
    try:
        return importlib.import_module('csi_pb2')
    finally:
        sys.path.remove(out)


pb = _compile()


class _Service:
    """The methods of one service as attributes: Service.Method(request,
    timeout=...) returns the response or raises grpc.RpcError."""

    def __init__(self, channel, sdesc):
        for m in sdesc.methods:
            req = getattr(pb, m.input_type.name)
            resp = getattr(pb, m.output_type.name)
            setattr(self, m.name, channel.unary_unary(
                '/%s/%s' % (sdesc.full_name, m.name),
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString))


class Client:
    def __init__(self, socket_path, timeout=10):
        self.pb = pb
        self.timeout = timeout
        self.channel = grpc.insecure_channel('unix://' + os.path.abspath(socket_path))
        for name, sdesc in pb.DESCRIPTOR.services_by_name.items():
            setattr(self, name, _Service(self.channel, sdesc))

    def close(self):
        self.channel.close()

    def raw(self, method, body, timeout=None):
        """Call method (its full name) with body as the request's bytes."""
        f = self.channel.unary_unary(method)
        return f(body, timeout=timeout or self.timeout)

    def call_status(self, fn, request, timeout=None):
        """(status code, details, response or None) of one call."""
        try:
            r = fn(request, timeout=timeout or self.timeout)
            return grpc.StatusCode.OK, '', r
        except grpc.RpcError as e:
            return e.code(), e.details(), None
