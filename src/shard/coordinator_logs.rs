//! The shard's side of [`CoordinatorLogs`]: the group coordinator's logs are this shard's
//! ordinary partitions of `__consumer_offsets`, so they replicate like any topic's.
//!
//! Lives on: one shard. The coordinator is built before the `Rc<Shard>` that holds it, so
//! [`ShardLogs`] gets its `Weak<Shard>` once that exists ([`ShardLogs::attach`]); it holds
//! no borrow across an await (`with_log` is synchronous, `durable` borrows nothing itself).

use std::cell::RefCell;
use std::io;
use std::rc::{Rc, Weak};

use super::Shard;
use super::partition::Role;
use crate::error::KafkaError;
use crate::group::logs::{CoordinatorLogs, Durable};
use crate::storage::log::PartitionLog;

/// A shard's partitions as the coordinator sees them.
#[derive(Default)]
pub struct ShardLogs {
    shard: RefCell<Weak<Shard>>,
}

impl ShardLogs {
    pub fn new() -> ShardLogs {
        ShardLogs::default()
    }

    /// Points at the shard, once the `Rc<Shard>` exists.
    pub fn attach(&self, shard: &Rc<Shard>) {
        *self.shard.borrow_mut() = Rc::downgrade(shard);
    }

    fn shard(&self) -> io::Result<Rc<Shard>> {
        self.shard
            .borrow()
            .upgrade()
            .ok_or_else(|| io::Error::other("the shard is gone"))
    }
}

fn io_error(e: KafkaError) -> io::Error {
    io::Error::other(e.to_string())
}

impl CoordinatorLogs for ShardLogs {
    fn with_log(
        &self,
        topic: &str,
        p: i32,
        f: &mut dyn FnMut(&mut PartitionLog, i32) -> io::Result<()>,
    ) -> io::Result<()> {
        let shard = self.shard()?;
        shard.debug_assert_owner(topic, p);
        let mut partitions = shard.partitions.borrow_mut();
        let part = partitions
            .get_mut(&(topic.to_string(), p))
            .ok_or_else(|| io::Error::other(format!("{topic}-{p} is not open on this shard")))?;
        if !matches!(part.role, Role::Single | Role::Leader(_)) {
            return Err(io::Error::other(format!(
                "{topic}-{p} is not led by this broker: a coordinator writes only as its leader"
            )));
        }
        let end = part.log_end_offset();
        let epoch = part.leader_epoch();
        let result = f(&mut part.log, epoch);
        if part.log_end_offset() != end {
            // Readers and followers long-polling the partition see the new records now; a
            // one-node partition's high watermark follows its log end.
            part.appended();
            part.wake_waiters();
        }
        result
    }

    fn durable(&self, topic: &str, p: i32, last: i64) -> Durable {
        let shard = self.shard();
        let tp = (topic.to_string(), p);
        Box::pin(async move {
            let shard = shard?;
            shard.flush_to(tp.clone(), last).await.map_err(io_error)?;
            shard.wait_replicated(tp, last).await.map_err(io_error)
        })
    }
}
