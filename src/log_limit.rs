//! Rate limits for log lines a client can trigger (refused connections, frame errors, idle
//! closes, TLS spoken to a plaintext port, and the lines of objects a client creates at will:
//! consumer groups, topics and their partitions). A client that reconnects or creates in a
//! loop must not be able to fill the disk with our logs, so each kind of line is written at
//! most `burst` times per interval, and what was held back is counted and reported with the
//! next line of its kind (or by [`LogLimiter::flush`], which the shard's ticker calls).
//!
//! A leaf module (like `clock`): the connection loop, the shard and the group coordinator each
//! keep their own limiter. Lives on: one shard; each shard has its own, so no lock is taken
//! (the counts are per shard, which is also where the lines say they come from).

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// The interval of every limiter: at most `burst` lines of a kind per shard per interval.
pub const LOG_INTERVAL_MS: u64 = 10_000;

/// The kinds of lines that are limited; each has its own interval window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// A connection closed at accept because the broker holds `connections_max`.
    Refused,
    /// A connection closed after `connections_max_idle_ms` without a complete request.
    IdleClosed,
    /// A connection closed for a bad frame, an undecodable request or a refused API.
    BadRequest,
    /// A TLS ClientHello arrived on the plaintext listener.
    TlsOnPlaintext,
    /// A TLS listener's connection failed its handshake (a plaintext client, garbage, a
    /// truncated handshake, a refused certificate).
    TlsHandshake,
    /// accept(2) failed (out of descriptors, for one).
    AcceptFailed,
    /// A consumer group was created (any JoinGroup or OffsetCommit names one).
    GroupCreated,
    /// A topic was created (CreateTopics, or auto-creation by Produce or Metadata).
    TopicCreated,
    /// A partition of a topic created while the broker runs was opened.
    PartitionOpened,
    /// The authorizer denied a request (the audit log's sampled denials).
    AclDenied,
}

impl LogKind {
    const ALL: [LogKind; 10] = [
        LogKind::Refused,
        LogKind::IdleClosed,
        LogKind::BadRequest,
        LogKind::TlsOnPlaintext,
        LogKind::TlsHandshake,
        LogKind::AcceptFailed,
        LogKind::GroupCreated,
        LogKind::TopicCreated,
        LogKind::PartitionOpened,
        LogKind::AclDenied,
    ];

    /// Lines of this kind written per interval before the rest are counted. The lines of
    /// objects created are an audit trail worth having one by one in normal use, so they
    /// have room for a burst; the connection warnings repeat one message.
    fn burst(self) -> u64 {
        match self {
            LogKind::GroupCreated | LogKind::TopicCreated | LogKind::PartitionOpened => 100,
            LogKind::AclDenied => 10,
            _ => 1,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            LogKind::Refused => "connection refused",
            LogKind::IdleClosed => "idle connection closed",
            LogKind::BadRequest => "closing connection",
            LogKind::TlsOnPlaintext => "TLS on the plaintext listener",
            LogKind::TlsHandshake => "TLS handshake failed",
            LogKind::AcceptFailed => "accept failed",
            LogKind::GroupCreated => "group created",
            LogKind::TopicCreated => "topic created",
            LogKind::PartitionOpened => "partition opened",
            LogKind::AclDenied => "authorization denied",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Window {
    /// When the current interval of this kind began (its first line); None before the first.
    last_line: Option<Instant>,
    /// Lines written in the current interval.
    written: u64,
    /// Events of this kind in the current interval that were not written.
    held_back: u64,
}

/// At most one line per kind per interval; the rest are counted.
pub struct LogLimiter {
    interval: Duration,
    windows: RefCell<[Window; LogKind::ALL.len()]>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            windows: RefCell::new([Window::default(); LogKind::ALL.len()]),
        }
    }

    /// Whether a line of `kind` may be written `now`: Some(events held back since the last
    /// line, to be reported in this one), or None (the event is counted instead).
    pub fn allow(&self, kind: LogKind, now: Instant) -> Option<u64> {
        let mut windows = self.windows.borrow_mut();
        let w = &mut windows[kind.index()];
        match w.last_line {
            Some(t) if now.duration_since(t) < self.interval => {
                if w.written < kind.burst() {
                    w.written += 1;
                    Some(0)
                } else {
                    w.held_back += 1;
                    None
                }
            }
            _ => {
                w.last_line = Some(now);
                w.written = 1;
                Some(std::mem::take(&mut w.held_back))
            }
        }
    }

    /// Writes one line per kind whose held-back events are older than the interval, so a
    /// burst that stopped is still reported. Returns how many lines it wrote.
    pub fn flush(&self, now: Instant) -> usize {
        let mut lines = 0;
        let mut windows = self.windows.borrow_mut();
        for kind in LogKind::ALL {
            let w = &mut windows[kind.index()];
            let due = w
                .last_line
                .is_none_or(|t| now.duration_since(t) >= self.interval);
            if w.held_back > 0 && due {
                let interval_ms = self.interval.as_millis() as u64;
                // Idle closes (clients that went away) and created objects are routine; the
                // rest are warnings.
                if matches!(
                    kind,
                    LogKind::IdleClosed
                        | LogKind::GroupCreated
                        | LogKind::TopicCreated
                        | LogKind::PartitionOpened
                ) {
                    tracing::info!(
                        held_back = w.held_back,
                        interval_ms,
                        "{} (repeated)",
                        kind.name()
                    );
                } else {
                    tracing::warn!(
                        held_back = w.held_back,
                        interval_ms,
                        "{} (repeated)",
                        kind.name()
                    );
                }
                w.held_back = 0;
                w.last_line = Some(now);
                w.written = 1;
                lines += 1;
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(LogKind::Refused, t0), Some(0));
        for i in 1..=1999u64 {
            assert_eq!(
                limiter.allow(LogKind::Refused, t0 + Duration::from_millis(i / 2)),
                None
            );
        }
        // Another kind has its own window.
        assert_eq!(limiter.allow(LogKind::IdleClosed, t0), Some(0));
        // Nothing is due before the interval ends.
        assert_eq!(limiter.flush(t0 + Duration::from_secs(5)), 0);
        // The next line after the interval reports what was held back.
        assert_eq!(
            limiter.allow(LogKind::Refused, t0 + Duration::from_secs(10)),
            Some(1999)
        );
        assert_eq!(
            limiter.allow(LogKind::Refused, t0 + Duration::from_secs(11)),
            None
        );
        // A burst that stopped is reported by the flush, once.
        assert_eq!(limiter.flush(t0 + Duration::from_secs(21)), 1);
        assert_eq!(limiter.flush(t0 + Duration::from_secs(40)), 0);
    }

    #[test]
    fn created_objects_have_room_for_a_burst() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let written = (0..1000)
            .filter(|_| limiter.allow(LogKind::GroupCreated, t0).is_some())
            .count();
        assert_eq!(written, 100);
        assert_eq!(
            limiter.allow(LogKind::GroupCreated, t0 + Duration::from_secs(10)),
            Some(900)
        );
    }
}
