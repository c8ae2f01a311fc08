//! The shard's log cleaner: every `--log-cleaner-backoff-ms` it looks at the partitions it
//! owns whose topic's `cleanup.policy` includes `compact`, and cleans those that are due, one
//! at a time (so a shard holds at most one key map, bounded by
//! `--log-cleaner-dedupe-buffer-bytes`, and one cleaner thread; `--log-cleaner-io-bytes-per-sec-max`
//! paces its reads and writes so it never starves produce).
//!
//! Lives on: each shard runs its own; a partition's clean is taken and swapped in on the
//! shard that owns it, and only the job between runs off the executor with owned data
//! (see `storage::cleaner`). No borrow of the partitions is held across an `.await`: each
//! step looks the partition up again, and a partition that went meanwhile ends the clean.
//! A leader and its followers each clean their own log, as in Kafka.
//!
//! The clean job runs on a thread of its own (`spate-cleaner-N`, one at a time per shard) at a
//! lower CPU priority ([`CLEANER_NICE`]), not on the shard's blocking pool: a clean takes
//! seconds to minutes, and the pool's few threads serve the fdatasyncs that acks=all produce
//! waits for. The file work after the swap (small) runs on the blocking pool.

use std::cell::Cell;

use crate::clock::now_ms;
use crate::storage::catalog::{CleanupPolicy, TopicMeta};
use crate::storage::cleaner::{
    CleanTail, CleanerLimits, CompactionConfig, MIN_COMPACTION_LAG_MS_DEFAULT,
};

use super::{Shard, TopicPartition};

/// What this shard's cleaner did, for the metrics.
#[derive(Default, Debug)]
pub struct CleanerStats {
    pub cleans: Cell<u64>,
    pub failures: Cell<u64>,
    pub bytes_read: Cell<u64>,
    pub bytes_written: Cell<u64>,
    /// Bytes of the segments cleaned, before and after.
    pub bytes_before: Cell<u64>,
    pub bytes_after: Cell<u64>,
    pub millis: Cell<u64>,
    /// The largest cleaner lag of the shard's compacted partitions at the last pass: ms since
    /// the oldest record not yet cleaned.
    pub lag_ms: Cell<i64>,
}

impl CleanerStats {
    fn add(c: &Cell<u64>, n: u64) {
        c.set(c.get() + n);
    }
}

/// How much nicer than the broker a cleaner thread runs (Linux thread priority), so the shard
/// executors and the clients sharing their cores win the CPU when they want it.
pub const CLEANER_NICE: i32 = 10;

/// Runs `f` on a new thread named for the shard's cleaner at [`CLEANER_NICE`], and waits for
/// its result without blocking the executor (the thread's send wakes it). None when no thread
/// could be started (the clean is tried again at the next pass).
async fn run_on_cleaner_thread<T: Send + 'static>(
    shard: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = futures_channel::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("spate-cleaner-{shard}"))
        .spawn(move || {
            // Best effort: a thread that cannot be niced cleans at the broker's priority.
            let tid = rustix::thread::gettid();
            if let Ok(old) = rustix::process::getpriority_process(Some(tid)) {
                let _ =
                    rustix::process::setpriority_process(Some(tid), (old + CLEANER_NICE).min(19));
            }
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        tracing::warn!(shard, error = %e, "cannot start a log cleaner thread; the clean waits for the next pass");
        return None;
    }
    rx.await.ok()
}

impl Shard {
    /// `topic`'s cleanup policy (its config over the broker default).
    pub fn cleanup_policy(&self, topic: &TopicMeta) -> CleanupPolicy {
        topic
            .config
            .cleanup_policy
            .unwrap_or(self.config.cleanup_policy)
    }

    /// `topic`'s compaction settings (its configs over the broker defaults).
    pub fn compaction(&self, topic: &TopicMeta) -> CompactionConfig {
        let c = &topic.config;
        CompactionConfig {
            min_cleanable_dirty_ratio: c
                .min_cleanable_dirty_ratio
                .unwrap_or(self.config.log_cleaner_min_cleanable_ratio),
            min_compaction_lag_ms: c
                .min_compaction_lag_ms
                .unwrap_or(MIN_COMPACTION_LAG_MS_DEFAULT),
            max_compaction_lag_ms: c.max_compaction_lag_ms,
            delete_retention_ms: c
                .delete_retention_ms
                .unwrap_or(self.config.log_cleaner_delete_retention_ms),
        }
    }

    /// One pass of the cleaner over this shard's compacted partitions.
    pub async fn run_cleaner(&self) {
        let now = now_ms();
        let due: Vec<(TopicPartition, CompactionConfig)> = {
            let topics = self.topics.borrow();
            let partitions = self.partitions.borrow();
            let mut lag = 0;
            let due = partitions
                .iter()
                // The coordinators' logs keep their own bounds (`group::store`, `txn::store`).
                .filter(|((topic, _), _)| !crate::placement::is_coordinator_log(topic))
                .filter_map(|(tp, p)| {
                    let meta = topics.get(&tp.0)?;
                    if !self.cleanup_policy(meta).compact {
                        return None;
                    }
                    let config = self.compaction(meta);
                    let stable = p.last_stable_offset().min(p.high_watermark());
                    lag = lag.max(p.log.dirtiness(&config, now, stable).lag_ms);
                    Some((tp.clone(), config))
                })
                .collect();
            self.cleaner_stats.lag_ms.set(lag);
            due
        };
        for (tp, config) in due {
            self.clean_partition(&tp, config).await;
        }
    }

    /// Cleans one partition if it is due: takes the job, runs it on a cleaner thread, swaps the
    /// result in, and runs the file work left on the blocking pool.
    async fn clean_partition(&self, tp: &TopicPartition, config: CompactionConfig) {
        let limits = CleanerLimits {
            key_map_bytes: self.config.log_cleaner_dedupe_buffer_bytes,
            io_bytes_per_sec: self.config.log_cleaner_io_bytes_per_sec_max,
        };
        let job = {
            let mut partitions = self.partitions.borrow_mut();
            let Some(p) = partitions.get_mut(tp) else {
                return;
            };
            let stable = p.last_stable_offset().min(p.high_watermark());
            let txn_index = &p.txn_index;
            p.log
                .begin_clean(config, limits, now_ms(), stable, |from, to| {
                    txn_index.overlapping(from, to)
                })
        };
        let Some(job) = job else {
            return;
        };
        let dir = job.dir.clone();
        let result = match run_on_cleaner_thread(self.id, move || job.run()).await {
            Some(r) => r,
            None => {
                let mut partitions = self.partitions.borrow_mut();
                if let Some(p) = partitions.get_mut(tp) {
                    p.log.end_clean();
                }
                return;
            }
        };
        let tail = {
            let mut partitions = self.partitions.borrow_mut();
            let Some(p) = partitions.get_mut(tp) else {
                // The partition went while it was cleaned (deleted, or moved off this
                // broker): an open of it rolls the staged clean back.
                return;
            };
            match &result {
                Err(e) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "log clean failed; it is tried again at the next pass");
                    CleanerStats::add(&self.cleaner_stats.failures, 1);
                    CleanTail {
                        dir: dir.clone(),
                        checkpoint: None,
                        tombstone_deadline: None,
                    }
                }
                Ok(cleaned) => match p.log.finish_clean(cleaned) {
                    Ok(tail) => tail,
                    Err(e) => {
                        // The partition is offline now; its next open completes the clean.
                        tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "log clean swap failed");
                        CleanerStats::add(&self.cleaner_stats.failures, 1);
                        p.log.end_clean();
                        return;
                    }
                },
            }
        };
        let committed = tail.checkpoint.is_some();
        let tail_result = glommio::executor().spawn_blocking(move || tail.run()).await;
        if let Err(e) = &tail_result {
            // A commit's tail that failed is completed by the next open (its manifest stays);
            // until then no clean starts here (the staging directory may hold old files).
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "log clean's file work failed");
            CleanerStats::add(&self.cleaner_stats.failures, 1);
            if committed {
                return;
            }
        }
        let mut partitions = self.partitions.borrow_mut();
        if let Some(p) = partitions.get_mut(tp) {
            p.log.end_clean();
        }
        if let (Ok(cleaned), true) = (&result, committed) {
            let s = &self.cleaner_stats;
            let st = cleaned.stats;
            CleanerStats::add(&s.cleans, 1);
            CleanerStats::add(&s.bytes_read, st.bytes_read);
            CleanerStats::add(&s.bytes_written, st.bytes_written);
            CleanerStats::add(&s.bytes_before, st.bytes_before);
            CleanerStats::add(&s.bytes_after, st.bytes_after);
            CleanerStats::add(&s.millis, st.elapsed_ms);
        }
    }
}
