//! Moving a one-node broker's data dir into a cluster: the local half of the import.
//!
//! A one-node broker (started without `--voters`) keeps its metadata in
//! `__cluster_metadata-0/` as plain batches and its cluster id in `meta.properties`. A cluster
//! node keeps the quorum's applied metadata in the same directory, so the first clustered start
//! on such a data dir moves the one-node metadata aside and imports its topics through the
//! active controller (`shard::quorum`, `cluster::import`). Blocking: run at start-up, before
//! the executors, except [`finish`] (the blocking pool).
//!
//! # Steps, and what a crash at each leaves
//!
//! 1. `meta.properties` is renamed `meta.properties.one-node` (the node then adopts the
//!    quorum's cluster id, as a fresh node does), and the directory is fsync'd. A crash here
//!    leaves the one-node metadata log in place without `meta.properties`: the next start
//!    sees a one-node log and goes on from step 2.
//! 2. `__cluster_metadata-0/` is renamed `__cluster_metadata-0.one-node/` (the pending
//!    import) and the directory is fsync'd. From here on the pending directory is the import
//!    list: a start that finds it imports again, and the import is idempotent (a topic the
//!    cluster already has under the same id counts as imported).
//! 3. The node starts a fresh cluster store; once registered, it sends the import to the
//!    active controller, which commits every topic it accepts as one entry.
//! 4. [`finish`]: the pending directory is renamed `__cluster_metadata-0.one-node.imported/`
//!    (kept for forensics, never read again) and the directory fsync'd.
//!
//! The partition directories never move: once the import is committed, the node opens them as
//! the leader of its imported partitions, with their data.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store::{METADATA_DIR, MetadataError, MetadataStore, io_err, sync_dir};
use super::{META_PROPERTIES, read_meta_properties_at};
use crate::storage::epochs::LeaderEpochCache;
use crate::storage::log::partition_dir;

/// The one-node metadata log while its import into a cluster is pending.
pub const PENDING_DIR: &str = "__cluster_metadata-0.one-node";
/// The one-node metadata log once its import is committed (kept, never read again).
pub const IMPORTED_DIR: &str = "__cluster_metadata-0.one-node.imported";
/// The one-node broker's `meta.properties` (its old cluster id), kept beside it.
pub const ONE_NODE_META_PROPERTIES: &str = "meta.properties.one-node";

/// The one-node broker's coordinator logs: not in its metadata (each shard opened them
/// itself), so they are imported from their partition directories.
const INTERNAL_TOPICS: [&str; 2] = [crate::placement::OFFSETS_TOPIC, crate::placement::TXN_TOPIC];

/// One topic to import, as the one-node broker had it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// The leader epoch every imported partition starts at: above any epoch the one-node
    /// metadata or the partitions' leader-epoch checkpoints hold, so the batches the one-node
    /// broker wrote all belong to earlier epochs (truncation by epoch stays right).
    pub leader_epoch: i32,
}

/// What a pending import carries to the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneNodeImport {
    /// The one-node broker's cluster id, if it had one (only logged: the node joins the
    /// quorum's cluster).
    pub cluster_id: Option<String>,
    pub topics: Vec<ImportTopic>,
    /// The first producer id the one-node broker never handed out.
    pub next_producer_id: i64,
    /// Its client quotas (absent in imports prepared by older builds).
    #[serde(default)]
    pub client_quotas: Vec<super::record::ClientQuotaRecord>,
    /// Its ACLs (absent in imports prepared by older builds).
    #[serde(default)]
    pub acls: Vec<super::record::AccessControlEntryRecord>,
}

/// Whether an import of a one-node broker's metadata is pending in `data_dir`.
pub fn pending(data_dir: &Path) -> bool {
    data_dir.join(PENDING_DIR).exists()
}

/// Whether `__cluster_metadata-0/` holds a one-node broker's metadata: batches none of which
/// came from a Raft entry, or no record at all but a `meta.properties` beside it (a cluster
/// node writes that only once it applied the quorum's cluster id).
fn holds_one_node_metadata(data_dir: &Path, store: &MetadataStore) -> bool {
    store.is_single_node()
        || (store.next_offset() == 0
            && store.raft_applied() == 0
            && data_dir.join(META_PROPERTIES).exists()
            && !store.dir().join("raft").exists())
}

/// On a clustered start: moves a one-node broker's metadata aside (steps 1 and 2), and reads
/// the import list of a pending import. None when there is nothing to import.
/// `offsets_partitions` and `txn_partitions` are the coordinator logs' partition counts.
pub fn prepare(
    data_dir: &Path,
    offsets_partitions: i32,
    txn_partitions: i32,
    snapshot_every_records: u64,
) -> Result<Option<OneNodeImport>, MetadataError> {
    let metadata_dir = data_dir.join(METADATA_DIR);
    let pending_dir = data_dir.join(PENDING_DIR);
    if metadata_dir.exists() {
        let one_node = {
            let store = MetadataStore::open(&metadata_dir, snapshot_every_records)?;
            holds_one_node_metadata(data_dir, &store)
        };
        if one_node {
            if pending_dir.exists() {
                return Err(MetadataError::Corrupt {
                    path: pending_dir,
                    position: 0,
                    reason: format!(
                        "a pending one-node import, but {METADATA_DIR} holds one-node metadata \
                         too: move one of them away"
                    ),
                });
            }
            let props = data_dir.join(META_PROPERTIES);
            if props.exists() {
                let kept = data_dir.join(ONE_NODE_META_PROPERTIES);
                fs::rename(&props, &kept).map_err(io_err("rename", &props))?;
                sync_dir(data_dir)?;
            }
            fs::rename(&metadata_dir, &pending_dir).map_err(io_err("rename", &metadata_dir))?;
            sync_dir(data_dir)?;
            tracing::info!(
                from = %metadata_dir.display(),
                to = %pending_dir.display(),
                "this data dir held a one-node broker's metadata: moved aside; the import of its topics into the cluster starts once this broker is registered"
            );
        }
    }
    if !pending_dir.exists() {
        return Ok(None);
    }
    read_pending(data_dir, offsets_partitions, txn_partitions)
        .map(Some)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read the pending one-node import");
            e
        })
}

/// The import list of the pending one-node metadata in `data_dir`.
fn read_pending(
    data_dir: &Path,
    offsets_partitions: i32,
    txn_partitions: i32,
) -> Result<OneNodeImport, MetadataError> {
    let pending_dir = data_dir.join(PENDING_DIR);
    // Never snapshot while reading: the pending log is only read.
    let store = MetadataStore::open(&pending_dir, u64::MAX)?;
    let image = store.image();
    let cluster_id = read_meta_properties_at(&data_dir.join(ONE_NODE_META_PROPERTIES))?;
    let mut topics = Vec::new();
    for meta in image.topic_metas() {
        let epochs = meta
            .assignment
            .iter()
            .map(|a| a.leader_epoch)
            .chain(checkpointed_epochs(data_dir, &meta.name, meta.partitions));
        topics.push(ImportTopic {
            leader_epoch: next_epoch(epochs),
            name: meta.name.clone(),
            topic_id: meta.topic_id,
            partitions: meta.partitions,
            configs: meta.configs.clone(),
        });
    }
    for (name, partitions) in INTERNAL_TOPICS
        .into_iter()
        .zip([offsets_partitions, txn_partitions])
    {
        if image.topic_id(name).is_some()
            || !(0..partitions).any(|p| partition_dir(data_dir, name, p).exists())
        {
            continue;
        }
        // Imported as they were: one replica, and so `min.insync.replicas` 1 (an acks=all
        // write to a log with one replica must not wait for a second).
        let configs = BTreeMap::from([("min.insync.replicas".to_string(), "1".to_string())]);
        topics.push(ImportTopic {
            name: name.to_string(),
            topic_id: internal_topic_id(cluster_id.as_deref(), name),
            partitions,
            configs,
            leader_epoch: next_epoch(checkpointed_epochs(data_dir, name, partitions).into_iter()),
        });
    }
    let client_quotas = image
        .to_records()
        .into_iter()
        .filter_map(|r| match r {
            super::record::MetadataRecord::ClientQuota(q) => Some(q),
            _ => None,
        })
        .collect();
    Ok(OneNodeImport {
        cluster_id,
        topics,
        next_producer_id: image.next_producer_id(),
        client_quotas,
        acls: image.acls().values().cloned().collect(),
    })
}

/// One above the highest of `epochs` (at least 1: a one-node broker writes epoch 0).
fn next_epoch(epochs: impl Iterator<Item = i32>) -> i32 {
    epochs.fold(0, i32::max).saturating_add(1)
}

/// The latest epoch of each partition's leader-epoch checkpoint (a checkpoint that cannot be
/// read counts as none: the metadata's epochs and 0 still bound it).
fn checkpointed_epochs(data_dir: &Path, topic: &str, partitions: i32) -> Vec<i32> {
    (0..partitions)
        .filter_map(|p| LeaderEpochCache::load(&partition_dir(data_dir, topic, p)).ok())
        .map(|c| c.latest_epoch())
        .collect()
}

/// The topic id an internal log of a one-node broker is imported under. The one-node broker
/// gave them none (the nil id), and an interrupted import must offer the same id again to be
/// recognised as done, so it is derived from the one-node cluster id and the name.
pub fn internal_topic_id(cluster_id: Option<&str>, name: &str) -> Uuid {
    let key = format!("spate-one-node-import/{}/{name}", cluster_id.unwrap_or(""));
    let hash = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let high = hash(0xcbf2_9ce4_8422_2325);
    let low = hash(0x8422_2325_cbf2_9ce4);
    uuid::Builder::from_random_bytes(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
        .into_uuid()
}

/// Step 4: the import is committed; the pending directory is kept as the imported one.
/// Blocking. Returns where it went.
pub fn finish(data_dir: &Path) -> Result<PathBuf, MetadataError> {
    let pending_dir = data_dir.join(PENDING_DIR);
    let mut done = data_dir.join(IMPORTED_DIR);
    if done.exists() {
        // An earlier one-node dir was imported here before: keep both.
        let ms = crate::clock::now_ms();
        done = data_dir.join(format!("{IMPORTED_DIR}.{ms}"));
    }
    fs::rename(&pending_dir, &done).map_err(io_err("rename", &pending_dir))?;
    sync_dir(data_dir)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::TopicMeta;
    use crate::storage::metadata::image::create_topic_records;
    use crate::storage::metadata::record::{MetadataRecord, ProducerIdsRecord};

    fn one_node_dir() -> (tempfile::TempDir, Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let loaded = crate::storage::metadata::load(dir.path(), 1, 100).unwrap();
        let mut store = loaded.store;
        let id = Uuid::new_v4();
        let meta = TopicMeta::stored(
            "orders".into(),
            id,
            3,
            BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        );
        store.append(&create_topic_records(&meta, 1)).unwrap();
        store
            .append(&[MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: 1,
                next_producer_id: 2000,
            })])
            .unwrap();
        fs::create_dir_all(partition_dir(dir.path(), "__consumer_offsets", 0)).unwrap();
        (dir, id)
    }

    #[test]
    fn a_one_node_dir_is_moved_aside_and_its_topics_listed() {
        let (dir, id) = one_node_dir();
        let d = dir.path();
        let import = prepare(d, 50, 50, 100).unwrap().unwrap();
        assert!(!d.join(METADATA_DIR).exists());
        assert!(!d.join(META_PROPERTIES).exists());
        assert!(d.join(ONE_NODE_META_PROPERTIES).exists());
        assert!(pending(d));
        assert_eq!(import.next_producer_id, 2000);
        assert_eq!(import.topics.len(), 2, "{import:?}");
        let orders = &import.topics[0];
        assert_eq!(
            (orders.name.as_str(), orders.topic_id, orders.partitions),
            ("orders", id, 3)
        );
        assert_eq!(orders.configs["retention.ms"], "1000");
        assert_eq!(orders.leader_epoch, 1);
        let offsets = &import.topics[1];
        assert_eq!(offsets.name, "__consumer_offsets");
        assert_eq!(offsets.partitions, 50);
        assert_eq!(
            offsets.topic_id,
            internal_topic_id(import.cluster_id.as_deref(), "__consumer_offsets")
        );

        // A start after a crash (the fresh cluster store may exist by then) reads the same
        // list again.
        fs::create_dir_all(d.join(METADATA_DIR)).unwrap();
        let again = prepare(d, 50, 50, 100).unwrap().unwrap();
        assert_eq!(again, import);

        let done = finish(d).unwrap();
        assert_eq!(done, d.join(IMPORTED_DIR));
        assert!(!pending(d));
        assert_eq!(prepare(d, 50, 50, 100).unwrap(), None);
    }

    #[test]
    fn a_crash_between_the_two_renames_resumes() {
        let (dir, _) = one_node_dir();
        let d = dir.path();
        fs::rename(d.join(META_PROPERTIES), d.join(ONE_NODE_META_PROPERTIES)).unwrap();
        let import = prepare(d, 50, 50, 100).unwrap().unwrap();
        assert!(import.cluster_id.is_some());
        assert!(pending(d));
    }

    #[test]
    fn a_checkpointed_epoch_raises_the_import_epoch() {
        let (dir, _) = one_node_dir();
        let d = dir.path();
        let p1 = partition_dir(d, "orders", 1);
        fs::create_dir_all(&p1).unwrap();
        crate::storage::epochs::write_checkpoint(&p1, "0\n2\n0 0\n7 10\n").unwrap();
        let import = prepare(d, 50, 50, 100).unwrap().unwrap();
        assert_eq!(import.topics[0].leader_epoch, 8);
    }

    #[test]
    fn a_cluster_store_is_not_imported() {
        let dir = tempfile::tempdir().unwrap();
        let (_, store) = crate::storage::metadata::load_cluster(dir.path(), 100).unwrap();
        drop(store);
        assert_eq!(prepare(dir.path(), 50, 50, 100).unwrap(), None);
        assert!(dir.path().join(METADATA_DIR).exists());
    }

    #[test]
    fn internal_topic_ids_are_stable_and_distinct() {
        let a = internal_topic_id(Some("c"), "__consumer_offsets");
        assert_eq!(a, internal_topic_id(Some("c"), "__consumer_offsets"));
        assert_ne!(a, internal_topic_id(Some("c"), "__transaction_state"));
        assert_ne!(a, internal_topic_id(Some("d"), "__consumer_offsets"));
        assert!(!a.is_nil());
    }
}
