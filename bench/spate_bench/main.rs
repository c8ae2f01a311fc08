//! spate-bench: a load generator for Kafka-compatible brokers, modelled on the OpenMessaging
//! Benchmark. See bench/README.md.

mod client;
mod consumer;
mod producer;
mod records;
mod report;
mod stats;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use hdrhistogram::Histogram;

use crate::producer::{Plan, Target};
use crate::report::{MB, Machine, Report, Throughput, Totals};
use crate::stats::{Recorder, Shared, new_histogram};
use crate::workload::{Rate, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "spate-bench",
    about = "Kafka-protocol load generator (OpenMessaging-style workloads)"
)]
struct Args {
    /// Broker to bootstrap from (HOST:PORT).
    #[arg(long)]
    bootstrap_server: String,
    /// Workload file (TOML).
    #[arg(long)]
    workload: PathBuf,
    /// Where the JSON results and the SVG chart go.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// Name of this run in reports and file names (defaults to the workload's name).
    #[arg(long)]
    label: Option<String>,
    /// Kafka client properties for a secured listener, as the `spate` CLI takes them:
    /// `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), `sasl.*` and
    /// `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`,
    /// `ssl.endpoint.identification.algorithm`; every connection uses them.
    #[arg(long, value_name = "FILE")]
    command_config: Option<PathBuf>,
}

/// How long consumers may take, after the producers stop, to read what was acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("spate-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if let Some(path) = &args.command_config {
        let security = spate::client::CommandConfig::read(path)
            .and_then(|c| c.security())
            .map_err(|e| anyhow::anyhow!(e))?;
        client::set_security(security);
    }
    let w = Workload::load(&args.workload)?;
    let label = args.label.clone().unwrap_or_else(|| w.name.clone());
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_id = format!(
        "{:08x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> 32
    );

    // Setup: versions, topics, leaders.
    let mut conn = client::open(&args.bootstrap_server)?;
    let versions = client::negotiate(&conn)?;
    let topics: Vec<String> = (0..w.topics)
        .map(|i| format!("{}-{run_id}-{i}", w.topic_prefix))
        .collect();
    let cluster =
        client::create_topics(&mut conn, &versions, &topics, w.partitions_per_topic as i32)?;
    drop(conn);
    let mut targets = Vec::new();
    for topic in &topics {
        let name: Arc<str> = Arc::from(topic.as_str());
        for p in 0..w.partitions_per_topic as i32 {
            let (leader, _) = cluster
                .leader_addr(topic, p)
                .ok_or_else(|| anyhow!("no leader for {topic}/{p}"))?;
            targets.push(Target {
                topic: Arc::clone(&name),
                partition: p,
                global: targets.len(),
                leader,
            });
        }
    }
    eprintln!(
        "spate-bench: {} on {}: {} topic(s) x {} partition(s) ({}-{run_id}-*), {} producer(s), {} consumer(s); Produce v{}, Fetch v{}",
        w.name,
        args.bootstrap_server,
        w.topics,
        w.partitions_per_topic,
        w.topic_prefix,
        w.producers,
        w.consumers,
        versions.produce,
        versions.fetch
    );

    let shared = Arc::new(Shared::new(targets.len()));
    let leaders = Arc::new(cluster.brokers.clone());
    let w = Arc::new(w);
    let targets = Arc::new(targets);

    // Backlog: written as fast as possible before consumers start.
    let mut totals = Totals::default();
    if w.backlog_messages > 0 {
        let t0 = Instant::now();
        let per = w.backlog_messages / w.producers as u64;
        let extra = w.backlog_messages % w.producers as u64;
        let handles: Vec<_> = (0..w.producers as usize)
            .map(|i| {
                let plan = Plan {
                    limit: Some(per + u64::from((i as u64) < extra)),
                    end_ns: u64::MAX,
                    start_ns: 0,
                    rate: None,
                    stamp: false,
                };
                spawn_producer(i, &w, versions, &targets, &leaders, plan, &shared)
            })
            .collect::<Result<_>>()?;
        for h in handles {
            h.join().map_err(|_| anyhow!("producer panicked"))??;
        }
        let n = shared.published.load(Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "spate-bench: backlog of {n} messages written in {secs:.1} s ({:.1} MB/s)",
            n as f64 * w.message_size as f64 / MB / secs.max(1e-9)
        );
        totals.backlog = n;
    }

    // The timeline: warm-up, then the measured window; producers stop at its end.
    let start_ns = shared.now_ns() + 20_000_000;
    let measure_start = start_ns + (w.warmup_seconds * 1e9) as u64;
    let measure_end = measure_start + (w.duration_seconds * 1e9) as u64;
    shared.measure_start.store(measure_start, Ordering::Relaxed);
    shared.measure_end.store(measure_end, Ordering::Relaxed);

    let consumers = spawn_consumers(&w, versions, &targets, &leaders, &shared)?;
    let rate = match w.producer_rate {
        Rate::Max => Some(None),
        Rate::PerSecond(0) => None,
        Rate::PerSecond(r) => Some(Some(r as f64 / w.producers as f64)),
    };
    let producers: Vec<JoinHandle<Result<producer::ProducerOutcome>>> = match rate {
        None => Vec::new(),
        Some(rate) => (0..w.producers as usize)
            .map(|i| {
                let plan = Plan {
                    limit: None,
                    end_ns: measure_end,
                    start_ns,
                    rate,
                    stamp: true,
                };
                spawn_producer(i, &w, versions, &targets, &leaders, plan, &shared)
            })
            .collect::<Result<_>>()?,
    };

    let progress_done = Arc::new(AtomicBool::new(false));
    let progress = {
        let shared = Arc::clone(&shared);
        let done = Arc::clone(&progress_done);
        let size = w.message_size as f64;
        std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || progress_lines(&shared, &done, size))?
    };

    let mut errors: Vec<anyhow::Error> = Vec::new();
    let mut publish_hist = new_histogram();
    let mut publish_window = Throughput::default();
    for h in producers {
        match h.join() {
            Ok(Ok(outcome)) => {
                totals.unsent_scheduled += outcome.unsent_scheduled;
                for r in &outcome.recorders {
                    merge(&mut publish_hist, &mut publish_window, r);
                }
            }
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                errors.push(e.context("producer"));
            }
            Err(_) => errors.push(anyhow!("producer panicked")),
        }
    }
    shared.producers_done.store(true, Ordering::Release);
    // With no producers (rate 0), the window still lasts its duration unless the consumers
    // drain the backlog sooner.
    while shared.now_ns() < measure_end && !consumers.is_empty() && rate.is_none() {
        if consumers.iter().all(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while !consumers.iter().all(|h| h.is_finished()) {
        if Instant::now() >= drain_deadline {
            eprintln!(
                "spate-bench: consumers did not read everything within {DRAIN_TIMEOUT:?} of the end; stopping them"
            );
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut e2e_hist = new_histogram();
    let mut consume_window = Throughput::default();
    for h in consumers {
        match h.join() {
            Ok(Ok(r)) => merge(&mut e2e_hist, &mut consume_window, &r),
            Ok(Err(e)) => errors.push(e.context("consumer")),
            Err(_) => errors.push(anyhow!("consumer panicked")),
        }
    }
    progress_done.store(true, Ordering::Relaxed);
    let _ = progress.join();

    let window_secs = w.duration_seconds;
    publish_window.seconds = window_secs;
    consume_window.seconds = if rate.is_none() {
        // Backlog only: the window ends when the last message was read.
        let last = shared.last_consume_in_window.load(Ordering::Relaxed);
        if last > measure_start {
            (last.min(measure_end) - measure_start) as f64 / 1e9
        } else {
            window_secs
        }
    } else {
        window_secs
    };
    totals.produced = shared.published.load(Ordering::Relaxed);
    totals.consumed = shared.consumed.load(Ordering::Relaxed);
    totals.publish_errors = shared.publish_errors.load(Ordering::Relaxed);

    let report = Report {
        label,
        broker: args.bootstrap_server.clone(),
        started_unix,
        workload: serde_json::to_value(&*w)?,
        machine: Machine::detect(),
        details: serde_json::json!({
            "api_versions": versions,
            "topics": topics,
            "workload_file": args.workload.display().to_string(),
            "coordinated_omission": match w.producer_rate {
                Rate::PerSecond(_) => "latency measured from each message's scheduled send time",
                Rate::Max => "none needed: closed loop, latency from enqueue time",
            },
        }),
        publish: publish_window,
        consume: (w.consumers > 0).then_some(consume_window),
        publish_latency: publish_hist,
        e2e_latency: (w.consumers > 0).then_some(e2e_hist),
        totals,
    };
    print!("{}", report.table());
    let (json_path, svg_path) = report
        .write(&args.out_dir)
        .with_context(|| format!("write results to {}", args.out_dir.display()))?;
    eprintln!(
        "spate-bench: wrote {} and {}",
        json_path.display(),
        svg_path.display()
    );
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(())
}

fn merge(h: &mut Histogram<u64>, t: &mut Throughput, r: &Recorder) {
    let _ = h.add(&r.window);
    t.messages += r.window_messages;
    t.bytes += r.window_bytes;
}

fn spawn_producer(
    i: usize,
    w: &Arc<Workload>,
    versions: client::Versions,
    targets: &Arc<Vec<Target>>,
    leaders: &Arc<HashMap<i32, String>>,
    plan: Plan,
    shared: &Arc<Shared>,
) -> Result<JoinHandle<Result<producer::ProducerOutcome>>> {
    let (w, targets, leaders, shared) = (
        Arc::clone(w),
        Arc::clone(targets),
        Arc::clone(leaders),
        Arc::clone(shared),
    );
    Ok(std::thread::Builder::new()
        .name(format!("producer-{i}"))
        .spawn(move || {
            let r = producer::run(i, &w, versions, (*targets).clone(), &leaders, plan, &shared);
            if r.is_err() {
                shared.stop.store(true, Ordering::Relaxed);
            }
            r
        })?)
}

/// Deals the partitions round-robin over the consumers; a thread per (consumer, leader).
fn spawn_consumers(
    w: &Arc<Workload>,
    versions: client::Versions,
    targets: &Arc<Vec<Target>>,
    leaders: &Arc<HashMap<i32, String>>,
    shared: &Arc<Shared>,
) -> Result<Vec<JoinHandle<Result<Recorder>>>> {
    let mut handles = Vec::new();
    let n = w.consumers as usize;
    for c in 0..n {
        let mut by_leader: HashMap<i32, Vec<Target>> = HashMap::new();
        for t in targets.iter().skip(c).step_by(n) {
            by_leader.entry(t.leader).or_default().push(t.clone());
        }
        if by_leader.is_empty() {
            eprintln!(
                "spate-bench: consumer {c} has no partition (more consumers than partitions)"
            );
        }
        for (leader, mine) in by_leader {
            let addr = leaders
                .get(&leader)
                .ok_or_else(|| anyhow!("no address for broker {leader}"))?
                .clone();
            let shared = Arc::clone(shared);
            let (acks, wait, pmax) = (w.acks, w.fetch_max_wait_ms, w.fetch_partition_max_bytes);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("consumer-{c}"))
                    .spawn(move || {
                        let r = consumer::run(&addr, versions, mine, acks, wait, pmax, &shared);
                        if r.is_err() {
                            shared.stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })?,
            );
        }
    }
    Ok(handles)
}

/// A line a second on stderr: phase, publish and consume rates, p99 of the last second.
fn progress_lines(shared: &Shared, done: &AtomicBool, message_size: f64) {
    let started = Instant::now();
    let mut last = Instant::now();
    let mut last_pub = shared.published.load(Ordering::Relaxed);
    let mut last_con = shared.consumed.load(Ordering::Relaxed);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let now = shared.now_ns();
        let phase = if now < shared.measure_start.load(Ordering::Relaxed) {
            "warm-up"
        } else if now < shared.measure_end.load(Ordering::Relaxed) {
            "measure"
        } else {
            "drain"
        };
        let p = shared.published.load(Ordering::Relaxed);
        let c = shared.consumed.load(Ordering::Relaxed);
        let p99 = |m: &std::sync::Mutex<Histogram<u64>>| {
            let mut h = m.lock().unwrap();
            let v = if h.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", h.value_at_quantile(0.99) as f64 / 1e3)
            };
            h.reset();
            v
        };
        let (pp99, ep99) = (p99(&shared.publish_interval), p99(&shared.e2e_interval));
        let prate = (p - last_pub) as f64 / secs;
        let crate_ = (c - last_con) as f64 / secs;
        eprintln!(
            "[{:>6.1}s {phase:>7}] pub {:>9.0} msg/s {:>8.1} MB/s p99 {pp99:>8} ms | cons {:>9.0} msg/s {:>8.1} MB/s e2e p99 {ep99:>8} ms",
            started.elapsed().as_secs_f64(),
            prate,
            prate * message_size / MB,
            crate_,
            crate_ * message_size / MB,
        );
        last_pub = p;
        last_con = c;
    }
}
