//! The metadata store: the cluster's metadata (topics, partitions, configs) as a log of typed
//! records, replayed into an in-memory image.
//!
//! - [`record`]: the closed, versioned set of records and their stable encoding.
//! - [`image`]: the pure image the records build, and the records a change is made of.
//! - [`store`]: the local log of record batches with snapshots, and its recovery.
//!
//! This module knows no cores and no requests. The controller (`shard::controller`, on
//! shard 0) is its only writer: it builds the records of a change, appends them through
//! [`store::MetadataStore::append`] on the blocking pool, and tells every shard once they are
//! durable. When metadata is replicated (the cluster issue), the same record batches become
//! the Raft entries: the Raft log replaces the local log file, and committed entries are
//! applied to the image in the same way.
//!
//! On disk, under the data dir:
//!
//! ```text
//! meta.properties          version=1 and cluster.id=<id>, written once (Kafka's file)
//! __cluster_metadata-0/    the metadata log and its snapshots (see store.rs)
//! catalog.json.migrated    the catalog of older versions, once migrated (never read again)
//! __cluster_metadata-0.one-node/           a one-node broker's metadata, being imported into
//!                                          a cluster (see [`import`])
//! __cluster_metadata-0.one-node.imported/  the same, once imported (never read again)
//! meta.properties.one-node                 the one-node broker's cluster id, kept
//! ```
//!
//! # Migration from `catalog.json`
//!
//! Older versions kept the catalog in `catalog.json`. While that file exists, it is the
//! truth: start-up converts it into records (every topic keeps its id, partition count and
//! configs; the cluster id goes to `meta.properties`), appends them as one batch to a fresh
//! metadata log, fsyncs, and only then renames the file to `catalog.json.migrated` and fsyncs
//! the directory. A crash before the rename leaves `catalog.json` in place, and the next start
//! throws away the half-made metadata log (the broker never served from it) and migrates
//! again.

pub mod image;
pub mod import;
pub mod record;
pub mod store;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::storage::catalog::CatalogData;
use image::create_topic_records;
pub use store::{METADATA_DIR, MetadataError, MetadataStore, SNAPSHOT_EVERY_RECORDS};
use store::{io_err, sync_dir};

const LEGACY_CATALOG: &str = "catalog.json";
const LEGACY_CATALOG_MIGRATED: &str = "catalog.json.migrated";
const META_PROPERTIES: &str = "meta.properties";

/// What start-up hands the shards: the cluster id, the topics, and the store itself (for the
/// controller).
pub struct Loaded {
    pub catalog: CatalogData,
    pub store: MetadataStore,
    /// Topics converted from `catalog.json` at this start (None when there was no migration).
    pub migrated_topics: Option<usize>,
}

/// Whether the data dir holds metadata already (it is not a first start).
pub fn exists(data_dir: &Path) -> bool {
    [
        META_PROPERTIES,
        LEGACY_CATALOG,
        METADATA_DIR,
        import::PENDING_DIR,
    ]
    .iter()
    .any(|f| data_dir.join(f).exists())
}

/// Partition directories (`<topic>-<partition>/`, `__consumer_offsets` and
/// `__transaction_state` aside: they are not in the metadata) in a data dir that has neither a metadata log nor a `catalog.json` to
/// migrate. Such a dir lost its metadata: started anyway, it would serve an empty broker
/// whose auto-created topics would then open, and mix with, the old partitions' data. The
/// caller refuses to start when this is not empty.
pub fn orphaned_partitions(data_dir: &Path) -> io::Result<Vec<String>> {
    // A pending one-node import (see [`import`]) names their topics.
    if data_dir.join(METADATA_DIR).exists()
        || data_dir.join(LEGACY_CATALOG).exists()
        || import::pending(data_dir)
    {
        return Ok(Vec::new());
    }
    let entries = match fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_partition = name
            .rsplit_once('-')
            .is_some_and(|(t, p)| !t.is_empty() && p.parse::<u32>().is_ok());
        // The internal logs are not in the metadata: their own stores open them.
        let internal =
            name.starts_with("__consumer_offsets-") || name.starts_with("__transaction_state-");
        if is_partition && !internal && entry.path().is_dir() {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

/// Loads the metadata of `data_dir`, migrating an older `catalog.json` first, or starts empty
/// metadata with a fresh cluster id on a first start. Blocking: call it at start-up, before
/// the executors run. `node_id` holds every replica of migrated topics.
pub fn load(
    data_dir: &Path,
    node_id: i32,
    snapshot_every_records: u64,
) -> Result<Loaded, MetadataError> {
    fs::create_dir_all(data_dir).map_err(io_err("create", data_dir))?;
    if import::pending(data_dir) {
        return Err(MetadataError::Corrupt {
            path: data_dir.join(import::PENDING_DIR),
            position: 0,
            reason: "this one-node broker's metadata is being imported into a cluster: start \
                     it with --voters (as the cluster node it became)"
                .to_string(),
        });
    }
    let legacy = data_dir.join(LEGACY_CATALOG);
    let metadata_dir = data_dir.join(METADATA_DIR);
    let mut migrated_topics = None;
    let (cluster_id, store) = if legacy.exists() {
        let old = read_legacy_catalog(&legacy)?;
        if metadata_dir.exists() {
            tracing::warn!(
                dir = %metadata_dir.display(),
                "catalog.json is still there: a migration was interrupted; starting it again"
            );
            fs::remove_dir_all(&metadata_dir).map_err(io_err("remove", &metadata_dir))?;
        }
        write_meta_properties(data_dir, &old.cluster_id)?;
        let mut store = MetadataStore::open(&metadata_dir, snapshot_every_records)?;
        let records: Vec<_> = old
            .topics
            .iter()
            .flat_map(|t| create_topic_records(t, node_id))
            .collect();
        if !records.is_empty() {
            store.append(&records)?;
        }
        sync_dir(data_dir)?;
        let done = data_dir.join(LEGACY_CATALOG_MIGRATED);
        fs::rename(&legacy, &done).map_err(io_err("rename", &legacy))?;
        sync_dir(data_dir)?;
        tracing::info!(
            topics = old.topics.len(),
            "migrated catalog.json into the metadata log; it is kept as catalog.json.migrated"
        );
        migrated_topics = Some(old.topics.len());
        (old.cluster_id, store)
    } else {
        let cluster_id = match read_meta_properties(data_dir)? {
            Some(id) => id,
            None if metadata_dir.exists() => {
                return Err(MetadataError::Corrupt {
                    path: data_dir.join(META_PROPERTIES),
                    position: 0,
                    reason: "missing, but the metadata log exists: the cluster id is lost"
                        .to_string(),
                });
            }
            None => {
                let id = Uuid::new_v4().simple().to_string();
                write_meta_properties(data_dir, &id)?;
                id
            }
        };
        let store = MetadataStore::open(&metadata_dir, snapshot_every_records)?;
        (cluster_id, store)
    };
    Ok(Loaded {
        catalog: CatalogData {
            cluster_id,
            topics: store.image().topic_metas(),
        },
        store,
        migrated_topics,
    })
}

/// A cluster node's metadata: the cluster id of `meta.properties` (None on a fresh node: it
/// adopts the quorum's, see [`adopt_cluster_id`]) and the store of applied metadata. Blocking.
pub fn load_cluster(
    data_dir: &Path,
    snapshot_every_records: u64,
) -> Result<(Option<String>, MetadataStore), MetadataError> {
    fs::create_dir_all(data_dir).map_err(io_err("create", data_dir))?;
    if data_dir.join(LEGACY_CATALOG).exists() {
        return Err(MetadataError::Corrupt {
            path: data_dir.join(LEGACY_CATALOG),
            position: 0,
            reason: "a catalog of an old single-node version: start it once without --voters to \
                     migrate it first"
                .to_string(),
        });
    }
    let stored = read_meta_properties(data_dir)?;
    let store = MetadataStore::open(&data_dir.join(METADATA_DIR), snapshot_every_records)?;
    Ok((stored, store))
}

/// Writes the quorum's cluster id into `meta.properties` of a node that had none. Blocking.
pub fn adopt_cluster_id(data_dir: &Path, cluster_id: &str) -> Result<(), MetadataError> {
    write_meta_properties(data_dir, cluster_id)
}

fn read_legacy_catalog(path: &Path) -> Result<CatalogData, MetadataError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
        path: path.to_path_buf(),
        position: e.column() as u64,
        reason: format!("not a valid catalog: {e}"),
    })
}

fn meta_properties_path(data_dir: &Path) -> PathBuf {
    data_dir.join(META_PROPERTIES)
}

/// The cluster id from `meta.properties`, or None when there is no such file.
fn read_meta_properties(data_dir: &Path) -> Result<Option<String>, MetadataError> {
    read_meta_properties_at(&meta_properties_path(data_dir))
}

/// The cluster id of the `meta.properties` file at `path`, or None when there is none.
fn read_meta_properties_at(path: &Path) -> Result<Option<String>, MetadataError> {
    let path = path.to_path_buf();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let id = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "cluster.id")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    match id {
        Some(id) => Ok(Some(id)),
        None => Err(MetadataError::Corrupt {
            path,
            position: 0,
            reason: "no cluster.id".to_string(),
        }),
    }
}

/// Writes `meta.properties` atomically (temporary file, fsync, rename, directory fsync).
fn write_meta_properties(data_dir: &Path, cluster_id: &str) -> Result<(), MetadataError> {
    let path = meta_properties_path(data_dir);
    let tmp = data_dir.join(format!("{META_PROPERTIES}.tmp"));
    let text = format!(
        "# Written once by Spate; the cluster id never changes.\nversion=1\ncluster.id={cluster_id}\n"
    );
    fs::write(&tmp, text)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::TopicMeta;
    use std::collections::BTreeMap;

    /// Writes `catalog.json` exactly as the old `catalog::store` did.
    fn write_old_catalog(dir: &Path, data: &CatalogData) {
        fs::write(
            dir.join(LEGACY_CATALOG),
            serde_json::to_vec_pretty(data).unwrap(),
        )
        .unwrap();
    }

    fn old_catalog() -> CatalogData {
        CatalogData {
            cluster_id: "c0ffee".into(),
            topics: vec![
                TopicMeta::stored(
                    "a".into(),
                    Uuid::new_v4(),
                    3,
                    BTreeMap::from([
                        ("retention.ms".to_string(), "1000".to_string()),
                        (
                            "message.timestamp.type".to_string(),
                            "LogAppendTime".to_string(),
                        ),
                    ]),
                ),
                TopicMeta::stored("b".into(), Uuid::new_v4(), 1, BTreeMap::new()),
            ],
        }
    }

    #[test]
    fn a_first_start_gets_a_cluster_id_that_stays() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!exists(dir.path()));
        let first = load(dir.path(), 1, 100).unwrap();
        assert!(first.catalog.topics.is_empty());
        assert_eq!(first.migrated_topics, None);
        drop(first.store);
        assert!(exists(dir.path()));
        let again = load(dir.path(), 1, 100).unwrap();
        assert_eq!(again.catalog.cluster_id, first.catalog.cluster_id);
    }

    #[test]
    fn catalog_json_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = old_catalog();
        write_old_catalog(dir.path(), &old);
        let loaded = load(dir.path(), 1, 100).unwrap();
        assert_eq!(loaded.migrated_topics, Some(2));
        assert_eq!(loaded.catalog.cluster_id, old.cluster_id);
        assert_eq!(without_assignment(&loaded.catalog.topics), old.topics);
        drop(loaded);
        assert!(!dir.path().join(LEGACY_CATALOG).exists());
        assert!(dir.path().join(LEGACY_CATALOG_MIGRATED).exists());

        let again = load(dir.path(), 1, 100).unwrap();
        assert_eq!(again.migrated_topics, None);
        assert_eq!(again.catalog.cluster_id, old.cluster_id);
        assert_eq!(without_assignment(&again.catalog.topics), old.topics);
    }

    fn without_assignment(topics: &[TopicMeta]) -> Vec<TopicMeta> {
        topics
            .iter()
            .map(|t| TopicMeta {
                assignment: Default::default(),
                ..t.clone()
            })
            .collect()
    }

    #[test]
    fn an_interrupted_migration_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let old = old_catalog();
        // A first attempt got as far as a metadata log holding something else.
        let mut partial = MetadataStore::open(&dir.path().join(METADATA_DIR), 100).unwrap();
        partial
            .append(&create_topic_records(&old.topics[1], 1))
            .unwrap();
        drop(partial);
        write_old_catalog(dir.path(), &old);
        let loaded = load(dir.path(), 1, 100).unwrap();
        assert_eq!(without_assignment(&loaded.catalog.topics), old.topics);
        assert_eq!(loaded.store.next_offset(), 1 + 3 + 2 + 1 + 1);
    }

    #[test]
    fn a_lost_meta_properties_is_an_error_not_a_new_cluster() {
        let dir = tempfile::tempdir().unwrap();
        drop(load(dir.path(), 1, 100).unwrap());
        fs::remove_file(dir.path().join(META_PROPERTIES)).unwrap();
        assert!(matches!(
            load(dir.path(), 1, 100).err().unwrap(),
            MetadataError::Corrupt { .. }
        ));
    }
}
