"""The floor under a broadcast wake: how fast can one process put one small answer on each of
N loopback TCP connections, with nothing else to do?

    python bench/send_floor.py --connections 10000
    python bench/send_floor.py --connections 10000 --threads 2

A push that changes every device's document must write one answer to each held poll. This
script measures the part no server code can remove: the ``send`` system calls themselves. It
opens N keep-alive connections from a receiver process (an event loop reading every socket,
as ``bench/server_load.py``'s simulated agents do) to this process, lets them idle, then writes
one answer-sized message to each in a plain loop: no HTTP, no lookup, no bookkeeping. Arrival
is the kernel's receive timestamp of each message (``SO_TIMESTAMPNS``), as in
``server_load.py``, and latency counts from the moment the loop starts.

So the figures are a lower bound for ``server_load.py``'s "push → document" on the same
machine, which adds the push request, reading the new revision and the HTTP answer's own work.
On loopback a ``send`` also does the receiving side's TCP work, on the sender's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from server_load import SO_TIMESTAMPNS, _pct  # the same timestamps and percentiles


# -- the receiver: N idle connections, each stamping the arrival of every message ----------------
async def _receive(port: int, count: int, size: int) -> list[list[float]]:
    loop = asyncio.get_running_loop()
    stamps: list[list[float]] = [[] for _ in range(count)]
    pending: list[int] = [0] * count  # bytes of the current message still to come
    done = loop.create_future()
    open_count = [count]
    socks = []

    def readable(i: int, sock: socket.socket) -> None:
        try:
            data, ancillary, _, _ = sock.recvmsg(65536, 64)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            loop.remove_reader(sock.fileno())
            open_count[0] -= 1
            if open_count[0] == 0 and not done.done():
                done.set_result(None)
            return
        stamp = time.time()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec + nsec / 1e9
        remaining = len(data)
        while remaining:
            if pending[i] == 0:
                pending[i] = size
            used = min(remaining, pending[i])
            pending[i] -= used
            remaining -= used
            if pending[i] == 0:
                stamps[i].append(stamp)  # the kernel's time for the message's last bytes

    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        loop.add_reader(sock.fileno(), readable, i, sock)
        socks.append(sock)
    print("connected", flush=True)
    await done
    for sock in socks:
        sock.close()
    return stamps


def receiver(port: int, count: int, size: int) -> None:
    try:
        import uvloop  # the simulator's loop in server_load.py too
    except ImportError:
        stamps = asyncio.run(_receive(port, count, size))
    else:
        stamps = uvloop.run(_receive(port, count, size))
    json.dump(stamps, sys.stdout)


# -- the sender: this process ---------------------------------------------------------------------
def _write_all(conns: list[socket.socket], message: bytes) -> None:
    for conn in conns:
        conn.send(message)  # a fresh connection's buffer takes it whole: never blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--size", type=int, default=540, help="bytes per answer (server_load.py's: 541)"
    )
    parser.add_argument("--threads", type=int, default=1, help="writer threads")
    parser.add_argument("--receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.receiver:
        receiver(args.receiver, args.connections, args.size)
        return

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    argv = [sys.executable, os.path.abspath(__file__), "--receiver", str(port)]
    argv += ["--connections", str(args.connections), "--size", str(args.size)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    conns = []
    for _ in range(args.connections):
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn's
        conns.append(conn)
    listener.close()
    assert child.stdout is not None
    if child.stdout.readline().strip() != "connected":
        sys.exit("the receiver did not connect")

    message = b"x" * args.size
    chunks = [conns[i :: args.threads] for i in range(args.threads)]
    starts, writes = [], []
    for _ in range(args.rounds):
        time.sleep(1.5)  # every receiving socket idle, its reader asleep in the event loop
        started = time.time()
        begun = time.perf_counter()
        if args.threads == 1:
            _write_all(conns, message)
        else:
            threads = [threading.Thread(target=_write_all, args=(c, message)) for c in chunks]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        writes.append((time.perf_counter() - begun) * 1000)
        starts.append(started)
    time.sleep(1)
    for conn in conns:
        conn.close()
    stamps = json.loads(child.stdout.read())
    child.wait()

    rounds: list[dict[str, Any]] = []
    for r, started in enumerate(starts):
        arrived = [(s[r] - started) * 1000 for s in stamps if len(s) > r]
        rounds.append(
            {
                "arrived": len(arrived),
                "write_all_ms": round(writes[r], 1),
                "per_send_us": round(writes[r] * 1000 / args.connections, 2),
                "p50_ms": round(_pct(arrived, 50), 1),
                "p99_ms": round(_pct(arrived, 99), 1),
            }
        )
    result = {
        "connections": args.connections,
        "size": args.size,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "rounds": rounds,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
