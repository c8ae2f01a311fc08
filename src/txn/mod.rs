//! Transactions: the transaction coordinator's pure state machine ([`state`]), the typed
//! records of `__transaction_state` ([`records`]) and the store of a shard's partitions of it
//! ([`store`]). The async shell that drives them (persisting a transition, writing the
//! commit/abort markers to every partition of a transaction through the owning shards,
//! completing and timing out transactions) lives in `shard/txn.rs`, beside the other
//! cross-shard work.
//!
//! Lives on: a transactional id belongs to partition `abs(hashCode(id)) % N` of
//! `__transaction_state` (`placement::txn_partition`, Kafka's placement), and the shard that
//! owns that partition is the id's coordinator; only its executor touches the id's state.

pub mod records;
pub mod state;
pub mod store;
