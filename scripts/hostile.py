#!/usr/bin/env python3
"""The hostile suite at full size: the figures README's section on limits
quotes. tests/hostile.rs runs the small versions in CI; this runs the big
ones (10 s floods, 20,000 datagrams) against a release build and prints
what the server's memory did and when it let go.

    cargo build --release && python3 scripts/hostile.py [--quick]

Only loopback and Unix sockets; every server it starts is killed at the end.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "socklab")
QUICK = "--quick" in sys.argv
FLOOD_S = 3 if QUICK else 10


def tree(pid):
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        i += 1
    return pids


def rss_kb(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    def __init__(self, *args, listen="tcp:127.0.0.1:0"):
        self.proc = subprocess.Popen(
            [BIN, "serve", *args, "--listen", listen],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().decode().strip()
        self.addr = line.removeprefix("listening on ")
        kind, rest = self.addr.split(":", 1)
        host, port = rest.rsplit(":", 1)
        self.kind, self.host, self.port = kind, host, int(port)

    def connect(self, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect((self.host, self.port))
        s.settimeout(10)
        return s

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def closed_within(sock, limit):
    """Seconds until the server closes `sock` (reading what it sent), or None."""
    start = time.time()
    sock.settimeout(0.2)
    while time.time() - start < limit:
        try:
            if not sock.recv(65536):
                return time.time() - start
        except socket.timeout:
            continue
        except OSError:
            return time.time() - start
    return None


def chat(model):
    server = Server("--model", model, "--service", "chat")
    try:
        before = rss_kb(server.proc.pid)
        reader, deaf, talker = server.connect(), server.connect(rcvbuf=4096), server.connect()
        reader.recv(4096)
        talker.recv(4096)
        line = b"x" * 1023 + b"\n"
        sent = [0]
        stop = time.time() + FLOOD_S

        def talk():
            talker.settimeout(1)
            while time.time() < stop:
                try:
                    talker.sendall(line)
                    sent[0] += 1
                except socket.timeout:
                    pass  # Held back: the room is behind.

        t = threading.Thread(target=talk)
        t.start()
        got, buf, peak = 0, b"", before
        while t.is_alive() or got < sent[0]:
            try:
                data = reader.recv(1 << 16)
            except socket.timeout:
                break
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            got += sum(1 for l in lines if l.startswith(b"<guest"))
            peak = max(peak, rss_kb(server.proc.pid))
        t.join()
        dropped = closed_within(deaf, 10) is not None
        print(
            f"chat     {model:9} sent {sent[0]:7,} lines in {FLOOD_S} s, reader got {got:7,}, "
            f"deaf member dropped: {'yes' if dropped else 'NO'}, RSS growth {(peak - before) / 1024:6.1f} MiB"
        )
    finally:
        server.stop()


def delay_flood(model, listen="tcp:127.0.0.1:0"):
    server = Server("--model", model, "--delay", "5s", listen=listen)
    try:
        before = peak = rss_kb(server.proc.pid)
        s = server.connect()
        s.setblocking(False)
        request = b"y" * 511
        sent, stop = 0, time.time() + FLOOD_S
        while time.time() < stop:
            try:
                sent += s.send(request)
            except BlockingIOError:
                time.sleep(0.01)
            peak = max(peak, rss_kb(server.proc.pid))
        s.close()
        print(
            f"delay    {model:9} pipelined {sent / 1048576:7.1f} MiB in {FLOOD_S} s without reading, "
            f"RSS growth {(peak - before) / 1024:6.1f} MiB"
        )
    finally:
        server.stop()


def udp(model):
    server = Server("--model", model, listen="udp:127.0.0.1:0")
    try:
        before = peak = rss_kb(server.proc.pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # Replies mostly dropped: fine.
        body = b"z" * 60_000
        n = 2000 if QUICK else 20_000
        for i in range(n):
            s.sendto(b"#%d " % i + body, (server.host, server.port))
            if i % 200 == 0:
                peak = max(peak, rss_kb(server.proc.pid))
                time.sleep(0.002)  # Let the server keep up rather than the kernel drop.
        time.sleep(0.5)
        peak = max(peak, rss_kb(server.proc.pid))
        print(f"udp      {model:9} {n:,} datagrams of 60 KB with distinct IDs, RSS growth {(peak - before) / 1024:6.1f} MiB")
    finally:
        server.stop()


def udp_delay(model):
    server = Server("--model", model, "--delay", "5s", listen="udp:127.0.0.1:0")
    try:
        before = peak = rss_kb(server.proc.pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        n = 20_000 if QUICK else 200_000
        for i in range(n):
            s.sendto(b"x" * 500, (server.host, server.port))
            if i % 2000 == 0:
                peak = max(peak, rss_kb(server.proc.pid))
        time.sleep(0.5)
        peak = max(peak, rss_kb(server.proc.pid))
        print(f"udp      {model:9} --delay 5s, {n:,} datagrams of 500 B, RSS growth {(peak - before) / 1024:6.1f} MiB")
    finally:
        server.stop()


def timeouts(model, idle="2s"):
    limits = ["--idle-timeout", idle] if idle else []
    server = Server("--model", model, "--framing", "line", *limits)
    try:
        trickler = server.connect()
        start = time.time()
        result = {}

        def trickle():
            while "closed" not in result and time.time() - start < 20:
                try:
                    trickler.send(b"1")
                except OSError:
                    return
                time.sleep(1)

        threading.Thread(target=trickle, daemon=True).start()
        result["closed"] = closed_within(trickler, 20 if idle else 3)
        trickler.close()  # Without --idle-timeout it would hold iterative for ever.
        never = server.connect(rcvbuf=4096)
        never.setblocking(False)
        start_never = time.time()
        try:
            while True:
                never.send(b"w" * 4095 + b"\n")
        except BlockingIOError:
            pass
        # Meanwhile (iterative: after), a well-behaved client.
        ok = server.connect(rcvbuf=None)
        ok.settimeout(40)
        ok.sendall(b"hi\n")
        t = time.time()
        served = ok.recv(10) == b"hi\n"
        served_after = time.time() - t
        dropped = closed_within(never, 40)
        dropped = None if dropped is None else time.time() - start_never
        fmt = lambda x: "never" if x is None else f"{x:5.1f} s"
        print(
            f"timeouts {model:9} {' '.join(limits) or 'no --idle-timeout'}: trickle dropped after {fmt(result['closed'])}, "
            f"never-reader after {fmt(dropped)}, another client {'served' if served else 'NOT served'} "
            f"after {served_after:4.1f} s"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    for m in ["thread", "pool", "busy", "select", "poll", "epoll", "async", "uring"]:
        chat(m)
    for m in ["iterative", "thread", "pool", "fork", "prefork", "busy", "select", "poll", "epoll", "async", "uring"]:
        delay_flood(m)
    for m in ["iterative", "pool", "epoll", "async"]:
        udp(m)
    for m in ["epoll", "async"]:
        udp_delay(m)
    for m in ["iterative", "pool", "prefork", "epoll", "uring"]:
        timeouts(m)
    timeouts("iterative", idle=None)  # Only --write-timeout (30 s) lets go.
