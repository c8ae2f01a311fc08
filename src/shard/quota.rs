//! Client quota enforcement on a shard (the state machine is `quota/`).
//!
//! Lives on: every shard. Each keeps a copy of the quota table (replaced whole by the
//! controller's [`QuotasChanged`](super::calls::QuotasChanged)) and the sensors of the keys it
//! owns (`placement::quota_owner`).
//!
//! A request that a quota applies to goes: the connection's shard resolves its user and client
//! id against its table (no hop; a broker without quotas stops at an empty table) -> sends the
//! usage to each sensor's owner shard as one typed [`RecordQuota`](super::calls::RecordQuota)
//! call (none when it owns them itself) -> the owner adds it to the sampled rate and answers the
//! throttle -> the connection puts the largest in the response's `throttle_time_ms` and mutes
//! the connection for that long (`server::connection`). So a client's connections on several
//! shards count against one per-broker quota, exactly, at the cost of one cross-core message
//! per quota-bound request whose sensor lives elsewhere; clients no quota applies to pay
//! nothing.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::quota::{QuotaKind, QuotaTable, SensorKey};

use super::Shard;
use super::calls::RecordQuota;

/// One piece of usage for a sensor's owner.
#[derive(Clone, Debug)]
pub struct QuotaUsage {
    pub key: SensorKey,
    /// Bytes, or for the request quota, percent-seconds of handler time.
    pub value: f64,
    /// The bound the connection's shard resolved for the key.
    pub bound: f64,
}

/// Throttles handed out by this shard's connections, per quota kind.
#[derive(Debug, Default)]
pub struct QuotaStats {
    /// (requests throttled, total throttle ms), indexed as `QuotaKind::ALL`.
    pub throttled: std::cell::Cell<[(u64, u64); 3]>,
}

impl Shard {
    /// Replaces this shard's quota table (the controller's push).
    pub fn set_quotas(&self, table: QuotaTable) {
        tracing::debug!(shard = self.id, quotas = ?table, "client quotas changed");
        *self.quotas.borrow_mut() = Rc::new(table);
    }

    /// This shard's quota table.
    pub fn quotas(&self) -> Rc<QuotaTable> {
        self.quotas.borrow().clone()
    }

    /// Milliseconds on this shard's quota clock (monotonic, from the shard's start). Only the
    /// owner of a sensor reads it for that sensor, so one clock serves each sensor.
    fn quota_now_ms(&self) -> u64 {
        self.quota_epoch.elapsed().as_millis() as u64
    }

    /// Records usage for sensors this shard owns; one throttle (ms) per item.
    pub fn record_quota_usage(&self, usage: Vec<QuotaUsage>) -> Vec<u64> {
        let now = self.quota_now_ms();
        let mut sensors = self.quota_sensors.borrow_mut();
        usage
            .into_iter()
            .map(|u| {
                debug_assert_eq!(
                    crate::placement::quota_owner(&u.key.user, &u.key.client_id, self.shards()),
                    self.id,
                    "quota sensor {:?} recorded off its owner",
                    u.key
                );
                sensors.record(u.key, u.value, u.bound, now)
            })
            .collect()
    }

    /// Counts `usage` ((kind, amount) pairs) of (user, client id) against the quotas that apply
    /// and returns the throttle the client gets, in ms: the largest of them, 0 when none
    /// applies or the client is within them.
    pub async fn quota_throttle(
        self: &Rc<Self>,
        user: &str,
        client_id: &str,
        usage: &[(QuotaKind, f64)],
    ) -> u64 {
        let table = self.quotas();
        if table.is_empty() {
            return 0;
        }
        let mut by_owner: BTreeMap<usize, Vec<QuotaUsage>> = BTreeMap::new();
        for &(kind, value) in usage {
            if let Some((key, bound)) = table.resolve(kind, user, client_id) {
                let owner = crate::placement::quota_owner(&key.user, &key.client_id, self.shards());
                by_owner
                    .entry(owner)
                    .or_default()
                    .push(QuotaUsage { key, value, bound });
            }
        }
        drop(table);
        let mut worst: BTreeMap<QuotaKind, u64> = BTreeMap::new();
        for (owner, items) in by_owner {
            let kinds: Vec<QuotaKind> = items.iter().map(|u| u.key.kind).collect();
            // A shard that cannot be reached is stopping: nothing to throttle for.
            let Ok(throttles) = self.call(owner, RecordQuota(items)).await else {
                continue;
            };
            for (kind, ms) in kinds.into_iter().zip(throttles) {
                let w = worst.entry(kind).or_default();
                *w = (*w).max(ms);
            }
        }
        let mut stats = self.quota_stats.throttled.get();
        for (kind, ms) in &worst {
            if *ms > 0 {
                stats[kind.index()].0 += 1;
                stats[kind.index()].1 += ms;
            }
        }
        self.quota_stats.throttled.set(stats);
        worst.values().copied().max().unwrap_or(0)
    }

    /// (quota key, requests throttled, total throttle ms) for the metrics.
    pub fn quota_throttle_stats(&self) -> Vec<(&'static str, u64, u64)> {
        let stats = self.quota_stats.throttled.get();
        QuotaKind::ALL
            .iter()
            .zip(stats)
            .map(|(k, (n, ms))| (k.key(), n, ms))
            .collect()
    }
}
