//! A follower's log: batches appended with the leader's offsets and epochs, truncation where
//! it diverged, and the files a kill leaves at every step of a truncation.

use super::*;
use crate::protocol::batch::split_fetched_records;

/// Segments of a few batches, index entries every batch or two.
const REPL: LogConfig = LogConfig {
    segment_bytes: 500,
    segment_ms: None,
    index_interval_bytes: 150,
    ..LogConfig::BASE
};

/// A leader's log: 24 batches of one to three records (48 offsets), written by the leaders of
/// epochs 0, 3 and 7 (8 batches each), timestamps growing. Deterministic, so two calls give the
/// same files.
fn leader_log(dir: &Path) -> PartitionLog {
    let mut log = PartitionLog::open(dir, "t", 0, REPL, false).unwrap();
    for i in 0..24i64 {
        let values: Vec<&[u8]> = (0..=i % 3).map(|_| &[b'v'; 30][..]).collect();
        let bytes = Bytes::from(batch(1000 + i * 40, &values));
        let b = split_produce_records(&bytes, 1 << 20).unwrap();
        log.append(&b, [0, 3, 7][i as usize / 8], None, 0).unwrap();
    }
    assert_eq!(log.log_end_offset(), 48);
    assert!(log.segment_count() > 4, "{} segments", log.segment_count());
    log
}

/// What a follower's Fetch at `offset` gets: whole batches of one segment, within
/// `max_bytes` (the first batch always).
fn fetch(log: &PartitionLog, offset: i64, max_bytes: usize) -> Bytes {
    match log.read(offset, max_bytes, i64::MAX).unwrap() {
        Some(s) => Bytes::from(read_at_most(&s.file, s.pos, s.len).unwrap()),
        None => Bytes::new(),
    }
}

/// Every batch of `log`, as a follower fetches them.
fn all_batches(log: &PartitionLog) -> Vec<ProducedBatch> {
    let mut out: Vec<ProducedBatch> = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let got = split_fetched_records(&fetch(log, at, 1 << 20)).unwrap();
        at = got.last().unwrap().header.last_offset() + 1;
        out.extend(got);
    }
    out
}

/// (base offset, last offset, leader epoch) of every batch in the files of `log`.
fn batches_of(log: &PartitionLog) -> Vec<(i64, i64, i32)> {
    let mut out = Vec::new();
    log.scan_headers_from(i64::MIN, |h| {
        out.push((h.base_offset, h.last_offset(), h.partition_leader_epoch))
    })
    .unwrap();
    out
}

/// The bytes of every `.log` file of a partition, in offset order, end to end.
fn log_bytes(dir: &Path) -> Vec<u8> {
    files(dir)
        .into_iter()
        .filter(|(name, _)| name.ends_with(".log"))
        .flat_map(|(_, bytes)| bytes)
        .collect()
}

fn follower(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, "t", 0, REPL, false).unwrap()
}

/// `b` as the leader of `epoch` would have written it.
fn restamp(b: &ProducedBatch, epoch: i32) -> ProducedBatch {
    let mut bytes = batch::patched_header(b, b.header.base_offset, epoch, None).to_vec();
    bytes.extend_from_slice(&b.bytes[batch::HEADER_LEN..]);
    split_fetched_records(&Bytes::from(bytes))
        .unwrap()
        .remove(0)
}

/// The leader's epoch cache as it is below `end`.
fn epochs_below(leader: &PartitionLog, end: i64) -> LeaderEpochCache {
    let mut e = leader.leader_epochs().clone();
    e.truncate_from(end);
    e
}

#[test]
fn replicated_appends_keep_the_leaders_offsets_epochs_and_bytes() {
    let (ldir, fdir, gdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut leader = leader_log(ldir.path());
    // One batch per append, as the leader appended them: the same rolls, so the same files.
    let mut f = follower(fdir.path());
    while f.log_end_offset() < leader.log_end_offset() {
        let end = f.log_end_offset();
        let got = split_fetched_records(&fetch(&leader, end, 1)).unwrap();
        assert_eq!(got.len(), 1);
        let a = f.append_replicated(&got).unwrap();
        assert_eq!(
            (a.base_offset, a.last_offset),
            (end, got[0].header.last_offset())
        );
    }
    flush(&mut leader);
    flush(&mut f);
    assert_eq!(
        files(fdir.path()),
        files(ldir.path()),
        "segments, indexes, checkpoints"
    );
    // Fetches of several batches ending in a partial one (here the first bytes of a batch
    // header): the partial batch is dropped and fetched again.
    let mut g = follower(gdir.path());
    let mut fetches = 0;
    while g.log_end_offset() < leader.log_end_offset() {
        let whole = fetch(&leader, g.log_end_offset(), 350);
        let mut set = whole.to_vec();
        set.extend_from_slice(&whole[..40]);
        let got = split_fetched_records(&Bytes::from(set)).unwrap();
        assert_eq!(
            got.iter().map(|b| b.bytes.len()).sum::<usize>(),
            whole.len()
        );
        g.append_replicated(&got).unwrap();
        fetches += 1;
    }
    assert!(fetches < 24, "{fetches} fetches: several batches each");
    assert!(g.segment_count() > 4, "rolls by size");
    assert_eq!(log_bytes(gdir.path()), log_bytes(ldir.path()));
    assert_eq!(batches_of(&g), batches_of(&leader));
    assert_eq!(contents(&g), contents(&leader));
    let want = leader.leader_epochs().clone();
    assert_eq!(
        want.end_offset_for(3, 48),
        (3, 31),
        "epochs 0, 3, 7 from 0, 15, 31"
    );
    assert_eq!(g.leader_epochs(), &want);
    // The epochs are checkpointed with the flush, and rebuilt from the batches without it.
    flush(&mut g);
    drop(g);
    let g = PartitionLog::open(gdir.path(), "t", 0, REPL, true).unwrap();
    assert_eq!((g.leader_epochs(), g.log_end_offset()), (&want, 48));
    drop(g);
    fs::remove_file(partition_dir(gdir.path(), "t", 0).join(epochs::CHECKPOINT_FILE)).unwrap();
    let g = PartitionLog::open(gdir.path(), "t", 0, REPL, true).unwrap();
    assert_eq!(g.leader_epochs(), &want);
}

#[test]
fn replicated_appends_roll_by_age_in_the_batches_own_time() {
    let (ldir, fdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = leader_log(ldir.path());
    // Batch i has timestamps from 1000 + 40 i: a segment takes 200 ms of them, whatever the
    // wall clock says (the batches are replayed long after they were written).
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: Some(200),
        index_interval_bytes: 150,
        ..LogConfig::BASE
    };
    let mut f = PartitionLog::open(fdir.path(), "t", 0, cfg, false).unwrap();
    for b in all_batches(&leader) {
        f.append_replicated(&[b]).unwrap();
    }
    // 960 ms of timestamps: at least 4 segments (5: each rolls once a batch's newest record is
    // over 200 ms past the segment's first batch's).
    assert_eq!(f.segment_count(), 5);
    assert_eq!(log_bytes(fdir.path()), log_bytes(ldir.path()));
}

#[test]
fn replicated_appends_refuse_overlaps_and_older_epochs() {
    let (ldir, fdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = leader_log(ldir.path());
    let all = all_batches(&leader);
    let mut f = follower(fdir.path());
    f.append_replicated(&all[..10]).unwrap();
    let end = f.log_end_offset();
    assert_eq!(end, all[10].header.base_offset);
    assert_eq!(f.leader_epochs().latest_epoch(), 3);
    let before = files(fdir.path());
    // A gap is no error: a compacted leader's log has them (see `log::clean`'s tests).
    let cases: [(&str, Vec<ProducedBatch>); 5] = [
        ("an overlap", vec![all[9].clone()]),
        (
            "an overlap after the first",
            vec![all[10].clone(), all[10].clone()],
        ),
        (
            "a gap, then going back",
            vec![all[12].clone(), all[11].clone()],
        ),
        ("an epoch older than the log's", vec![restamp(&all[10], 0)]),
        (
            "epochs going back",
            vec![restamp(&all[10], 5), restamp(&all[11], 4)],
        ),
    ];
    for (name, batches) in cases {
        let err = f.append_replicated(&batches).unwrap_err();
        assert_eq!(err.code(), 2, "{name}: {err}");
        assert_eq!(f.log_end_offset(), end, "{name}");
        assert_eq!(files(fdir.path()), before, "{name}: nothing written");
    }
    assert!(f.poisoned().is_none());
    let none = f.append_replicated(&[]).unwrap();
    assert_eq!((none.base_offset, none.last_offset), (end, end - 1));
    f.append_replicated(&all[10..]).unwrap();
    assert_eq!(batches_of(&f), batches_of(&leader));
}

#[test]
fn a_failed_write_of_a_replicated_append_leaves_the_log_as_it_was() {
    let ldir = tempfile::tempdir().unwrap();
    let leader = leader_log(ldir.path());
    let all = all_batches(&leader);
    let chunks: Vec<&[ProducedBatch]> = all.chunks(2).collect();
    for op in ["write", "index", "timeindex", "create", "seal"] {
        let (_faulty_dir, faulty, _twin_dir, twin, failed) =
            faulty_and_twin(op, REPL, chunks.len(), |log, i| {
                log.append_replicated(chunks[i])
            });
        assert!(failed >= 2, "{op}: only {failed} appends met the fault");
        assert_eq!(faulty.leader_epochs(), leader.leader_epochs(), "{op}");
        assert_eq!(batches_of(&faulty), batches_of(&twin), "{op}");
    }
}

/// Appends one batch of epoch `epoch` to a log just cut back to `end`, and checks that it
/// lands at `end` and is still there after a flush and a reopen, which it returns.
fn appends_continue_at(dir: &Path, mut log: PartitionLog, end: i64, epoch: i32) -> PartitionLog {
    assert_eq!(produce_in(&mut log, epoch, &[b"after"]).base_offset, end);
    flush(&mut log);
    drop(log);
    let log = PartitionLog::open(dir, "t", 0, REPL, true).unwrap();
    assert_eq!(log.log_end_offset(), end + 1);
    assert_eq!(read_all(&log, end, 1), vec![end]);
    log
}

#[test]
fn truncation_cuts_whole_batches_and_survives_a_reopen() {
    let ldir = tempfile::tempdir().unwrap();
    let leader = leader_log(ldir.path());
    let all = batches_of(&leader);
    let bases: Vec<i64> = leader.segments.iter().map(|s| s.base_offset).collect();
    let active = bases[bases.len() - 1];
    // Batch 5 holds offsets 9..=11, batch 8 offsets 15..=17 (the first of epoch 3).
    assert_eq!((all[5].0, all[5].1, all[8].0, all[8].1), (9, 11, 15, 17));
    let cases = [
        ("inside the active segment", active + 1),
        ("at the active segment's base", active),
        ("at a segment's base, several back", bases[2]),
        ("inside a segment's first batch", bases[2] + 1),
        ("at a batch boundary", all[5].0),
        ("inside a batch", all[5].0 + 1),
        ("at the last offset of an epoch's first batch", all[8].1),
        ("inside the first segment", 1),
    ];
    // Every case on a flushed log, and on one whose writes are all still unflushed.
    for ((name, cut), flushed) in cases.iter().flat_map(|c| [(*c, true), (*c, false)]) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = leader_log(dir.path());
        if flushed {
            flush(&mut log);
        }
        let end = all.iter().find(|b| b.1 >= cut).unwrap().0;
        let job = log.truncate_to(cut).unwrap().unwrap();
        assert_eq!(job.log_end, end, "{name}");
        job.run().unwrap();
        assert_eq!(log.log_end_offset(), end, "{name}");
        let want_flushed = if flushed { end } else { 0 };
        assert_eq!(
            log.flushed_offset(),
            want_flushed,
            "{name}: never above the log end"
        );
        let kept: Vec<_> = all.iter().filter(|b| b.0 < end).copied().collect();
        assert_eq!(batches_of(&log), kept, "{name}");
        assert_eq!(log.leader_epochs(), &epochs_below(&leader, end), "{name}");
        assert_eq!(
            log.segment_count(),
            bases.partition_point(|b| *b <= cut),
            "{name}: the segments above are gone"
        );
        assert!(
            log.truncate_to(end).unwrap().is_none(),
            "{name}: at the end"
        );
        let seen = contents(&log);
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, REPL, true).unwrap();
        assert!(
            log.check_online().is_ok() && log.missing.is_empty(),
            "{name}"
        );
        assert_eq!(log.recovered.unwrap().truncated_bytes, 0, "{name}");
        assert_eq!(contents(&log), seen, "{name}: reopened");
        assert_eq!(log.leader_epochs(), &epochs_below(&leader, end), "{name}");
        // Appends continue at the new end, in a new epoch, and stay.
        let log = appends_continue_at(dir.path(), log, end, 9);
        assert_eq!(log.leader_epochs().end_offset_for(9, end + 1), (9, end + 1));
        assert_eq!(log.leader_epochs().latest_start(), Some(end), "{name}");
    }
}

#[test]
fn truncating_fully_restarts_the_log_empty_at_any_offset() {
    let ldir = tempfile::tempdir().unwrap();
    let leader = leader_log(ldir.path());
    let bases: Vec<i64> = leader.segments.iter().map(|s| s.base_offset).collect();
    for (name, offset) in [
        ("past the end", 100),
        ("inside the log", 20),
        ("at a segment's base", bases[2]),
        ("at the log start", 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = leader_log(dir.path());
        flush(&mut log);
        let job = log.truncate_fully_and_start_at(offset).unwrap().unwrap();
        job.run().unwrap();
        let state = |log: &PartitionLog| {
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.segment_count(),
                log.leader_epochs().clone(),
            )
        };
        let want = (offset, offset, 1, LeaderEpochCache::default());
        assert_eq!(state(&log), want, "{name}");
        assert!(batches_of(&log).is_empty(), "{name}");
        drop(log);
        for recover in [false, true] {
            let log = PartitionLog::open(dir.path(), "t", 0, REPL, recover).unwrap();
            assert!(log.check_online().is_ok(), "{name}");
            assert_eq!(state(&log), want, "{name}: reopened, recover={recover}");
        }
        let log = PartitionLog::open(dir.path(), "t", 0, REPL, true).unwrap();
        let log = appends_continue_at(dir.path(), log, offset, 8);
        assert_eq!(log.log_start_offset(), offset, "{name}");
    }
    // A cut at or below the log start (DeleteRecords moved it) restarts the log there.
    let dir = tempfile::tempdir().unwrap();
    let mut log = leader_log(dir.path());
    log.delete_records(10).unwrap().1.unwrap().run().unwrap();
    log.truncate_to(5).unwrap().unwrap().run().unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
    drop(log);
    let log = PartitionLog::open(dir.path(), "t", 0, REPL, true).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
}

/// One file step of a truncation, as the implementation takes them, to stop after any.
enum Step {
    LogEnd(i64),
    Epochs(LeaderEpochCache),
    LogStart(i64),
    Unlink(PathBuf),
    /// A log file cut (its indexes not rebuilt yet).
    Cut(PathBuf, u64),
    Create(i64),
}

fn apply(pdir: &Path, step: &Step) {
    match step {
        Step::LogEnd(o) => write_log_end(pdir, *o).unwrap(),
        Step::Epochs(e) => epochs::write_checkpoint(pdir, &e.checkpoint_text()).unwrap(),
        Step::LogStart(o) => write_log_start(pdir, *o).unwrap(),
        Step::Unlink(p) => fs::remove_file(p).unwrap(),
        Step::Cut(p, len) => fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(*len)
            .unwrap(),
        Step::Create(base) => drop(Segment::create(pdir, *base).unwrap()),
    }
}

/// The unlinks deleting the segment at `base`: its log first, then its indexes.
fn unlinks(pdir: &Path, base: i64) -> Vec<Step> {
    use crate::storage::segment::{index_path, log_path, time_index_path};
    vec![
        Step::Unlink(log_path(pdir, base)),
        Step::Unlink(index_path(pdir, base)),
        Step::Unlink(time_index_path(pdir, base)),
    ]
}

/// Checks what a kill after every prefix of `steps` leaves: the files open with recovery as
/// the old log or a prefix of it at least `min_end` long, or as the new empty log at
/// `empty_at`, with nothing missing; and `redo` on that log then gives `want`.
fn kill_at_every_step(
    name: &str,
    steps: impl Fn(&Path, &PartitionLog) -> Vec<Step>,
    min_end: i64,
    empty_at: Option<i64>,
    redo: impl Fn(&mut PartitionLog),
    want: impl Fn(&PartitionLog),
) {
    let ldir = tempfile::tempdir().unwrap();
    let leader = leader_log(ldir.path());
    let all = batches_of(&leader);
    let n = steps(&partition_dir(ldir.path(), "t", 0), &leader).len();
    for stop in 0..=n {
        let dir = tempfile::tempdir().unwrap();
        let pdir = partition_dir(dir.path(), "t", 0);
        let mut log = leader_log(dir.path());
        flush(&mut log);
        let steps = steps(&pdir, &log);
        drop(log);
        for step in &steps[..stop] {
            apply(&pdir, step);
        }
        let mut log = PartitionLog::open(dir.path(), "t", 0, REPL, true).unwrap();
        assert!(
            log.check_online().is_ok() && log.missing.is_empty(),
            "{name}: killed after {stop} of {n} steps: {:?}",
            log.missing
        );
        let got = batches_of(&log);
        let end = log.log_end_offset();
        if got.is_empty() && empty_at == Some(end) {
            assert_eq!(log.log_start_offset(), end, "{name}: {stop} steps");
        } else {
            assert!(end >= min_end, "{name}: {stop} steps: end {end}");
            assert_eq!(got[..], all[..got.len()], "{name}: {stop} steps: a prefix");
            assert_eq!(
                got.last().map_or(0, |b| b.1 + 1),
                end,
                "{name}: {stop} steps"
            );
            assert_eq!(
                log.leader_epochs(),
                &epochs_below(&leader, end),
                "{name}: {stop} steps"
            );
        }
        redo(&mut log);
        want(&log);
        drop(log);
        want(&PartitionLog::open(dir.path(), "t", 0, REPL, true).unwrap());
    }
}

#[test]
fn a_truncation_killed_at_any_step_opens_as_the_old_log_or_a_longer_prefix() {
    // Inside a batch of the third segment: the segments above go, the third is cut.
    let cut = |log: &PartitionLog| log.segments[2].base_offset + 2;
    let steps = |pdir: &Path, log: &PartitionLog| {
        let (i, pos, end) = log.cut_point(cut(log)).unwrap();
        let mut epochs = log.leader_epochs().clone();
        epochs.truncate_from(end);
        let mut steps = vec![Step::LogEnd(end), Step::Epochs(epochs)];
        for seg in log.segments[i + 1..].iter().rev() {
            steps.extend(unlinks(pdir, seg.base_offset));
        }
        steps.push(Step::Cut(log.segments[i].path(), pos));
        steps
    };
    let ldir = tempfile::tempdir().unwrap();
    let leader = leader_log(ldir.path());
    let end = leader.cut_point(cut(&leader)).unwrap().2;
    assert!(end < cut(&leader), "the cut falls inside a batch");
    let want_batches: Vec<_> = batches_of(&leader)
        .into_iter()
        .filter(|b| b.0 < end)
        .collect();
    kill_at_every_step(
        "truncate_to",
        steps,
        end,
        None,
        |log| {
            let c = log.segments[2].base_offset + 2;
            if let Some(job) = log.truncate_to(c).unwrap() {
                job.run().unwrap();
            }
        },
        |log| {
            assert_eq!(log.log_end_offset(), end);
            assert_eq!(batches_of(log), want_batches);
            assert_eq!(log.leader_epochs(), &epochs_below(&leader, end));
        },
    );
}

#[test]
fn a_full_truncation_killed_at_any_step_opens_as_the_old_log_or_the_new_one() {
    for (name, offset) in [("past the end", 100i64), ("inside", 20), ("at a base", -1)] {
        // -1: at the third segment's base.
        let at = |log: &PartitionLog| {
            if offset < 0 {
                log.segments[2].base_offset
            } else {
                offset
            }
        };
        let steps = |pdir: &Path, log: &PartitionLog| {
            let offset = at(log);
            let start = log.log_start_offset();
            let mut steps = vec![
                Step::LogEnd(offset.min(start)),
                Step::Epochs(LeaderEpochCache::default()),
            ];
            if offset > start {
                steps.push(Step::LogStart(offset));
            }
            let mut old: Vec<i64> = log.segments.iter().map(|s| s.base_offset).collect();
            match old.iter().position(|b| *b == offset) {
                Some(k) => {
                    for base in old.drain(k + 1..).rev() {
                        steps.extend(unlinks(pdir, base));
                    }
                    let seg = old.pop().unwrap();
                    steps.push(Step::Cut(crate::storage::segment::log_path(pdir, seg), 0));
                }
                None => steps.push(Step::Create(offset)),
            }
            for base in old.into_iter().rev() {
                steps.extend(unlinks(pdir, base));
            }
            if offset < start {
                steps.push(Step::LogStart(offset));
            }
            steps
        };
        let ldir = tempfile::tempdir().unwrap();
        let target = at(&leader_log(ldir.path()));
        kill_at_every_step(
            name,
            steps,
            0,
            Some(target),
            |log| {
                log.truncate_fully_and_start_at(target)
                    .unwrap()
                    .unwrap()
                    .run()
                    .unwrap();
            },
            |log| {
                assert_eq!(
                    (log.log_start_offset(), log.log_end_offset()),
                    (target, target),
                    "{name}"
                );
                assert!(batches_of(log).is_empty(), "{name}");
                assert_eq!(log.leader_epochs(), &LeaderEpochCache::default());
            },
        );
    }
}

/// A wait for durability (`Shard::flush_to` loops on `flush_step`) ends when a truncation cut
/// its write off the log, whether the cut came before its flush started or while another flush
/// ran: a step that neither ends the wait nor gives it something to await would spin the
/// executor forever (a deposed leader's acks=all write, truncated as a follower, did).
#[test]
fn a_wait_for_durability_ends_when_its_write_is_truncated_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = leader_log(dir.path());
    let run = |log: &mut PartitionLog, job: FlushJob| {
        let target = job.target;
        let r = job.run();
        log.finish_flush(target, &r);
        r.unwrap();
    };
    // Nothing synced yet: the first step is a flush, a running one is joined.
    assert!(matches!(log.flush_step(47, true).unwrap(), FlushStep::Join));
    let FlushStep::Run(job) = log.flush_step(47, false).unwrap() else {
        panic!("an unsynced write starts a flush");
    };
    run(&mut log, job);
    assert!(matches!(
        log.flush_step(47, false).unwrap(),
        FlushStep::Durable
    ));
    // More appended (offsets 48, 49, 50, a batch each), then cut back before any flush.
    let one = Bytes::from(batch(5000, &[b"x"]));
    let b = split_produce_records(&one, 1 << 20).unwrap();
    for _ in 0..3 {
        log.append(&b, 7, None, 0).unwrap();
    }
    assert_eq!(log.log_end_offset(), 51);
    log.truncate_to(49).unwrap().unwrap().run().unwrap();
    for running in [false, true] {
        assert!(
            matches!(log.flush_step(50, running).unwrap(), FlushStep::Cut),
            "offset 50 is gone (running={running})"
        );
    }
    // What is left below the cut is still made durable.
    let FlushStep::Run(job) = log.flush_step(48, false).unwrap() else {
        panic!("offset 48 is not synced yet");
    };
    run(&mut log, job);
    assert!(matches!(
        log.flush_step(48, false).unwrap(),
        FlushStep::Durable
    ));
    assert!(matches!(log.flush_step(49, false).unwrap(), FlushStep::Cut));
    // A flush that was running across the cut ends no higher than the new log end.
    log.append(&b, 8, None, 0).unwrap();
    log.append(&b, 8, None, 0).unwrap();
    assert_eq!(log.log_end_offset(), 51);
    let FlushStep::Run(job) = log.flush_step(50, false).unwrap() else {
        panic!("the new batches are not synced yet");
    };
    log.truncate_to(50).unwrap().unwrap().run().unwrap();
    run(&mut log, job);
    assert_eq!(log.flushed_offset(), 50);
    assert!(matches!(
        log.flush_step(49, false).unwrap(),
        FlushStep::Durable
    ));
    assert!(matches!(log.flush_step(50, false).unwrap(), FlushStep::Cut));
}
