//! The transaction state of every transactional id one shard coordinates, kept in its
//! partitions of the internal `__transaction_state` log.
//!
//! Lives on: one shard (the owner of each partition, `placement::partition_owner`).
//!
//! Each partition is an ordinary partition of the shard (`<data>/__transaction_state-<p>/`,
//! with a role and replica state like any topic's) of uncompressed magic-2 batches whose
//! records are [`TxnRecord`]s. The store holds no log: it reaches one through
//! `group::logs::CoordinatorLogs` (the same seam as the group store's), which lets it write
//! only into a partition this shard leads. A change is appended as one record, and
//! [`TxnLog::append`] hands back a [`SyncJob`]; only once the shell saw its records durable
//! (`CoordinatorLogs::durable`: fdatasync'd, and on every in-sync replica) does it apply the
//! change ([`TxnLog::finish`]) and act on it, so every state a client or a partition has seen
//! is durable. A failed fdatasync takes the partition offline: its ids answer
//! COORDINATOR_NOT_AVAILABLE until a restart.
//!
//! Loading follows leadership, as for groups: a store starts empty, and a partition is
//! replayed from its log start into the table when the shard becomes its leader (on one node:
//! at start, before the shard serves) and dropped when it stops being it. The replay is
//! bounded as `group::store` bounds `__consumer_offsets`: once a
//! partition holds more than `max(2 × live ids, COMPACT_MIN_RECORDS)` records, the live
//! records are appended again and the log start moved to them.
//!
//! The partition count is fixed once the log exists (`__transaction_state.partitions`, as
//! for `__consumer_offsets`): another count would move ids away from their state.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::group::logs::{CoordinatorLogs, DirLogs};
use crate::placement::{TXN_TOPIC, partition_owner, txn_partition};
use crate::protocol::batch::{self, ProducedBatch};
use crate::storage::io::read_at_most;
use crate::storage::log::{Housekeeping, LogConfig, PartitionLog};

use super::records::TxnRecord;
use super::state::TxnMeta;

const COMPACT_MIN_RECORDS: u64 = 1024;
const REPLAY_READ_BYTES: usize = 1 << 20;
const RECORDS_PER_BATCH: usize = 512;
const PARTITIONS_FILE: &str = "__transaction_state.partitions";

/// How a partition of `__transaction_state` keeps its log.
pub const LOG_CONFIG: LogConfig = LogConfig {
    segment_bytes: 16 * 1024 * 1024,
    segment_ms: None,
    index_interval_bytes: 4096,
    ..LogConfig::BASE
};

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The partition count of `__transaction_state` in `data_dir`: the stored one, or
/// `configured` for a new log (written down durably first).
pub fn resolve_num_partitions(data_dir: &Path, configured: i32) -> io::Result<i32> {
    let path = data_dir.join(PARTITIONS_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let stored: i32 = s.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a partition count: {s:?}", path.display()),
                )
            })?;
            if stored != configured {
                tracing::warn!(
                    stored,
                    configured,
                    "--transaction-state-log-num-partitions differs from the existing __transaction_state log; keeping its count"
                );
            }
            Ok(stored)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir)?;
            let tmp = data_dir.join(format!("{PARTITIONS_FILE}.tmp"));
            fs::write(&tmp, configured.to_string())?;
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(data_dir)?.sync_all()?;
            Ok(configured)
        }
        Err(e) => Err(e),
    }
}

/// One loaded partition: its records since the log start (its log is the shard's).
#[derive(Debug)]
struct OwnedPartition {
    stored: u64,
}

/// What makes a change take effect: every offset up to `last` of the partition durable on
/// every in-sync replica, and after a rewrite, then, the move of its log start (blocking: run
/// it on the blocking pool).
#[derive(Debug)]
pub struct SyncJob {
    pub partition: i32,
    pub last: i64,
    pub housekeeping: Option<Housekeeping>,
}

/// Runs a rewrite's log-start move; a failure is logged (the next rewrite tries again).
pub fn run_housekeeping(partition: i32, h: Housekeeping) {
    if let Err(e) = h.run() {
        tracing::warn!(partition, error = %e, "__transaction_state: could not move the log start after a rewrite");
    }
}

/// The transaction state of the ids one shard coordinates.
pub struct TxnLog {
    num_partitions: i32,
    logs: Rc<dyn CoordinatorLogs>,
    partitions: BTreeMap<i32, OwnedPartition>,
    txns: BTreeMap<String, TxnMeta>,
}

impl TxnLog {
    /// A store that holds no partition yet ([`TxnLog::load_partition`] brings each in).
    pub fn new(num_partitions: i32, logs: Rc<dyn CoordinatorLogs>) -> TxnLog {
        TxnLog {
            num_partitions,
            logs,
            partitions: BTreeMap::new(),
            txns: BTreeMap::new(),
        }
    }

    /// Where the partitions' logs are.
    pub fn logs(&self) -> Rc<dyn CoordinatorLogs> {
        self.logs.clone()
    }

    /// Whether partition `p` is loaded: its ids are coordinated here.
    pub fn is_loaded(&self, p: i32) -> bool {
        self.partitions.contains_key(&p)
    }

    /// Replays partition `p` from its log start into the table (a no-op when it is loaded).
    /// The log must be one this shard leads.
    pub fn load_partition(&mut self, p: i32) -> io::Result<()> {
        if self.partitions.contains_key(&p) {
            return Ok(());
        }
        let logs = self.logs.clone();
        let mut stored = 0;
        let txns = &mut self.txns;
        logs.with_log(TXN_TOPIC, p, &mut |log, _| {
            stored = replay(log, |rec| match rec.value {
                Some(m) => {
                    txns.insert(rec.transactional_id, m);
                }
                None => {
                    txns.remove(&rec.transactional_id);
                }
            })?;
            Ok(())
        })?;
        self.partitions.insert(p, OwnedPartition { stored });
        Ok(())
    }

    /// Forgets partition `p` and its ids' state (this shard no longer leads it).
    pub fn unload_partition(&mut self, p: i32) {
        let n = self.num_partitions;
        self.partitions.remove(&p);
        self.txns.retain(|t, _| txn_partition(t, n) != p);
    }

    /// Opens and replays the partitions of `__transaction_state` that `shard` owns, straight
    /// from the data dir (`group::logs::DirLogs`: tests and tools).
    pub fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        num_partitions: i32,
        recover: bool,
    ) -> io::Result<TxnLog> {
        let logs = Rc::new(DirLogs::new(data_dir));
        let owned: Vec<i32> = (0..num_partitions)
            .filter(|p| partition_owner(TXN_TOPIC, *p, shards) == shard)
            .collect();
        for p in &owned {
            logs.open(TXN_TOPIC, *p, LOG_CONFIG, recover)?;
        }
        let mut store = TxnLog::new(num_partitions, logs);
        for p in owned {
            store.load_partition(p)?;
        }
        Ok(store)
    }

    /// Makes a job's records durable and runs its housekeeping, blocking the thread: for
    /// `DirLogs` stores (tests). A shard awaits `CoordinatorLogs::durable` instead.
    pub fn sync_blocking(&self, job: SyncJob) -> io::Result<()> {
        futures_lite::future::block_on(self.logs.durable(TXN_TOPIC, job.partition, job.last))?;
        if let Some(h) = job.housekeeping {
            run_housekeeping(job.partition, h);
        }
        Ok(())
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMeta> {
        self.txns.get(transactional_id)
    }

    /// Every id and its state.
    pub fn all(&self) -> impl Iterator<Item = (&String, &TxnMeta)> {
        self.txns.iter()
    }

    /// Appends `meta` as `transactional_id`'s new state. It takes effect only through
    /// [`TxnLog::applied`], once the returned job made it durable. On error nothing changed.
    pub fn append(
        &mut self,
        transactional_id: &str,
        meta: &TxnMeta,
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        self.append_value(transactional_id, Some(meta), now_ms)
    }

    /// Appends a tombstone of `transactional_id` (an expired id); it takes effect through
    /// [`TxnLog::forgotten`].
    pub fn append_tombstone(&mut self, transactional_id: &str, now_ms: i64) -> io::Result<SyncJob> {
        self.append_value(transactional_id, None, now_ms)
    }

    /// Applies the outcome of a tombstone's job; on success the id is forgotten.
    pub fn forgotten(&mut self, durable: io::Result<()>, transactional_id: &str) -> io::Result<()> {
        durable?;
        self.txns.remove(transactional_id);
        Ok(())
    }

    fn append_value(
        &mut self,
        transactional_id: &str,
        meta: Option<&TxnMeta>,
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        let p = txn_partition(transactional_id, self.num_partitions);
        let rec = TxnRecord {
            transactional_id: transactional_id.to_string(),
            value: meta.cloned(),
        };
        if !self.partitions.contains_key(&p) {
            return Err(other(format!(
                "__transaction_state-{p} ({transactional_id}) is not loaded on this shard"
            )));
        }
        let mut last = -1;
        self.logs.with_log(TXN_TOPIC, p, &mut |log, epoch| {
            log.check_online().map_err(other)?;
            write_records(log, std::slice::from_ref(&rec), now_ms, epoch)?;
            last = log.log_end_offset() - 1;
            Ok(())
        })?;
        let stored = match self.partitions.get_mut(&p) {
            Some(part) => {
                part.stored += 1;
                part.stored
            }
            None => 0,
        };
        let live = self
            .txns
            .keys()
            .filter(|t| txn_partition(t, self.num_partitions) == p)
            .count() as u64
            + 1;
        let mut housekeeping = None;
        if stored > (2 * live).max(COMPACT_MIN_RECORDS)
            && let Some((h, end)) = self.rewrite(p, transactional_id, meta, now_ms)
        {
            housekeeping = h;
            last = end;
        }
        Ok(SyncJob {
            partition: p,
            last,
            housekeeping,
        })
    }

    /// Appends partition `p`'s live records again (with `pending` as `id`'s state) and moves
    /// the log start to them. A failure is logged: the next append tries again. Returns the
    /// log-start move and the last offset written.
    fn rewrite(
        &mut self,
        p: i32,
        id: &str,
        pending: Option<&TxnMeta>,
        now_ms: i64,
    ) -> Option<(Option<Housekeeping>, i64)> {
        let n = self.num_partitions;
        let mut live: Vec<TxnRecord> = self
            .txns
            .iter()
            .filter(|(t, _)| txn_partition(t, n) == p && t.as_str() != id)
            .map(|(t, m)| TxnRecord {
                transactional_id: t.clone(),
                value: Some(m.clone()),
            })
            .collect();
        if let Some(m) = pending {
            live.push(TxnRecord {
                transactional_id: id.to_string(),
                value: Some(m.clone()),
            });
        }
        if live.is_empty() || !self.partitions.contains_key(&p) {
            return None;
        }
        let mut moved = None;
        let written = self.logs.with_log(TXN_TOPIC, p, &mut |log, epoch| {
            let appended = write_records(log, &live, now_ms, epoch)?;
            let last = log.log_end_offset() - 1;
            let job = match log.delete_records(appended) {
                Ok((_, job)) => job,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "__transaction_state: could not move the log start");
                    None
                }
            };
            moved = Some((job, last));
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(partition = p, error = %e, "__transaction_state: rewrite failed");
            return None;
        }
        if let Some(part) = self.partitions.get_mut(&p) {
            part.stored = live.len() as u64;
        }
        moved
    }

    /// Applies the outcome of a job; on success, `meta` becomes `transactional_id`'s state.
    pub fn finish(
        &mut self,
        durable: io::Result<()>,
        transactional_id: &str,
        meta: TxnMeta,
    ) -> io::Result<()> {
        durable?;
        self.txns.insert(transactional_id.to_string(), meta);
        Ok(())
    }
}

/// Reads a partition from its log start to its end; returns the records read.
fn replay(log: &PartitionLog, mut apply: impl FnMut(TxnRecord)) -> io::Result<u64> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut records = 0;
    while offset < end {
        let Some(slice) = log.read(offset, REPLAY_READ_BYTES, end).map_err(other)? else {
            break;
        };
        let mut buf = Bytes::from(read_at_most(&slice.file, slice.pos, slice.len)?);
        let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
            other(format!(
                "__transaction_state-{}: unreadable batch at offset {offset}: {e}",
                log.partition
            ))
        })?;
        let mut next = offset;
        for r in sets.into_iter().flat_map(|s| s.records) {
            next = next.max(r.offset + 1);
            if r.offset < offset {
                continue;
            }
            let key = r.key.ok_or_else(|| {
                other(format!(
                    "__transaction_state-{}: record {} has no key",
                    log.partition, r.offset
                ))
            })?;
            apply(TxnRecord::decode(&key, r.value.as_deref())?);
            records += 1;
        }
        if next <= offset {
            return Err(other(format!(
                "__transaction_state-{}: replay made no progress at offset {offset}",
                log.partition
            )));
        }
        offset = next;
    }
    Ok(records)
}

/// Appends `records` in batches of [`RECORDS_PER_BATCH`], in `leader_epoch`; returns the first
/// offset written.
fn write_records(
    log: &mut PartitionLog,
    records: &[TxnRecord],
    now_ms: i64,
    leader_epoch: i32,
) -> io::Result<i64> {
    let mut bytes = Vec::new();
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let mut body = Vec::new();
        for (i, rec) in chunk.iter().enumerate() {
            let key = rec.key()?;
            let value = rec.value()?;
            let mut r = vec![0u8]; // attributes
            batch::put_varint(&mut r, 0); // timestamp delta
            batch::put_varint(&mut r, i as i64); // offset delta
            batch::put_varint(&mut r, key.len() as i64);
            r.extend_from_slice(&key);
            match &value {
                Some(v) => {
                    batch::put_varint(&mut r, v.len() as i64);
                    r.extend_from_slice(v);
                }
                None => batch::put_varint(&mut r, -1),
            }
            batch::put_varint(&mut r, 0); // headers
            batch::put_varint(&mut body, r.len() as i64);
            body.extend_from_slice(&r);
        }
        bytes.extend(batch::encode_batch(
            &body,
            chunk.len() as i32,
            now_ms,
            now_ms,
        ));
    }
    if bytes.is_empty() {
        return Ok(log.log_end_offset());
    }
    let batches: Vec<ProducedBatch> =
        batch::split_produce_records(&Bytes::from(bytes), usize::MAX).map_err(other)?;
    let appended = log
        .append(&batches, leader_epoch, None, now_ms)
        .map_err(other)?;
    Ok(appended.base_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::state::TxnState;

    fn meta(pid: i64, state: TxnState) -> TxnMeta {
        TxnMeta {
            producer_id: pid,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms: 1000,
            state,
            partitions: [("t".to_string(), 0)].into(),
            start_ms: 1,
            update_ms: 2,
        }
    }

    #[test]
    fn durable_changes_survive_a_reopen_and_the_log_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = TxnLog::open(dir.path(), 0, 1, 3, false).unwrap();
        for i in 0..3000i64 {
            let m = meta(i, TxnState::Ongoing);
            let job = log.append("a", &m, 5).unwrap();
            log.finish(log.sync_blocking(job), "a", m).unwrap();
        }
        let m = meta(9, TxnState::PrepareCommit);
        let job = log.append("b", &m, 5).unwrap();
        log.finish(log.sync_blocking(job), "b", m.clone()).unwrap();
        // Appended but never made durable: not applied.
        let _ = log.append("c", &meta(1, TxnState::Empty), 5).unwrap();
        assert!(log.get("c").is_none());
        // A tombstone forgets an id, across the reopen too.
        let d = meta(4, TxnState::CompleteCommit);
        let job = log.append("d", &d, 5).unwrap();
        log.finish(log.sync_blocking(job), "d", d).unwrap();
        let job = log.append_tombstone("d", 6).unwrap();
        log.forgotten(log.sync_blocking(job), "d").unwrap();
        assert!(log.get("d").is_none());
        drop(log);
        let log = TxnLog::open(dir.path(), 0, 1, 3, false).unwrap();
        assert_eq!(log.get("a").unwrap().producer_id, 2999);
        assert_eq!(log.get("b"), Some(&m));
        assert!(log.get("d").is_none());
        let stored: u64 = log.partitions.values().map(|p| p.stored).sum();
        assert!(
            stored < 2 * COMPACT_MIN_RECORDS + 10,
            "replayed {stored} records"
        );
    }
}
