#!/usr/bin/env python3
"""Journal benchmark (issue 4 item 10): mllpd with ACK_AFTER=journal against ACK_AFTER=receipt
at 1, 16, 64 and 256 connections, closed loop, server pinned to CPU 0 (one shard) and
mllp-bench to CPU 1. Reports messages/s, server CPU per message, flushes per second and
messages per flush (from the server's "journal closed" log line), and the fdatasync latency of
the same file system measured right before, so the 1-connection goal (>= 0.8 x 1/fdatasync) is
judged against this disk.

    python3 perf/journal_bench.py [--duration 5s] [--conns 1,16,64,256] [--out perf/results]

Standard library only. Builds the release binaries first (cargo build --release --workspace).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fdatasync_latency_us(directory, rounds=2000, size=324):
    """Mean and p50 of one append of `size` bytes + fdatasync, like one lone journal record."""
    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        block = b"x" * size
        for _ in range(rounds):
            start = time.perf_counter_ns()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    return sum(samples) / len(samples), samples[len(samples) // 2]


def run_point(mode, conns, duration, warmup, data_root):
    data_dir = tempfile.mkdtemp(dir=data_root)
    port = free_port()
    env = dict(os.environ, LISTEN_ADDR=f"127.0.0.1:{port}", SHARDS="1", DATA_DIR=data_dir,
               ACK_AFTER=mode, LOG_LEVEL="info", LOG_FORMAT="text", NO_COLOR="1",
               MAX_CONNECTIONS="100000")
    log_path = os.path.join(data_root, f"mllpd-{mode}-{conns}.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(["taskset", "-c", "0", os.path.join(target_dir(), "release", "mllpd")],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        while "mllpd started" not in open(log_path).read():
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"mllpd did not start; see {log_path}")
            time.sleep(0.05)
        bench = subprocess.run(
            [os.path.join(target_dir(), "release", "mllp-bench"), "-a", f"127.0.0.1:{port}",
             "-c", str(conns), "-d", duration, "--warmup", warmup, "--cpu", "1",
             "--server-pid", str(server.pid), "--json", "--label", f"mllpd {mode}"],
            capture_output=True, text=True, check=False)
        if bench.returncode != 0:
            raise SystemExit(f"mllp-bench failed ({mode}, {conns}): {bench.stderr[-2000:]}")
        report = json.loads(bench.stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = open(log_path).read()
    match = re.search(r"journal closed.*?flushes=(\d+) records_flushed=(\d+)", text)
    flushes, records = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    shutil.rmtree(data_dir, ignore_errors=True)
    per_flush = records / flushes if flushes else 0.0
    return {
        "mode": mode,
        "connections": conns,
        "msgs_per_s": report["msgs_per_s"],
        "server_cpu_us_per_msg": report.get("server_cpu_us_per_msg"),
        "p50_us": report["latency"]["p50_us"] if "p50_us" in report["latency"] else None,
        "p99_us": report["latency"].get("p99_us"),
        "mismatches": report["mismatches"],
        "msgs_per_flush": per_flush,
        "flushes_per_s": report["msgs_per_s"] / per_flush if per_flush else 0.0,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--warmup", default="1s")
    parser.add_argument("--conns", default="1,16,64,256")
    parser.add_argument("--out", default=os.path.join(ROOT, "perf", "results"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=ROOT, check=True)
    os.makedirs(args.out, exist_ok=True)
    data_root = tempfile.mkdtemp(prefix="mllpd-journal-bench-", dir=os.environ.get("BENCH_DIR"))
    mean, p50 = fdatasync_latency_us(data_root)
    rows = []
    for conns in [int(c) for c in args.conns.split(",")]:
        for mode in ("receipt", "journal"):
            row = run_point(mode, conns, args.duration, args.warmup, data_root)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    result = {"date": stamp, "fdatasync_mean_us": mean, "fdatasync_p50_us": p50, "rows": rows}
    with open(os.path.join(args.out, f"journal-{stamp}.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"fdatasync of a {324}-byte append on this disk: mean {mean:.0f} µs, p50 {p50:.0f} µs "
             f"(1/mean = {1e6 / mean:.0f}/s)", "",
             "| conns | receipt msgs/s | journal msgs/s | journal/receipt | receipt CPU µs/msg | "
             "journal CPU µs/msg | flushes/s | msgs/flush |",
             "|---|---|---|---|---|---|---|---|"]
    by = {(r["mode"], r["connections"]): r for r in rows}
    for conns in sorted({r["connections"] for r in rows}):
        rec, jou = by[("receipt", conns)], by[("journal", conns)]
        lines.append(
            f"| {conns} | {rec['msgs_per_s']:.0f} | {jou['msgs_per_s']:.0f} | "
            f"{jou['msgs_per_s'] / rec['msgs_per_s']:.2f} | {rec['server_cpu_us_per_msg']:.1f} | "
            f"{jou['server_cpu_us_per_msg']:.1f} | {jou['flushes_per_s']:.0f} | "
            f"{jou['msgs_per_flush']:.1f} |")
    if ("journal", 1) in by:
        ratio = by[("journal", 1)]["msgs_per_s"] * mean / 1e6
        lines += ["", f"1 connection: journal {by[('journal', 1)]['msgs_per_s']:.0f} msgs/s = "
                      f"{ratio:.2f} x (1 / fdatasync mean); goal >= 0.8"]
    table = "\n".join(lines)
    with open(os.path.join(args.out, f"journal-{stamp}.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    shutil.rmtree(data_root, ignore_errors=True)


if __name__ == "__main__":
    main()
