#!/usr/bin/env python3
"""python-hl7's asyncio MLLP server (PyPI `hl7`), answering AA with hl7's own ACK builder.

This is the receiver the python-hl7 documentation shows: `hl7.mllp.start_hl7_server` with a
callback that reads each message and writes `message.create_ack()` (MSA-1 AA, MSA-2 = MSH-10).
Usage: hl7_server.py HOST PORT  (prints `listening on HOST:PORT` once bound).
"""
import asyncio
import sys

import hl7.mllp


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(host, port):
    server = await hl7.mllp.start_hl7_server(handle, host=host, port=port)
    sock = server.sockets[0].getsockname()
    print(f"listening on {sock[0]}:{sock[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
