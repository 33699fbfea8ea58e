#!/usr/bin/env python3
"""Reliability measurements of the legacy_server example (TESTING.md,
"Reliability under bad input and overload").

Starts the server binary itself on 127.0.0.1 (one worker), drives one case
against it over loopback only, and prints what it measured. Every case is
bounded in connections and time.

    cargo build --release --example legacy_server
    scripts/server_abuse.py --server target/release/examples/legacy_server CASE

Cases: chunked, trickle, halfhead, fdlimit, burst. Extra server flags go
after `--`, e.g. `... chunked -- --body-frame-limit 4000000`.
"""

import argparse
import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """The server as a child process; its log goes to `log_path`."""

    def __init__(self, binary, extra, nofile=None, log_path="/tmp/server_abuse.log"):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        args = [binary, "--addr", f"{HOST}:{self.port}", "--workers", "1", *extra]
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=limit, env=env
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("server did not start")

    def status(self, field):
        text = open(f"/proc/{self.proc.pid}/status").read()
        return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))

    def cpu_s(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_lines(self, needle):
        with open(self.log_path) as f:
            return sum(needle in line for line in f)

    def stop(self, timeout=60):
        """SIGINT (graceful shutdown); returns seconds until the process exited."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        return time.monotonic() - t0


def read_status(sock, timeout):
    """The status code of the answer, 'closed', 'reset' or 'timeout'."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "reset"
    if not data:
        return "closed"
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1") else "?"


def case_chunked(srv, a):
    """K clients each POST a body of `size` bytes as 1-byte chunks."""
    block = b"1\r\nx\r\n" * 10240
    results = []

    def client():
        s = socket.create_connection((HOST, srv.port))
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(a.size // 10240):
                s.sendall(block)
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # answered early (413) and closed
        results.append(read_status(s, 60))
        s.close()

    rss0, cpu0 = srv.status("VmHWM"), srv.cpu_s()
    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"chunked: {a.clients} client(s) x {a.size} B in 1-byte chunks: "
          f"answers {sorted(set(results))}, server VmHWM {rss0 // 1024} -> "
          f"{srv.status('VmHWM') // 1024} MiB, server CPU {srv.cpu_s() - cpu0:.2f} s, "
          f"wall {time.monotonic() - t0:.2f} s")


async def trickler(port, stop_at, state):
    try:
        r, w = await asyncio.open_connection(HOST, port)
    except OSError:
        state["connect_failed"] += 1
        return
    w.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
    state["open"] += 1
    try:
        while time.monotonic() < stop_at:
            try:
                data = await asyncio.wait_for(r.read(4096), 5)
            except asyncio.TimeoutError:
                w.write(b"x")  # a byte every 5 s
                continue
            if not data:
                break
            if data.startswith(b"HTTP/1.1 "):
                state["answers"][data[9:12].decode()] = state["answers"].get(data[9:12].decode(), 0) + 1
        else:
            return  # still open at the end
    except (ConnectionError, OSError):
        pass
    state["open"] -= 1
    state["closed"] += 1


def case_trickle(srv, a):
    """N connections send a head (Content-Length: 100) and trickle the body."""
    state = {"open": 0, "closed": 0, "connect_failed": 0, "answers": {}}

    async def run():
        stop_at = time.monotonic() + a.seconds
        await asyncio.gather(*(trickler(srv.port, stop_at, state) for _ in range(a.clients)))

    asyncio.run(run())
    print(f"trickle: {a.clients} connections trickling a byte every 5 s for {a.seconds} s: "
          f"{state['open']} still open, {state['closed']} closed by the server, "
          f"answers {state['answers']}, connect failures {state['connect_failed']}")


def case_halfhead(srv, a):
    """One half-sent head plus 100 idle keep-alive connections, then SIGINT."""
    idle = []
    for _ in range(100):
        s = socket.create_connection((HOST, srv.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        s.recv(65536)
        idle.append(s)
    half = socket.create_connection((HOST, srv.port))
    half.sendall(b"GET / HTTP/1.1\r\nHo")
    time.sleep(0.2)
    took = srv.stop(timeout=a.grace + 20)
    print(f"halfhead: shutdown (grace {a.grace} s) with 1 half-sent head + 100 idle "
          f"keep-alive connections took {took:.3f} s" if took is not None else
          "halfhead: server did not exit")


def case_fdlimit(srv, a):
    """RLIMIT_NOFILE=1024 for the server; 1100 idle clients; then new clients."""
    held = []
    for _ in range(a.clients):
        try:
            held.append(socket.create_connection((HOST, srv.port), timeout=2))
        except OSError:
            break
    time.sleep(1)
    n0 = srv.log_lines("accept failed") + srv.log_lines("connection limit")
    waits, answers = [], []
    t_start = time.monotonic()
    t_end = t_start + a.seconds
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        try:
            s = socket.create_connection((HOST, srv.port), timeout=15)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answers.append(read_status(s, 15))
            s.close()
        except OSError as e:
            answers.append(type(e).__name__)
        waits.append(time.monotonic() - t0)
        time.sleep(0.2)
    lines = srv.log_lines("accept failed") + srv.log_lines("connection limit") - n0
    elapsed = time.monotonic() - t_start
    print(f"fdlimit: {len(held)} idle connections held; {len(waits)} new clients over "
          f"{elapsed:.1f} s: answers {sorted(set(answers))}, longest wait {max(waits):.2f} s; "
          f"{lines} accept/limit warning lines = {lines / elapsed:.1f}/s")


def listen_overflows():
    text = open("/proc/net/netstat").read().splitlines()
    for names, values in zip(text[::2], text[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], values.split()[1:]))
            return int(d["ListenOverflows"]), int(d["ListenDrops"])
    return None


async def burst_client(port, state):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), 30)
        w.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 30)
        w.close()
        state[data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "?"] = \
            state.get(data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "?", 0) + 1
    except (OSError, asyncio.TimeoutError) as e:
        state[type(e).__name__] = state.get(type(e).__name__, 0) + 1


def case_burst(srv, a):
    """`clients` connections opened at once, one GET each."""
    state = {}
    before = listen_overflows()
    t0 = time.monotonic()

    async def run():
        await asyncio.gather(*(burst_client(srv.port, state) for _ in range(a.clients)))

    asyncio.run(run())
    after = listen_overflows()
    print(f"burst: {a.clients} connections at once: answers {state}, "
          f"TcpExt ListenOverflows +{after[0] - before[0]}, ListenDrops +{after[1] - before[1]}, "
          f"wall {time.monotonic() - t0:.2f} s")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("case", choices=["chunked", "trickle", "halfhead", "fdlimit", "burst"])
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--size", type=int, default=2_621_440)
    p.add_argument("--seconds", type=int, default=None)
    p.add_argument("--grace", type=int, default=10, help="the server's shutdown grace (10 s in legacy_server)")
    p.add_argument("--nofile", type=int, default=None, help="server's RLIMIT_NOFILE")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra  # server flags (after --)
    defaults = {"chunked": (1, None), "trickle": (2000, 45), "halfhead": (1, None),
                "fdlimit": (1100, 5), "burst": (10000, None)}[a.case]
    a.clients = a.clients or defaults[0]
    a.seconds = a.seconds or defaults[1]
    if a.case == "fdlimit":
        a.nofile = a.nofile or 1024
    srv = Server(a.server, a.extra, nofile=a.nofile)
    try:
        globals()[f"case_{a.case}"](srv, a)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
