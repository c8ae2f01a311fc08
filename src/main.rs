//! The `spate` command: parse the command line, check the host, start one pinned executor per
//! shard, and stop them cleanly on SIGTERM or SIGINT.

#![deny(clippy::unwrap_used)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spate::config::Config;
use spate::{server, startup, storage};

#[derive(Parser)]
#[command(
    name = "spate",
    version,
    about = "A Kafka-compatible, thread-per-core message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(Box<ServeArgs>),
    /// Check (and with --apply, change) host settings for Spate.
    Tune(spate::tune::TuneArgs),
    #[command(flatten)]
    Admin(spate::cli::AdminCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to accept Kafka clients on.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Address Metadata tells clients to connect to (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Directory for topics and logs.
    #[arg(long, default_value = "./spate-data")]
    data_dir: PathBuf,
    /// Number of shards (pinned executors); default: the number of usable cores.
    #[arg(long)]
    shards: Option<usize>,
    /// Create unknown topics on Metadata and Produce, as Kafka's auto.create.topics.enable.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    auto_create_topics: bool,
    /// Partitions of auto-created topics (Kafka's num.partitions).
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Largest request frame in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    request_bytes_max: usize,
    /// Largest record batch in bytes (Kafka's message.max.bytes).
    #[arg(long, default_value_t = 1024 * 1024 + 12)]
    message_bytes_max: usize,
    /// Segment size in bytes at which a partition's active segment rolls (log.segment.bytes).
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    segment_bytes: u64,
    /// Flush in the background after this many records (log.flush.interval.messages); with
    /// neither this nor --flush-ms, acks=all waits for fdatasync (group commit).
    #[arg(long)]
    flush_messages: Option<u64>,
    /// Flush in the background after this many milliseconds (log.flush.interval.ms).
    #[arg(long)]
    flush_ms: Option<u64>,
    /// Roll a segment once its first batch is this many ms old (log.roll.ms); -1: never.
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000, allow_negative_numbers = true)]
    segment_ms: i64,
    /// Delete segments whose newest record is older than this many ms (log.retention.ms);
    /// -1 keeps everything.
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000, allow_negative_numbers = true)]
    retention_ms: i64,
    /// Delete a partition's oldest segments while it is larger than this many bytes
    /// (log.retention.bytes); -1 keeps everything.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    retention_bytes: i64,
    /// How often retention runs, in ms (log.retention.check.interval.ms).
    #[arg(long, default_value_t = 60_000)]
    retention_check_ms: u64,
    /// How long a new group's first rebalance waits for more members, in ms
    /// (group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3000)]
    group_initial_rebalance_delay_ms: u64,
    /// Committed offsets of a group that stays empty this long are removed, in ms
    /// (offsets.retention.minutes).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000)]
    offsets_retention_ms: u64,
    /// Send Fetch records with sendfile(2) from the segment files; false copies them through
    /// user space.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    fetch_zero_copy: bool,
    /// Request bytes each shard holds at once; connections wait (TCP backpressure) beyond it.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    inflight_bytes_max: usize,
    /// This broker's node id.
    #[arg(long, default_value_t = 0)]
    node_id: i32,
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("--advertised-listener '{s}' is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("--advertised-listener '{s}': '{port}' is not a port"))?;
    if host.is_empty() {
        return Err(format!("--advertised-listener '{s}' has no host"));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

fn config_from(args: ServeArgs) -> Result<Config, String> {
    let cpus = startup::usable_cpus();
    let shards = args.shards.unwrap_or(cpus.len());
    let mut config = Config::new(args.listen, args.data_dir, shards);
    config.shard_cpus = (0..shards).map(|i| cpus[i % cpus.len()]).collect();
    if shards > cpus.len() {
        tracing::warn!(
            shards,
            cpus = cpus.len(),
            "more shards than usable CPUs: some share a core"
        );
    }
    if let Some(a) = args.advertised_listener {
        config.advertised_listener = parse_host_port(&a)?;
    }
    config.auto_create_topics = args.auto_create_topics;
    config.default_partitions = args.default_partitions;
    config.request_bytes_max = args.request_bytes_max;
    config.message_bytes_max = args.message_bytes_max;
    config.segment_bytes = args.segment_bytes;
    config.node_id = args.node_id;
    config.flush_messages = args.flush_messages;
    config.flush_ms = args.flush_ms;
    config.fetch_zero_copy = args.fetch_zero_copy;
    config.inflight_bytes_max = args.inflight_bytes_max;
    let unlimited_or = |name: &str, v: i64| match v {
        -1 => Ok(None),
        v if v >= 1 => Ok(Some(v as u64)),
        v => Err(format!("{name} must be -1 (no limit) or positive, got {v}")),
    };
    config.segment_ms = unlimited_or("--segment-ms", args.segment_ms)?;
    config.retention_ms = unlimited_or("--retention-ms", args.retention_ms)?;
    config.retention_bytes = unlimited_or("--retention-bytes", args.retention_bytes)?;
    config.retention_check_ms = args.retention_check_ms;
    config.group_initial_rebalance_delay_ms = args.group_initial_rebalance_delay_ms;
    config.offsets_retention_ms = args.offsets_retention_ms;
    config.validate()?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let config = config_from(args)?;
    let facts = startup::host_facts();
    if let Some(why) = startup::diagnose_io_uring(&facts).or_else(|| startup::memlock_error(&facts))
    {
        return Err(why);
    }
    // glommio registers io_memory per executor for each of its rings.
    let needed = config.io_memory_bytes as u64 * 3 * config.shards as u64;
    if let Some(w) = startup::memlock_warning(&facts, needed) {
        tracing::warn!("{w}");
    }
    match storage::io::faults::install_from_env() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            rules = n,
            "SPATE_TEST_FAULTS is set: storage faults will be injected (tests only)"
        ),
        Err(e) => return Err(format!("SPATE_TEST_FAULTS: {e}")),
    }
    let _lock = startup::lock_data_dir(&config.data_dir).map_err(|e| e.to_string())?;
    startup::check_listen_free(config.listen).map_err(|e| e.to_string())?;
    // The marker says the last stop flushed everything; it is removed before serving, so a
    // crash from here on leaves none and the next start recovers.
    let mut config = config;
    let fresh = !storage::catalog::exists(&config.data_dir);
    config.recover_on_start = !storage::catalog::take_clean_shutdown_marker(&config.data_dir)
        .map_err(|e| format!("cannot read the clean-shutdown marker: {e}"))?
        && !fresh;
    if config.recover_on_start {
        tracing::info!("no clean-shutdown marker: checking the tail of every log");
    }
    let data_dir = config.data_dir.clone();
    let moved = spate::group::rehome_offsets(&data_dir.join(server::GROUPS_DIR), config.shards)
        .map_err(|e| format!("cannot move committed offsets to their coordinator shards: {e}"))?;
    if moved > 0 {
        tracing::info!(
            groups = moved,
            shards = config.shards,
            "committed offsets re-homed after a shard count change"
        );
    }
    let catalog = storage::catalog::load(&config.data_dir).map_err(|e| {
        format!(
            "cannot read the catalog in {}: {e}",
            config.data_dir.display()
        )
    })?;

    // Block the stop signals in every thread; this one waits for them.
    // SAFETY: plain sigset manipulation on a zeroed set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let runner = std::thread::Builder::new()
        .name("spate-shards".into())
        .spawn(move || server::run(config, catalog))
        .map_err(|e| format!("cannot start the shards: {e}"))?;
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    while !runner.is_finished() {
        // SAFETY: waits for one of the blocked signals, at most `timeout`.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig == libc::SIGTERM || sig == libc::SIGINT {
            if server::STOP.swap(true, Ordering::SeqCst) {
                tracing::warn!("second stop signal: exiting now");
                std::process::exit(1);
            }
            tracing::info!(signal = sig, "stopping");
        }
    }
    match runner.join() {
        Ok(Ok(())) => {
            if server::FLUSH_FAILED.load(Ordering::SeqCst) {
                tracing::warn!("stopped, but a flush failed: the next start will recover the logs");
            } else if let Err(e) = storage::catalog::write_clean_shutdown_marker(&data_dir) {
                tracing::warn!(error = %e, "could not write the clean-shutdown marker");
            } else {
                tracing::info!("stopped cleanly");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the shard runner panicked".into()),
    }
}

/// A panic on a shard means its state can no longer be trusted, and the other shards cannot
/// carry on without it: log it and abort (a supervisor restarts the broker, which recovers its
/// logs). Panics inside a request decoder are the exception: `protocol::decode_request` catches
/// them and closes that one connection.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if spate::protocol::catching_decoder_panic() {
            tracing::warn!("request decoder panicked: {info}");
            return;
        }
        default(info);
        tracing::error!(
            "panic: {info}; aborting so a supervisor restarts the broker and it recovers"
        );
        std::process::abort();
    }));
}

/// Exit status of a tool subcommand: its error on stderr and status 1.
fn tool_exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    install_panic_hook();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        // Tools print for people, not through the broker's log format.
        Command::Tune(args) => return tool_exit(spate::tune::run(args)),
        Command::Admin(cmd) => return tool_exit(spate::cli::run(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}
