#!/usr/bin/env python3
"""Runs every command of the `sh` blocks of README.md and of the book
(docs/src/**/*.md, in SUMMARY.md's order), as written and in order, and
checks that each does what the page shows. (Recipes for other machines,
such as the ssh/pdsh one, and commands still being built are `bash`
blocks: shown, not run.)

    python3 scripts/readme.py                 # everything but the set-up blocks
    python3 scripts/readme.py --with-setup    # also `cargo run --release -- lab`
                                              # and `cargo test` (minutes)
    python3 scripts/readme.py PAGE...         # only these pages, e.g. README.md
                                              # docs/src/commands/bench.md
    python3 scripts/readme.py --at 840 PAGE   # only the block holding line 840
    python3 scripts/readme.py --help          # this text

`socklab` is target/release/socklab (built first). Commands run from the
repository's root, as a reader would run them, with HOME in a temp dir (so
the completion files land there). What counts as "what the page shows":

- `$ command` followed by lines: the command's output is those lines.
- `command   # words → a / b`: the output holds `a`, then `b`.
- a ```text block right after an ```sh block: the output of the block's
  last command.
- every command exits 0.

Outputs are compared with every number made `#`, so a port, a time or a
latency matches any other. A server (`socklab serve`, `socklab listen`, a
relay with a listening address) runs in the background until it announces
`listening on ...` (its readiness signal, never a sleep); with `&` it stays
up until the end of its block, as a job would in the reader's shell;
without, it is the reader's other terminal, stopped with Ctrl-C (SIGINT)
when the next one starts or at the block's end. A foreground server with no
client in its block is checked to accept a connection.
"""

import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BOOK = os.path.join(ROOT, "docs", "src")
START_TIMEOUT = 15  # seconds for a server to announce itself
CLIENT_TIMEOUT = 120  # seconds for any one client command
SETUP = ("cargo run --release -- lab", "cargo test")
SETUP_DONE = set()  # README and the book's Set-up show the same block: run it once

# Seed 003's UDP client (Liao Xuefeng's tutorial), which the UDP page runs as
# `python3 clientudp.py`: written into the working directory for the run.
SEED_003_UDP_CLIENT = """import socket

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for data in [b'message1', b'message2', b'message3', b'message4', b'message5']:
    # 发送数据:
    s.sendto(data, ('127.0.0.1', 9999))
    # 接收数据:
    print(s.recv(1024).decode('utf-8'))
s.close()
"""


def shape(text):
    """Text with every number (digits, with , and . inside) made `#`."""
    return re.sub(r"\d[\d,.]*\d|\d", "#", text)


def blocks(readme):
    """The sh blocks, each a list of (line number, line), and the text
    block that follows each, if one does with only blank lines between."""
    lines = readme.split("\n")
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        body, i = [], i + 1
        while not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        shown = None
        if j < len(lines) and lines[j].strip() == "```text":
            shown, j = [], j + 1
            while not lines[j].startswith("```"):
                shown.append(lines[j])
                j += 1
        found.append((body, shown))
    return found


def split_comment(line):
    """(command, comment): the comment is what follows a ` #` outside quotes."""
    quote = None
    for k, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and k > 0 and line[k - 1] == " ":
            return line[:k].rstrip(), line[k + 1 :].strip()
    return line.rstrip(), ""


class Step:
    """One command of a block, with what its page says it prints."""

    def __init__(self, lineno, command, comment):
        self.lineno, self.comment = lineno, comment
        self.background = command.endswith("&") and not command.endswith("&&")
        self.command = command.rstrip("&").strip()
        self.shown = []  # lines after a `$ command`

    def words(self):
        try:
            return shlex.split(self.command)
        except ValueError:
            return []

    def is_server(self):
        w = self.words()
        if len(w) < 2 or w[0] != "socklab":
            return False
        if w[1] in ("serve", "listen"):
            return True
        return w[1] == "relay" and len(w) > 2 and "listen" in w[2].lower()

    def expected(self):
        _, arrow, shown = self.comment.partition("→")
        return [p.strip() for p in shown.split(" / ")] if arrow else []


def joined(body):
    """The lines with each `\\` continuation joined to the next, as the
    shell reads them."""
    out = []
    for lineno, line in body:
        if out and out[-1][1].endswith("\\"):
            out[-1] = (out[-1][0], out[-1][1][:-1] + " " + line.strip())
        else:
            out.append((lineno, line))
    return out


def steps(body):
    out = []
    body = joined(body)
    prompted = any(line.startswith("$ ") for _, line in body)
    for lineno, line in body:
        if not line.strip() or line.startswith("#"):
            continue  # a comment line: for the reader
        if line.startswith("$ "):
            command, comment = split_comment(line[2:])
        elif out and prompted:
            out[-1].shown.append(line)  # the output of the `$ command` above
            continue
        else:
            command, comment = split_comment(line)
        # `server &  client` on one line: two steps.
        parts = re.split(r"(?<=[^&]&)\s+", command)
        for k, part in enumerate(parts):
            out.append(Step(lineno, part, comment if k == len(parts) - 1 else ""))
    return out


class Server:
    """A server command running in its own session, with its output read
    by two threads so that nothing it prints can block it."""

    def __init__(self, step, env):
        self.step = step
        # `exec`: the signal reaches the server, not a shell that dies of it.
        self.proc = subprocess.Popen(
            "exec " + step.command,
            shell=True,
            executable="/bin/bash",
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        self.lines = queue.Queue()
        self.announced = []
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self.pump, args=(stream,), daemon=True).start()

    def pump(self, stream):
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_ready(self):
        want = max(1, self.step.words().count("--listen"))
        deadline = time.monotonic() + START_TIMEOUT
        log = []
        while len(self.announced) < want:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise Failure(self.step, "did not announce `listening on ...`", log)
            log.append(line)
            m = re.search(r"listening on (\S+)", line)
            if m:
                self.announced.append(m.group(1))
            elif self.proc.poll() is not None and self.lines.empty():
                raise Failure(self.step, f"exited {self.proc.returncode} before listening", log)

    def probe(self):
        """Connects to each stream address announced, as a first client would."""
        for addr in self.announced:
            kind, _, rest = addr.partition(":")
            if kind == "unix":
                s = socket.socket(socket.AF_UNIX)
                target = rest
            elif kind == "tcp":
                host, _, port = rest.rpartition(":")
                family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
                host = host.strip("[]")
                if host in ("0.0.0.0", "::"):
                    host, family = "127.0.0.1", socket.AF_INET
                s = socket.socket(family)
                target = (host, int(port))
            else:
                continue
            with s:
                s.settimeout(5)
                try:
                    s.connect(target)
                except OSError as e:
                    raise Failure(self.step, f"announced {addr} but refused a connection: {e}", [])

    def stop(self, sig):
        """Ctrl-C (foreground) or kill (a background job); waits for exit."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise Failure(self.step, "did not exit within 10 s of the signal", [])


class Failure(Exception):
    def __init__(self, step, why, output):
        super().__init__(f"{step.page} line {step.lineno}: `{step.command}`: {why}")
        self.output = output


def check_output(step, out, shown_block):
    lines = [l for l in out.split("\n") if l.strip()]
    got = shape("\n".join(lines))
    for want in step.expected():
        at = got.find(shape(want))
        if at < 0:
            raise Failure(step, f"the page says it prints `{want}`", lines)
        got = got[at + len(shape(want)) :]
    for shown in (step.shown, shown_block or []):
        shown = [l for l in shown if l.strip()]
        if shown and [shape(l) for l in lines] != [shape(l) for l in shown]:
            raise Failure(step, "printed what the page does not show:\n  " + "\n  ".join(shown), lines)


def run_client(step, env):
    try:
        done = subprocess.run(
            step.command,
            shell=True,
            executable="/bin/bash",
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise Failure(step, f"still running after {CLIENT_TIMEOUT} s", [])
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise Failure(step, f"exited {done.returncode}", out.split("\n")[-20:])
    return done.stdout if step.words()[:1] == ["socklab"] else out


def run_block(page, body, shown_block, env, with_setup):
    todo = steps(body)
    for step in todo:
        step.page = page
    if todo and all(s.command in SETUP for s in todo):
        commands = tuple(s.command for s in todo)
        if not with_setup:
            print(f"  skipped (set-up: --with-setup runs it): {', '.join(commands)}")
            return
        if commands in SETUP_DONE:
            print(f"  skipped (set-up, run already on another page): {', '.join(commands)}")
            return
        SETUP_DONE.add(commands)
    jobs, foreground = [], None
    has_client = any(not s.is_server() for s in todo)
    try:
        for k, step in enumerate(todo):
            print(f"  {step.lineno:4}  {step.command}", flush=True)
            last = k == len(todo) - 1
            if step.is_server():
                if not step.background and foreground:
                    stop_foreground(foreground)
                    foreground = None
                server = Server(step, env)
                if step.background:
                    jobs.append(server)
                else:
                    foreground = server
                server.wait_ready()
                if step.shown:
                    shown = ["listening on " + a for a in server.announced]
                    check_output(step, "\n".join(shown), None)
                if not has_client:
                    server.probe()
            else:
                out = run_client(step, env)
                check_output(step, out, shown_block if last else None)
        if foreground:
            stop_foreground(foreground)
            foreground = None
    finally:
        for server in ([foreground] if foreground else []) + jobs:
            server.stop(signal.SIGTERM)


def stop_foreground(server):
    """Ctrl-C: `serve` promises to exit 0 (the book's `socklab serve`); the
    others may also die of the signal, as nc and socat do."""
    code = server.stop(signal.SIGINT)
    allowed = {0} if server.step.words()[1] == "serve" else {0, 130, -signal.SIGINT}
    if code not in allowed:
        raise Failure(server.step, f"exited {code} on Ctrl-C", [])


def book_pages():
    """The book's pages: SUMMARY.md's links in order, then any page it does
    not link (so none is left unchecked)."""
    pages = []
    summary = os.path.join(BOOK, "SUMMARY.md")
    if os.path.exists(summary):
        with open(summary) as f:
            for link in re.findall(r"\]\(([^)]+\.md)\)", f.read()):
                path = os.path.normpath(os.path.join(BOOK, link))
                if os.path.exists(path) and path not in pages:
                    pages.append(path)
    for dirpath, _, files in sorted(os.walk(BOOK)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if name.endswith(".md") and name != "SUMMARY.md" and path not in pages:
                pages.append(path)
    return pages


def usage(code):
    try:
        print(__doc__.strip())
    except BrokenPipeError:  # `--help | head`: the reader has what they wanted
        pass
    sys.exit(code)


def main():
    args = sys.argv[1:]
    if "--help" in args or "-h" in args:
        usage(0)
    with_setup = "--with-setup" in args
    at = None
    if "--at" in args:
        k = args.index("--at")
        try:
            at = int(args[k + 1])
        except (IndexError, ValueError):
            print("error: --at takes a line number", file=sys.stderr)
            usage(2)
        del args[k : k + 2]
    args = [a for a in args if a != "--with-setup"]
    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        print(f"error: unknown option {unknown[0]}", file=sys.stderr)
        usage(2)
    if args:
        pages = [os.path.abspath(a) for a in args]
        missing = [p for p in pages if not os.path.exists(p)]
        if missing:
            print(f"error: no such page: {missing[0]}", file=sys.stderr)
            sys.exit(2)
    else:
        pages = [README] + book_pages()
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    home = tempfile.mkdtemp(prefix="socklab-readme-")
    env = dict(os.environ)
    env["PATH"] = os.path.join(ROOT, "target", "release") + os.pathsep + env["PATH"]
    env["HOME"] = home
    env["CARGO_HOME"] = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    env["RUSTUP_HOME"] = os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))
    before = set(os.listdir(ROOT))
    seed = os.path.join(ROOT, "clientudp.py")
    with open(seed, "w") as f:
        f.write(SEED_003_UDP_CLIENT)
    failures = total = 0
    try:
        for page in pages:
            name = os.path.relpath(page, ROOT)
            with open(page) as f:
                found = blocks(f.read())
            if at is not None:
                found = [(b, t) for b, t in found if b and b[0][0] <= at <= b[-1][0]]
            if not found:
                continue
            print(f"{name}: {len(found)} blocks", flush=True)
            total += len(found)
            for body, shown in found:
                try:
                    run_block(name, body, shown, env, with_setup)
                except Failure as e:
                    failures += 1
                    print(f"FAIL {e}")
                    for line in e.output[-20:]:
                        print(f"      | {line}")
    finally:
        for name in set(os.listdir(ROOT)) - before:
            path = os.path.join(ROOT, name)
            if os.path.isfile(path):
                os.remove(path)
    print(f"{len(pages)} pages, {total} blocks, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
