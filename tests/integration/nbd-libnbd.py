# SPDX-License-Identifier: Apache-2.0
# The NBD protocol of qbd-nbd through libnbd (python3-libnbd, the library
# behind nbdsh): structured replies, base:allocation and BLOCK_STATUS
# (REQ_ONE, unaligned ranges), DF, simple replies when not negotiated,
# LIST_META_CONTEXT, requests libnbd would refuse in strict mode, several
# connections sharing one volume (CAN_MULTI_CONN), DISC.
# Usage: python3 nbd-libnbd.py URI EXPORT_SIZE, on a volume never written
# beyond what this script writes. Exit 0 ok, 1 failure.
import errno
import sys

import nbd

uri, size = sys.argv[1], int(sys.argv[2])
H = nbd.STATE_HOLE | nbd.STATE_ZERO
M = 1 << 20


def check(cond, msg):
    if not cond:
        print("nbd-libnbd: FAIL: " + msg)
        sys.exit(1)


def conn(meta=True, structured=True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h


def extents(h, off, count, flags=0):
    out = []

    def cb(ctx, o, entries, err):
        check(ctx == nbd.CONTEXT_BASE_ALLOCATION, "extents for context " + ctx)
        p = o
        for i in range(0, len(entries), 2):
            out.append((p, entries[i], entries[i + 1]))
            p += entries[i]
        return 0

    h.block_status(count, off, cb, flags)
    return out


def fails_with(fn, want, what):
    try:
        fn()
    except nbd.Error as e:
        check(e.errnum == want, "%s: %s, want %s" % (what, e.string, errno.errorcode[want]))
        return
    check(False, what + ": succeeded")


h = conn()
check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation not negotiated")
check(h.can_df() and h.can_multi_conn() and h.can_fua() and h.can_trim() and
      h.can_zero() and h.can_flush(), "a transmission flag is missing")
check((h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED),
       h.get_block_size(nbd.SIZE_MAXIMUM)) == (1, 4096, 32 * M), "block size constraints")

# A fresh volume is one hole.
e = extents(h, 0, size)
check(e and e[0][0] == 0 and all(x[2] == H for x in e) and sum(x[1] for x in e) <= size,
      "fresh volume not all hole: %r" % e[:4])

# Data where written, at 4 KiB granularity, from the offset asked.
h.pwrite(b"\x11" * 12288, M)
check(extents(h, M - 8192, 32768) ==
      [(M - 8192, 8192, H), (M, 12288, 0), (M + 12288, 12288, H)],
      "extents after a write: %r" % extents(h, M - 8192, 32768))
check(extents(h, M + 100, 5000) == [(M + 100, 5000, 0)], "unaligned query")
check(extents(h, M - 8192, 32768, nbd.CMD_FLAG_REQ_ONE) == [(M - 8192, 8192, H)],
      "REQ_ONE: %r" % extents(h, M - 8192, 32768, nbd.CMD_FLAG_REQ_ONE))

# TRIM and WRITE_ZEROES (with NO_HOLE too) leave holes; a partial block
# keeps its data.
h.trim(4096, M + 4096)
h.zero(4096, M, nbd.CMD_FLAG_NO_HOLE)
h.zero(100, M + 8192 + 10)
check(extents(h, M, 12288) == [(M, 8192, H), (M + 8192, 4096, 0)],
      "extents after trim and zero: %r" % extents(h, M, 12288))
check(h.pread(12288, M) == b"\0" * 8192 + b"\x11" * 10 + b"\0" * 100 + b"\x11" * (4096 - 110),
      "contents after trim and zero")

# Reads: one data chunk, also with DF.
chunks = []


def chunk(sub, off, status, err):
    chunks.append((off, len(sub), status))
    return 0


h.pread_structured(65536, M - 32768, chunk, nbd.CMD_FLAG_DF)
check(chunks == [(M - 32768, 65536, nbd.READ_DATA)], "DF read chunks %r" % chunks)

# Requests strict mode refuses: the server answers each with an error and
# the connection goes on.
h.set_strict_mode(0)
fails_with(lambda: h.pread(4096, size), errno.EINVAL, "read past the end")
fails_with(lambda: h.pread(4096, size - 100), errno.EINVAL, "read across the end")
fails_with(lambda: extents(h, size, 4096), errno.EINVAL, "block status past the end")
fails_with(lambda: extents(h, 0, 0), errno.EINVAL, "block status of zero bytes")
fails_with(lambda: h.pread(4096, 0, nbd.CMD_FLAG_REQ_ONE), errno.EINVAL, "read with REQ_ONE")
fails_with(lambda: h.flush(nbd.CMD_FLAG_DF), errno.EINVAL, "flush with DF")
fails_with(lambda: h.zero(8192, size - 4096), errno.ENOSPC, "zero past the end")
fails_with(lambda: h.pwrite(b"x" * 8192, size - 4096), errno.ENOSPC, "write past the end")
check(h.pread(4096, M + 8192)[110:] == b"\x11" * (4096 - 110), "read after errors")
h.set_strict_mode(nbd.STRICT_MASK)

# Without structured replies: simple replies, no DF, no BLOCK_STATUS.
s = conn(meta=False, structured=False)
check(not s.get_structured_replies_negotiated() and not s.can_df(), "simple connection")
check(s.pread(4096, M + 8192)[110:] == b"\x11" * (4096 - 110), "simple reply read")
s.set_strict_mode(0)
fails_with(lambda: s.pread(4096, size), errno.EINVAL, "simple read past the end")
s.shutdown()

# Meta contexts listed before GO.
o = nbd.NBD()
o.set_opt_mode(True)
o.connect_uri(uri)
names = []
o.opt_list_meta_context(lambda name: names.append(name) or 0)
check(names == [nbd.CONTEXT_BASE_ALLOCATION], "listed contexts %r" % names)
o.add_meta_context("qemu:dirty-bitmap:nope")
names = []
o.opt_list_meta_context(lambda name: names.append(name) or 0)
check(names == [], "an unknown context was listed: %r" % names)
o.clear_meta_contexts()
o.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
o.opt_go()
check(o.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation after opt_go")
o.shutdown()

# Several connections, one volume: a write on one, FLUSH on another, the
# data on a third.
a, b, c = conn(), conn(), conn()
data = bytes(range(256)) * 256
a.pwrite(data, 3 * M + 512)
b.flush()
check(c.pread(len(data), 3 * M + 512) == data, "write not seen on another connection")
check(extents(c, 3 * M, 4096 * 18)[0] == (3 * M, 4096 * 17, 0), "extents on a third connection")
# Flushes in flight on two connections at once, writes on a third.
for i in range(8):
    a.aio_pwrite(data, 5 * M + i * len(data))
while a.aio_in_flight():
    a.poll(-1)
f1, f2 = b.aio_flush(), c.aio_flush()
while b.aio_in_flight() or c.aio_in_flight():
    for x in (b, c):
        if x.aio_in_flight():
            x.poll(10)
check(b.aio_command_completed(f1) and c.aio_command_completed(f2), "flushes")
check(c.pread(len(data), 5 * M + 7 * len(data)) == data, "aio writes read back")
for x in (a, b, c, h):
    x.shutdown()
print("nbd-libnbd: ok")
