#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A TCP proxy that holds every byte DELAY_MS in each direction (this
kernel has no netem): latency between zones for tests/fault.

  tests/fault/delay.py LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS

Bytes keep their order; each read is forwarded DELAY_MS after it arrived.
Runs until SIGTERM.
"""
import asyncio
import signal
import sys
import time


async def pump(reader, writer, delay):
    q = asyncio.Queue()

    async def forward():
        while True:
            t, data = await q.get()
            if data is None:
                break
            wait = t + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.ensure_future(forward())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            q.put_nowait((time.monotonic(), data))
    except (ConnectionError, OSError):
        pass
    q.put_nowait((0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main(listen, target, delay):
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def on_client(cr, cw):
        try:
            sr, sw = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, sw, delay), pump(sr, cw, delay))

    server = await asyncio.start_server(on_client, lhost, int(lport), reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000))
