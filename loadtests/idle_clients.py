#!/usr/bin/env python3
"""Opens many keep-alive HTTP/1.1 connections, sends one request on each, then keeps them open and idle.

Used by loadtests/run.sh (scenario 5) to measure a proxy's resident memory with 10,000 idle client
connections. Connections alternate over the given targets (e.g. one IPv4, one IPv6 address), at most
--parallel handshakes in flight at once. When every connection has had its answer, the script writes a
JSON summary to --ready-file and holds the connections until --hold seconds pass or the file named by
--release-file appears; then it closes them and exits (0 when every request got a 2xx answer).
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time


async def one(host, port, host_header, sem, conns, stats, deadline):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=max(0.1, deadline - time.monotonic())
            )
        except (OSError, asyncio.TimeoutError) as e:
            stats["connect_errors"] += 1
            stats["last_error"] = f"connect {host}:{port}: {e!r}"
            return
        try:
            writer.write(f"GET / HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: idle-clients\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=max(0.1, deadline - time.monotonic()))
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout=max(0.1, deadline - time.monotonic()))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            stats["request_errors"] += 1
            stats["last_error"] = f"request {host}:{port}: {e!r}"
            writer.close()
            return
        if 200 <= status < 300:
            stats["ok"] += 1
        else:
            stats["non_2xx"] += 1
        conns.append((reader, writer))


async def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", action="append", required=True, help="HOST:PORT; IPv6 as [::1]:PORT")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=256)
    ap.add_argument("--host-header", default="bench.test")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--hold", type=float, default=30.0)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--release-file", required=True)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    targets = []
    for t in args.target:
        host, _, port = t.rpartition(":")
        targets.append((host.strip("[]"), int(port)))

    stats = {"ok": 0, "non_2xx": 0, "connect_errors": 0, "request_errors": 0, "last_error": None}
    conns = []
    sem = asyncio.Semaphore(args.parallel)
    started = time.monotonic()
    deadline = started + args.open_timeout
    await asyncio.gather(
        *(one(*targets[i % len(targets)], args.host_header, sem, conns, stats, deadline) for i in range(args.conns))
    )
    stats["open"] = len(conns)
    stats["requested"] = args.conns
    stats["open_seconds"] = round(time.monotonic() - started, 3)
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.rename(tmp, args.ready_file)
    hold_until = time.monotonic() + args.hold
    while time.monotonic() < hold_until and not os.path.exists(args.release_file):
        await asyncio.sleep(0.05)
    # Were they all still open? A proxy that closed idle connections early shows up here.
    still_open = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    print(json.dumps({**stats, "still_open_at_release": still_open}))
    return 0 if stats["ok"] == args.conns else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
