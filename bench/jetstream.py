"""JetStream sink benchmark: records/s the NATS sink publishes (each acknowledged by the
stream), for fresh records and for a redelivered batch that JetStream drops as duplicates.

Run `python -m bench.jetstream [records]` with NATS JetStream at 127.0.0.1:4222; it uses a
stream of its own and deletes it afterwards. Batches are the forwarder's default 1,000 records.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from gateway.sinks.jetstream import JetStreamSink
from tests.natsd import jetstream
from tests.pg import make_record

URL = "nats://127.0.0.1:4222"
BATCH = 1000


async def run(total: int) -> None:
    stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
    sink = JetStreamSink(URL, stream=stream, subject_prefix=f"bench_{stream.lower()}",
                         duplicate_window=600)  # fmt: skip
    objects = [make_record(f"s{i}").as_json() for i in range(total)]
    await sink.open()
    try:
        for label in ("fresh", "redelivered"):
            start = time.perf_counter()
            for i in range(0, total, BATCH):
                await sink.write_objects(objects[i : i + BATCH])
            elapsed = time.perf_counter() - start
            print(f"{label:12} {total / elapsed:>10,.0f} records/s  ({sink.duplicates} duplicates)")
        async with jetstream(URL) as js:
            stored = (await js.stream_info(stream)).state.messages
        print(f"stored       {stored:>10,} messages for {total:,} records")
    finally:
        await sink.close()
        async with jetstream(URL) as js:
            await js.delete_stream(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=int, nargs="?", default=50_000)
    asyncio.run(run(parser.parse_args().records))


if __name__ == "__main__":
    main()
