//! The run's result: one serializable struct, printed as JSON (`--json`) or as text.

use super::conn::{Stats, MISMATCH_KINDS};
use super::{Mode, Plan, Shared};
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// Everything a run reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Free text naming the server under test.
    pub label: String,
    /// Server address.
    pub addr: String,
    /// `closed`, `pipelined` or `open`.
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// Messages in flight per connection (window modes).
    pub depth: Option<usize>,
    /// Offered rate (open mode), messages per second.
    pub rate: Option<f64>,
    /// Measured window, seconds.
    pub window_s: f64,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// Messages written, warmup included.
    pub sent: u64,
    /// Correct ACKs inside the window.
    pub messages: u64,
    /// `messages / window_s`.
    pub msgs_per_s: f64,
    /// Latency of the window's ACKs.
    pub latency: Latency,
    /// All mismatched ACKs (warmup included).
    pub mismatches: u64,
    /// Mismatches by kind (only non-zero kinds).
    pub mismatch_kinds: BTreeMap<&'static str, u64>,
    /// Idle connections held (`--idle`).
    pub idle: usize,
    /// Idle connections the server had closed by the end (refused or timed out).
    pub idle_closed: u64,
    /// Failed connections.
    pub errors: u64,
    /// Messages never answered.
    pub lost: u64,
    /// First error texts.
    pub error_samples: Vec<String>,
    /// Server CPU over the window (all threads), nanoseconds, when `--server-pid` was given.
    pub server_cpu_ns: Option<u64>,
    /// Server CPU per message, microseconds.
    pub server_cpu_us_per_msg: Option<f64>,
    /// Server CPU use over the window (1.0 = one core busy).
    pub server_cpu_util: Option<f64>,
    /// The generator's own CPU use over the window (1.0 = one core busy): near 1.0 per
    /// generator thread means the client, not the server, set the throughput.
    pub client_cpu_util: Option<f64>,
}

/// CPU figures sampled around the window.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuWindow {
    /// Server CPU delta, ns.
    pub server_ns: Option<u64>,
    /// Generator CPU delta, ns.
    pub client_ns: Option<u64>,
}

impl Report {
    /// Builds the report.
    pub fn new(
        label: String,
        plan: &Plan,
        shared: &Shared,
        stats: &Stats,
        cpu: CpuWindow,
    ) -> Report {
        let window = shared.window().as_secs_f64().max(1e-9);
        let us = |q: f64| stats.hist.value_at_quantile(q) as f64 / 1000.0;
        let per_msg = |ns: u64| ns as f64 / 1000.0 / (stats.measured.max(1) as f64);
        let mismatch_kinds = MISMATCH_KINDS
            .iter()
            .zip(stats.mismatches)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.name(), n))
            .collect();
        Report {
            label,
            addr: plan.addr.to_string(),
            mode: match plan.mode {
                Mode::Window { depth: 1 } => "closed",
                Mode::Window { .. } => "pipelined",
                Mode::Open { .. } => "open",
                Mode::Reconnect => "reconnect",
            },
            connections: plan.connections,
            depth: match plan.mode {
                Mode::Window { depth } => Some(depth),
                Mode::Open { .. } | Mode::Reconnect => None,
            },
            rate: match plan.mode {
                Mode::Open { rate } => Some(rate),
                Mode::Window { .. } | Mode::Reconnect => None,
            },
            window_s: window,
            warmup_s: plan.warmup.as_secs_f64(),
            sent: stats.sent,
            messages: stats.measured,
            msgs_per_s: stats.measured as f64 / window,
            latency: Latency {
                p50_us: us(0.5),
                p90_us: us(0.9),
                p99_us: us(0.99),
                p999_us: us(0.999),
                max_us: stats.hist.max() as f64 / 1000.0,
                mean_us: stats.hist.mean() / 1000.0,
            },
            mismatches: stats.mismatches.iter().sum(),
            mismatch_kinds,
            idle: plan.idle,
            idle_closed: stats.idle_closed,
            errors: stats.errors,
            lost: stats.lost,
            error_samples: stats.error_samples.clone(),
            server_cpu_ns: cpu.server_ns,
            server_cpu_us_per_msg: cpu.server_ns.map(per_msg),
            server_cpu_util: cpu.server_ns.map(|ns| ns as f64 / 1e9 / window),
            client_cpu_util: cpu.client_ns.map(|ns| ns as f64 / 1e9 / window),
        }
    }

    /// True when the run proves nothing is wrong: messages answered, none mismatched, no
    /// connection failed or closed by the server.
    pub fn passed(&self) -> bool {
        self.messages > 0 && self.mismatches == 0 && self.errors == 0 && self.idle_closed == 0
    }

    /// Human-readable summary.
    pub fn text(&self) -> String {
        let l = &self.latency;
        let mut s = format!(
            "{label} {addr}: {mode}, {c} connections{depth}\n\
             {m} messages in {w:.2} s = {rate:.0} msgs/s (sent {sent}, lost {lost}, errors {err})\n\
             latency us: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}\n\
             ACK mismatches: {mm}{kinds}\n",
            label = self.label,
            addr = self.addr,
            mode = self.mode,
            c = self.connections,
            depth = self
                .depth
                .filter(|d| *d > 1)
                .map_or(String::new(), |d| format!(", depth {d}")),
            m = self.messages,
            w = self.window_s,
            rate = self.msgs_per_s,
            sent = self.sent,
            lost = self.lost,
            err = self.errors,
            p50 = l.p50_us,
            p90 = l.p90_us,
            p99 = l.p99_us,
            p999 = l.p999_us,
            max = l.max_us,
            mm = self.mismatches,
            kinds = if self.mismatch_kinds.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.mismatch_kinds)
            },
        );
        if self.idle > 0 {
            s += &format!(
                "idle connections: {} held, {} closed by the server\n",
                self.idle, self.idle_closed
            );
        }
        if let (Some(us), Some(util)) = (self.server_cpu_us_per_msg, self.server_cpu_util) {
            s += &format!(
                "server CPU: {us:.2} us/msg ({:.0}% of a core)\n",
                util * 100.0
            );
        }
        if let Some(util) = self.client_cpu_util {
            s += &format!("generator CPU: {:.0}% of a core\n", util * 100.0);
        }
        for e in &self.error_samples {
            s += &format!("error: {e}\n");
        }
        s
    }
}
