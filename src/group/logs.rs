//! How a coordinator reaches the partition logs it keeps its records in, without knowing who
//! owns them.
//!
//! The logs of `__consumer_offsets` are ordinary partitions of the shard that owns them
//! (`shard::partition::Partition`, with a role and replica state), so they replicate exactly
//! like a topic's. The group store ([`super::store`]) never holds one: it asks for a log
//! through [`CoordinatorLogs`], which the shard implements. The trait is defined here, and
//! not in shard/, because group/ must never name shard/ (see LAYERING.md).
//!
//! [`DirLogs`] is the other implementation: logs opened straight from a data dir, for the
//! start-up migration of the legacy offsets store (before any shard runs) and for tests.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::storage::log::{LogConfig, PartitionLog};

/// A future that resolves once the asked offsets are durable where they must be.
pub type Durable = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// The coordinator's access to partition logs.
///
/// Lives on: the shard of the coordinator that uses it; not `Send`.
pub trait CoordinatorLogs {
    /// Runs `f` on `topic`-`p`'s log with the leader epoch to stamp into what it writes.
    /// Refused (an error, `f` not run) unless this shard leads the partition (a one-node
    /// broker's partition, or a leader in the cluster's metadata), so a store can never write
    /// into a follower's log. What `f` appends is visible to the partition's readers and
    /// followers at once; it counts as acknowledged only after [`CoordinatorLogs::durable`].
    fn with_log(
        &self,
        topic: &str,
        p: i32,
        f: &mut dyn FnMut(&mut PartitionLog, i32) -> io::Result<()>,
    ) -> io::Result<()>;

    /// Resolves once every offset up to `last` of `topic`-`p` is fdatasync'd here and, in a
    /// cluster, on every in-sync replica (the high watermark passed it). An error when the
    /// fdatasync failed (the partition goes offline), leadership moved, or too few replicas
    /// are in sync.
    fn durable(&self, topic: &str, p: i32, last: i64) -> Durable;
}

/// Partition logs opened directly from a data dir, each led by this process in epoch 0 (as
/// on a one-node broker). `durable` fdatasyncs at once, blocking: use it only where blocking
/// is fine (start-up before the shards run, tests).
pub struct DirLogs {
    data_dir: PathBuf,
    logs: RefCell<BTreeMap<(String, i32), PartitionLog>>,
}

impl DirLogs {
    pub fn new(data_dir: &Path) -> DirLogs {
        DirLogs {
            data_dir: data_dir.to_path_buf(),
            logs: RefCell::new(BTreeMap::new()),
        }
    }

    /// Opens `topic`-`p` (with crash recovery of its tail when `recover`); the directory of a
    /// new partition is made durable before anything is written in it.
    pub fn open(&self, topic: &str, p: i32, config: LogConfig, recover: bool) -> io::Result<()> {
        let created = !crate::storage::log::partition_dir(&self.data_dir, topic, p).exists();
        let log = PartitionLog::open(&self.data_dir, topic, p, config, recover)?;
        if created {
            File::open(&self.data_dir)?.sync_all()?;
        }
        self.logs.borrow_mut().insert((topic.to_string(), p), log);
        Ok(())
    }
}

impl CoordinatorLogs for DirLogs {
    fn with_log(
        &self,
        topic: &str,
        p: i32,
        f: &mut dyn FnMut(&mut PartitionLog, i32) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut logs = self.logs.borrow_mut();
        let log = logs
            .get_mut(&(topic.to_string(), p))
            .ok_or_else(|| io::Error::other(format!("{topic}-{p} is not open here")))?;
        f(log, 0)
    }

    fn durable(&self, topic: &str, p: i32, _last: i64) -> Durable {
        let result = (|| {
            let mut logs = self.logs.borrow_mut();
            let log = logs
                .get_mut(&(topic.to_string(), p))
                .ok_or_else(|| io::Error::other(format!("{topic}-{p} is not open here")))?;
            if let Some(job) = log.begin_flush() {
                let r = job.run();
                log.finish_flush(job.target, &r);
                r?;
            }
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }
}
