//! Counters and histograms shared by the producer, consumer and progress threads.
//!
//! Every time is nanoseconds since the run's epoch (an `Instant` taken at start-up), so a
//! message's send time travels in its value and the consumer subtracts it from its own clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks (larger values are clamped): one hour, in microseconds.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 4 significant digits: exact to the microsecond
/// below 32.768 ms, within 0.01% above (as the OpenMessaging Benchmark, which uses 5).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 4).expect("histogram bounds")
}

pub struct Shared {
    pub epoch: Instant,
    /// Measured window [start, end) in ns since the epoch; before it is warm-up.
    pub measure_start: AtomicU64,
    pub measure_end: AtomicU64,
    /// Acknowledged messages and value bytes, whole run (backlog included).
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    /// Messages in failed Produce partitions.
    pub publish_errors: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Latest ns (since the epoch) any consumer received a message inside the window.
    pub last_consume_in_window: AtomicU64,
    /// Per partition (global index): one past the highest acknowledged offset.
    pub acked_end: Vec<AtomicI64>,
    pub producers_done: AtomicBool,
    /// Set on a fatal error or when the run is over: everyone stops.
    pub stop: AtomicBool,
    pub publish_interval: Mutex<Histogram<u64>>,
    pub e2e_interval: Mutex<Histogram<u64>>,
}

impl Shared {
    pub fn new(partitions: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            measure_start: AtomicU64::new(u64::MAX),
            measure_end: AtomicU64::new(u64::MAX),
            published: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            last_consume_in_window: AtomicU64::new(0),
            acked_end: (0..partitions).map(|_| AtomicI64::new(0)).collect(),
            producers_done: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            publish_interval: Mutex::new(new_histogram()),
            e2e_interval: Mutex::new(new_histogram()),
        }
    }

    /// Now, in ns since the epoch (never 0: 0 marks "no send time" in a message).
    pub fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    pub fn in_window(&self, ns: u64) -> bool {
        ns >= self.measure_start.load(Ordering::Relaxed)
            && ns < self.measure_end.load(Ordering::Relaxed)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Which shared interval histogram a recorder feeds.
#[derive(Clone, Copy)]
pub enum Series {
    Publish,
    EndToEnd,
}

/// A thread's own latency histograms and window counters; merged at the end.
pub struct Recorder {
    series: Series,
    /// Samples completed inside the measured window.
    pub window: Histogram<u64>,
    /// Samples since the last flush to the shared interval histogram (progress lines).
    interval: Histogram<u64>,
    last_flush_ns: u64,
    /// Messages and value bytes completed inside the window.
    pub window_messages: u64,
    pub window_bytes: u64,
}

impl Recorder {
    pub fn new(series: Series) -> Recorder {
        Recorder {
            series,
            window: new_histogram(),
            interval: new_histogram(),
            last_flush_ns: 0,
            window_messages: 0,
            window_bytes: 0,
        }
    }

    /// One message completed at `now_ns` after `latency_ns`.
    #[inline]
    pub fn record(&mut self, in_window: bool, latency_ns: u64, bytes: u64) {
        let v = (latency_ns.saturating_add(500) / 1000).min(MAX_LATENCY_US);
        self.interval.saturating_record(v);
        if in_window {
            self.window.saturating_record(v);
            self.window_messages += 1;
            self.window_bytes += bytes;
        }
    }

    /// One message completed without a latency sample (a backlog message).
    #[inline]
    pub fn count(&mut self, in_window: bool, bytes: u64) {
        if in_window {
            self.window_messages += 1;
            self.window_bytes += bytes;
        }
    }

    /// Hands the interval samples to the progress reporter every 100 ms (or when forced).
    pub fn maybe_flush(&mut self, shared: &Shared, now_ns: u64, force: bool) {
        if !force && now_ns < self.last_flush_ns + 100_000_000 {
            return;
        }
        self.last_flush_ns = now_ns;
        if self.interval.is_empty() {
            return;
        }
        let target = match self.series {
            Series::Publish => &shared.publish_interval,
            Series::EndToEnd => &shared.e2e_interval,
        };
        if let Ok(mut h) = target.lock() {
            let _ = h.add(&self.interval);
        }
        self.interval.reset();
    }
}
