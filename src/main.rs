//! The `spate` command: parse the command line, check the host, start one pinned executor per
//! shard, and stop them cleanly on SIGTERM or SIGINT.

#![deny(clippy::unwrap_used)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spate::config::Config;
use spate::settings::{LogFormat, Settings};
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
    /// Work on a stopped broker's data dir.
    #[command(subcommand)]
    Storage(StorageCommand),
    #[command(flatten)]
    Admin(spate::cli::AdminCommand),
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Accept that a partition's missing offsets are lost (run while the broker is stopped):
    /// the next start serves what is left of it and appends after its old log end.
    AcceptLoss {
        #[arg(long, value_name = "DIR", default_value = "./spate-data")]
        data_dir: PathBuf,
        /// The partition, as TOPIC-PARTITION (`orders-3`).
        #[arg(long, value_name = "TOPIC-PARTITION")]
        partition: String,
    },
}

/// `spate storage ...`: holds the data dir's lock, so it never runs beside a broker.
fn storage_command(cmd: StorageCommand) -> Result<(), String> {
    match cmd {
        StorageCommand::AcceptLoss {
            data_dir,
            partition,
        } => {
            let (topic, p) = partition
                .rsplit_once('-')
                .and_then(|(t, p)| Some((t, p.parse::<i32>().ok()?)))
                .ok_or_else(|| format!("{partition:?} is not TOPIC-PARTITION"))?;
            let _lock = startup::lock_data_dir(&data_dir)
                .map_err(|e| format!("{e} (stop the broker first)"))?;
            let accepted = storage::log::accept_loss(&data_dir, topic, p)
                .map_err(|e| format!("{partition}: {e}"))?;
            if accepted.is_empty() {
                println!("{partition}: no offsets are missing; nothing to accept");
            } else {
                println!(
                    "{partition}: the loss of offsets {} is accepted; the next start serves the rest",
                    storage::log::describe_ranges(&accepted)
                );
            }
            Ok(())
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file with any of the settings below (same names, snake_case); the
    /// command line overrides it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: Settings,
}

/// The effective settings: the config file, then the command line over it.
fn resolve(args: &ServeArgs) -> Result<Settings, String> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    Ok(file.merged(args.settings.clone()))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The filter can be replaced at run time (Kafka's BROKER_LOGGER configs, see
    // `spate::log_levels`).
    macro_rules! init {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let current = handle.clone();
            spate::log_levels::install(
                Box::new(move |directives: &str| {
                    let f = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
                    handle.reload(f).map_err(|e| e.to_string())
                }),
                Box::new(move || current.with_current(|f| f.to_string()).ok()),
            );
            builder.init()
        }};
    }
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match format {
        LogFormat::Json => init!(builder.json().with_env_filter(filter)),
        LogFormat::Text => init!(
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_env_filter(filter)
        ),
    }
}

fn serve(config: Config) -> Result<(), String> {
    let cpus = startup::usable_cpus();
    if config.shards > cpus.len() {
        tracing::warn!(
            shards = config.shards,
            cpus = cpus.len(),
            "more shards than usable CPUs: some share a core"
        );
    }
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
    for l in &config.listeners {
        startup::check_listen_free(l.addr).map_err(|e| format!("listener {}: {e}", l.name))?;
    }
    startup::ensure_open_files(
        &config.data_dir,
        (config.segment_fds_max * config.shards) as u64,
    )?;
    // The marker says the last stop flushed everything; it is removed before serving, so a
    // crash from here on leaves none and the next start recovers.
    let orphans = storage::metadata::orphaned_partitions(&config.data_dir)
        .map_err(|e| format!("cannot list {}: {e}", config.data_dir.display()))?;
    if !orphans.is_empty() {
        let shown: Vec<&str> = orphans.iter().take(5).map(String::as_str).collect();
        return Err(format!(
            "the metadata log {} is missing, but {} holds {} partition directories ({}{}): \
             started, the broker would know none of their topics and would mix new topics \
             with their data. Restore the metadata log, or move the partition directories \
             away to start empty",
            config
                .data_dir
                .join(storage::metadata::METADATA_DIR)
                .display(),
            config.data_dir.display(),
            orphans.len(),
            shown.join(", "),
            if orphans.len() > shown.len() {
                ", ..."
            } else {
                ""
            },
        ));
    }
    let mut config = config;
    let fresh = !storage::metadata::exists(&config.data_dir);
    config.recover_on_start = !storage::catalog::take_clean_shutdown_marker(&config.data_dir)
        .map_err(|e| format!("cannot read the clean-shutdown marker: {e}"))?
        && !fresh;
    if config.recover_on_start {
        tracing::info!("no clean-shutdown marker: checking the tail of every log");
    }
    let data_dir = config.data_dir.clone();
    // The partition count of __consumer_offsets is fixed once the log exists; groups of a
    // data dir from before it are migrated into it before any shard opens it.
    config.offsets_topic_num_partitions =
        spate::group::store::resolve_num_partitions(&data_dir, config.offsets_topic_num_partitions)
            .map_err(|e| format!("cannot read the partition count of __consumer_offsets: {e}"))?;
    config.transaction_state_log_num_partitions = spate::txn::store::resolve_num_partitions(
        &data_dir,
        config.transaction_state_log_num_partitions,
    )
    .map_err(|e| format!("cannot read the partition count of __transaction_state: {e}"))?;
    match spate::group::migrate_legacy_offsets(
        &data_dir,
        config.offsets_topic_num_partitions,
        spate::clock::now_ms(),
    ) {
        Ok(Some(offsets)) => tracing::info!(
            offsets,
            "committed offsets of the per-shard stores migrated into __consumer_offsets; the old directory is now {}",
            spate::group::MIGRATED_GROUPS_DIR
        ),
        Ok(None) => {}
        Err(e) => {
            return Err(format!(
                "cannot migrate the committed offsets in {}: {e}",
                data_dir.join(spate::group::LEGACY_GROUPS_DIR).display()
            ));
        }
    }
    if let Some(cluster) = &mut config.cluster {
        // A one-node broker's data dir becomes a cluster node's: its metadata moves aside and
        // its topics are imported once this broker is registered.
        let import = storage::metadata::import::prepare(
            &data_dir,
            config.offsets_topic_num_partitions,
            config.transaction_state_log_num_partitions,
            storage::metadata::SNAPSHOT_EVERY_RECORDS,
        )
        .map_err(|e| {
            format!(
                "cannot move the one-node metadata in {} aside for its import into the cluster: {e}",
                data_dir.display()
            )
        })?;
        if let Some(import) = &import {
            tracing::info!(
                topics = import.topics.len(),
                one_node_cluster_id = import.cluster_id.as_deref().unwrap_or(""),
                "a one-node broker's topics are pending import into the cluster; this node takes the quorum's cluster id"
            );
        }
        cluster.one_node_import = import.map(std::sync::Arc::new);
    }
    let metadata = if let Some(cluster) = &config.cluster {
        let (stored, store) = storage::metadata::load_cluster(
            &config.data_dir,
            storage::metadata::SNAPSHOT_EVERY_RECORDS,
        )
        .map_err(|e| {
            format!(
                "cannot load the metadata in {}: {e}",
                config.data_dir.display()
            )
        })?;
        if store.is_single_node() {
            return Err(format!(
                "{} holds the metadata of a one-node broker that could not be moved aside for \
                 its import into the cluster",
                config.data_dir.display()
            ));
        }
        if let (Some(stored), Some(pinned)) = (&stored, &cluster.cluster_id)
            && stored != pinned
        {
            return Err(format!(
                "--cluster-id {pinned}, but {} belongs to cluster {stored}",
                config.data_dir.display()
            ));
        }
        storage::metadata::Loaded {
            catalog: storage::catalog::CatalogData {
                cluster_id: stored.unwrap_or_default(),
                topics: store.image().topic_metas(),
            },
            store,
            migrated_topics: None,
        }
    } else {
        storage::metadata::load(
            &config.data_dir,
            config.node_id,
            storage::metadata::SNAPSHOT_EVERY_RECORDS,
        )
        .map_err(|e| {
            format!(
                "cannot load the metadata in {}: {e}",
                config.data_dir.display()
            )
        })?
    };

    // Block the stop signals in every thread; this one waits for them. This stays on raw libc:
    // rustix's only sigmask/sigtimedwait wrappers are in its hidden, unstable `runtime` module.
    // SAFETY: plain sigset manipulation on a zeroed set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    if config.listeners.iter().any(|l| l.protocol.tls()) {
        // Fetch over TLS: sendfile needs the kernel to encrypt (kTLS); without it the copying
        // path encrypts in user space.
        match spate::tls::probe_ktls() {
            Ok(()) => tracing::info!(
                "the kernel offers kTLS (TCP_ULP tls), but handing it the TLS session keys is \
                 not built: TLS fetches take the copying path"
            ),
            Err(e) => tracing::info!(
                probe = %e,
                "no kTLS (setsockopt TCP_ULP \"tls\" failed): TLS fetches take the copying path"
            ),
        }
    }
    let runner = std::thread::Builder::new()
        .name("spate-shards".into())
        .spawn(move || server::run(config, metadata.catalog, metadata.store))
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
        } else if sig == libc::SIGHUP {
            // Each shard's ticker sees the new generation and reloads its TLS material.
            let generation = spate::tls::RELOAD_GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::info!(
                generation,
                "SIGHUP: reloading the TLS certificate, key and client CA"
            );
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
    install_panic_hook();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => args,
        // Tools print for people, not through the broker's log format.
        Command::Tune(args) => {
            init_logging(LogFormat::Text);
            return tool_exit(spate::tune::run(args));
        }
        Command::Storage(cmd) => {
            init_logging(LogFormat::Text);
            return tool_exit(storage_command(cmd));
        }
        Command::Admin(cmd) => {
            init_logging(LogFormat::Text);
            return tool_exit(spate::cli::run(cmd));
        }
    };
    // Settings are resolved before logging starts (the log format is one of them), so their
    // errors go to stderr plainly.
    let resolved = resolve(&args).and_then(|s| {
        let format = s.log_format();
        s.into_config(&startup::usable_cpus()).map(|c| (c, format))
    });
    let (config, format) = match resolved {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match Settings::of(&config, format).to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}
