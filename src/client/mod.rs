//! A blocking Kafka client for the tools: the admin CLI (`spate topic|group|produce|consume`),
//! `spate-bench` and the integration tests all speak to brokers through it.
//!
//! It is a client of the broker like any other: it speaks only through the `kafka-protocol`
//! crate and `protocol` (framing constants), never through the broker's own modules
//! (`server`, `shard`, `router`, `storage`, `group`), so what it checks is what a real client
//! would see.

pub mod conn;
pub mod frame;
pub mod records;
pub mod secure;

pub use conn::{Conn, Error, Options, Result, SaslLogin, connect_stream, open_stream};
pub use secure::{CommandConfig, Security, Stream};
