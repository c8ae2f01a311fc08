//! Per-partition logs and the metadata store.
//!
//! Lives on: a [`log::PartitionLog`] is owned by the shard that owns its partition and is only
//! touched by that shard's executor. The metadata store ([`metadata`]) is written only by the
//! controller (shard 0), on the blocking pool, and read at start-up.
//!
//! On disk, under the data dir:
//!
//! ```text
//! meta.properties                  the cluster id
//! __cluster_metadata-0/            metadata log: topics, partitions, configs (see metadata/)
//!     00000000000000000000.log     batches of metadata records
//!     00000000000000000000.snapshot  the metadata image as of that offset
//! <topic>-<partition>/
//!     00000000000000000000.log     record batches, exactly as on the wire, base offsets set
//!     00000000000000000000.index   sparse offset index: (offset - base u32, position u32) BE
//!     00000000000000000000.timeindex time index: (max timestamp i64, offset - base u32) BE
//!     log-start-offset             the log start set by DeleteRecords, when inside a segment
//!     leader-epoch-checkpoint      which leader epoch wrote from which offset (see epochs.rs)
//!     00000000000000000000.snapshot idempotent producers' state as of that offset (producers.rs)
//!     cleaner-offset-checkpoint    compacted topics: where the last clean's key map ended
//!     cleaner/, cleaner-swap       a clean in progress: staged segments, its manifest (cleaner.rs)
//! ```
//!
//! A segment's file is named by the offset of its first batch, as Kafka does. Writes are
//! pwritev(2) from the request's buffers into the page cache (no user-space copy of record
//! bytes); reads hand out [`crate::protocol::fetch::FileSlice`]s of the same files.

pub mod catalog;
pub mod cleaner;
pub mod epochs;
pub mod io;
pub mod log;
pub mod metadata;
pub mod producers;
pub mod segment;
pub mod txnindex;
