//! The transaction coordinator's state machine: pure, no I/O, no clock (time comes in as
//! `now_ms`).
//!
//! Each transactional id has one [`TxnMeta`]: its producer id and epoch, the timeout it asked
//! for, the partitions of its open transaction and where the transaction stands:
//!
//! ```text
//!            InitProducerId                 AddPartitionsToTxn
//!   (none) ───────────────> Empty ───────────────────────────────> Ongoing
//!                             ^                                     │  │
//!                             │                   EndTxn(commit)    │  │ EndTxn(abort), timeout,
//!                             │                 ┌───────────────────┘  │ InitProducerId (fence)
//!                             │                 v                      v
//!                             │           PrepareCommit           PrepareAbort
//!                             │                 │ markers written      │ markers written
//!                             │                 v                      v
//!                             └──── CompleteCommit / CompleteAbort ────┘
//!                                      (AddPartitionsToTxn starts the next one)
//! ```
//!
//! Every transition returns the new [`TxnMeta`]; the shell makes it durable in the
//! transaction log before anything depends on it (the Prepare states before a single marker
//! is written, so a restart completes them: see `shard/txn.rs`). Requests that arrive while a
//! transaction completes are answered CONCURRENT_TRANSACTIONS, which clients retry.
//!
//! Fencing: InitProducerId on an id whose transaction is open bumps the epoch and aborts the
//! transaction with the new epoch, so the partitions refuse the old producer's late writes and
//! the coordinator its requests (PRODUCER_FENCED). A transaction open longer than its timeout
//! is aborted the same way ([`expire`]); the fenced producer's own EndTxn(abort) with the epoch
//! before the bump is still taken as a retry of that abort, as in Kafka.

use std::collections::BTreeSet;

use crate::error::ErrorCode;

/// Where a transactional id's transaction stands (Kafka's `TransactionState` ids, as the
/// transaction log stores them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnState {
    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Kafka's name of the state, as DescribeTransactions and the CLI show it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// A Prepare state: markers still have to be written.
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state, as the transaction log stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the coordinator last bumped it to fence (a timeout or a new
    /// InitProducerId), or -1: the fenced producer's retried abort is accepted with it.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the open (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the open transaction started (its first AddPartitionsToTxn), or -1.
    pub start_ms: i64,
    pub update_ms: i64,
}

/// The epoch after `epoch`, or None when it is exhausted (the id then gets a new producer id
/// at epoch 0, as in Kafka).
fn next_epoch(epoch: i16) -> Option<i16> {
    (epoch < i16::MAX - 1).then_some(epoch + 1)
}

/// InitProducerId's request, as the state machine needs it.
#[derive(Clone, Copy, Debug)]
pub struct InitRequest {
    pub timeout_ms: i32,
    /// The producer id and epoch the client has (KIP-360), or -1.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The broker's upper bound on `timeout_ms` (`--transaction-max-timeout-ms`).
    pub max_timeout_ms: i32,
    /// A fresh producer id, when the shell already has one for this request.
    pub fresh_producer_id: Option<i64>,
    pub now_ms: i64,
}

/// What InitProducerId must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// Make `meta` durable, then answer its producer id and epoch.
    Ready(TxnMeta),
    /// A fresh producer id is needed: get one and ask again with it.
    NeedProducerId,
    /// The id's transaction is open: make this PrepareAbort (epoch bumped, fencing the old
    /// producer) durable, complete the abort, and answer CONCURRENT_TRANSACTIONS; the client
    /// retries and then gets its new epoch.
    AbortFirst(TxnMeta),
}

pub fn init_producer_id(cur: Option<&TxnMeta>, req: InitRequest) -> Result<InitOutcome, ErrorCode> {
    if req.timeout_ms <= 0 || req.timeout_ms > req.max_timeout_ms {
        return Err(ErrorCode::INVALID_TRANSACTION_TIMEOUT);
    }
    let fresh = |id: i64| TxnMeta {
        producer_id: id,
        producer_epoch: 0,
        last_producer_epoch: -1,
        timeout_ms: req.timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: req.now_ms,
    };
    let Some(m) = cur else {
        return Ok(match req.fresh_producer_id {
            Some(id) => InitOutcome::Ready(fresh(id)),
            None => InitOutcome::NeedProducerId,
        });
    };
    // KIP-360: a client that names its id and epoch must still hold them (or the epoch just
    // before a bump it did not see the answer of).
    if req.producer_id >= 0
        && (req.producer_id != m.producer_id
            || (req.producer_epoch != m.producer_epoch
                && req.producer_epoch != m.last_producer_epoch))
    {
        return Err(ErrorCode::PRODUCER_FENCED);
    }
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(ErrorCode::CONCURRENT_TRANSACTIONS),
        TxnState::Ongoing => Ok(InitOutcome::AbortFirst(fence_and_abort(m, req.now_ms))),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            match next_epoch(m.producer_epoch) {
                Some(epoch) => Ok(InitOutcome::Ready(TxnMeta {
                    producer_epoch: epoch,
                    last_producer_epoch: m.producer_epoch,
                    timeout_ms: req.timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    update_ms: req.now_ms,
                    ..m.clone()
                })),
                None => Ok(match req.fresh_producer_id {
                    Some(id) => InitOutcome::Ready(fresh(id)),
                    None => InitOutcome::NeedProducerId,
                }),
            }
        }
    }
}

/// PrepareAbort of `m`'s open transaction with the epoch bumped (when it can be), so the
/// producer that opened it is fenced.
fn fence_and_abort(m: &TxnMeta, now_ms: i64) -> TxnMeta {
    let bumped = next_epoch(m.producer_epoch);
    TxnMeta {
        producer_epoch: bumped.unwrap_or(m.producer_epoch),
        last_producer_epoch: if bumped.is_some() {
            m.producer_epoch
        } else {
            m.last_producer_epoch
        },
        state: TxnState::PrepareAbort,
        update_ms: now_ms,
        ..m.clone()
    }
}

/// The producer's id and epoch against the stored ones.
fn check_producer(m: &TxnMeta, producer_id: i64, producer_epoch: i16) -> Result<(), ErrorCode> {
    if producer_id != m.producer_id {
        return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
    }
    if producer_epoch != m.producer_epoch {
        return Err(ErrorCode::PRODUCER_FENCED);
    }
    Ok(())
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition): the new
/// state to make durable, or None when every partition is already in the open transaction.
pub fn add_partitions(
    cur: Option<&TxnMeta>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<TxnMeta>, ErrorCode> {
    let m = cur.ok_or(ErrorCode::INVALID_PRODUCER_ID_MAPPING)?;
    check_producer(m, producer_id, producer_epoch)?;
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(ErrorCode::CONCURRENT_TRANSACTIONS),
        TxnState::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => Ok(None),
        TxnState::Ongoing => {
            let mut next = m.clone();
            next.partitions.extend(partitions.iter().cloned());
            next.update_ms = now_ms;
            Ok(Some(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => Ok(Some(TxnMeta {
            state: TxnState::Ongoing,
            partitions: partitions.iter().cloned().collect(),
            start_ms: now_ms,
            update_ms: now_ms,
            ..m.clone()
        })),
    }
}

/// What EndTxn must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndOutcome {
    /// Make this Prepare state durable, write the markers, complete, then answer.
    Prepare(TxnMeta),
    /// The transaction already ended this way (a retry): answer at once.
    AlreadyDone,
}

pub fn end_txn(
    cur: Option<&TxnMeta>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndOutcome, ErrorCode> {
    let m = cur.ok_or(ErrorCode::INVALID_PRODUCER_ID_MAPPING)?;
    if producer_id != m.producer_id {
        return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
    }
    // The producer fenced by a timeout or by a new InitProducerId may still retry its abort.
    let fenced_abort_retry = !commit
        && producer_epoch == m.last_producer_epoch
        && matches!(m.state, TxnState::PrepareAbort | TxnState::CompleteAbort);
    if producer_epoch != m.producer_epoch && !fenced_abort_retry {
        return Err(ErrorCode::PRODUCER_FENCED);
    }
    match (m.state, commit) {
        (TxnState::Ongoing, _) => Ok(EndOutcome::Prepare(TxnMeta {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            update_ms: now_ms,
            ..m.clone()
        })),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(ErrorCode::CONCURRENT_TRANSACTIONS)
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
            Ok(EndOutcome::AlreadyDone)
        }
        _ => Err(ErrorCode::INVALID_TXN_STATE),
    }
}

/// KIP-890 part 1: whether a transactional batch of the producer may be written to each of
/// `partitions`: its transaction must be open, in its epoch, with the partition added
/// (INVALID_TXN_STATE otherwise, or INVALID_PRODUCER_EPOCH for another epoch), so a late or
/// stray write cannot open a transaction in a partition that no marker will ever close.
pub fn verify(
    cur: Option<&TxnMeta>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<ErrorCode> {
    let whole = match cur {
        None => Some(ErrorCode::INVALID_TXN_STATE),
        Some(m) if m.producer_id != producer_id => Some(ErrorCode::INVALID_TXN_STATE),
        Some(m) if m.producer_epoch != producer_epoch => Some(ErrorCode::INVALID_PRODUCER_EPOCH),
        Some(m) if m.state != TxnState::Ongoing => Some(ErrorCode::INVALID_TXN_STATE),
        Some(_) => None,
    };
    partitions
        .iter()
        .map(|p| match (whole, cur) {
            (Some(code), _) => code,
            (None, Some(m)) if m.partitions.contains(p) => ErrorCode::NONE,
            (None, _) => ErrorCode::INVALID_TXN_STATE,
        })
        .collect()
}

/// The state once every marker of a Prepare state is durable.
pub fn complete(m: &TxnMeta, now_ms: i64) -> TxnMeta {
    debug_assert!(m.state.is_prepare(), "complete() of {:?}", m.state);
    TxnMeta {
        state: if m.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        },
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
        ..m.clone()
    }
}

/// A transaction open longer than its timeout: its PrepareAbort, epoch bumped (Kafka aborts
/// a timed-out transaction fencing its producer).
pub fn expire(m: &TxnMeta, now_ms: i64) -> Option<TxnMeta> {
    (m.state == TxnState::Ongoing && now_ms - m.start_ms > i64::from(m.timeout_ms))
        .then(|| fence_and_abort(m, now_ms))
}

/// Whether an id whose transaction is not open has been idle longer than the expiration
/// (`transactional.id.expiration.ms`): its state is then forgotten (a tombstone), and the id
/// starts afresh with a new producer id, as in Kafka.
pub fn id_expired(m: &TxnMeta, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(
        m.state,
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
    ) && now_ms.saturating_sub(m.update_ms) > expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: i32 = 900_000;

    fn req(pid: i64, epoch: i16, fresh: Option<i64>) -> InitRequest {
        InitRequest {
            timeout_ms: 60_000,
            producer_id: pid,
            producer_epoch: epoch,
            max_timeout_ms: MAX,
            fresh_producer_id: fresh,
            now_ms: 1000,
        }
    }

    fn ready(o: Result<InitOutcome, ErrorCode>) -> TxnMeta {
        match o {
            Ok(InitOutcome::Ready(m)) => m,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn init_needs_an_id_then_bumps_the_epoch() {
        assert_eq!(
            init_producer_id(None, req(-1, -1, None)),
            Ok(InitOutcome::NeedProducerId)
        );
        let m = ready(init_producer_id(None, req(-1, -1, Some(7))));
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (7, 0, TxnState::Empty)
        );
        let m2 = ready(init_producer_id(Some(&m), req(-1, -1, None)));
        assert_eq!((m2.producer_id, m2.producer_epoch), (7, 1));
        assert_eq!(m2.last_producer_epoch, 0);
        // An exhausted epoch takes a fresh id.
        let old = TxnMeta {
            producer_epoch: i16::MAX - 1,
            ..m2.clone()
        };
        assert_eq!(
            init_producer_id(Some(&old), req(-1, -1, None)),
            Ok(InitOutcome::NeedProducerId)
        );
        let m3 = ready(init_producer_id(Some(&old), req(-1, -1, Some(8))));
        assert_eq!((m3.producer_id, m3.producer_epoch), (8, 0));
    }

    #[test]
    fn init_checks_the_timeout_and_kip360_ids() {
        let mut r = req(-1, -1, Some(1));
        r.timeout_ms = MAX + 1;
        assert_eq!(
            init_producer_id(None, r),
            Err(ErrorCode::INVALID_TRANSACTION_TIMEOUT)
        );
        r.timeout_ms = 0;
        assert_eq!(
            init_producer_id(None, r),
            Err(ErrorCode::INVALID_TRANSACTION_TIMEOUT)
        );
        let m = ready(init_producer_id(None, req(-1, -1, Some(5))));
        let m = ready(init_producer_id(Some(&m), req(-1, -1, None))); // epoch 1
        assert_eq!(
            init_producer_id(Some(&m), req(6, 1, None)),
            Err(ErrorCode::PRODUCER_FENCED)
        );
        assert_eq!(
            init_producer_id(Some(&m), req(5, 3, None)),
            Err(ErrorCode::PRODUCER_FENCED)
        );
        assert_eq!(
            ready(init_producer_id(Some(&m), req(5, 1, None))).producer_epoch,
            2
        );
        // The epoch before the last bump is a retry of it.
        assert_eq!(
            ready(init_producer_id(Some(&m), req(5, 0, None))).producer_epoch,
            2
        );
    }

    #[test]
    fn a_transaction_commits_and_the_next_one_starts() {
        let m = ready(init_producer_id(None, req(-1, -1, Some(3))));
        assert_eq!(
            add_partitions(Some(&m), 3, 1, &[tp("t", 0)], 10),
            Err(ErrorCode::PRODUCER_FENCED)
        );
        assert_eq!(
            add_partitions(Some(&m), 4, 0, &[tp("t", 0)], 10),
            Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(
            end_txn(Some(&m), 3, 0, true, 10),
            Err(ErrorCode::INVALID_TXN_STATE)
        );
        let on = add_partitions(Some(&m), 3, 0, &[tp("t", 0)], 10)
            .unwrap()
            .unwrap();
        assert_eq!((on.state, on.start_ms), (TxnState::Ongoing, 10));
        // Adding a partition already in it changes nothing; a new one joins.
        assert_eq!(add_partitions(Some(&on), 3, 0, &[tp("t", 0)], 11), Ok(None));
        let on = add_partitions(Some(&on), 3, 0, &[tp("t", 1)], 12)
            .unwrap()
            .unwrap();
        assert_eq!(on.partitions.len(), 2);
        assert_eq!(on.start_ms, 10);
        let EndOutcome::Prepare(prep) = end_txn(Some(&on), 3, 0, true, 20).unwrap() else {
            panic!("expected Prepare");
        };
        assert_eq!(prep.state, TxnState::PrepareCommit);
        // While it completes, everything is CONCURRENT_TRANSACTIONS.
        assert_eq!(
            add_partitions(Some(&prep), 3, 0, &[tp("t", 0)], 21),
            Err(ErrorCode::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            end_txn(Some(&prep), 3, 0, true, 21),
            Err(ErrorCode::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            end_txn(Some(&prep), 3, 0, false, 21),
            Err(ErrorCode::INVALID_TXN_STATE)
        );
        assert_eq!(
            init_producer_id(Some(&prep), req(-1, -1, None)),
            Err(ErrorCode::CONCURRENT_TRANSACTIONS)
        );
        let done = complete(&prep, 30);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        // A retried EndTxn of the same outcome is answered; the other one is refused.
        assert_eq!(
            end_txn(Some(&done), 3, 0, true, 31),
            Ok(EndOutcome::AlreadyDone)
        );
        assert_eq!(
            end_txn(Some(&done), 3, 0, false, 31),
            Err(ErrorCode::INVALID_TXN_STATE)
        );
        let next = add_partitions(Some(&done), 3, 0, &[tp("u", 0)], 40)
            .unwrap()
            .unwrap();
        assert_eq!(next.state, TxnState::Ongoing);
        assert_eq!(next.partitions.len(), 1);
    }

    #[test]
    fn a_new_producer_fences_the_open_transaction() {
        let m = ready(init_producer_id(None, req(-1, -1, Some(3))));
        let on = add_partitions(Some(&m), 3, 0, &[tp("t", 0)], 10)
            .unwrap()
            .unwrap();
        let Ok(InitOutcome::AbortFirst(abort)) = init_producer_id(Some(&on), req(-1, -1, None))
        else {
            panic!("expected AbortFirst");
        };
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!((abort.producer_epoch, abort.last_producer_epoch), (1, 0));
        assert_eq!(abort.partitions, on.partitions);
        let done = complete(&abort, 20);
        // The old producer is fenced, but its abort is a retry of the one done.
        assert_eq!(
            add_partitions(Some(&done), 3, 0, &[tp("t", 0)], 21),
            Err(ErrorCode::PRODUCER_FENCED)
        );
        assert_eq!(
            end_txn(Some(&done), 3, 0, true, 21),
            Err(ErrorCode::PRODUCER_FENCED)
        );
        assert_eq!(
            end_txn(Some(&done), 3, 0, false, 21),
            Ok(EndOutcome::AlreadyDone)
        );
        // The new producer's retry gets the next epoch.
        let again = ready(init_producer_id(Some(&done), req(-1, -1, None)));
        assert_eq!(again.producer_epoch, 2);
    }

    #[test]
    fn produce_is_verified_against_the_open_transaction() {
        let m = ready(init_producer_id(None, req(-1, -1, Some(3))));
        let parts = [tp("t", 0), tp("t", 1)];
        assert_eq!(
            verify(Some(&m), 3, 0, &parts),
            vec![ErrorCode::INVALID_TXN_STATE; 2]
        );
        let on = add_partitions(Some(&m), 3, 0, &[tp("t", 0)], 10)
            .unwrap()
            .unwrap();
        assert_eq!(
            verify(Some(&on), 3, 0, &parts),
            vec![ErrorCode::NONE, ErrorCode::INVALID_TXN_STATE]
        );
        assert_eq!(
            verify(Some(&on), 3, 1, &parts[..1]),
            vec![ErrorCode::INVALID_PRODUCER_EPOCH]
        );
        assert_eq!(
            verify(None, 3, 0, &parts[..1]),
            vec![ErrorCode::INVALID_TXN_STATE]
        );
        let EndOutcome::Prepare(prep) = end_txn(Some(&on), 3, 0, true, 20).unwrap() else {
            panic!("expected Prepare");
        };
        assert_eq!(
            verify(Some(&complete(&prep, 30)), 3, 0, &parts[..1]),
            vec![ErrorCode::INVALID_TXN_STATE]
        );
    }

    #[test]
    fn idle_ids_expire_but_not_while_a_transaction_is_open() {
        let m = ready(init_producer_id(None, req(-1, -1, Some(3)))); // update_ms 1000
        assert!(!id_expired(&m, 1000 + 500, 500));
        assert!(id_expired(&m, 1000 + 501, 500));
        let on = add_partitions(Some(&m), 3, 0, &[tp("t", 0)], 1000)
            .unwrap()
            .unwrap();
        assert!(!id_expired(&on, 1_000_000, 500));
    }

    #[test]
    fn an_open_transaction_expires_after_its_timeout() {
        let m = ready(init_producer_id(None, req(-1, -1, Some(3))));
        assert_eq!(expire(&m, 1_000_000), None);
        let on = add_partitions(Some(&m), 3, 0, &[tp("t", 0)], 10)
            .unwrap()
            .unwrap();
        assert_eq!(expire(&on, 10 + 60_000), None);
        let abort = expire(&on, 10 + 60_001).unwrap();
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(abort.producer_epoch, 1);
    }
}
