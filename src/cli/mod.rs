//! The admin command line: `spate topic|group|produce|consume`, speaking the Kafka protocol to
//! any Kafka-compatible broker (`--bootstrap-server`, as Kafka's own tools take it).
//!
//! (Being written: the subcommands below are wired into `main.rs` and fail with a clear
//! message until their implementation lands.)

/// Admin subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {}

/// Runs an admin subcommand; the error is printed by `main`.
pub fn run(cmd: AdminCommand) -> Result<(), String> {
    match cmd {}
}
