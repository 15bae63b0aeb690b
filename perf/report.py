#!/usr/bin/env python3
"""Turns the raw runs of perf/compare.sh into <out>.json, <out>.md and <out>.svg.

Usage: report.py RAW_DIR OUT_PREFIX. Standard library only (the SVG is written by hand), so
it runs wherever compare.sh does.

RAW_DIR holds NAME__check.json (mllp-bench --check, or {"skipped": true}), NAME__CONNS.json
(mllp-bench --json) and mllpd-shards-N__spread.txt (connections per shard).
"""
import json
import os
import platform
import sys
from pathlib import Path

ORDER = ["mllpd-receipt", "mllpd-journal", "floor-glommio", "floor-uring", "floor-uring2", "floor-tokio",
         "python-hl7", "medplum", "mllpd-shards-1", "mllpd-shards-2"]
FLOORS = ["floor-glommio", "floor-uring", "floor-uring2", "floor-tokio"]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def load(raw):
    servers = {}
    for path in sorted(raw.glob("*__*.json")):
        name, key = path.stem.split("__", 1)
        entry = servers.setdefault(name, {"server": name, "label": name, "check": None,
                                          "runs": {}, "open": {}})
        try:
            data = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError:
            data = {"error": path.read_text()[:500]}
        if key == "check":
            entry["check"] = ("skipped" if data.get("skipped") else data.get("check", "fail"))
            entry["check_steps"] = data.get("steps")
            entry["label"] = data.get("label", name)
        elif key.startswith("open-"):
            entry["open"][int(key[5:])] = data
        else:
            entry["runs"][int(key)] = data
            entry["label"] = data.get("label", entry["label"])
    for spread in raw.glob("*__spread.txt"):
        name = spread.name.split("__")[0]
        if name in servers:
            servers[name]["spread"] = spread.read_text().strip().splitlines()
    known = [servers[n] for n in ORDER if n in servers]
    return known + [s for n, s in servers.items() if n not in ORDER]


def ok(run):
    return bool(run) and run.get("messages", 0) > 0 and run.get("mismatches", 1) == 0 \
        and run.get("errors", 1) == 0


def cpu(server, conns, kind="runs"):
    run = server[kind].get(conns) if server else None
    return run.get("server_cpu_us_per_msg") if ok(run) else None


def rate(server, conns, kind="runs"):
    run = server[kind].get(conns) if server else None
    return run.get("msgs_per_s") if ok(run) else None


def ratios(servers):
    by = {s["server"]: s for s in servers}
    mllpd = by.get("mllpd-receipt")
    out = {}
    for conns in (16, 64):
        floors = [(cpu(by.get(f), conns), f) for f in FLOORS if cpu(by.get(f), conns)]
        if not floors or not cpu(mllpd, conns):
            continue
        best_cpu, best = min(floors)
        out[f"receipt_cpu_vs_best_floor_{conns}"] = {
            "floor": best, "ratio": cpu(mllpd, conns) / best_cpu, "goal": "<= 1.15"}
        out[f"receipt_rate_vs_best_floor_{conns}"] = {
            "floor": best, "ratio": rate(mllpd, conns) / rate(by[best], conns), "goal": ">= 0.9"}
    # Same runtime as mllpd: what mllpd's own work costs above its runtime's floor.
    for kind, suffix in (("runs", "closed"), ("open", "equal_load")):
        for conns in (16, 64):
            g = cpu(by.get("floor-glommio"), conns, kind)
            if g and cpu(mllpd, conns, kind):
                out[f"receipt_cpu_vs_glommio_floor_{conns}_{suffix}"] = {
                    "ratio": cpu(mllpd, conns, kind) / g}
    for conns in (16, 64):
        floors = [(cpu(by.get(f), conns, "open"), f) for f in FLOORS if cpu(by.get(f), conns, "open")]
        if floors and cpu(mllpd, conns, "open"):
            best_cpu, best = min(floors)
            out[f"receipt_cpu_vs_best_floor_{conns}_equal_load"] = {
                "floor": best, "ratio": cpu(mllpd, conns, "open") / best_cpu, "goal": "<= 1.15"}
    for kind, suffix in (("runs", "closed"), ("open", "equal_load")):
        g = cpu(by.get("floor-glommio"), 64, kind)
        u = min((c for c in (cpu(by.get(f), 64, kind) for f in ("floor-uring", "floor-uring2")) if c),
                default=None)
        if g and u:
            out[f"uring_floor_cpu_saving_vs_glommio_floor_64_{suffix}"] = {
                "saving": 1 - u / g, "rule": ">= 0.15: give shards a batched io_uring path"}
    j = rate(by.get("mllpd-journal"), 64)
    if j and rate(mllpd, 64):
        out["journal_rate_vs_receipt_64"] = {"ratio": j / rate(mllpd, 64), "goal": ">= 0.7"}
    for peer, goal in (("python-hl7", "<= 0.1"), ("medplum", "<= 0.333")):
        for conns in (1, 16, 64, 256):
            if cpu(by.get(peer), conns) and cpu(mllpd, conns):
                out[f"receipt_cpu_vs_{peer}_{conns}"] = {
                    "ratio": cpu(mllpd, conns) / cpu(by[peer], conns), "goal": goal}
    return out


def fmt(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(servers, result):
    conns_all = sorted({c for s in servers for c in s["runs"]})
    lines = [f"# mllpd vs floor vs peers — {result['date']}", "",
             f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['kernel']}; "
             f"load average at start {result['machine']['loadavg']}. Server pinned to one CPU "
             "(mllpd SHARDS=1), mllp-bench on the other; closed loop (one message in flight per "
             "connection), ~316-byte ADT^A01, every ACK verified. CPU = server on-CPU time "
             "(schedstat, all threads) over the window / messages.", "",
             "| server | conns | msgs/s | p50 µs | p99 µs | server CPU µs/msg | server core use | generator core use |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in servers:
        if s["check"] == "skipped":
            lines.append(f"| {s['label']} | — | skipped: not installable here | | | | | |")
            continue
        if s["check"] != "pass":
            lines.append(f"| {s['label']} | — | **wrong ACKs, not timed** | | | | | |")
            continue
        for c in conns_all:
            run = s["runs"].get(c)
            if not run:
                continue
            if not ok(run):
                lines.append(f"| {s['label']} | {c} | **failed**: mismatches {run.get('mismatches')}, errors {run.get('errors')} | | | | | |")
                continue
            lat = run["latency"]
            lines.append(
                f"| {s['label']} | {c} | {fmt(run['msgs_per_s'])} | {fmt(lat['p50_us'], 1)} | "
                f"{fmt(lat['p99_us'], 1)} | {fmt(run.get('server_cpu_us_per_msg'), 2)} | "
                f"{fmt((run.get('server_cpu_util') or 0) * 100)}% | "
                f"{fmt((run.get('client_cpu_util') or 0) * 100)}% |")
    opened = [s for s in servers if s.get("open")]
    if opened:
        rate_offered = next(iter(opened[0]["open"].values())).get("rate")
        lines += ["", f"## Equal offered load: open loop, {fmt(rate_offered)} msgs/s in total", "",
                  "Latency from each message's intended send time (no coordinated omission).", "",
                  "| server | conns | msgs/s | p50 µs | p99 µs | server CPU µs/msg | server core use |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for s in opened:
            for c, run in sorted(s["open"].items()):
                if not ok(run):
                    lines.append(f"| {s['label']} | {c} | **failed** | | | | |")
                    continue
                lat = run["latency"]
                lines.append(
                    f"| {s['label']} | {c} | {fmt(run['msgs_per_s'])} | {fmt(lat['p50_us'], 1)} | "
                    f"{fmt(lat['p99_us'], 1)} | {fmt(run.get('server_cpu_us_per_msg'), 2)} | "
                    f"{fmt((run.get('server_cpu_util') or 0) * 100)}% |")
    lines += ["", "## Ratios", ""]
    for key, value in result["ratios"].items():
        number = value.get("ratio", value.get("saving"))
        rest = ", ".join(f"{k} {v}" for k, v in value.items() if k not in ("ratio", "saving"))
        lines.append(f"- {key}: **{number:.3f}** ({rest})")
    spread = [s for s in servers if s.get("spread")]
    if spread:
        lines += ["", "## Connections per shard (scaling runs)", ""]
        for s in spread:
            lines.append(f"- {s['label']}: " + "; ".join(x.strip() for x in s["spread"]))
    return "\n".join(lines) + "\n"


def svg(servers):
    """Two panels of grouped bars: msgs/s and server CPU µs/msg (log scale), per conns."""
    import math
    timed = [s for s in servers if s["check"] == "pass" and any(ok(r) for r in s["runs"].values())
             and not s["server"].startswith("mllpd-shards")]
    conns_all = sorted({c for s in timed for c in s["runs"]})
    width, panel_h, left, top = 900, 300, 70, 40
    group_w = (width - left - 20) / max(1, len(conns_all))
    bar_w = group_w * 0.8 / max(1, len(timed))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{2 * panel_h + 140 + 18 * len(timed)}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>']

    def panel(y0, title, value_of, log):
        values = [value_of(s, c) for s in timed for c in conns_all if value_of(s, c)]
        if not values:
            return
        hi = max(values)
        lo = min(values)
        if log:
            lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
            hi_e = max(hi_e, lo_e + 1)
            scale = lambda v: (math.log10(v) - lo_e) / (hi_e - lo_e)
            ticks = [10 ** e for e in range(lo_e, hi_e + 1)]
        else:
            scale = lambda v: v / hi
            ticks = [hi * i / 4 for i in range(5)]
        h = panel_h - 60
        parts.append(f'<text x="{left}" y="{y0 - 10}" font-size="14" font-weight="bold">{title}</text>')
        for t in ticks:
            y = y0 + h - scale(t) * h
            parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{t:,.{1 if t < 10 else 0}f}</text>')
        for gi, c in enumerate(conns_all):
            gx = left + gi * group_w + group_w * 0.1
            parts.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{y0 + h + 16}" text-anchor="middle">{c} conn{"s" if c > 1 else ""}</text>')
            for si, s in enumerate(timed):
                v = value_of(s, c)
                if not v:
                    continue
                bh = max(1.0, scale(v) * h)
                parts.append(f'<rect x="{gx + si * bar_w:.1f}" y="{y0 + h - bh:.1f}" width="{bar_w - 1:.1f}" '
                             f'height="{bh:.1f}" fill="{COLORS[si % len(COLORS)]}"><title>{s["label"]}: {v:,.2f}</title></rect>')

    panel(top + 10, "Throughput, msgs/s (closed loop, higher is better)", rate, False)
    panel(top + panel_h + 30, "Server CPU per message, µs (log scale, lower is better)", cpu, True)
    y = 2 * panel_h + 90
    for si, s in enumerate(timed):
        parts.append(f'<rect x="{left}" y="{y + si * 18}" width="12" height="12" fill="{COLORS[si % len(COLORS)]}"/>')
        parts.append(f'<text x="{left + 18}" y="{y + si * 18 + 10}">{s["label"]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    raw, out = Path(sys.argv[1]), sys.argv[2]
    servers = load(raw)
    result = {
        "date": Path(out).name,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "loadavg": (raw / "loadavg_start.txt").read_text().strip()
                    if (raw / "loadavg_start.txt").exists() else "?"},
        "servers": [dict(s, runs={str(k): v for k, v in sorted(s["runs"].items())},
                         open={str(k): v for k, v in sorted(s["open"].items())})
                    for s in servers],
    }
    result["ratios"] = ratios(servers)
    Path(out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    Path(out + ".md").write_text(markdown(servers, result))
    Path(out + ".svg").write_text(svg(servers))


if __name__ == "__main__":
    main()
