//! A log's side of compaction: choosing what to clean (`begin_clean`), and swapping a staged
//! clean in on the owning shard (`finish_clean`). The job itself and the crash-safe protocol
//! are `storage::cleaner`'s.

use super::*;
use crate::storage::cleaner::{
    self, CleanJob, CleanTail, Cleaned, CleanerLimits, CompactionConfig, Source,
};
use crate::storage::txnindex::AbortedTxn;

/// Why a log is due for a clean (for its log line), or why not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dirtiness {
    /// Bytes of the cleanable range written since the last clean, and its whole size.
    pub dirty_bytes: u64,
    pub cleanable_bytes: u64,
    /// Milliseconds since the first uncleaned record's timestamp (0 when none).
    pub lag_ms: i64,
}

impl Dirtiness {
    pub fn ratio(&self) -> f64 {
        if self.cleanable_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.cleanable_bytes as f64
        }
    }
}

impl PartitionLog {
    /// The cleaner checkpoint: offsets below it have been cleaned (they may be sparse).
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.cleaner_checkpoint
    }

    /// Whether a clean of this log is in flight (taken and not yet finished).
    pub fn cleaning(&self) -> bool {
        self.cleaning
    }

    /// How many segments, from the first, a clean may touch now: all sealed segments that
    /// end at or below `stable_end` (the last stable offset: no open transaction is
    /// cleaned) and hold no record younger than `min.compaction.lag.ms`, up to the first that
    /// does not.
    fn cleanable_segments(&self, config: &CompactionConfig, now_ms: i64, stable_end: i64) -> usize {
        let horizon = now_ms.saturating_sub(config.min_compaction_lag_ms as i64);
        let sealed = self.segments.len().saturating_sub(1);
        (0..sealed)
            .find(|&i| {
                self.segments[i + 1].base_offset > stable_end
                    || (config.min_compaction_lag_ms > 0
                        && self.segments[i].max_timestamp > horizon)
            })
            .unwrap_or(sealed)
    }

    /// How dirty the cleanable range is (see `begin_clean`).
    pub fn dirtiness(&self, config: &CompactionConfig, now_ms: i64, stable_end: i64) -> Dirtiness {
        let n = self.cleanable_segments(config, now_ms, stable_end);
        let checkpoint = self.cleaner_checkpoint.max(self.log_start_offset);
        let first_dirty = self
            .segments
            .partition_point(|s| s.base_offset <= checkpoint)
            .saturating_sub(1);
        let cleanable_bytes: u64 = self.segments[..n].iter().map(|s| s.size).sum();
        let dirty_bytes: u64 = self.segments[first_dirty.min(n)..n]
            .iter()
            .map(|s| s.size)
            .sum();
        let lag_ms = self.segments[first_dirty.min(n)..n]
            .iter()
            .filter_map(|s| s.first_timestamp)
            .map(|t| now_ms.saturating_sub(t))
            .max()
            .unwrap_or(0);
        Dirtiness {
            dirty_bytes,
            cleanable_bytes,
            lag_ms,
        }
    }

    /// Takes a clean of this log when one is due: the dirty ratio reached
    /// `min.cleanable.dirty.ratio`, or the oldest uncleaned record passed
    /// `max.compaction.lag.ms`, or a kept tombstone passed `delete.retention.ms`. `stable_end`
    /// is the last stable offset, and `aborted` the partition's aborted transactions
    /// (overlapping the log). The log is marked as cleaning until [`Self::end_clean`].
    pub fn begin_clean(
        &mut self,
        config: CompactionConfig,
        limits: CleanerLimits,
        now_ms: i64,
        stable_end: i64,
        aborted: impl FnOnce(i64, i64) -> Vec<AbortedTxn>,
    ) -> Option<CleanJob> {
        if self.cleaning || self.lost.is_some() || self.poisoned.is_some() {
            return None;
        }
        let n = self.cleanable_segments(&config, now_ms, stable_end);
        if n == 0 {
            return None;
        }
        let d = self.dirtiness(&config, now_ms, stable_end);
        let by_ratio = d.dirty_bytes > 0 && d.ratio() >= config.min_cleanable_dirty_ratio;
        let by_lag = d.dirty_bytes > 0
            && config
                .max_compaction_lag_ms
                .is_some_and(|max| d.lag_ms > max as i64);
        let by_tombstones = self.tombstone_deadline.is_some_and(|t| t <= now_ms);
        if !(by_ratio || by_lag || by_tombstones) {
            return None;
        }
        let mut sources = Vec::with_capacity(n);
        for i in 0..n {
            let seg = &self.segments[i];
            let file = match seg.log_file() {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "cannot open a segment to clean it");
                    return None;
                }
            };
            sources.push(Source {
                base_offset: seg.base_offset,
                next_base: self.segments[i + 1].base_offset,
                size: seg.size,
                file,
            });
        }
        let end = self.segments[n].base_offset;
        self.cleaning = true;
        tracing::debug!(
            topic = %self.topic,
            partition = self.partition,
            dirty_ratio = d.ratio(),
            dirty_bytes = d.dirty_bytes,
            lag_ms = d.lag_ms,
            by_ratio,
            by_lag,
            by_tombstones,
            "log clean starts"
        );
        Some(CleanJob {
            topic: self.topic.clone(),
            partition: self.partition,
            dir: self.dir.clone(),
            sources,
            dirty_from: self.cleaner_checkpoint.max(self.segments[0].base_offset),
            config,
            limits,
            segment_bytes: self.config.segment_bytes,
            index_interval_bytes: self.config.index_interval_bytes,
            aborted: aborted(self.segments[0].base_offset, end),
            now_ms,
            generation: self.generation,
        })
    }

    /// Swaps a staged clean in (see `storage::cleaner`, step 5): when the log still holds the
    /// segments the job read, commits it and replaces them in memory; else abandons it.
    /// Returns the file work left for the blocking pool; after it ran, call
    /// [`Self::end_clean`]. An error after the commit takes the partition offline (its files
    /// are decided, its memory is not): the next open completes the clean.
    pub fn finish_clean(&mut self, cleaned: &Cleaned) -> Result<CleanTail, KafkaError> {
        let rollback = CleanTail {
            dir: self.dir.clone(),
            checkpoint: None,
            tombstone_deadline: None,
        };
        let bases: Vec<i64> = cleaned
            .groups
            .iter()
            .flat_map(|g| g.bases.iter().copied())
            .collect();
        let unchanged = cleaned.generation == self.generation
            && self.poisoned.is_none()
            && bases.len() < self.segments.len()
            && bases
                .iter()
                .zip(&self.segments)
                .all(|(b, s)| *b == s.base_offset);
        if !unchanged {
            tracing::info!(topic = %self.topic, partition = self.partition, "log clean abandoned: the log changed while it ran");
            return Ok(rollback);
        }
        if bases.is_empty() {
            return Ok(rollback);
        }
        if let Err(e) = cleaner::commit(cleaned) {
            return Err(self.poison("log clean swap", e));
        }
        // The files are swapped: the segments in memory follow.
        let interval = self.config.index_interval_bytes;
        let mut fresh = Vec::new();
        for g in cleaned.groups.iter().filter(|g| g.replaced) {
            match Segment::open(&self.dir, g.bases[0], interval) {
                Ok(mut seg) => {
                    seg.release_indexes();
                    fresh.push(seg);
                }
                Err(e) => return Err(self.poison("log clean swap", e)),
            }
        }
        let rest = self.segments.split_off(bases.len());
        let old = std::mem::replace(&mut self.segments, fresh);
        self.segments.extend(rest);
        for seg in &old {
            seg.forget_files();
            let path = seg.path();
            self.unflushed_files.retain(|(_, p)| *p != path);
        }
        drop(old);
        self.cleaner_checkpoint = cleaned.checkpoint;
        self.tombstone_deadline = cleaned.tombstone_deadline;
        let s = cleaned.stats;
        tracing::info!(
            topic = %self.topic,
            partition = self.partition,
            checkpoint = cleaned.checkpoint,
            bytes_before = s.bytes_before,
            bytes_after = s.bytes_after,
            records_read = s.records_read,
            records_kept = s.records_kept,
            batches_recompressed = s.batches_recompressed,
            elapsed_ms = s.elapsed_ms,
            "log cleaned"
        );
        Ok(CleanTail {
            dir: self.dir.clone(),
            checkpoint: Some(cleaned.checkpoint),
            tombstone_deadline: cleaned.tombstone_deadline,
        })
    }

    /// The clean is over (its tail ran, or it failed): the next one may start.
    pub fn end_clean(&mut self) {
        self.cleaning = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    const CFG: LogConfig = LogConfig {
        segment_bytes: 2000,
        segment_ms: None,
        index_interval_bytes: 300,
        ..LogConfig::BASE
    };

    const COMPACT: CompactionConfig = CompactionConfig {
        min_cleanable_dirty_ratio: 0.0,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: None,
        delete_retention_ms: 1000,
    };

    const LIMITS: CleanerLimits = CleanerLimits {
        key_map_bytes: 1 << 20,
        io_bytes_per_sec: None,
    };

    /// One batch of keyed records (None value: a tombstone) in `compression`.
    fn keyed(ts: i64, records: &[(&str, Option<&str>)], compression: Compression) -> Bytes {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: ts,
                key: Some(Bytes::from(k.to_string())),
                value: v.map(|v| Bytes::from(v.to_string())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            recs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    /// One batch of keyed records written by producer `pid` (sequence from `seq`), or
    /// transactional.
    fn produced(
        log: &mut PartitionLog,
        pid: i64,
        seq: i32,
        transactional: bool,
        keys: &[&str],
    ) -> Appended {
        let recs: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: seq + i as i32,
                timestamp: 1000,
                key: Some(Bytes::from(k.to_string())),
                value: Some(Bytes::from(format!("{k}@{pid}/{seq}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Zstd,
        };
        RecordBatchEncoder::encode(&mut buf, recs.iter(), &options).unwrap();
        let b = batch::split_produce_records(&buf.freeze(), 1 << 20).unwrap();
        log.append(&b, 0, None, 1000).unwrap()
    }

    fn append(log: &mut PartitionLog, ts: i64, records: &[(&str, Option<&str>)], c: Compression) {
        let b = batch::split_produce_records(&keyed(ts, records, c), 1 << 20).unwrap();
        log.append(&b, 0, None, ts).unwrap();
    }

    /// Every record of the log: (offset, key, value), read through `read` from offset 0.
    fn records(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let Some(slice) = log.read(offset, 1 << 20, i64::MAX).unwrap() else {
                break;
            };
            let bytes = read_at_most(&slice.file, slice.pos, slice.len).unwrap();
            let mut buf = Bytes::from(bytes);
            let mut last = offset;
            for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
                for r in set.records {
                    if r.offset >= offset {
                        let s =
                            |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
                        out.push((r.offset, s(r.key).unwrap(), s(r.value)));
                    }
                    last = last.max(r.offset);
                }
            }
            offset = last + 1;
        }
        out
    }

    /// 40 batches of 10 records over keys k0..k19 in four codecs, then tombstones for k0..k4
    /// (old enough to drop) and k5 (young), and one batch in a new segment that stays active.
    fn compacted_log(dir: &Path) -> PartitionLog {
        let mut log = PartitionLog::open(dir, "t", 0, CFG, false).unwrap();
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for b in 0..40 {
            let recs: Vec<(String, String)> = (0..10)
                .map(|i| {
                    (
                        format!("k{}", (b * 10 + i) % 20),
                        format!("v{}", b * 10 + i),
                    )
                })
                .collect();
            let recs: Vec<(&str, Option<&str>)> = recs
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect();
            append(&mut log, 1000, &recs, codecs[b % codecs.len()]);
        }
        let old: Vec<(String, Option<&str>)> = (0..5).map(|i| (format!("k{i}"), None)).collect();
        let old: Vec<(&str, Option<&str>)> = old.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        append(&mut log, 1000, &old, Compression::Lz4);
        append(&mut log, 1_000_000, &[("k5", None)], Compression::None);
        log.segments.last_mut().unwrap().seal().unwrap();
        let next = log.next_offset;
        log.segments.push(Segment::create(&log.dir, next).unwrap());
        append(
            &mut log,
            1_000_000,
            &[("k19", Some("last"))],
            Compression::None,
        );
        assert!(log.segment_count() > 4, "{} segments", log.segment_count());
        log
    }

    /// What a compacted `compacted_log` must hold: the last value of k6..k19 at its offset,
    /// the young tombstone of k5, k19's record in the active segment, nothing of k0..k4.
    fn check_compacted(got: &[(i64, String, Option<String>)]) {
        let mut want: Vec<(i64, String, Option<String>)> = (6..20)
            .map(|k| {
                let last = 380 + k; // the last batch round wrote k at offset 380 + k
                (last as i64, format!("k{k}"), Some(format!("v{last}")))
            })
            .collect();
        want.push((405, "k5".into(), None));
        want.push((406, "k19".into(), Some("last".into())));
        want.sort();
        let mut got = got.to_vec();
        got.sort();
        assert_eq!(got, want);
    }

    fn clean(log: &mut PartitionLog, now: i64) -> Cleaned {
        let job = log
            .begin_clean(COMPACT, LIMITS, now, i64::MAX, |_, _| Vec::new())
            .expect("a clean is due");
        job.run().unwrap()
    }

    #[test]
    fn a_clean_keeps_the_last_record_of_each_key_at_its_offset_across_codecs() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = compacted_log(dir.path());
        let before = log.size_bytes();
        // A reader holding ranges of segments about to be replaced (a Fetch response in flight).
        let held: Vec<_> = [0, 150, 300]
            .iter()
            .map(|&o| log.read(o, 1 << 20, i64::MAX).unwrap().unwrap())
            .collect();
        let held_bytes: Vec<_> = held
            .iter()
            .map(|s| read_at_most(&s.file, s.pos, s.len).unwrap())
            .collect();
        let cleaned = clean(&mut log, 10_000);
        let tail = log.finish_clean(&cleaned).unwrap();
        tail.run().unwrap();
        log.end_clean();
        check_compacted(&records(&log));
        // It finishes reading them as they were: the old files live on while it holds them.
        for (s, bytes) in held.iter().zip(&held_bytes) {
            assert_eq!(&read_at_most(&s.file, s.pos, s.len).unwrap(), bytes);
        }
        assert!(
            log.size_bytes() < before / 4,
            "{} of {before}",
            log.size_bytes()
        );
        assert_eq!(log.cleaner_checkpoint(), 406);
        // A fetch at a cleaned-away offset gets the next record.
        let slice = log.read(3, 1 << 20, i64::MAX).unwrap().unwrap();
        let head = read_at_most(&slice.file, slice.pos, batch::HEADER_LEN).unwrap();
        let h = batch::BatchHeader::parse(&head).unwrap();
        assert!(h.base_offset > 3 && h.base_offset <= 386, "{h:?}");
        // The young tombstone is kept, and its expiry makes the log due again with nothing new.
        assert_eq!(cleaned.tombstone_deadline, Some(1_001_000));
        assert!(
            log.begin_clean(COMPACT, LIMITS, 20_000, i64::MAX, |_, _| Vec::new())
                .is_none()
        );
        // The expiry is remembered across a restart (in the cleaner checkpoint).
        drop(log);
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        let cleaned = clean(&mut log, 1_001_000);
        log.finish_clean(&cleaned).unwrap().run().unwrap();
        log.end_clean();
        let got = records(&log);
        assert!(!got.iter().any(|(_, k, _)| k == "k5"), "{got:?}");
        // Reopened, the sparse log passes the open's checks and reads the same.
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
        log.check_online().unwrap();
        assert_eq!(records(&log), got);
        assert_eq!(log.log_end_offset(), 407);
    }

    #[test]
    fn a_follower_copies_a_compacted_leaders_sparse_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = compacted_log(dir.path());
        let cleaned = clean(&mut leader, 10_000);
        leader.finish_clean(&cleaned).unwrap().run().unwrap();
        leader.end_clean();
        let follower_dir = tempfile::tempdir().unwrap();
        let small = LogConfig {
            segment_bytes: 300,
            ..CFG
        };
        let mut follower = PartitionLog::open(follower_dir.path(), "t", 0, small, false).unwrap();
        let mut offset = 0;
        while offset < leader.log_end_offset() {
            let slice = leader.read(offset, 200, i64::MAX).unwrap().unwrap();
            let bytes = Bytes::from(read_at_most(&slice.file, slice.pos, slice.len).unwrap());
            let batches = batch::split_fetched_records(&bytes).unwrap();
            offset = follower.append_replicated(&batches).unwrap().last_offset + 1;
        }
        assert!(follower.segment_count() > 1);
        assert_eq!(records(&follower), records(&leader));
        // Its gaps lie inside its segments: it reopens online.
        drop(follower);
        let follower = PartitionLog::open(follower_dir.path(), "t", 0, small, true).unwrap();
        follower.check_online().unwrap();
        assert_eq!(records(&follower), records(&leader));
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    }

    /// An idempotent producer's last batch stays (as a header with no records when every
    /// record of it is superseded), so its sequence and last offset survive for the producer
    /// state rebuilt from the log; its older batches go. The records of an aborted
    /// transaction go, whatever comes after them.
    #[test]
    fn producers_last_batches_stay_and_aborted_transactions_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        produced(&mut log, 7, 0, false, &["a", "b"]); // offsets 0, 1
        produced(&mut log, 7, 2, false, &["a", "b"]); // 2, 3: producer 7's last
        let aborted = produced(&mut log, 9, 0, true, &["only-in-aborted", "c"]); // 4, 5
        append(
            &mut log,
            1000,
            &[("a", Some("x")), ("b", Some("y"))],
            Compression::None,
        ); // 6, 7
        log.segments.last_mut().unwrap().seal().unwrap();
        let next = log.next_offset;
        log.segments.push(Segment::create(&log.dir, next).unwrap());
        append(&mut log, 1000, &[("z", Some("z"))], Compression::None);
        let abort = AbortedTxn {
            producer_id: 9,
            first_offset: aborted.base_offset,
            last_offset: 8,
            last_stable_offset: 8,
        };
        let job = log
            .begin_clean(COMPACT, LIMITS, 10_000, i64::MAX, |_, _| vec![abort])
            .unwrap();
        let cleaned = job.run().unwrap();
        log.finish_clean(&cleaned).unwrap().run().unwrap();
        log.end_clean();
        let got: Vec<(i64, String)> = records(&log).into_iter().map(|(o, k, _)| (o, k)).collect();
        assert_eq!(
            got,
            [(6, "a".into()), (7, "b".into()), (8, "z".into())],
            "{got:?}"
        );
        let mut headers = Vec::new();
        log.scan_headers_from(0, |h| headers.push(*h)).unwrap();
        let kept = headers.iter().find(|h| h.producer_id == 7).unwrap();
        assert_eq!(
            (
                kept.base_offset,
                kept.last_offset(),
                kept.records_count,
                kept.base_sequence
            ),
            (2, 3, 0, 2)
        );
        assert!(!headers.iter().any(|h| h.producer_id == 9));
        // ListOffsets by time passes over the empty batch to the first record.
        assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((6, 1000)));
        // The producer state rebuilt from the log knows producer 7's last batch.
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
        log.check_online().unwrap();
        let mut states = crate::storage::producers::ProducerStates::default();
        log.scan_headers_from(0, |h| states.replay(h)).unwrap();
        let last = *states.get(7).unwrap().batches.back().unwrap();
        assert_eq!((last.last_seq, last.last_offset), (3, 3));
        assert_eq!(records(&log).len(), 3);
    }

    /// A transaction marker goes once nothing of its transaction is left and it is
    /// delete.retention.ms old (and is kept until then, making the log due again at its
    /// expiry), except its producer's last batch.
    #[test]
    fn transaction_markers_go_once_their_transaction_is_gone_and_they_expired() {
        let marker = |log: &mut PartitionLog, commit: bool| {
            let bytes = Bytes::from(batch::control_batch(9, 0, commit, 0, 1000));
            let b = batch::split_produce_records(&bytes, 1 << 20).unwrap();
            log.append(&b, 0, None, 1000).unwrap()
        };
        for (now, markers_left) in [(1500, 2), (10_000, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
            produced(&mut log, 9, 0, true, &["t1"]); // 0
            let commit = marker(&mut log, true); // 1
            append(&mut log, 1000, &[("t1", Some("later"))], Compression::None); // 2
            let aborted = produced(&mut log, 9, 1, true, &["t2"]); // 3
            let abort = marker(&mut log, false); // 4: producer 9's last batch
            log.segments.last_mut().unwrap().seal().unwrap();
            let next = log.next_offset;
            log.segments.push(Segment::create(&log.dir, next).unwrap());
            append(&mut log, 1000, &[("z", Some("z"))], Compression::None);
            let entry = AbortedTxn {
                producer_id: 9,
                first_offset: aborted.base_offset,
                last_offset: abort.base_offset,
                last_stable_offset: abort.base_offset,
            };
            let job = log
                .begin_clean(COMPACT, LIMITS, now, i64::MAX, |_, _| vec![entry])
                .unwrap();
            let cleaned = job.run().unwrap();
            log.finish_clean(&cleaned).unwrap().run().unwrap();
            log.end_clean();
            let mut controls = Vec::new();
            log.scan_headers_from(0, |h| {
                if h.is_control() {
                    controls.push(h.base_offset);
                }
            })
            .unwrap();
            let want = if markers_left == 2 {
                vec![commit.base_offset, abort.base_offset]
            } else {
                vec![abort.base_offset]
            };
            assert_eq!(controls, want, "now {now}");
            // The data left: t1's later value and z (the markers read as records too).
            let got: Vec<i64> = records(&log)
                .iter()
                .map(|r| r.0)
                .filter(|o| !controls.contains(o))
                .collect();
            assert_eq!(got, [2, 5], "now {now}");
            let deadline = (markers_left == 2).then_some(2000);
            assert_eq!(cleaned.tombstone_deadline, deadline, "now {now}");
        }
    }

    /// A rebuilt batch carries the records it keeps byte for byte (headers with the same key
    /// twice included) and spans the offsets the original did.
    #[test]
    fn a_rebuilt_batch_keeps_its_records_bytes_and_its_offset_span() {
        let record = |offset_delta: i64, key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]| {
            let mut r = vec![0u8];
            batch::put_varint(&mut r, 0);
            batch::put_varint(&mut r, offset_delta);
            batch::put_varint(&mut r, key.len() as i64);
            r.extend_from_slice(key);
            batch::put_varint(&mut r, value.len() as i64);
            r.extend_from_slice(value);
            batch::put_varint(&mut r, headers.len() as i64);
            for (k, v) in headers {
                batch::put_varint(&mut r, k.len() as i64);
                r.extend_from_slice(k);
                batch::put_varint(&mut r, v.len() as i64);
                r.extend_from_slice(v);
            }
            let mut out = Vec::new();
            batch::put_varint(&mut out, r.len() as i64);
            out.extend_from_slice(&r);
            out
        };
        let kept = record(0, b"b", b"keep me", &[(b"h", b"x"), (b"h", b"y")]);
        let gone = record(1, b"a", b"old", &[]);
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        let both = Bytes::from(batch::encode_batch_of(
            &[kept.clone(), gone].concat(),
            2,
            1000,
            1000,
            0,
            (-1, -1),
        ));
        log.append(
            &batch::split_produce_records(&both, 1 << 20).unwrap(),
            0,
            None,
            1000,
        )
        .unwrap();
        append(&mut log, 1000, &[("a", Some("new"))], Compression::None);
        log.segments.last_mut().unwrap().seal().unwrap();
        let next = log.next_offset;
        log.segments.push(Segment::create(&log.dir, next).unwrap());
        append(&mut log, 1000, &[("z", Some("z"))], Compression::None);
        let cleaned = clean(&mut log, 10_000);
        log.finish_clean(&cleaned).unwrap().run().unwrap();
        log.end_clean();
        let slice = log.read(0, 1 << 20, i64::MAX).unwrap().unwrap();
        let bytes = read_at_most(&slice.file, slice.pos, slice.len).unwrap();
        let h = batch::BatchHeader::parse(&bytes).unwrap();
        assert_eq!((h.base_offset, h.last_offset(), h.records_count), (0, 1, 1));
        assert_eq!(&bytes[batch::HEADER_LEN..h.total_len()], &kept[..]);
    }

    /// Below min.cleanable.dirty.ratio a log is not due, until its oldest uncleaned record
    /// passes max.compaction.lag.ms.
    #[test]
    fn a_log_under_the_dirty_ratio_is_due_once_its_lag_passes_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = compacted_log(dir.path());
        let cleaned = clean(&mut log, 10_000);
        log.finish_clean(&cleaned).unwrap().run().unwrap();
        log.end_clean();
        log.tombstone_deadline = None; // (k5's tombstone would make it due on its own)
        // A little new data, sealed: dirty, but a small share of the cleanable bytes.
        append(
            &mut log,
            1_000_000,
            &[("k7", Some("new"))],
            Compression::None,
        );
        log.segments.last_mut().unwrap().seal().unwrap();
        let next = log.next_offset;
        log.segments.push(Segment::create(&log.dir, next).unwrap());
        append(
            &mut log,
            1_000_000,
            &[("k8", Some("new"))],
            Compression::None,
        );
        let strict = CompactionConfig {
            min_cleanable_dirty_ratio: 0.99,
            max_compaction_lag_ms: Some(60_000),
            ..COMPACT
        };
        let d = log.dirtiness(&strict, 1_030_000, i64::MAX);
        assert!(d.dirty_bytes > 0 && d.ratio() < 0.99, "{d:?}");
        let none = |_: i64, _: i64| Vec::new();
        assert!(
            log.begin_clean(strict, LIMITS, 1_030_000, i64::MAX, none)
                .is_none()
        );
        let job = log.begin_clean(strict, LIMITS, 1_070_000, i64::MAX, none);
        assert!(job.is_some(), "the lag passed max.compaction.lag.ms");
    }

    #[test]
    fn a_small_key_map_cleans_in_several_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = compacted_log(dir.path());
        let small = CleanerLimits {
            key_map_bytes: 12 * cleaner::KEY_ENTRY_BYTES,
            io_bytes_per_sec: None,
        };
        let mut passes = 0;
        while let Some(job) = log.begin_clean(COMPACT, small, 10_000, i64::MAX, |_, _| Vec::new()) {
            let cleaned = job.run().unwrap();
            log.finish_clean(&cleaned).unwrap().run().unwrap();
            log.end_clean();
            passes += 1;
            assert!(passes < 100, "no progress");
            if log.cleaner_checkpoint() >= 406 {
                break;
            }
        }
        assert!(passes > 2, "{passes} passes");
        // Each key's older records went in the pass that mapped its newer one: the passes
        // together leave the same log as one big clean.
        check_compacted(&records(&log));
    }

    #[test]
    fn a_clean_never_reaches_the_last_stable_offset_nor_young_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = compacted_log(dir.path());
        let second = log.segments[1].base_offset;
        let job = log
            .begin_clean(COMPACT, LIMITS, 10_000, second, |_, _| Vec::new())
            .unwrap();
        assert_eq!(job.sources.len(), 1);
        assert_eq!(job.sources[0].next_base, second);
        drop(job);
        log.end_clean();
        let lagged = CompactionConfig {
            min_compaction_lag_ms: 60_000,
            ..COMPACT
        };
        assert!(
            log.begin_clean(lagged, LIMITS, 10_000, i64::MAX, |_, _| Vec::new())
                .is_none()
        );
    }

    #[test]
    fn a_clean_of_a_log_that_changed_meanwhile_is_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = compacted_log(dir.path());
        let before = records(&log);
        let job = log
            .begin_clean(COMPACT, LIMITS, 10_000, i64::MAX, |_, _| Vec::new())
            .unwrap();
        let cleaned = job.run().unwrap();
        log.apply_retention(
            Retention {
                ms: None,
                bytes: Some(1),
            },
            10_000,
        )
        .unwrap()
        .run()
        .unwrap();
        let tail = log.finish_clean(&cleaned).unwrap();
        assert_eq!(tail.checkpoint, None);
        tail.run().unwrap();
        log.end_clean();
        assert!(!log.dir.join(cleaner::STAGING_DIR).exists());
        let after = records(&log);
        assert!(before.ends_with(&after));
    }

    /// A kill at each stage of the swap (a failure there, then the log dropped and opened
    /// again, as a restart would) leaves a log that opens with either everything (the clean
    /// rolled back) or the compacted log (completed), never a loss.
    #[test]
    fn a_kill_at_each_stage_of_the_swap_recovers_at_open() {
        for (stage, completes) in [
            ("clean-written", false),
            ("clean-commit", false),
            ("clean-committed", true),
            ("clean-swapping", true),
            ("clean-swapped", true),
            ("clean-deleted", true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = compacted_log(dir.path());
            let before = records(&log);
            faults::set_for_this_thread(&format!("{stage}:EIO:t-0:1"));
            let job = log
                .begin_clean(COMPACT, LIMITS, 10_000, i64::MAX, |_, _| Vec::new())
                .unwrap();
            let stopped = match job.run() {
                Err(_) => true,
                Ok(cleaned) => match log.finish_clean(&cleaned) {
                    Err(_) => true,
                    Ok(tail) => tail.run().is_err(),
                },
            };
            faults::set_for_this_thread("");
            assert!(stopped, "{stage}: the fault fired");
            drop(log);
            let log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
            log.check_online().unwrap();
            assert!(!log.dir.join(cleaner::STAGING_DIR).exists(), "{stage}");
            assert!(!log.dir.join(cleaner::MANIFEST_FILE).exists(), "{stage}");
            let got = records(&log);
            if completes {
                check_compacted(&got);
                assert_eq!(log.cleaner_checkpoint(), 406, "{stage}");
            } else {
                assert_eq!(got, before, "{stage}");
            }
            assert_eq!(log.log_end_offset(), 407, "{stage}");
        }
    }
}
