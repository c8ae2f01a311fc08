//! `spate tune`: checks the host for what Spate wants (being written).

/// Arguments of `spate tune`.
#[derive(clap::Args, Debug)]
pub struct TuneArgs {}

/// Runs `spate tune`.
pub fn run(_args: TuneArgs) -> Result<(), String> {
    Err("spate tune is not implemented yet".into())
}
