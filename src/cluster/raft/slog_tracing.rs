//! A [`slog::Drain`] that forwards raft-rs's log lines to `tracing`, so Raft logs through the
//! broker's one subscriber (level filter, JSON output).
//!
//! Each record becomes one `tracing` event under the target `spate::raft`, at the matching
//! level (slog's Critical is an error), with the record's key-values (the record's own first,
//! then the logger's, e.g. `raft_id`) appended to the message as ` key=value`.

use std::fmt::{self, Write};

/// The drain; see the module docs.
pub struct TracingDrain;

/// A root logger for raft-rs that logs through `tracing`, tagged with this node's raft id.
pub fn logger(raft_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => raft_id))
}

struct KvLine(String);

impl slog::Serializer for KvLine {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        // Writing to a String cannot fail.
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// The record's message with its key-values appended.
fn line(record: &slog::Record<'_>, values: &slog::OwnedKVList) -> String {
    let mut kv = KvLine(format!("{}", record.msg()));
    // Serializing into a String only fails if a value's own Display fails; keep what we have.
    let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
    let _ = slog::KV::serialize(values, record, &mut kv);
    kv.0
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<Self::Ok, Self::Err> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "spate::raft", "{}", line(record, values))
            }
            slog::Level::Warning => {
                tracing::warn!(target: "spate::raft", "{}", line(record, values))
            }
            // raft-rs logs every vote and step-down at info; the driver logs the role, leader
            // and term changes an operator needs, so raft-rs's own lines are debug.
            slog::Level::Info => tracing::debug!(target: "spate::raft", "{}", line(record, values)),
            slog::Level::Debug => {
                tracing::debug!(target: "spate::raft", "{}", line(record, values))
            }
            slog::Level::Trace => {
                tracing::trace!(target: "spate::raft", "{}", line(record, values))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key-values of the record and of the logger are appended to the message.
    #[test]
    fn key_values_are_formatted_into_the_line() {
        struct Capture(std::sync::Mutex<Vec<String>>);
        impl slog::Drain for Capture {
            type Ok = ();
            type Err = slog::Never;
            fn log(
                &self,
                record: &slog::Record<'_>,
                values: &slog::OwnedKVList,
            ) -> Result<(), slog::Never> {
                self.0.lock().unwrap().push(line(record, values));
                Ok(())
            }
        }
        let capture = std::sync::Arc::new(Capture(std::sync::Mutex::new(Vec::new())));
        let log = slog::Logger::root(capture.clone(), slog::o!("raft_id" => 3));
        slog::info!(log, "became leader"; "term" => 7);
        assert_eq!(
            capture.0.lock().unwrap().as_slice(),
            ["became leader term=7 raft_id=3"]
        );
        // The real drain does not panic without a subscriber.
        slog::warn!(logger(1), "hello"; "x" => "y");
    }
}
