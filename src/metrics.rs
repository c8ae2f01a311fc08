//! Metrics: per-shard probes, merged on scrape, served as Prometheus text.
//!
//! Plain data: each shard keeps its own [`ShardMetrics`] (plain cells, touched only by its
//! executor) and describes itself as a [`Snapshot`]; [`render`] merges snapshots (latency
//! histograms are hdrhistograms, which merge exactly) into the Prometheus text format.
//! Gathering the snapshots from every shard and the HTTP endpoint live in `server::metrics_http`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to an hour, 3 significant digits.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Bucket bounds (seconds) of the exported latency histograms.
const BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// A per-shard metric: (name, type, help, value of a snapshot).
type PerShard = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Snapshot) -> String,
);

fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: a failure here is a programming error.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// One shard's request counters and latency histograms, by API name.
#[derive(Default)]
pub struct ShardMetrics {
    requests: RefCell<BTreeMap<&'static str, (u64, u64)>>,
    latency: RefCell<BTreeMap<&'static str, Histogram<u64>>>,
    /// fdatasync jobs and the seconds they took.
    flush_seconds: RefCell<f64>,
    /// The executor's totals: (busy seconds, tasks run, scheduler runs). glommio's
    /// `executor_stats()` hands out what accrued since its previous call and resets, so the
    /// totals are kept here.
    executor: RefCell<(f64, u64, u64)>,
}

impl ShardMetrics {
    /// (api, requests, failures) so far.
    pub fn requests(&self) -> Vec<(&'static str, u64, u64)> {
        let requests = self.requests.borrow();
        requests.iter().map(|(k, v)| (*k, v.0, v.1)).collect()
    }

    /// Each API's latency histogram so far.
    pub fn latency(&self) -> Vec<(&'static str, Histogram<u64>)> {
        let latency = self.latency.borrow();
        latency.iter().map(|(k, h)| (*k, h.clone())).collect()
    }

    /// Counts a request of `api` that took `micros`; `failed` when it closed the connection.
    pub fn record(&self, api: &'static str, micros: u64, failed: bool) {
        let mut requests = self.requests.borrow_mut();
        let entry = requests.entry(api).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failed);
        let mut latency = self.latency.borrow_mut();
        let h = latency.entry(api).or_insert_with(new_histogram);
        let _ = h.record(micros.clamp(1, LATENCY_US_MAX));
    }

    pub fn record_flush(&self, seconds: f64) {
        *self.flush_seconds.borrow_mut() += seconds;
    }

    /// Adds what the executor accrued since the last call; returns the totals so far.
    pub fn add_executor(
        &self,
        busy_seconds: f64,
        tasks: u64,
        scheduler_runs: u64,
    ) -> (f64, u64, u64) {
        let mut t = self.executor.borrow_mut();
        t.0 += busy_seconds;
        t.1 += tasks;
        t.2 += scheduler_runs;
        *t
    }

    /// Seconds spent in fdatasync jobs so far.
    pub fn flush_seconds(&self) -> f64 {
        *self.flush_seconds.borrow()
    }
}

/// Everything one shard reports on a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub shard: usize,
    /// (api, requests, failures)
    pub requests: Vec<(&'static str, u64, u64)>,
    pub latency: Vec<(&'static str, Histogram<u64>)>,
    pub bytes_in: u64,
    pub bytes_out_zero_copy: u64,
    pub bytes_out_warmed: u64,
    pub bytes_out_copied: u64,
    pub fetch_socket_full: u64,
    pub connections: u64,
    pub inflight_bytes: u64,
    /// Fetches waiting on this shard's partitions for data (long polls).
    pub fetch_waits: u64,
    pub flushes: u64,
    pub flush_seconds: f64,
    pub appends: u64,
    pub writes: u64,
    /// glommio executor: seconds spent running tasks and polling io_uring, tasks run, and
    /// scheduler runs.
    pub executor_busy_seconds: f64,
    pub executor_tasks: u64,
    pub executor_scheduler_runs: u64,
    /// (topic, partition, log end offset, log start offset, bytes)
    pub partitions: Vec<(String, i32, i64, i64, u64)>,
    /// (group, topic, partition, committed offset) of the groups this shard coordinates.
    pub committed: Vec<(String, String, i32, i64)>,
    pub replication: Replication,
    /// (quota key, responses throttled, total throttle ms) of this shard's connections.
    pub quota_throttles: Vec<(&'static str, u64, u64)>,
    pub cleaner: Cleaner,
}

/// A shard's log cleaner figures (see `shard::cleaner`).
#[derive(Debug, Default)]
pub struct Cleaner {
    pub cleans: u64,
    pub failures: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes of the cleaned segments before and after (their ratio: what cleaning saved).
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
    /// The largest cleaner lag of the shard's compacted partitions: ms since the oldest record
    /// not yet cleaned.
    pub lag_ms: i64,
}

/// A shard's replication figures.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    /// Partitions led here whose ISR is shorter than their replica list.
    pub under_replicated: u64,
    /// Partitions held here that have no leader.
    pub offline: u64,
    /// ISR changes this shard's leaders asked for and the controller committed.
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Record bytes followers appended here, and bytes leaders here served to followers.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Record bytes of throttled replicas that went through this shard's replication
    /// throttles, both directions.
    pub throttled_bytes: u64,
    /// (topic, partition, follower, lag in messages, seconds since it was last caught up) of
    /// the partitions led here.
    pub follower_lag: Vec<(String, i32, i32, i64, f64)>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition of the merged snapshots.
pub fn render(snaps: &[Snapshot]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "spate_requests_total",
        "counter",
        "Requests handled, by shard and API.",
    );
    for s in snaps {
        for (api, n, _) in &s.requests {
            let _ = writeln!(
                out,
                "spate_requests_total{{shard=\"{}\",api=\"{api}\"}} {n}",
                s.shard
            );
        }
    }
    family(
        &mut out,
        "spate_request_failures_total",
        "counter",
        "Requests that closed their connection (undecodable, unsupported, failed), by shard and API.",
    );
    for s in snaps {
        for (api, _, failed) in &s.requests {
            let _ = writeln!(
                out,
                "spate_request_failures_total{{shard=\"{}\",api=\"{api}\"}} {failed}",
                s.shard
            );
        }
    }
    // Latency: merged over shards per API (hdrhistograms merge exactly).
    let mut merged: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    for s in snaps {
        for (api, h) in &s.latency {
            let m = merged.entry(api).or_insert_with(new_histogram);
            let _ = m.add(h);
        }
    }
    family(
        &mut out,
        "spate_request_duration_seconds",
        "histogram",
        "Time from a request's last byte read to its response written, by API.",
    );
    for (api, h) in &merged {
        for b in BUCKETS_S {
            let bound_us = (b * 1e6) as u64;
            let n = h.count_between(0, bound_us);
            let _ = writeln!(
                out,
                "spate_request_duration_seconds_bucket{{api=\"{api}\",le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "spate_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {}",
            h.len()
        );
        let _ = writeln!(
            out,
            "spate_request_duration_seconds_sum{{api=\"{api}\"}} {}",
            h.mean() * h.len() as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "spate_request_duration_seconds_count{{api=\"{api}\"}} {}",
            h.len()
        );
    }
    family(
        &mut out,
        "spate_request_duration_quantile_seconds",
        "gauge",
        "Latency quantiles since start, by API (p50, p99, p99.9, max).",
    );
    for (api, h) in &merged {
        for (q, label) in [(0.5, "0.5"), (0.99, "0.99"), (0.999, "0.999"), (1.0, "1")] {
            let v = h.value_at_quantile(q) as f64 / 1e6;
            let _ = writeln!(
                out,
                "spate_request_duration_quantile_seconds{{api=\"{api}\",quantile=\"{label}\"}} {v}"
            );
        }
    }
    let per_shard: [PerShard; 29] = [
        (
            "spate_produce_appends_total",
            "counter",
            "Partition appends asked for by Produce requests.",
            |s| s.appends.to_string(),
        ),
        (
            "spate_log_writes_total",
            "counter",
            "pwritev calls that wrote them (concurrent produces to a partition share one).",
            |s| s.writes.to_string(),
        ),
        (
            "spate_executor_busy_seconds_total",
            "counter",
            "Seconds the shard's glommio executor ran tasks or polled io_uring (busy time; rate = utilisation).",
            |s| s.executor_busy_seconds.to_string(),
        ),
        (
            "spate_executor_tasks_total",
            "counter",
            "Tasks the shard's executor ran.",
            |s| s.executor_tasks.to_string(),
        ),
        (
            "spate_executor_scheduler_runs_total",
            "counter",
            "Scheduler runs of the shard's executor.",
            |s| s.executor_scheduler_runs.to_string(),
        ),
        (
            "spate_bytes_in_total",
            "counter",
            "Record bytes received by Produce.",
            |s| s.bytes_in.to_string(),
        ),
        (
            "spate_connections",
            "gauge",
            "Open client connections.",
            |s| s.connections.to_string(),
        ),
        (
            "spate_inflight_bytes",
            "gauge",
            "Request bytes held (the backpressure budget in use).",
            |s| s.inflight_bytes.to_string(),
        ),
        (
            "spate_fetch_waits",
            "gauge",
            "Fetches waiting for data on the shard's partitions (long polls).",
            |s| s.fetch_waits.to_string(),
        ),
        (
            "spate_flushes_total",
            "counter",
            "fdatasync jobs run.",
            |s| s.flushes.to_string(),
        ),
        (
            "spate_flush_seconds_total",
            "counter",
            "Seconds spent in fdatasync jobs.",
            |s| s.flush_seconds.to_string(),
        ),
        (
            "spate_log_cleaner_cleans_total",
            "counter",
            "Log cleans (compaction) swapped in.",
            |s| s.cleaner.cleans.to_string(),
        ),
        (
            "spate_log_cleaner_failures_total",
            "counter",
            "Log cleans that failed or whose file work failed.",
            |s| s.cleaner.failures.to_string(),
        ),
        (
            "spate_log_cleaner_bytes_read_total",
            "counter",
            "Bytes of log the cleaner read (the key map pass and the rewrite).",
            |s| s.cleaner.bytes_read.to_string(),
        ),
        (
            "spate_log_cleaner_bytes_written_total",
            "counter",
            "Bytes of cleaned segments the cleaner wrote.",
            |s| s.cleaner.bytes_written.to_string(),
        ),
        (
            "spate_log_cleaner_segment_bytes_before_total",
            "counter",
            "Bytes of the segments cleaned, before their clean.",
            |s| s.cleaner.bytes_before.to_string(),
        ),
        (
            "spate_log_cleaner_segment_bytes_after_total",
            "counter",
            "Bytes of the segments cleaned, after their clean (after/before: the ratio kept).",
            |s| s.cleaner.bytes_after.to_string(),
        ),
        (
            "spate_log_cleaner_seconds_total",
            "counter",
            "Seconds the cleaner's jobs ran.",
            |s| s.cleaner.seconds.to_string(),
        ),
        (
            "spate_log_cleaner_lag_ms",
            "gauge",
            "The largest cleaner lag of the shard's compacted partitions: milliseconds since \
             the oldest record not cleaned yet.",
            |s| s.cleaner.lag_ms.to_string(),
        ),
        (
            "spate_fetch_cold_bytes_total",
            "counter",
            "Fetch record bytes that were not in the page cache and were read into it on the \
             blocking pool before being sent (old data; the shard never waits for the disk).",
            |s| s.bytes_out_warmed.to_string(),
        ),
        (
            "spate_fetch_socket_full_total",
            "counter",
            "Times sendfile found a consumer's socket full; the next piece of that response went \
             through the copying path while the socket drained (slow consumers).",
            |s| s.fetch_socket_full.to_string(),
        ),
        ("spate_partitions", "gauge", "Partitions owned.", |s| {
            s.partitions.len().to_string()
        }),
        (
            "spate_under_replicated_partitions",
            "gauge",
            "Partitions led here whose ISR is shorter than their replica list.",
            |s| s.replication.under_replicated.to_string(),
        ),
        (
            "spate_offline_partitions",
            "gauge",
            "Partitions held here that have no leader.",
            |s| s.replication.offline.to_string(),
        ),
        (
            "spate_isr_shrinks_total",
            "counter",
            "ISR shrinks committed for partitions led here.",
            |s| s.replication.isr_shrinks.to_string(),
        ),
        (
            "spate_isr_expands_total",
            "counter",
            "ISR expansions committed for partitions led here.",
            |s| s.replication.isr_expands.to_string(),
        ),
        (
            "spate_replication_bytes_in_total",
            "counter",
            "Record bytes this broker's followers appended from their leaders.",
            |s| s.replication.bytes_in.to_string(),
        ),
        (
            "spate_replication_bytes_out_total",
            "counter",
            "Record bytes this broker's leaders served to followers.",
            |s| s.replication.bytes_out.to_string(),
        ),
        (
            "spate_replication_throttled_bytes_total",
            "counter",
            "Record bytes of throttled replicas (leader.replication.throttled.replicas, follower.replication.throttled.replicas) that went through this shard's replication throttles, served and fetched.",
            |s| s.replication.throttled_bytes.to_string(),
        ),
    ];
    for (name, kind, help, value) in per_shard {
        family(&mut out, name, kind, help);
        for s in snaps {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(s));
        }
    }
    family(
        &mut out,
        "spate_quota_throttled_total",
        "counter",
        "Responses throttled by a client quota (Kafka's throttle-time), by quota: producer_byte_rate, consumer_byte_rate, request_percentage.",
    );
    for s in snaps {
        for (quota, n, _) in &s.quota_throttles {
            let _ = writeln!(
                out,
                "spate_quota_throttled_total{{shard=\"{}\",quota=\"{quota}\"}} {n}",
                s.shard
            );
        }
    }
    family(
        &mut out,
        "spate_quota_throttle_seconds_total",
        "counter",
        "Throttle time handed to clients over a quota (their connections are muted that long), by quota.",
    );
    for s in snaps {
        for (quota, _, ms) in &s.quota_throttles {
            let _ = writeln!(
                out,
                "spate_quota_throttle_seconds_total{{shard=\"{}\",quota=\"{quota}\"}} {}",
                s.shard,
                *ms as f64 / 1000.0
            );
        }
    }
    family(
        &mut out,
        "spate_bytes_out_total",
        "counter",
        "Record bytes sent by Fetch, by path: zero_copy (sendfile) or copied.",
    );
    for s in snaps {
        let _ = writeln!(
            out,
            "spate_bytes_out_total{{shard=\"{}\",path=\"zero_copy\"}} {}",
            s.shard, s.bytes_out_zero_copy
        );
        let _ = writeln!(
            out,
            "spate_bytes_out_total{{shard=\"{}\",path=\"copied\"}} {}",
            s.shard, s.bytes_out_copied
        );
    }
    let mut ends: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (name, help, pick) in [
        (
            "spate_log_end_offset",
            "Next offset to be written, by partition.",
            0usize,
        ),
        (
            "spate_log_start_offset",
            "First offset kept, by partition.",
            1,
        ),
        (
            "spate_log_size_bytes",
            "Bytes of segments, by partition.",
            2,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for s in snaps {
            for (t, p, end, start, size) in &s.partitions {
                ends.insert((t.as_str(), *p), *end);
                let v = match pick {
                    0 => *end as f64,
                    1 => *start as f64,
                    _ => *size as f64,
                };
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",topic=\"{}\",partition=\"{p}\"}} {v}",
                    s.shard,
                    escape(t)
                );
            }
        }
    }
    family(
        &mut out,
        "spate_follower_lag_messages",
        "gauge",
        "Leader's log end minus a follower's fetch offset, by partition and follower.",
    );
    family(
        &mut out,
        "spate_follower_lag_seconds",
        "gauge",
        "Seconds since a follower was last caught up with its leader, by partition and follower.",
    );
    for s in snaps {
        for (t, p, f, msgs, secs) in &s.replication.follower_lag {
            let labels = format!("topic=\"{}\",partition=\"{p}\",follower=\"{f}\"", escape(t));
            let _ = writeln!(out, "spate_follower_lag_messages{{{labels}}} {msgs}");
            let _ = writeln!(out, "spate_follower_lag_seconds{{{labels}}} {secs}");
        }
    }
    family(
        &mut out,
        "spate_consumer_group_committed_offset",
        "gauge",
        "Committed offset, by group and partition.",
    );
    family(
        &mut out,
        "spate_consumer_group_lag",
        "gauge",
        "Log end offset minus committed offset, by group and partition.",
    );
    for s in snaps {
        for (g, t, p, off) in &s.committed {
            let labels = format!(
                "group=\"{}\",topic=\"{}\",partition=\"{p}\"",
                escape(g),
                escape(t)
            );
            let _ = writeln!(
                out,
                "spate_consumer_group_committed_offset{{{labels}}} {off}"
            );
            if let Some(end) = ends.get(&(t.as_str(), *p)) {
                let _ = writeln!(
                    out,
                    "spate_consumer_group_lag{{{labels}}} {}",
                    (end - off).max(0)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_merged_histograms_and_lag() {
        let m = ShardMetrics::default();
        m.record("Produce", 500, false);
        m.record("Produce", 3_000, true);
        let mut a = Snapshot {
            shard: 0,
            requests: m.requests(),
            latency: m.latency(),
            ..Default::default()
        };
        a.partitions.push(("t".into(), 0, 100, 0, 4096));
        let mut b = Snapshot {
            shard: 1,
            ..Default::default()
        };
        b.committed.push(("g".into(), "t".into(), 0, 40));
        let text = render(&[a, b]);
        assert!(
            text.contains("spate_requests_total{shard=\"0\",api=\"Produce\"} 2"),
            "{text}"
        );
        assert!(text.contains("spate_request_failures_total{shard=\"0\",api=\"Produce\"} 1"));
        assert!(
            text.contains("spate_request_duration_seconds_bucket{api=\"Produce\",le=\"0.001\"} 1")
        );
        assert!(text.contains("spate_request_duration_seconds_count{api=\"Produce\"} 2"));
        assert!(
            text.contains("spate_consumer_group_lag{group=\"g\",topic=\"t\",partition=\"0\"} 60")
        );
        assert!(
            text.contains("spate_log_size_bytes{shard=\"0\",topic=\"t\",partition=\"0\"} 4096")
        );
    }
}
