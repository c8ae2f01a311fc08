//! Client quotas, as Kafka has them (KIP-13 byte rates, KIP-55 user and client-id entities,
//! KIP-124 request percentage, KIP-219 throttling, KIP-546 the admin APIs). Pure: no I/O, no
//! clock (every call takes the time), no cores.
//!
//! - **Entities.** A quota is set for a (user, client id) entity, either part named, the
//!   type's default (`<default>`), or absent. [`QuotaTable::resolve`] picks, for one quota
//!   kind, the most specific entity that sets it, in Kafka's order:
//!   `/users/<u>/clients/<c>`, `/users/<u>/clients/<default>`, `/users/<u>`,
//!   `/users/<default>/clients/<c>`, `/users/<default>/clients/<default>`, `/users/<default>`,
//!   `/clients/<c>`, `/clients/<default>`. Each kind is resolved on its own.
//! - **Sensors.** Usage is counted per [`SensorKey`]: the kind and the user and client id that
//!   the matching entity names (a default part counts each user or client id on its own, an
//!   absent part does not split), which is Kafka's `DefaultQuotaCallback` metric tags. So
//!   `/clients/<default>` gives every client id its own allowance, and `/users/alice` shares
//!   one between all of alice's client ids.
//! - **Rate.** A [`Rate`] is Kafka's sampled rate: [`WINDOW_SAMPLES`] samples of
//!   [`WINDOW_MS`], the rate being their sum over the time they span, at least one window. A
//!   value recorded over the bound throttles the client for `(rate - bound) / bound * span`:
//!   the time the excess takes to drain at the bound.
//!
//!   One deliberate difference from Kafka: Kafka's span is at least `(samples - 1)` windows,
//!   so a new sensor accepts ten seconds' worth at once, and that burst comes back each time
//!   its sample leaves the span (every 11 s), a sawtooth around the quota. Measured against
//!   this broker with a 1 MB/s producer sending flat out, that was 1.14 MB/s over 20 s; with
//!   a span of at least one window the first burst is one second's worth, the samples stay
//!   even, and the same producer gets within a few percent of its quota.
//!
//! Where this runs (see `shard/`): every shard keeps the table the controller pushes; the
//! sensors of a key live on one shard ([`crate::placement::quota_owner`]), so a client's
//! connections on several shards count against one per-broker allowance.

use std::collections::{BTreeMap, HashMap};

use crate::storage::metadata::record::{QuotaEntityPart, QuotaValue};

/// Kafka's entity types. `ip` (connection-rate quotas) is not supported.
pub const ENTITY_USER: &str = "user";
pub const ENTITY_CLIENT_ID: &str = "client-id";
pub const ENTITY_IP: &str = "ip";

/// Kafka's controller mutation rate (KIP-599): known, refused as not supported.
pub const KEY_CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

/// Samples in a rate (Kafka's `quota.window.num`).
pub const WINDOW_SAMPLES: usize = 11;
/// Length of one sample (Kafka's `quota.window.size.seconds`, 1).
pub const WINDOW_MS: u64 = 1_000;
/// Longest throttle one request gets (a sanity bound: the throttle is the time the client's
/// excess takes to drain, so a client that sent a minute's worth at once waits a minute).
pub const THROTTLE_MS_MAX: u64 = 60_000;
/// Most sensors one shard keeps (each is about 250 bytes); past it, sensors idle for a whole
/// span are dropped, and if none is, an active one starts over.
pub const SENSORS_MAX: usize = 20_000;

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaKind {
    /// Bytes per second of produced record batches (`producer_byte_rate`).
    Produce,
    /// Bytes per second of Fetch responses (`consumer_byte_rate`).
    Fetch,
    /// Percent of one thread's time spent on the client's requests (`request_percentage`).
    Request,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    /// The quota key, as AlterClientQuotas names it.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
        }
    }

    pub fn from_key(key: &str) -> Option<QuotaKind> {
        QuotaKind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// The kind's place in [`QuotaKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether values must be whole numbers (Kafka types the byte rates LONG).
    pub fn integral(self) -> bool {
        !matches!(self, QuotaKind::Request)
    }
}

/// One part of an entity: a name, or the type's default entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Name {
    Default,
    Named(String),
}

/// A quota entity: a user, a client id, or both; each part named or the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuotaEntity {
    pub user: Option<Name>,
    pub client_id: Option<Name>,
}

/// Why an entity or a quota value is refused (INVALID_REQUEST).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuotaError {
    #[error("the quota entity is empty")]
    EmptyEntity,
    #[error("the quota entity names type '{0}' twice")]
    DuplicateType(String),
    #[error("unknown quota entity type '{0}'")]
    UnknownType(String),
    #[error("quota entity type 'ip' (connection rate quotas) is not supported")]
    IpNotSupported,
    #[error("unknown quota key '{0}'")]
    UnknownKey(String),
    #[error("quota key '{0}' is not supported")]
    KeyNotSupported(String),
    #[error("quota {key} must be a positive number, got {value}")]
    NotPositive { key: String, value: f64 },
    #[error("invalid quota filter: {0}")]
    Filter(String),
    #[error("quota {key} must be a whole number, got {value}")]
    NotWhole { key: String, value: f64 },
}

impl QuotaEntity {
    /// The entity that Kafka's (type, name) pairs describe; a None name is the default.
    pub fn from_parts<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<QuotaEntity, QuotaError> {
        let mut entity = QuotaEntity::default();
        let mut empty = true;
        for (ty, name) in parts {
            empty = false;
            let name = name.map_or(Name::Default, |n| Name::Named(n.to_string()));
            let slot = match ty {
                ENTITY_USER => &mut entity.user,
                ENTITY_CLIENT_ID => &mut entity.client_id,
                ENTITY_IP => return Err(QuotaError::IpNotSupported),
                other => return Err(QuotaError::UnknownType(other.to_string())),
            };
            if slot.replace(name).is_some() {
                return Err(QuotaError::DuplicateType(ty.to_string()));
            }
        }
        if empty {
            return Err(QuotaError::EmptyEntity);
        }
        Ok(entity)
    }

    /// The entity as the metadata record stores it: parts sorted by type (`client-id` before
    /// `user`), a default part's name None.
    pub fn to_parts(&self) -> Vec<QuotaEntityPart> {
        let part = |ty: &str, n: &Name| QuotaEntityPart {
            entity_type: ty.to_string(),
            entity_name: match n {
                Name::Default => None,
                Name::Named(s) => Some(s.clone()),
            },
        };
        let mut out = Vec::with_capacity(2);
        if let Some(c) = &self.client_id {
            out.push(part(ENTITY_CLIENT_ID, c));
        }
        if let Some(u) = &self.user {
            out.push(part(ENTITY_USER, u));
        }
        out
    }

    /// Kafka's ZooKeeper-style path of the entity, for logs and the CLI.
    pub fn path(&self) -> String {
        let name = |n: &Name| match n {
            Name::Default => "<default>".to_string(),
            Name::Named(s) => s.clone(),
        };
        match (&self.user, &self.client_id) {
            (Some(u), Some(c)) => format!("users/{}/clients/{}", name(u), name(c)),
            (Some(u), None) => format!("users/{}", name(u)),
            (None, Some(c)) => format!("clients/{}", name(c)),
            (None, None) => String::new(),
        }
    }
}

/// Checks a quota key and value as AlterClientQuotas sets it (a removal checks the key only).
pub fn validate(key: &str, value: Option<f64>) -> Result<QuotaKind, QuotaError> {
    let kind = match QuotaKind::from_key(key) {
        Some(k) => k,
        None if key == KEY_CONTROLLER_MUTATION_RATE => {
            return Err(QuotaError::KeyNotSupported(key.to_string()));
        }
        None => return Err(QuotaError::UnknownKey(key.to_string())),
    };
    if let Some(v) = value {
        if !v.is_finite() || v <= 0.0 {
            return Err(QuotaError::NotPositive {
                key: key.to_string(),
                value: v,
            });
        }
        if kind.integral() && v.fract() != 0.0 {
            return Err(QuotaError::NotWhole {
                key: key.to_string(),
                value: v,
            });
        }
    }
    Ok(kind)
}

/// Whose usage one sensor counts: Kafka's metric tags of the entity that set the quota.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SensorKey {
    pub kind: QuotaKind,
    pub user: String,
    pub client_id: String,
}

/// The quotas in force, as the metadata has them.
///
/// Lives on: every shard, a copy each, replaced whole when the controller pushes a change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuotaTable {
    entries: BTreeMap<QuotaEntity, [Option<f64>; 3]>,
}

impl QuotaTable {
    /// The table of the metadata's quota records (entities this build cannot read, with an
    /// `ip` part, are left out: the controller never writes them).
    pub fn from_records<'a>(
        quotas: impl IntoIterator<Item = (&'a Vec<QuotaEntityPart>, &'a BTreeMap<String, QuotaValue>)>,
    ) -> QuotaTable {
        let mut entries = BTreeMap::new();
        for (parts, values) in quotas {
            let Ok(entity) = QuotaEntity::from_parts(
                parts
                    .iter()
                    .map(|p| (p.entity_type.as_str(), p.entity_name.as_deref())),
            ) else {
                continue;
            };
            let mut row = [None; 3];
            for (k, v) in values {
                if let Some(kind) = QuotaKind::from_key(k) {
                    row[kind.index()] = Some(v.0);
                }
            }
            if row.iter().any(Option::is_some) {
                entries.insert(entity, row);
            }
        }
        QuotaTable { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any entity sets a quota of `kind` (so requests not of that kind skip it).
    pub fn has(&self, kind: QuotaKind) -> bool {
        self.entries.values().any(|r| r[kind.index()].is_some())
    }

    /// The quota of `kind` that applies to (user, client id): the sensor it counts in and the
    /// bound, from the most specific entity that sets one (see the module docs); None when
    /// no entity does.
    pub fn resolve(
        &self,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
    ) -> Option<(SensorKey, f64)> {
        // One pass over the entities, no allocation but the answer's: the matching entity of
        // the lowest rank in Kafka's order that sets `kind`.
        let (_, entity, bound) = self
            .entries
            .iter()
            .filter_map(|(e, row)| Some((rank(e, user, client_id)?, e, row[kind.index()]?)))
            .min_by_key(|(r, _, _)| *r)?;
        let sensor = SensorKey {
            kind,
            user: if entity.user.is_some() {
                user.to_string()
            } else {
                String::new()
            },
            client_id: if entity.client_id.is_some() {
                client_id.to_string()
            } else {
                String::new()
            },
        };
        Some((sensor, bound))
    }

    /// Whether any quota at all applies to (user, client id), without allocating: most
    /// requests of a broker with quotas are from clients that have none.
    pub fn applies(&self, user: &str, client_id: &str) -> bool {
        self.entries
            .keys()
            .any(|e| rank(e, user, client_id).is_some())
    }
}

/// DescribeClientQuotas' answer: each matching entity with its (quota key, value) pairs.
pub type Described = Vec<(QuotaEntity, Vec<(&'static str, f64)>)>;

/// Where `entity` stands in Kafka's order for (user, client id), 0 the most specific; None
/// when it does not match them.
fn rank(entity: &QuotaEntity, user: &str, client_id: &str) -> Option<u8> {
    // 0 named, 1 default, 2 absent; None: another name.
    let part = |p: &Option<Name>, name: &str| match p {
        Some(Name::Named(n)) if n == name => Some(0u8),
        Some(Name::Named(_)) => None,
        Some(Name::Default) => Some(1),
        None => Some(2),
    };
    let u = part(&entity.user, user)?;
    let c = part(&entity.client_id, client_id)?;
    // Kafka's order: the user part decides first (named, default, absent), then the client
    // part (named, default, absent); an entity has at least one part.
    match (u, c) {
        (2, 2) => None,
        (u, c) => Some(u * 3 + c),
    }
}

/// One component of a DescribeClientQuotas filter (KIP-546).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// The entity type's part names exactly this.
    Exact(String),
    /// The part is the type's default.
    Default,
    /// The part names someone (not the default).
    Specified,
}

impl Match {
    /// Kafka's (match_type, match): 0 exact, 1 default, 2 any specified name.
    pub fn from_wire(match_type: i8, name: Option<&str>) -> Result<Match, QuotaError> {
        match (match_type, name) {
            (0, Some(n)) => Ok(Match::Exact(n.to_string())),
            (0, None) => Err(QuotaError::Filter(
                "match type EXACT needs a match string".into(),
            )),
            (1, _) => Ok(Match::Default),
            (2, _) => Ok(Match::Specified),
            (t, _) => Err(QuotaError::Filter(format!("unknown match type {t}"))),
        }
    }

    fn accepts(&self, part: Option<&Name>) -> bool {
        match (self, part) {
            (_, None) => false,
            (Match::Exact(n), Some(Name::Named(m))) => n == m,
            (Match::Default, Some(Name::Default)) => true,
            (Match::Specified, Some(Name::Named(_))) => true,
            _ => false,
        }
    }
}

impl QuotaTable {
    /// DescribeClientQuotas: the entities every component matches (with `strict`, only those
    /// with no part of another type), each with its quotas as (key, value).
    pub fn describe(
        &self,
        components: &[(String, Match)],
        strict: bool,
    ) -> Result<Described, QuotaError> {
        let mut user = None;
        let mut client = None;
        let mut ip = false;
        for (ty, m) in components {
            let slot = match ty.as_str() {
                ENTITY_USER => &mut user,
                ENTITY_CLIENT_ID => &mut client,
                ENTITY_IP => {
                    ip = true;
                    continue;
                }
                other => return Err(QuotaError::UnknownType(other.to_string())),
            };
            if slot.replace(m).is_some() {
                return Err(QuotaError::DuplicateType(ty.clone()));
            }
        }
        if ip {
            if user.is_some() || client.is_some() {
                return Err(QuotaError::Filter(
                    "an ip filter component cannot be used with a user or client-id one".into(),
                ));
            }
            // No ip quotas are stored.
            return Ok(Vec::new());
        }
        let fits = |m: Option<&Match>, part: Option<&Name>| match m {
            Some(m) => m.accepts(part),
            None => !strict || part.is_none(),
        };
        Ok(self
            .entries
            .iter()
            .filter(|(e, _)| fits(user, e.user.as_ref()) && fits(client, e.client_id.as_ref()))
            .map(|(e, row)| {
                let values = QuotaKind::ALL
                    .iter()
                    .filter_map(|k| row[k.index()].map(|v| (k.key(), v)))
                    .collect();
                (e.clone(), values)
            })
            .collect())
    }
}

/// One sample of a [`Rate`]: what was recorded from `start_ms` on.
#[derive(Clone, Copy, Debug)]
struct Sample {
    start_ms: u64,
    value: f64,
}

/// Kafka's sampled rate (`SampledStat` + `Rate`): [`WINDOW_SAMPLES`] samples of
/// [`WINDOW_MS`]; a sample older than the span is forgotten.
#[derive(Clone, Debug)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
    last_ms: u64,
}

impl Rate {
    pub fn new(now_ms: u64) -> Rate {
        Rate {
            samples: vec![Sample {
                start_ms: now_ms,
                value: 0.0,
            }],
            current: 0,
            last_ms: now_ms,
        }
    }

    /// Adds `value` at `now_ms` (a time before the last one counts as the last one).
    pub fn record(&mut self, value: f64, now_ms: u64) {
        let now_ms = now_ms.max(self.last_ms);
        self.last_ms = now_ms;
        if now_ms >= self.samples[self.current].start_ms + WINDOW_MS {
            self.current = (self.current + 1) % WINDOW_SAMPLES;
            let fresh = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
            if self.current == self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
    }

    /// The time the samples span at `now_ms`, in ms: from the oldest live sample's start, and
    /// at least one window (Kafka's `Rate.windowSize` pads to `samples - 1`; see the module
    /// docs for why not here).
    fn span_ms(&self, now_ms: u64) -> u64 {
        let oldest = self
            .live(now_ms)
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / WINDOW_MS;
        let min_full = 1;
        if full < min_full {
            elapsed + (min_full - full) * WINDOW_MS
        } else {
            elapsed
        }
    }

    /// Samples not older than the span.
    fn live(&self, now_ms: u64) -> impl Iterator<Item = &Sample> {
        let horizon = now_ms.saturating_sub(WINDOW_SAMPLES as u64 * WINDOW_MS);
        self.samples.iter().filter(move |s| s.start_ms >= horizon)
    }

    /// The rate at `now_ms`, per second.
    pub fn rate(&self, now_ms: u64) -> f64 {
        let total: f64 = self.live(now_ms).map(|s| s.value).sum();
        total * 1000.0 / self.span_ms(now_ms).max(1) as f64
    }

    /// The throttle a client over `bound` gets at `now_ms`: `(rate - bound) / bound * span`,
    /// at most [`THROTTLE_MS_MAX`]; 0 at or under the bound.
    pub fn throttle_ms(&self, bound: f64, now_ms: u64) -> u64 {
        let rate = self.rate(now_ms);
        if bound <= 0.0 || rate <= bound {
            return 0;
        }
        let ms = (rate - bound) / bound * self.span_ms(now_ms) as f64;
        (ms.round() as u64).min(THROTTLE_MS_MAX)
    }

    /// Whether nothing was recorded for a whole span (the sensor can go).
    fn idle(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) > WINDOW_SAMPLES as u64 * WINDOW_MS
    }
}

/// The sensors of the keys one shard owns.
///
/// Lives on: the shard [`crate::placement::quota_owner`] picks for each key.
#[derive(Debug, Default)]
pub struct Sensors {
    rates: HashMap<SensorKey, Rate>,
}

impl Sensors {
    /// Records `value` for `key` at `now_ms` and returns the throttle in ms its bound gives.
    pub fn record(&mut self, key: SensorKey, value: f64, bound: f64, now_ms: u64) -> u64 {
        if self.rates.len() >= SENSORS_MAX && !self.rates.contains_key(&key) {
            self.rates.retain(|_, r| !r.idle(now_ms));
            // Still full of active sensors: one of them starts over, so memory stays bounded
            // (a client can use many client ids to get many allowances anyway, as in Kafka).
            if self.rates.len() >= SENSORS_MAX
                && let Some(victim) = self.rates.keys().next().cloned()
            {
                self.rates.remove(&victim);
            }
        }
        let rate = self.rates.entry(key).or_insert_with(|| Rate::new(now_ms));
        rate.record(value, now_ms);
        rate.throttle_ms(bound, now_ms)
    }

    pub fn len(&self) -> usize {
        self.rates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }
}

/// Request time as the request quota counts it: percent of one second.
pub fn nanos_to_percent(nanos: u64) -> f64 {
    nanos as f64 * 100.0 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entity as (type, name) parts.
    type Parts<'a> = [(&'a str, Option<&'a str>)];
    /// (entity, quota key, value)
    type Row<'a> = (&'a Parts<'a>, &'a str, f64);

    fn table(rows: &[Row<'_>]) -> QuotaTable {
        let mut image: BTreeMap<Vec<QuotaEntityPart>, BTreeMap<String, QuotaValue>> =
            BTreeMap::new();
        for (parts, key, value) in rows {
            let entity = QuotaEntity::from_parts(parts.iter().copied()).unwrap();
            image
                .entry(entity.to_parts())
                .or_default()
                .insert(key.to_string(), QuotaValue(*value));
        }
        QuotaTable::from_records(&image)
    }

    #[test]
    fn the_most_specific_entity_wins_in_kafkas_order() {
        let u = |n| (ENTITY_USER, n);
        let c = |n| (ENTITY_CLIENT_ID, n);
        let p = "producer_byte_rate";
        // Each row is one level of Kafka's order, most specific first.
        let levels: Vec<(Box<Parts>, SensorKey)> = vec![
            (
                Box::from([u(Some("alice")), c(Some("app"))]) as Box<Parts>,
                key("alice", "app"),
            ),
            (
                Box::from([u(Some("alice")), c(None)]) as Box<Parts>,
                key("alice", "app"),
            ),
            (
                Box::from([u(Some("alice"))]) as Box<Parts>,
                key("alice", ""),
            ),
            (
                Box::from([u(None), c(Some("app"))]) as Box<Parts>,
                key("alice", "app"),
            ),
            (
                Box::from([u(None), c(None)]) as Box<Parts>,
                key("alice", "app"),
            ),
            (Box::from([u(None)]) as Box<Parts>, key("alice", "")),
            (Box::from([c(Some("app"))]) as Box<Parts>, key("", "app")),
            (Box::from([c(None)]) as Box<Parts>, key("", "app")),
        ];
        fn key(user: &str, client: &str) -> SensorKey {
            SensorKey {
                kind: QuotaKind::Produce,
                user: user.into(),
                client_id: client.into(),
            }
        }
        // With levels i.. set, level i decides, whatever is below it.
        for i in 0..levels.len() {
            let rows: Vec<Row> = levels[i..]
                .iter()
                .enumerate()
                .map(|(j, (parts, _))| (&**parts, p, (i + j + 1) as f64))
                .collect();
            let t = table(&rows);
            assert_eq!(
                t.resolve(QuotaKind::Produce, "alice", "app"),
                Some((levels[i].1.clone(), (i + 1) as f64)),
                "level {i}: {:?}",
                levels[i].0
            );
            assert_eq!(t.resolve(QuotaKind::Fetch, "alice", "app"), None);
        }
        // Another client is not matched by a named client entity.
        let t = table(&[(&[c(Some("app"))], p, 5.0)]);
        assert_eq!(t.resolve(QuotaKind::Produce, "alice", "other"), None);
        assert!(t.applies("alice", "app") && !t.applies("alice", "other"));
    }

    #[test]
    fn kinds_resolve_independently() {
        let t = table(&[
            (
                &[(ENTITY_CLIENT_ID, Some("app"))],
                "producer_byte_rate",
                10.0,
            ),
            (&[(ENTITY_CLIENT_ID, None)], "consumer_byte_rate", 20.0),
        ]);
        assert_eq!(
            t.resolve(QuotaKind::Produce, "ANONYMOUS", "app").unwrap().1,
            10.0
        );
        assert_eq!(
            t.resolve(QuotaKind::Fetch, "ANONYMOUS", "app").unwrap().1,
            20.0
        );
        assert!(t.resolve(QuotaKind::Request, "ANONYMOUS", "app").is_none());
        assert!(t.has(QuotaKind::Fetch) && !t.has(QuotaKind::Request));
    }

    #[test]
    fn entities_and_values_are_checked() {
        assert_eq!(QuotaEntity::from_parts([]), Err(QuotaError::EmptyEntity));
        assert_eq!(
            QuotaEntity::from_parts([(ENTITY_USER, None), (ENTITY_USER, Some("a"))]),
            Err(QuotaError::DuplicateType("user".into()))
        );
        assert_eq!(
            QuotaEntity::from_parts([("group", Some("g"))]),
            Err(QuotaError::UnknownType("group".into()))
        );
        assert_eq!(
            QuotaEntity::from_parts([(ENTITY_IP, None)]),
            Err(QuotaError::IpNotSupported)
        );
        let e =
            QuotaEntity::from_parts([(ENTITY_USER, Some("u")), (ENTITY_CLIENT_ID, None)]).unwrap();
        assert_eq!(e.path(), "users/u/clients/<default>");
        assert_eq!(e.to_parts()[0].entity_type, ENTITY_CLIENT_ID);
        assert_eq!(
            validate("producer_byte_rate", Some(1024.0)),
            Ok(QuotaKind::Produce)
        );
        assert_eq!(
            validate("request_percentage", Some(12.5)),
            Ok(QuotaKind::Request)
        );
        assert!(matches!(
            validate("producer_byte_rate", Some(1.5)),
            Err(QuotaError::NotWhole { .. })
        ));
        assert!(matches!(
            validate("consumer_byte_rate", Some(0.0)),
            Err(QuotaError::NotPositive { .. })
        ));
        assert!(matches!(
            validate("consumer_byte_rate", Some(f64::NAN)),
            Err(QuotaError::NotPositive { .. })
        ));
        assert_eq!(
            validate("nope", None),
            Err(QuotaError::UnknownKey("nope".into()))
        );
        assert_eq!(
            validate(KEY_CONTROLLER_MUTATION_RATE, Some(1.0)),
            Err(QuotaError::KeyNotSupported(
                KEY_CONTROLLER_MUTATION_RATE.into()
            ))
        );
        assert_eq!(validate("producer_byte_rate", None), Ok(QuotaKind::Produce));
    }

    #[test]
    fn describe_filters_as_kip_546() {
        let u = |n| (ENTITY_USER, n);
        let c = |n| (ENTITY_CLIENT_ID, n);
        let p = "producer_byte_rate";
        let t = table(&[
            (&[u(Some("alice"))], p, 1.0),
            (&[u(None)], p, 2.0),
            (&[u(Some("alice")), c(Some("app"))], p, 3.0),
            (&[c(None)], "consumer_byte_rate", 4.0),
        ]);
        let paths = |components: &[(&str, Match)], strict| -> Vec<String> {
            let components: Vec<(String, Match)> = components
                .iter()
                .map(|(t, m)| (t.to_string(), m.clone()))
                .collect();
            t.describe(&components, strict)
                .unwrap()
                .into_iter()
                .map(|(e, _)| e.path())
                .collect()
        };
        let exact = Match::Exact("alice".into());
        assert_eq!(
            paths(&[(ENTITY_USER, exact.clone())], false),
            ["users/alice", "users/alice/clients/app"]
        );
        assert_eq!(paths(&[(ENTITY_USER, exact)], true), ["users/alice"]);
        assert_eq!(
            paths(&[(ENTITY_USER, Match::Default)], true),
            ["users/<default>"]
        );
        assert_eq!(
            paths(&[(ENTITY_USER, Match::Specified)], false),
            ["users/alice", "users/alice/clients/app"]
        );
        assert_eq!(paths(&[], false).len(), 4);
        assert_eq!(paths(&[], true), Vec::<String>::new());
        assert_eq!(
            paths(&[(ENTITY_CLIENT_ID, Match::Default)], true),
            ["clients/<default>"]
        );
        let all = t.describe(&[], false).unwrap();
        assert!(all.iter().any(|(_, v)| v == &[("consumer_byte_rate", 4.0)]));
        let dup = [
            (ENTITY_USER.to_string(), Match::Default),
            (ENTITY_USER.to_string(), Match::Specified),
        ];
        assert!(t.describe(&dup, false).is_err());
        assert!(
            t.describe(&[("group".into(), Match::Default)], false)
                .is_err()
        );
        assert!(Match::from_wire(0, None).is_err() && Match::from_wire(7, None).is_err());
    }

    #[test]
    fn a_new_rate_spans_at_least_one_window() {
        let mut r = Rate::new(0);
        r.record(1_000.0, 0);
        // 1,000 over the minimum span of one window.
        assert_eq!(r.rate(0), 1_000.0);
        assert_eq!(r.throttle_ms(1_000.0, 0), 0);
        r.record(1_000.0, 500);
        // 2,000 over 1.5 s (elapsed 0.5 s plus the missing window): over a bound of 1,000/s
        // by 500 bytes' worth, which take 0.5 s to drain.
        let span = 1_500.0;
        let rate = 2_000.0 * 1000.0 / span;
        assert_eq!(r.rate(500), rate);
        assert_eq!(
            r.throttle_ms(1_000.0, 500),
            ((rate - 1_000.0) / 1_000.0 * span).round() as u64
        );
        assert_eq!(r.throttle_ms(1_000.0, 500), 500);
    }

    #[test]
    fn old_samples_are_forgotten() {
        let mut r = Rate::new(0);
        r.record(50_000.0, 0);
        // 49 windows' worth over the bound: 49 s to drain.
        assert_eq!(r.throttle_ms(1_000.0, 0), 49_000);
        r.record(1e9, 0);
        assert_eq!(r.throttle_ms(1_000.0, 0), THROTTLE_MS_MAX);
        // 12 s later the first sample is past the span: nothing left.
        r.record(0.0, 12_000);
        assert_eq!(r.rate(12_000), 0.0);
        assert_eq!(r.throttle_ms(1_000.0, 12_000), 0);
    }

    /// A client that sends `request` units whenever it may, with `depth` requests in flight
    /// (a throttle mutes it only from the request `depth` later on), for `ms`: the units the
    /// broker accepted per second.
    fn flat_out(bound: f64, request: f64, depth: usize, ms: u64) -> f64 {
        let mut r = Rate::new(0);
        let mut t = 0u64;
        let mut sent = 0.0;
        let mut muted: std::collections::VecDeque<u64> = Default::default();
        while t < ms {
            r.record(request, t);
            sent += request;
            muted.push_back(t + r.throttle_ms(bound, t));
            // A request every 5 ms, unless a throttle answered earlier holds the next one.
            t += 5;
            if muted.len() >= depth
                && let Some(until) = muted.pop_front()
            {
                t = t.max(until);
            }
        }
        sent * 1000.0 / ms as f64
    }

    /// The broker mutes a connection as soon as a Produce is recorded over the quota, before
    /// it reads the next request (see `server::connection`), so one request is in flight at the
    /// broker; each further one in flight would add its size to the overshoot.
    #[test]
    fn a_client_sending_flat_out_gets_its_quota() {
        for depth in [1] {
            for request in [16_384.0, 262_144.0, 1_048_576.0] {
                let rate = flat_out(1_048_576.0, request, depth, 20_000);
                let ratio = rate / 1_048_576.0;
                assert!(
                    (0.97..=1.03).contains(&ratio),
                    "{request} per request, {depth} in flight: {ratio:.3} of the quota"
                );
            }
        }
    }

    #[test]
    fn a_steady_client_under_its_bound_is_not_throttled_and_one_over_is() {
        for (per_second, bound, throttled) in [(900.0, 1_000.0, false), (1_100.0, 1_000.0, true)] {
            let mut r = Rate::new(0);
            let mut last = 0;
            // 30 s of ten records a second.
            for t in (0..30_000u64).step_by(100) {
                r.record(per_second / 10.0, t);
                last = r.throttle_ms(bound, t);
            }
            assert_eq!(last > 0, throttled, "{per_second}/s against {bound}");
        }
    }

    #[test]
    fn sensors_count_each_key_apart() {
        let mut s = Sensors::default();
        let k = |c: &str| SensorKey {
            kind: QuotaKind::Produce,
            user: String::new(),
            client_id: c.into(),
        };
        assert!(s.record(k("a"), 20_000.0, 1_000.0, 0) > 0);
        assert_eq!(s.record(k("b"), 500.0, 1_000.0, 0), 0);
        assert_eq!(s.len(), 2);
        // Bounded: idle sensors go first, then active ones start over.
        for i in 0..SENSORS_MAX + 10 {
            s.record(k(&format!("c{i}")), 1.0, 1_000.0, 0);
        }
        assert_eq!(s.len(), SENSORS_MAX);
        s.record(k("late"), 1.0, 1_000.0, 60_000);
        assert_eq!(s.len(), 1, "every other sensor was idle for a whole span");
    }
}
