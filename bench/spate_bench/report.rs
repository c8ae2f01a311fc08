//! The results of a run: latency percentiles from HdrHistograms, throughput over the
//! measured window, and their renderings (a table, JSON, an SVG percentile chart).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// MB in reports is MiB (1,048,576 bytes), as in the OpenMessaging Benchmark.
pub const MB: f64 = 1024.0 * 1024.0;

/// Percentiles in the table and JSON.
pub const PERCENTILES: &[(&str, f64)] = &[
    ("p50", 50.0),
    ("p75", 75.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
    ("p99_99", 99.99),
    ("p99_999", 99.999),
];

/// The machine the bench ran on.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Machine {
    pub hostname: String,
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub mem_total_kib: u64,
}

impl Machine {
    pub fn detect() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            mem_total_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// Messages and bytes over a number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn msgs_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn mb_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / MB / self.seconds
        } else {
            0.0
        }
    }

    fn to_json(self) -> Value {
        json!({
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 6),
            "msgs_per_sec": round(self.msgs_per_sec(), 3),
            "mb_per_sec": round(self.mb_per_sec(), 3),
        })
    }
}

/// Latency figures of one histogram (recorded in microseconds), in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    /// (name, percentile, ms) for [`PERCENTILES`].
    pub percentiles: Vec<(&'static str, f64, f64)>,
    pub max_ms: f64,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// Rounds to `digits` decimals (ms with 3 decimals is microsecond precision).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: h.len(),
            min_ms: us_to_ms(h.min()),
            mean_ms: h.mean() / 1e3,
            percentiles: PERCENTILES
                .iter()
                .map(|(name, p)| (*name, *p, us_to_ms(h.value_at_percentile(*p))))
                .collect(),
            max_ms: us_to_ms(h.max()),
        }
    }

    pub fn get(&self, name: &str) -> f64 {
        self.percentiles
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| *v)
            .unwrap_or(f64::NAN)
    }

    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("count".into(), json!(self.count));
        m.insert("min".into(), json!(round(self.min_ms, 3)));
        m.insert("mean".into(), json!(round(self.mean_ms, 3)));
        for (name, _, v) in &self.percentiles {
            m.insert((*name).into(), json!(round(*v, 3)));
        }
        m.insert("max".into(), json!(round(self.max_ms, 3)));
        Value::Object(m)
    }
}

/// Whole-run counts (warm-up, backlog and drain included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Messages acknowledged by the broker (written, for acks=0).
    pub produced: u64,
    pub consumed: u64,
    /// Messages in Produce partitions that failed.
    pub publish_errors: u64,
    /// Messages written before consumers started.
    pub backlog: u64,
    /// Messages a rate schedule wanted sent before the end that never were (the producers
    /// fell behind).
    pub unsent_scheduled: u64,
}

/// Everything a run reports.
pub struct Report {
    pub label: String,
    pub broker: String,
    /// Unix seconds when the run started.
    pub started_unix: u64,
    pub workload: Value,
    pub machine: Machine,
    /// Extra facts (API versions, topics): copied into the JSON as they are.
    pub details: Value,
    pub publish: Throughput,
    /// None when the workload has no consumers.
    pub consume: Option<Throughput>,
    pub publish_latency: Histogram<u64>,
    pub e2e_latency: Option<Histogram<u64>>,
    pub totals: Totals,
}

/// "YYYYMMDD-HHMMSS" (UTC) of Unix seconds.
pub fn utc_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Report {
    pub fn publish_summary(&self) -> Option<LatencySummary> {
        (!self.publish_latency.is_empty()).then(|| LatencySummary::of(&self.publish_latency))
    }

    pub fn e2e_summary(&self) -> Option<LatencySummary> {
        self.e2e_latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(LatencySummary::of)
    }

    /// The named latency series with data: ("publish", h), ("end-to-end", h).
    pub fn series(&self) -> Vec<(&'static str, &Histogram<u64>)> {
        let mut out = Vec::new();
        if !self.publish_latency.is_empty() {
            out.push(("publish", &self.publish_latency));
        }
        if let Some(h) = self.e2e_latency.as_ref().filter(|h| !h.is_empty()) {
            out.push(("end-to-end", h));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let summary = |s: Option<LatencySummary>| s.map(|s| s.to_json()).unwrap_or(Value::Null);
        json!({
            "tool": "spate-bench",
            "label": self.label,
            "started_unix": self.started_unix,
            "started_utc": utc_stamp(self.started_unix),
            "broker": self.broker,
            "workload": self.workload,
            "machine": self.machine,
            "details": self.details,
            "publish": {
                "throughput": self.publish.to_json(),
                "latency_ms": summary(self.publish_summary()),
            },
            "consume": match &self.consume {
                None => Value::Null,
                Some(c) => json!({
                    "throughput": c.to_json(),
                    "end_to_end_latency_ms": summary(self.e2e_summary()),
                }),
            },
            "totals": self.totals,
        })
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "spate-bench  {}  broker {}  ({} cpus, kernel {})",
            self.label, self.broker, self.machine.nproc, self.machine.kernel
        );
        let _ = writeln!(
            s,
            "{:<11} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "p99.99", "max ms", "samples"
        );
        let mut row = |name: &str, t: Option<&Throughput>, l: Option<LatencySummary>| {
            let t = t.copied().unwrap_or_default();
            let (p50, p99, p999, p9999, max, n) = match &l {
                Some(l) => (
                    format!("{:.3}", l.get("p50")),
                    format!("{:.3}", l.get("p99")),
                    format!("{:.3}", l.get("p99_9")),
                    format!("{:.3}", l.get("p99_99")),
                    format!("{:.3}", l.max_ms),
                    l.count.to_string(),
                ),
                None => Default::default(),
            };
            let _ = writeln!(
                s,
                "{name:<11} {:>12.1} {:>10.2} {p50:>9} {p99:>9} {p999:>9} {p9999:>9} {max:>9} {n:>9}",
                t.msgs_per_sec(),
                t.mb_per_sec(),
            );
        };
        row("publish", Some(&self.publish), self.publish_summary());
        if self.consume.is_some() {
            row("end-to-end", self.consume.as_ref(), self.e2e_summary());
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "totals: produced {}  consumed {}  publish errors {}  backlog {}  unsent (behind schedule) {}",
            t.produced, t.consumed, t.publish_errors, t.backlog, t.unsent_scheduled
        );
        s
    }

    /// A latency-by-percentile chart, HdrHistogram style: the x axis is log10(1/(1-p)), so
    /// 90%, 99%, 99.9%, ... are evenly spaced; the y axis is latency in ms; one line per
    /// series.
    pub fn svg(&self) -> String {
        const W: f64 = 900.0;
        const H: f64 = 520.0;
        const L: f64 = 80.0;
        const R: f64 = 170.0;
        const T: f64 = 50.0;
        const B: f64 = 70.0;
        const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
        let series = self.series();
        let count = series.iter().map(|(_, h)| h.len()).max().unwrap_or(0);
        let decades = ((count.max(1) as f64).log10().ceil() as i32).clamp(2, 6);
        let xmax = decades as f64;
        let curves: Vec<(&str, Vec<(f64, f64)>)> = series
            .iter()
            .map(|(name, h)| {
                let steps = decades * 40;
                let pts = (0..=steps)
                    .map(|i| {
                        let x = xmax * i as f64 / steps as f64;
                        let q = 1.0 - 10f64.powf(-x);
                        let v = if i == steps {
                            h.max()
                        } else {
                            h.value_at_quantile(q)
                        };
                        (x, us_to_ms(v))
                    })
                    .collect();
                (*name, pts)
            })
            .collect();
        let ymax_data = curves
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(0.0f64, f64::max);
        let ymax = nice_ceiling(ymax_data);
        let px = |x: f64| L + (W - L - R) * x / xmax;
        let py = |y: f64| T + (H - T - B) * (1.0 - y / ymax);

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
            (L + W - R) / 2.0,
            xml_escape(&format!("{}: latency by percentile", self.label))
        );
        // Grid and axes.
        for d in 0..=decades {
            let x = px(d as f64);
            let label = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"][d as usize];
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                H - B
            );
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                H - B + 18.0,
                xml_escape(label)
            );
        }
        for i in 0..=5 {
            let v = ymax * i as f64 / 5.0;
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
                W - R
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                L - 6.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{L}" y="{T}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            W - L - R,
            H - T - B
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
            (L + W - R) / 2.0,
            H - 20.0
        );
        let _ = writeln!(
            s,
            r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency (ms)</text>"#,
            (T + H - B) / 2.0,
            (T + H - B) / 2.0
        );
        // Series and legend.
        for (i, (name, pts)) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline class="series" data-series="{}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                xml_escape(name),
                points.join(" ")
            );
            let ly = T + 20.0 + 22.0 * i as f64;
            let lx = W - R + 15.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
                lx + 25.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                lx + 32.0,
                ly + 4.0,
                xml_escape(name)
            );
        }
        if curves.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no samples</text>"#,
                (L + W - R) / 2.0,
                (T + H - B) / 2.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// `{label}-{YYYYMMDD-HHMMSS}`.
    pub fn file_stem(&self) -> String {
        let label: String = self
            .label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{label}-{}", utc_stamp(self.started_unix))
    }

    /// Writes `{stem}.json` and `{stem}.svg` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let stem = self.file_stem();
        let json_path = dir.join(format!("{stem}.json"));
        let svg_path = dir.join(format!("{stem}.svg"));
        let mut text = serde_json::to_string_pretty(&self.to_json())?;
        text.push('\n');
        std::fs::write(&json_path, text)?;
        std::fs::write(&svg_path, self.svg())?;
        Ok((json_path, svg_path))
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (1 for 0).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
