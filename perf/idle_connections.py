#!/usr/bin/env python3
"""Memory footprint of idle MLLP connections on mllpd (issue 3 item 10).

Starts the release binary on 127.0.0.1, opens connections in steps (default 1, 1 000, 10 000),
each left idle, and after every step reads the server's memory: VmRSS from /proc/PID/status
and Rss, Pss and Private (clean + dirty) from /proc/PID/smaps_rollup. It prints the baseline,
the figure at every step, and bytes per idle connection taken from the slope between the last
two steps (the first connection alone mostly measures page granularity and one-off set-up).

Two passes, each with a fresh server: connections that were only opened ("connect"), and
connections that carried one message and its ACK first ("round-trip"), which is what a real
interface engine leaves behind between messages. Goal: 10 000 idle connections within 256 MiB.

Only loopback traffic; every loop is bounded by the step sizes and by timeouts.
Python 3 standard library only. Usage:

    python3 perf/idle_connections.py                  # build, then both passes, 1/1000/10000
    python3 perf/idle_connections.py --steps 1,1000,5000 --mode round-trip --shards 1
"""

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SB, EB, CR = b"\x0b", b"\x1c", b"\r"
MIB = 1024 * 1024
GOAL_BYTES = 256 * MIB


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,1000,10000",
                        help="cumulative connection counts to measure at (default 1,1000,10000)")
    parser.add_argument("--mode", choices=["connect", "round-trip", "both"], default="both",
                        help="open only, or one message round trip per connection first")
    parser.add_argument("--shards", type=int, default=None,
                        help="SHARDS for the server (default: the server's, one per CPU)")
    parser.add_argument("--binary", type=Path, default=None,
                        help="mllpd binary (default: build and use the release binary)")
    parser.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    parser.add_argument("--settle-seconds", type=float, default=1.0,
                        help="quiet time before each reading (default 1s)")
    return parser.parse_args()


def release_binary(args):
    """Builds (unless told not to) and returns the release binary's path."""
    if args.binary:
        return args.binary
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "mllpd"],
                       cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    built = target / "release" / "mllpd"
    if not built.exists():
        sys.exit(f"no binary at {built}")
    # A shared target directory may get another checkout's build at any time: run a copy.
    copy = Path(tempfile.mkdtemp(prefix="mllpd-bin-")) / "mllpd"
    shutil.copy2(built, copy)
    return copy


def raise_nofile(needed):
    """Raises RLIMIT_NOFILE of this process (and of children, which inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            sys.exit(f"RLIMIT_NOFILE hard limit {hard} < {needed}; run as root or with "
                     f"`prlimit --nofile={needed}`")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """The mllpd process under test; logs go to a file so a full pipe cannot stall it."""

    def __init__(self, binary, connections_max, shards, workdir):
        self.port = free_port()
        self.log_path = Path(workdir) / "mllpd.log"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "MAX_CONNECTIONS": str(connections_max),
            "IDLE_TIMEOUT": "10m",
            "LOG_LEVEL": "info",
            "LOG_FORMAT": "text",
            "NO_COLOR": "1",
            "DATA_DIR": str(Path(workdir) / "data"),
        }
        if shards:
            env["SHARDS"] = str(shards)
        if os.environ.get("SOCKET_IO"):
            env["SOCKET_IO"] = os.environ["SOCKET_IO"]
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(binary)], env=env, stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.start_line = self._wait_start_line()

    def _wait_start_line(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"mllpd exited ({self.process.returncode}):\n{self.log_path.read_text()}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                if "listen=" in line:
                    return line.split("INFO", 1)[-1].strip()
            time.sleep(0.05)
        self.stop()
        sys.exit("mllpd printed no start line within 20s")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def memory(self):
        """VmRSS and the smaps_rollup figures, in bytes."""
        pid = self.process.pid
        figures = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                figures[line.split(":")[0]] = int(line.split()[1]) * 1024
        rollup = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            rollup[key] = int(value.split()[0]) * 1024
        figures["Pss"] = rollup.get("Pss", 0)
        figures["Private"] = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
        figures["Anonymous"] = rollup.get("Anonymous", 0)
        figures["AnonHugePages"] = rollup.get("AnonHugePages", 0)
        return figures

    def stop(self):
        self.process.kill()
        self.process.wait()
        self.log.close()


def adt(control_id):
    return (f"MSH|^~\\&|PERF|HUB|MLLPD|HUB|20260101120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r"
            "EVN|A01|20260101120000\r"
            "PID|1||12345^^^HOSP^MR||DOE^JOHN||19800101|M\r"
            "PV1|1|I|WARD^101^1\r").encode()


def round_trip(sock, control_id):
    """Sends one framed message and reads its ACK; fails unless MSA-2 echoes the control id."""
    sock.sendall(SB + adt(control_id) + EB + CR)
    received = b""
    while not received.endswith(EB + CR):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection {control_id} closed before its ACK")
        received += chunk
    if f"|{control_id}".encode() not in received or b"MSA|AA|" not in received:
        raise RuntimeError(f"unexpected ACK for {control_id}: {received!r}")


def open_connections(server, sockets, count, with_round_trip):
    """Opens connections until `count` are open; each does one round trip if asked."""
    while len(sockets) < count:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if with_round_trip:
            round_trip(sock, f"PERF-{len(sockets)}")
        sockets.append(sock)


def settle(server, fds_expected, quiet_seconds, closing=False):
    """Waits until the server holds `fds_expected` fds (at least, or at most when `closing`)
    and its RSS stops moving."""
    deadline = time.monotonic() + 60
    # After a round trip each shard also holds its journal segment (and, closing, may keep it):
    # allow a few descriptors above the connection-free baseline when closing.
    slack = 8 if closing else 0
    while (server.fd_count() > fds_expected + slack) if closing else (server.fd_count() < fds_expected):
        if time.monotonic() > deadline:
            sys.exit(f"server holds {server.fd_count()} fds, expected {fds_expected}; "
                     f"see {server.log_path}")
        time.sleep(0.05)
    previous = server.memory()["VmRSS"]
    while True:
        time.sleep(quiet_seconds)
        current = server.memory()["VmRSS"]
        if abs(current - previous) <= 64 * 1024 or time.monotonic() > deadline:
            return server.memory()
        previous = current


def fmt_mib(value):
    return f"{value / MIB:8.2f} MiB"


def print_row(label, figures, baseline):
    delta = figures["VmRSS"] - baseline["VmRSS"]
    print(f"  {label:>22}  VmRSS {fmt_mib(figures['VmRSS'])}  Pss {fmt_mib(figures['Pss'])}  "
          f"Private {fmt_mib(figures['Private'])}  (+{delta / 1024:,.0f} KiB over baseline)")


def run_pass(binary, steps, with_round_trip, shards, quiet_seconds):
    """One fresh server, connections opened step by step; returns the readings."""
    mode = "round-trip" if with_round_trip else "connect"
    with tempfile.TemporaryDirectory(prefix="mllpd-idle-") as workdir:
        server = Server(binary, steps[-1] + 10, shards, workdir)
        sockets = []
        try:
            print(f"\n== mode {mode}: {server.start_line}")
            fds_baseline = server.fd_count()
            baseline = settle(server, fds_baseline, quiet_seconds)
            print_row("baseline", baseline, baseline)
            readings = [(0, baseline)]
            for step in steps:
                open_connections(server, sockets, step, with_round_trip)
                figures = settle(server, fds_baseline + step, quiet_seconds)
                print_row(f"{step:,} idle", figures, baseline)
                readings.append((step, figures))
            report_slope(readings)
            for sock in sockets:
                sock.close()
            sockets.clear()
            after = settle(server, fds_baseline, quiet_seconds, closing=True)
            print_row("all closed again", after, baseline)
            # The allocator keeps freed pages; opening the same number again must reuse them
            # (RSS stays put) rather than grow: growth here would be a per-connection leak.
            open_connections(server, sockets, steps[-1], with_round_trip)
            again = settle(server, fds_baseline + steps[-1], quiet_seconds)
            print_row(f"{steps[-1]:,} idle again", again, baseline)
            growth = again["VmRSS"] - high_water(readings)
            print(f"  reopening {steps[-1]:,}: {growth / 1024:+,.0f} KiB over the first time")
            return readings
        finally:
            for sock in sockets:
                sock.close()
            server.stop()


def high_water(readings):
    return max(figures["VmRSS"] for _, figures in readings)


def report_slope(readings):
    (n_low, low), (n_high, high) = readings[-2], readings[-1]
    first_n, first = readings[1]
    per_first = (first["VmRSS"] - readings[0][1]["VmRSS"]) / max(first_n, 1)
    resolution = "2 MiB (transparent huge pages back the heap)" if high["AnonHugePages"] \
        else "4 KiB pages"
    print(f"  first {first_n} connection(s): {per_first:+,.0f} B VmRSS each; RSS moves in "
          f"steps of {resolution}, so only the slope is meaningful")
    for key in ("VmRSS", "Pss", "Private"):
        slope = (high[key] - low[key]) / (n_high - n_low)
        print(f"  per idle connection ({key}, slope {n_low:,}→{n_high:,}): {slope:,.0f} B")
    verdict = "within" if high["VmRSS"] <= GOAL_BYTES else "OVER"
    print(f"  {n_high:,} idle connections: VmRSS {fmt_mib(high['VmRSS']).strip()}, "
          f"{verdict} the 256 MiB goal")


def main():
    args = parse_args()
    steps = sorted({int(step) for step in args.steps.split(",")})
    if len(steps) < 2 or steps[0] < 1:
        sys.exit("--steps needs at least two positive counts")
    raise_nofile(steps[-1] + 1024)
    binary = release_binary(args)
    if not binary.exists():
        sys.exit(f"no binary at {binary}")
    print(f"mllpd idle-connection memory: {binary}, steps {steps}, "
          f"{os.cpu_count()} CPUs, kernel {os.uname().release}")
    modes = {"connect": [False], "round-trip": [True], "both": [False, True]}[args.mode]
    for with_round_trip in modes:
        run_pass(binary, steps, with_round_trip, args.shards, args.settle_seconds)


if __name__ == "__main__":
    main()
