"""A third-party MLLP listener for the connector tests: python-hl7's asyncio MLLP server
(PyPI `hl7`, hl7.mllp.start_hl7_server). Prints `port=N` once listening; appends every message
it receives, re-serialised by python-hl7, to the file named by argv[1] (one per line, segments
joined by '\\r' escaped as '\\\\r'), and answers each with python-hl7's own ACK (MSA|AA|MSH-10)."""
import asyncio
import sys

import hl7
import hl7.mllp


async def main(path):
    async def serve(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                with open(path, "a", encoding="utf-8") as out:
                    out.write(str(message).replace("\r", "\\r") + "\n")
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(serve, host="127.0.0.1", port=0)
    print("port=%d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
