#!/usr/bin/env python3
"""Turns the raw runs of perf/compare.sh into <out>.json, <out>.md and <out>.svg.

Usage: report.py RAW_DIR OUT_PREFIX. Standard library only (the SVG is written by hand), so
it runs wherever compare.sh does.

RAW_DIR holds NAME__check.json (mllp-bench --check, or {"skipped": true}), NAME__CONNS.json
(mllp-bench --json) and mllpd-shards-N__spread.txt (connections per shard); RAW_DIR/hub/ holds
the hub scenario: NAME__CASE.json (mllp-bench --json, open loop) and disk-sync__CASE.json, CASE
being c<sending connections>-r<msgs/s in all>-i<idle connections>. The hub chart goes to
<out>-hub.svg.
"""
import json
import os
import platform
import sys
from pathlib import Path

ORDER = ["mllpd-receipt", "mllpd-journal", "floor-glommio", "floor-uring", "floor-uring2",
         "floor-uring2-glommio", "floor-tokio", "python-hl7", "medplum", "mllpd-shards-1",
         "mllpd-shards-2"]
FLOORS = ["floor-glommio", "floor-uring", "floor-uring2", "floor-uring2-glommio", "floor-tokio"]
# The two floors of issue 13: the bare ring, and the same ring hosted in a glommio executor.
BARE, HOSTED = "floor-uring2", "floor-uring2-glommio"
HUB_ORDER = [BARE, HOSTED, "mllpd-receipt", "mllpd-journal"]
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
        and run.get("errors", 1) == 0 and run.get("idle_closed", 0) == 0


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
    for conns in (16, 64, 256):
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


# ---- hub scenario (issue 13) ----

def parse_case(key):
    """c1000-r5000-i0 -> {"active": 1000, "rate": 5000, "idle": 0}."""
    parts = dict((p[0], int(p[1:])) for p in key.split("-") if p[:1] in "cri" and p[1:].isdigit())
    return {"active": parts.get("c"), "rate": parts.get("r"), "idle": parts.get("i")}


def load_hub(raw):
    """{case key: {"case": {...}, "runs": {server: report}, "disk": disk-sync report or None}}."""
    hub_dir = raw / "hub"
    cases = {}
    if not hub_dir.is_dir():
        return cases
    for path in sorted(hub_dir.glob("*__*.json")):
        name, key = path.stem.split("__", 1)
        if key.endswith(".check"):
            continue
        case = cases.setdefault(key, {"case": parse_case(key), "runs": {}, "disk": None})
        try:
            data = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError:
            data = {"error": path.read_text()[:500]}
        if name == "disk-sync":
            case["disk"] = data
        else:
            case["runs"][name] = data
    # Fewer idle connections first: the 1 000-connection case, then the idle-heavy one.
    return dict(sorted(cases.items(), key=lambda kv: (kv[1]["case"]["idle"] or 0, kv[0])))


def hub_cpu(case, name):
    run = case["runs"].get(name)
    return run.get("server_cpu_us_per_msg") if ok(run) else None


def ratio(a, b):
    return a / b if a is not None and b else None


def goal(name, value, op, limit, vs_bare=None, detail=""):
    # limit None: a figure shown for information, with no goal.
    met = None if value is None or limit is None else (value <= limit if op == "<=" else value >= limit)
    return {"goal": name, "value": value, "op": op, "limit": limit, "met": met,
            "vs_bare_ring": vs_bare, "detail": detail}


def issue13_goals(servers, hub):
    """Each goal of issue 13 item 2 from this run's figures; met is None when a figure is missing."""
    by = {s["server"]: s for s in servers}
    goals = []
    for key, case in hub.items():
        bare, hosted = hub_cpu(case, BARE), hub_cpu(case, HOSTED)
        for name, limit in (("mllpd-receipt", 1.25), ("mllpd-journal", 1.8)):
            c = hub_cpu(case, name)
            goals.append(goal(f"hub {key}: {name} CPU/msg ÷ hosted floor", ratio(c, hosted), "<=",
                              limit, ratio(c, bare)))
        run, disk = case["runs"].get("mllpd-journal"), case["disk"]
        p99 = run["latency"]["p99_us"] if ok(run) else None
        sync99 = (disk or {}).get("fdatasync", {}).get("p99_us")
        goals.append(goal(f"hub {key}: mllpd-journal p99 ÷ disk fdatasync p99", ratio(p99, sync99),
                          "<=", 5.0, None, f"p99 {fmt(p99)} µs, fdatasync p99 {fmt(sync99)} µs"))
        goals.append(goal(f"hub {key}: glommio's share (hosted floor ÷ bare ring), no goal",
                          ratio(hosted, bare), "<=", None))
    r1, h1, b1 = (cpu(by.get(n), 1) for n in ("mllpd-receipt", HOSTED, BARE))
    goals.append(goal("1 conn closed loop: mllpd-receipt CPU/msg ÷ hosted floor", ratio(r1, h1), "<=",
                      1.25, ratio(r1, b1)))
    goals.append(goal("1 conn closed loop: glommio's share (hosted floor ÷ bare ring), no goal",
                      ratio(h1, b1), "<=", None))
    j, r, b = (rate(by.get(n), 64) for n in ("mllpd-journal", "mllpd-receipt", BARE))
    goals.append(goal("64 conns closed loop: journal msgs/s ÷ receipt msgs/s", ratio(j, r), ">=", 0.7,
                      ratio(j, b), "vs bare ring: journal msgs/s ÷ bare ring msgs/s"))
    for conns in (16, 64, 256):
        floors = [(cpu(by.get(f), conns), f) for f in FLOORS if cpu(by.get(f), conns)]
        c = cpu(by.get("mllpd-receipt"), conns)
        best_cpu, best = min(floors) if floors else (None, "none")
        goals.append(goal(f"{conns} conns saturated: mllpd-receipt CPU/msg ÷ best floor", ratio(c, best_cpu),
                          "<=", 1.15, ratio(c, cpu(by.get(BARE), conns)), f"best floor {best}"))
    return goals


def hub_markdown(servers, hub, goals):
    lines = ["", "## Hub scenario (issue 13): open loop, many connections, light load each", "",
             "Every connection (sending and idle) is opened, and accepted by the server, before "
             "warmup and window; each sending connection offers the same rate, the connections' "
             "schedules evenly offset (one even stream in all); latency from each message's "
             "intended send time (no coordinated omission); CPU = server on-CPU time (schedstat, "
             "all threads) over the whole window / messages. Ratios: to the hosted floor "
             f"({HOSTED}: floor-uring2 --wake glommio) and to the bare ring ({BARE})."]
    for key, case in hub.items():
        c = case["case"]
        lines += ["", f"### {c['active']:,} connections sending, {c['rate']:,} msgs/s in all, "
                  f"{c['idle']:,} idle ({key})", "",
                  "| server | CPU µs/msg | × hosted floor | × bare ring | p50 µs | p99 µs | p99.9 µs | max µs "
                  "| msgs/s | errors / lost / idle closed |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        hosted, bare = hub_cpu(case, HOSTED), hub_cpu(case, BARE)
        names = [n for n in HUB_ORDER if n in case["runs"]] + \
            [n for n in case["runs"] if n not in HUB_ORDER]
        for name in names:
            run = case["runs"][name]
            if "latency" not in run:
                lines.append(f"| {name} | **no result** | | | | | | | | {run.get('error', '')[:80]} |")
                continue
            lat, c_us = run["latency"], run.get("server_cpu_us_per_msg")
            flag = "" if ok(run) else " **failed**"
            short = run["msgs_per_s"] < 0.95 * (run.get("rate") or 0)
            lines.append(
                f"| {run.get('label', name)}{flag} | {fmt(c_us, 1)} | {fmt(ratio(c_us, hosted), 2)} | "
                f"{fmt(ratio(c_us, bare), 2)} | {fmt(lat['p50_us'])} | {fmt(lat['p99_us'])} | "
                f"{fmt(lat['p999_us'])} | {fmt(lat['max_us'])} | {fmt(run['msgs_per_s'])}"
                f"{' (below offered)' if short else ''} | {run.get('errors')} / {run.get('lost')} / "
                f"{run.get('idle_closed', 0)} |")
        d = case["disk"]
        if d and "fdatasync" in d:
            f, w = d["fdatasync"], d["write_and_fdatasync"]
            lines += ["", f"Disk (disk-sync on DATA_DIR's file system, {d.get('filesystem', '?')}, "
                      f"{'O_DIRECT' if d.get('direct') else 'buffered'} {d.get('block_bytes')}-byte write into "
                      f"readied space, {d.get('rounds'):,} rounds, run at {d.get('ran_at', '?')} right before "
                      f"{d.get('before', 'the journal run')}): fdatasync p50 {fmt(f['p50_us'])} / p99 "
                      f"{fmt(f['p99_us'])} / p99.9 {fmt(f['p999_us'])} / max {fmt(f['max_us'])} µs "
                      f"(mean {fmt(f['mean_us'])}); write + fdatasync p99 {fmt(w['p99_us'])} µs."]
        else:
            lines += ["", "Disk: no disk-sync result for this case."]
    if goals:
        lines += ["", "## Issue 13 goals (ratios from this run)", ""]
        for g in goals:
            value = "—" if g["value"] is None else f"{g['value']:.2f}"
            if g["limit"] is None:
                verdict = "(information)"
            else:
                verdict = ("**met**" if g["met"] else "**missed**") if g["met"] is not None \
                    else "not measured"
                verdict = f"(goal {g['op']} {g['limit']}) {verdict}"
            bare = "" if g["vs_bare_ring"] is None else f"; ÷ bare ring {g['vs_bare_ring']:.2f}"
            detail = f"; {g['detail']}" if g["detail"] else ""
            lines.append(f"- {g['goal']}: **{value}** {verdict}{bare}{detail}")
    return "\n".join(lines) + "\n"


def hub_svg(hub):
    """Per hub case, grouped bars: server CPU µs/msg (×hosted floor on each bar), and latency
    (bar p99, ticks p50 and p99.9, log scale) with the disk's fdatasync p99 as a dashed line."""
    import math
    keys = list(hub)
    names = [n for n in HUB_ORDER if any(n in hub[k]["runs"] for k in keys)]
    if not keys or not names:
        return None
    width, panel_h, left, top = 900, 300, 70, 40
    group_w = (width - left - 20) / len(keys)
    bar_w = group_w * 0.8 / len(names)
    h = panel_h - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{2 * panel_h + 160 + 18 * (len(names) + 1)}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>']

    def run_of(k, n):
        run = hub[k]["runs"].get(n)
        return run if ok(run) else None

    def axes(y0, title, ticks, scale, unit_fmt):
        parts.append(f'<text x="{left}" y="{y0 - 10}" font-size="14" font-weight="bold">{title}</text>')
        for t in ticks:
            y = y0 + h - scale(t) * h
            parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{unit_fmt(t)}</text>')
        for gi, k in enumerate(keys):
            c = hub[k]["case"]
            gx = left + gi * group_w + group_w * 0.1
            parts.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{y0 + h + 16}" text-anchor="middle">'
                         f'{c["active"]:,} sending @ {c["rate"]:,} msgs/s, {c["idle"]:,} idle</text>')

    # Panel 1: CPU per message, linear.
    y0 = top + 10
    values = [run_of(k, n)["server_cpu_us_per_msg"] for k in keys for n in names
              if run_of(k, n) and run_of(k, n).get("server_cpu_us_per_msg")]
    if values:
        hi = max(values) * 1.15
        axes(y0, "Hub: server CPU per message, µs (lower is better; label: × hosted floor)",
             [hi * i / 4 for i in range(5)], lambda v: v / hi, lambda t: f"{t:,.0f}")
        for gi, k in enumerate(keys):
            gx = left + gi * group_w + group_w * 0.1
            hosted = hub_cpu(hub[k], HOSTED)
            for si, n in enumerate(names):
                run = run_of(k, n)
                v = run and run.get("server_cpu_us_per_msg")
                if not v:
                    continue
                bh = max(1.0, v / hi * h)
                x = gx + si * bar_w
                parts.append(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bar_w - 1:.1f}" height="{bh:.1f}" '
                             f'fill="{COLORS[si % len(COLORS)]}"><title>{run["label"]}: {v:,.1f} µs/msg</title></rect>')
                r = ratio(v, hosted)
                if r:
                    parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y0 + h - bh - 4:.1f}" text-anchor="middle" '
                                 f'font-size="11">{r:.2f}×</text>')
    # Panel 2: latency, log scale.
    y0 = top + panel_h + 40
    lat = [run_of(k, n)["latency"][p] for k in keys for n in names if run_of(k, n)
           for p in ("p50_us", "p99_us", "p999_us")]
    disks = [hub[k]["disk"]["fdatasync"]["p99_us"] for k in keys
             if hub[k]["disk"] and "fdatasync" in hub[k]["disk"]]
    lat = [v for v in lat + disks if v and v > 0]
    if lat:
        lo_e = math.floor(math.log10(min(lat)))
        hi_e = max(math.ceil(math.log10(max(lat))), lo_e + 1)
        scale = lambda v: (math.log10(max(v, 10 ** lo_e)) - lo_e) / (hi_e - lo_e)
        axes(y0, "Hub: latency from intended send time, µs (log; bar p99, ticks p50 and p99.9)",
             [10 ** e for e in range(lo_e, hi_e + 1)], scale, lambda t: f"{t:,.0f}")
        for gi, k in enumerate(keys):
            gx = left + gi * group_w + group_w * 0.1
            for si, n in enumerate(names):
                run = run_of(k, n)
                if not run:
                    continue
                l = run["latency"]
                x = gx + si * bar_w
                bh = max(1.0, scale(l["p99_us"]) * h)
                parts.append(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bar_w - 1:.1f}" height="{bh:.1f}" '
                             f'fill="{COLORS[si % len(COLORS)]}" fill-opacity="0.8"><title>{run["label"]}: p50 '
                             f'{l["p50_us"]:,.0f}, p99 {l["p99_us"]:,.0f}, p99.9 {l["p999_us"]:,.0f} µs</title></rect>')
                for p in ("p50_us", "p999_us"):
                    y = y0 + h - scale(l[p]) * h
                    parts.append(f'<line x1="{x:.1f}" x2="{x + bar_w - 1:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                                 f'stroke="black" stroke-width="2"/>')
            d = hub[k]["disk"]
            if d and "fdatasync" in d:
                y = y0 + h - scale(d["fdatasync"]["p99_us"]) * h
                parts.append(f'<line x1="{gx:.1f}" x2="{gx + group_w * 0.8:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                             f'stroke="black" stroke-dasharray="6,3"><title>disk fdatasync p99 '
                             f'{d["fdatasync"]["p99_us"]:,.0f} µs</title></line>')
    y = 2 * panel_h + 110
    for si, n in enumerate(names):
        label = next((hub[k]["runs"][n].get("label", n) for k in keys if n in hub[k]["runs"]), n)
        parts.append(f'<rect x="{left}" y="{y + si * 18}" width="12" height="12" fill="{COLORS[si % len(COLORS)]}"/>')
        parts.append(f'<text x="{left + 18}" y="{y + si * 18 + 10}">{label}</text>')
    yl = y + len(names) * 18
    parts.append(f'<line x1="{left}" x2="{left + 12}" y1="{yl + 6}" y2="{yl + 6}" stroke="black" stroke-dasharray="6,3"/>')
    parts.append(f'<text x="{left + 18}" y="{yl + 10}">disk fdatasync p99 (disk-sync, same run)</text>')
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
    hub = load_hub(raw)
    result["hub"] = hub
    result["issue13_goals"] = issue13_goals(servers, hub)
    Path(out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    Path(out + ".md").write_text(markdown(servers, result)
                                 + hub_markdown(servers, hub, result["issue13_goals"]))
    Path(out + ".svg").write_text(svg(servers))
    chart = hub_svg(hub)
    if chart:
        Path(out + "-hub.svg").write_text(chart)


if __name__ == "__main__":
    main()
