#!/usr/bin/env python3
"""Tiny TCP load tool for kdev's benchmarks (loopback only).

  serve PORT                 echo server on 127.0.0.1:PORT
  first ADDR SINCE           poll until an echo round trip succeeds; print seconds since SINCE (epoch)
  measure ADDR [MB] [N]      throughput (MB echoed through) and N round-trip latencies
  connects ADDR N            N new connections, each connect + 1 byte echoed; p50 in ms
                             (the name looked up once, before)
  dns NAME N                 N lookups of NAME (getaddrinfo, as an app does); p50 in ms

ADDR is PORT (on 127.0.0.1) or HOST:PORT.
"""
import socket
import statistics
import sys
import threading
import time


def serve(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(512)

    def echo(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                data = conn.recv(262144)
                if not data:
                    return
                conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def address(text):
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


def round_trip(addr, timeout=2.0):
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(b"ping")
        return s.recv(4) == b"ping"


def first(addr, since):
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if round_trip(addr):
                print(f"{time.time() - since:.2f}")
                return
        except OSError:
            pass
        time.sleep(0.02)
    sys.exit("no answer within 120s")


def measure(addr, megabytes=64, rounds=500):
    chunk = bytes(range(256)) * 256  # 64 KiB
    total = megabytes * 1024 * 1024
    with socket.create_connection(addr, timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received = 0

        def reader():
            nonlocal received
            while received < total:
                data = s.recv(262144)
                if not data:
                    return
                received += len(data)

        t = threading.Thread(target=reader)
        start = time.perf_counter()
        t.start()
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
        t.join()
        elapsed = time.perf_counter() - start
    if received < total:
        sys.exit(f"lost bytes: {received} of {total}")
    with socket.create_connection(addr, timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            s.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(s.recv(64 - got))
            samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"{megabytes / elapsed:.1f} {statistics.median(samples):.0f} {p99:.0f}")


def connects(addr, n):
    # The name is looked up once: `dns` measures lookups, this the
    # connections alone, as to an address.
    family, kind, proto, _, resolved = socket.getaddrinfo(*addr, socket.AF_INET, socket.SOCK_STREAM)[0]
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.create_connection(resolved, timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"x")
            if s.recv(1) != b"x":
                sys.exit("no echo")
        samples.append((time.perf_counter() - start) * 1e3)
    print(f"{statistics.median(samples):.2f}")


def dns(name, n):
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
        samples.append((time.perf_counter() - start) * 1e3)
    print(f"{statistics.median(samples):.2f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(int(args[0]))
    elif cmd == "first":
        first(address(args[0]), float(args[1]))
    elif cmd == "measure":
        measure(address(args[0]), *(int(a) for a in args[1:]))
    elif cmd == "connects":
        connects(address(args[0]), int(args[1]))
    elif cmd == "dns":
        dns(args[0], int(args[1]))
    else:
        sys.exit(__doc__)
