//! The transaction state of every transactional id one shard coordinates, kept in its
//! partitions of the internal `__transaction_state` log.
//!
//! Lives on: one shard (the owner of each partition, `placement::partition_owner`).
//!
//! Each partition is an ordinary partition log in `<data>/__transaction_state-<p>/` of
//! uncompressed magic-2 batches whose records are [`TxnRecord`]s. A change is appended as one
//! record, and [`TxnLog::append`] hands back the partition's flush job, which the shell runs on
//! the blocking pool; only after it succeeded does the shell apply the change
//! ([`TxnLog::applied`]) and act on it, so every state a client or a partition has seen is
//! durable. A failed fdatasync takes the partition offline (`PartitionLog::finish_flush`):
//! its ids answer COORDINATOR_NOT_AVAILABLE until a restart.
//!
//! At open every owned partition is replayed from its log start into the table, before the
//! shard serves. The replay is bounded as `group::store` bounds `__consumer_offsets`: once a
//! partition holds more than `max(2 × live ids, COMPACT_MIN_RECORDS)` records, the live
//! records are appended again and the log start moved to them.
//!
//! The partition count is fixed once the log exists (`__transaction_state.partitions`, as
//! for `__consumer_offsets`): another count would move ids away from their state.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::placement::{TXN_TOPIC, partition_owner, txn_partition};
use crate::protocol::batch::{self, ProducedBatch};
use crate::storage::io::read_at_most;
use crate::storage::log::{FlushJob, Housekeeping, LogConfig, PartitionLog};

use super::records::TxnRecord;
use super::state::TxnMeta;

const COMPACT_MIN_RECORDS: u64 = 1024;
const REPLAY_READ_BYTES: usize = 1 << 20;
const RECORDS_PER_BATCH: usize = 512;
const PARTITIONS_FILE: &str = "__transaction_state.partitions";

const LOG_CONFIG: LogConfig = LogConfig {
    segment_bytes: 16 * 1024 * 1024,
    segment_ms: None,
    index_interval_bytes: 4096,
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

#[derive(Debug)]
struct OwnedPartition {
    log: PartitionLog,
    /// Records since the log start.
    stored: u64,
}

/// A durability job: the fdatasync of a partition and, after a rewrite, the move of its log
/// start. Run it on the blocking pool and give its [`SyncDone`] to [`TxnLog::finish`].
#[derive(Debug)]
pub struct SyncJob {
    partition: i32,
    flush: Option<FlushJob>,
    housekeeping: Option<Housekeeping>,
}

#[derive(Debug)]
pub struct SyncDone {
    partition: i32,
    target: Option<i64>,
    result: io::Result<()>,
}

impl SyncJob {
    pub fn run(self) -> SyncDone {
        let result = self.flush.as_ref().map_or(Ok(()), FlushJob::run);
        if result.is_ok()
            && let Some(h) = self.housekeeping
            && let Err(e) = h.run()
        {
            tracing::warn!(partition = self.partition, error = %e, "__transaction_state: could not move the log start after a rewrite");
        }
        SyncDone {
            partition: self.partition,
            target: self.flush.map(|f| f.target),
            result,
        }
    }
}

/// The transaction state of the ids one shard coordinates.
#[derive(Debug)]
pub struct TxnLog {
    num_partitions: i32,
    partitions: BTreeMap<i32, OwnedPartition>,
    txns: BTreeMap<String, TxnMeta>,
}

impl TxnLog {
    /// Opens and replays the partitions of `__transaction_state` that `shard` owns.
    pub fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        num_partitions: i32,
        recover: bool,
    ) -> io::Result<TxnLog> {
        let mut store = TxnLog {
            num_partitions,
            partitions: BTreeMap::new(),
            txns: BTreeMap::new(),
        };
        for p in (0..num_partitions).filter(|p| partition_owner(TXN_TOPIC, *p, shards) == shard) {
            let created = !crate::storage::log::partition_dir(data_dir, TXN_TOPIC, p).exists();
            let log = PartitionLog::open(data_dir, TXN_TOPIC, p, LOG_CONFIG, recover)?;
            if created {
                File::open(data_dir)?.sync_all()?;
            }
            let stored = replay(&log, |rec| match rec.value {
                Some(m) => {
                    store.txns.insert(rec.transactional_id, m);
                }
                None => {
                    store.txns.remove(&rec.transactional_id);
                }
            })?;
            store.partitions.insert(p, OwnedPartition { log, stored });
        }
        Ok(store)
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
    pub fn forgotten(&mut self, done: SyncDone, transactional_id: &str) -> io::Result<()> {
        if let (Some(target), Some(part)) = (done.target, self.partitions.get_mut(&done.partition))
        {
            part.log.finish_flush(target, &done.result);
        }
        done.result?;
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
        let part = self.partitions.get_mut(&p).ok_or_else(|| {
            other(format!(
                "__transaction_state-{p} ({transactional_id}) is not owned by this shard"
            ))
        })?;
        part.log.check_online().map_err(other)?;
        write_records(&mut part.log, std::slice::from_ref(&rec), now_ms)?;
        part.stored += 1;
        let live = self
            .txns
            .keys()
            .filter(|t| txn_partition(t, self.num_partitions) == p)
            .count() as u64
            + 1;
        let housekeeping = if part.stored > (2 * live).max(COMPACT_MIN_RECORDS) {
            self.rewrite(p, transactional_id, meta, now_ms)
        } else {
            None
        };
        let flush = self
            .partitions
            .get_mut(&p)
            .and_then(|part| part.log.begin_flush());
        Ok(SyncJob {
            partition: p,
            flush,
            housekeeping,
        })
    }

    /// Appends partition `p`'s live records again (with `pending` as `id`'s state) and moves
    /// the log start to them. A failure is logged: the next append tries again.
    fn rewrite(
        &mut self,
        p: i32,
        id: &str,
        pending: Option<&TxnMeta>,
        now_ms: i64,
    ) -> Option<Housekeeping> {
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
        let part = self.partitions.get_mut(&p)?;
        if live.is_empty() {
            return None;
        }
        let appended = match write_records(&mut part.log, &live, now_ms) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "__transaction_state: rewrite failed");
                return None;
            }
        };
        part.stored = live.len() as u64;
        match part.log.delete_records(appended) {
            Ok((_, job)) => job,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "__transaction_state: could not move the log start");
                None
            }
        }
    }

    /// Applies the outcome of a job; on success, `meta` becomes `transactional_id`'s state.
    pub fn finish(
        &mut self,
        done: SyncDone,
        transactional_id: &str,
        meta: TxnMeta,
    ) -> io::Result<()> {
        if let (Some(target), Some(part)) = (done.target, self.partitions.get_mut(&done.partition))
        {
            part.log.finish_flush(target, &done.result);
        }
        done.result?;
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

/// Appends `records` in batches of [`RECORDS_PER_BATCH`]; returns the first offset written.
fn write_records(log: &mut PartitionLog, records: &[TxnRecord], now_ms: i64) -> io::Result<i64> {
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
    let appended = log.append(&batches, 0, None, now_ms).map_err(other)?;
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
            log.finish(job.run(), "a", m).unwrap();
        }
        let m = meta(9, TxnState::PrepareCommit);
        let job = log.append("b", &m, 5).unwrap();
        log.finish(job.run(), "b", m.clone()).unwrap();
        // Appended but never made durable: not applied.
        let _ = log.append("c", &meta(1, TxnState::Empty), 5).unwrap();
        assert!(log.get("c").is_none());
        // A tombstone forgets an id, across the reopen too.
        let d = meta(4, TxnState::CompleteCommit);
        let job = log.append("d", &d, 5).unwrap();
        log.finish(job.run(), "d", d).unwrap();
        let job = log.append_tombstone("d", 6).unwrap();
        log.forgotten(job.run(), "d").unwrap();
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
