//! The typed records of `__consumer_offsets`, in Kafka's own key and value layouts, so the
//! log reads as Kafka's does (and a Kafka tool that dumps `__consumer_offsets` can read ours).
//!
//! Every record has a key and a value, each starting with its schema version (i16). The key's
//! version says what the record is:
//!
//! - versions 0 and 1, **OffsetCommitKey** `(group, topic, partition)`, value
//!   **OffsetCommitValue**: version 1 (`offset, metadata, commit timestamp, expire timestamp`)
//!   when the commit carried an explicit retention (OffsetCommit v1 to v4), else version 3
//!   (`offset, leader epoch, metadata, commit timestamp`), as Kafka writes them;
//! - versions 3 and 5 to 8, a consumer-protocol group's records ([`super::consumer_records`]);
//! - version 2, **GroupMetadataKey** `(group)`, value **GroupMetadataValue** version 3
//!   (`protocol type, generation, protocol, leader, current state timestamp, members`).
//!
//! A null value is a tombstone: the offset, or the group, is deleted. Strings are an i16
//! length and UTF-8 (-1 for null where the schema allows it), bytes an i32 length, arrays an
//! i32 count, all big-endian (the schemas' non-flexible versions). The vendored
//! `kafka-protocol` crate does not generate these internal schemas, so they are encoded here.
//!
//! [`GroupRecord`] is a closed enum: the exactly-once issue (transaction markers,
//! TxnOffsetCommit) and the KIP-848 issue (consumer group member and target-assignment
//! records) add variants, and every `match` on it then says what it does with them.

use std::io;

use bytes::Bytes;

use super::offsets::CommittedOffset;

/// Key versions: what kind of record a key is (Kafka's coordinator record types).
const KEY_OFFSET_COMMIT_V0: i16 = 0;
const KEY_OFFSET_COMMIT: i16 = 1;
const KEY_GROUP_METADATA: i16 = 2;
use super::consumer_records::{
    KEY_CURRENT_ASSIGNMENT as KEY_CONSUMER_GROUP_CURRENT_ASSIGNMENT,
    KEY_MEMBER_METADATA as KEY_CONSUMER_GROUP_MEMBER_METADATA,
    KEY_METADATA as KEY_CONSUMER_GROUP_METADATA,
};
/// OffsetCommitValue with an explicit expire timestamp.
const VALUE_OFFSET_COMMIT_WITH_EXPIRY: i16 = 1;
/// OffsetCommitValue with a leader epoch.
const VALUE_OFFSET_COMMIT: i16 = 3;
const VALUE_GROUP_METADATA: i16 = 3;

/// A member of a group as GroupMetadataValue stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's state as of its last completed generation (or of when it became empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadata {
    /// Empty for a group that only ever committed offsets (a standalone consumer).
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state: for a group without members, when it became
    /// empty, which is where offsets retention starts counting.
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One record of `__consumer_offsets`. `None` values are tombstones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRecord {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    GroupMetadata {
        group: String,
        value: Option<GroupMetadata>,
    },
    /// A consumer-protocol group's records (key versions 3, 5 to 8).
    Consumer(super::consumer_records::ConsumerRecord),
}

impl GroupRecord {
    /// The group the record belongs to: it decides the partition.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::OffsetCommit { group, .. } | GroupRecord::GroupMetadata { group, .. } => {
                group
            }
            GroupRecord::Consumer(c) => c.group(),
        }
    }

    /// The record's key bytes.
    pub fn key(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            GroupRecord::Consumer(c) => return c.key(),
            GroupRecord::OffsetCommit {
                group,
                topic,
                partition,
                ..
            } => {
                out.extend_from_slice(&KEY_OFFSET_COMMIT.to_be_bytes());
                put_str(&mut out, group, "group id")?;
                put_str(&mut out, topic, "topic")?;
                out.extend_from_slice(&partition.to_be_bytes());
            }
            GroupRecord::GroupMetadata { group, .. } => {
                out.extend_from_slice(&KEY_GROUP_METADATA.to_be_bytes());
                put_str(&mut out, group, "group id")?;
            }
        }
        Ok(out)
    }

    /// The record's value bytes; None for a tombstone.
    pub fn value(&self) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        match self {
            GroupRecord::Consumer(c) => return c.value(),
            GroupRecord::OffsetCommit { value: None, .. }
            | GroupRecord::GroupMetadata { value: None, .. } => return Ok(None),
            GroupRecord::OffsetCommit { value: Some(v), .. } => {
                // Kafka's metadata string is not nullable: no metadata is stored as "".
                let metadata = v.metadata.as_deref().unwrap_or("");
                match v.expire_timestamp_ms {
                    Some(expire) => {
                        out.extend_from_slice(&VALUE_OFFSET_COMMIT_WITH_EXPIRY.to_be_bytes());
                        out.extend_from_slice(&v.offset.to_be_bytes());
                        put_str(&mut out, metadata, "offset metadata")?;
                        out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
                        out.extend_from_slice(&expire.to_be_bytes());
                    }
                    None => {
                        out.extend_from_slice(&VALUE_OFFSET_COMMIT.to_be_bytes());
                        out.extend_from_slice(&v.offset.to_be_bytes());
                        out.extend_from_slice(&v.leader_epoch.to_be_bytes());
                        put_str(&mut out, metadata, "offset metadata")?;
                        out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
                    }
                }
            }
            GroupRecord::GroupMetadata { value: Some(g), .. } => {
                out.extend_from_slice(&VALUE_GROUP_METADATA.to_be_bytes());
                put_str(&mut out, &g.protocol_type, "protocol type")?;
                out.extend_from_slice(&g.generation.to_be_bytes());
                put_opt_str(&mut out, g.protocol.as_deref(), "protocol")?;
                put_opt_str(&mut out, g.leader.as_deref(), "leader")?;
                out.extend_from_slice(&g.current_state_timestamp_ms.to_be_bytes());
                let n = i32::try_from(g.members.len())
                    .map_err(|_| invalid("too many members".into()))?;
                out.extend_from_slice(&n.to_be_bytes());
                for m in &g.members {
                    put_str(&mut out, &m.member_id, "member id")?;
                    put_opt_str(
                        &mut out,
                        m.group_instance_id.as_deref(),
                        "group instance id",
                    )?;
                    put_str(&mut out, &m.client_id, "client id")?;
                    put_str(&mut out, &m.client_host, "client host")?;
                    out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
                    out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
                    put_bytes(&mut out, &m.subscription)?;
                    put_bytes(&mut out, &m.assignment)?;
                }
            }
        }
        Ok(Some(out))
    }

    /// Decodes a record from its key and value. A key or value that cannot be read (an
    /// unknown version, say) is an error, never skipped: skipping it would silently lose a
    /// commit.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> io::Result<GroupRecord> {
        let mut k = Reader(key);
        let version = k.i16()?;
        match version {
            KEY_OFFSET_COMMIT_V0 | KEY_OFFSET_COMMIT => {
                let group = k.str()?;
                let topic = k.str()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset_value).transpose()?;
                Ok(GroupRecord::OffsetCommit {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            KEY_GROUP_METADATA => {
                let group = k.str()?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(GroupRecord::GroupMetadata { group, value })
            }
            KEY_CONSUMER_GROUP_METADATA
            | KEY_CONSUMER_GROUP_MEMBER_METADATA..=KEY_CONSUMER_GROUP_CURRENT_ASSIGNMENT => {
                super::consumer_records::ConsumerRecord::decode(version, k.0, value)
                    .map(GroupRecord::Consumer)
            }
            v => Err(invalid(format!(
                "unknown __consumer_offsets key version {v}"
            ))),
        }
    }
}

fn decode_offset_value(b: &[u8]) -> io::Result<CommittedOffset> {
    let mut r = Reader(b);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(invalid(format!(
            "unknown OffsetCommitValue version {version}"
        )));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp_ms = r.i64()?;
    let expire_timestamp_ms = if version == 1 { Some(r.i64()?) } else { None };
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata: Some(metadata),
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

fn decode_group_value(b: &[u8]) -> io::Result<GroupMetadata> {
    let mut r = Reader(b);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(invalid(format!(
            "unknown GroupMetadataValue version {version}"
        )));
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.opt_str()?;
    let leader = r.opt_str()?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let n = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..n.max(0) {
        let member_id = r.str()?;
        let group_instance_id = if version >= 3 { r.opt_str()? } else { None };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupMetadata {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &str) -> io::Result<()> {
    let len = i16::try_from(s.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is {} bytes, over 32767", s.len()),
        )
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>, what: &str) -> io::Result<()> {
    match s {
        Some(s) => put_str(out, s, what),
        None => {
            out.extend_from_slice(&(-1i16).to_be_bytes());
            Ok(())
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> io::Result<()> {
    let len = i32::try_from(b.len()).map_err(|_| invalid("bytes over 2 GiB".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// A cursor over a key or value; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(invalid(format!(
                "record field of {n} bytes but {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> io::Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> io::Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> io::Result<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(a))
    }

    fn opt_str(&mut self) -> io::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| invalid("a string is not UTF-8".into()))
    }

    fn str(&mut self) -> io::Result<String> {
        self.opt_str()?
            .ok_or_else(|| invalid("null where a string is required".into()))
    }

    fn bytes(&mut self) -> io::Result<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rec: GroupRecord, key_hex: &str) {
        let key = rec.key().unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, key_hex, "{rec:?}");
        let value = rec.value().unwrap();
        assert_eq!(GroupRecord::decode(&key, value.as_deref()).unwrap(), rec);
    }

    fn off(expire: Option<i64>) -> CommittedOffset {
        CommittedOffset {
            offset: 42,
            leader_epoch: if expire.is_some() { -1 } else { 7 },
            metadata: Some("m".into()),
            commit_timestamp_ms: 1_000,
            expire_timestamp_ms: expire,
        }
    }

    #[test]
    fn records_use_kafkas_layout_and_round_trip() {
        // OffsetCommitKey v1: version, group "g", topic "t", partition 3.
        let commit = |value| GroupRecord::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value,
        };
        check(commit(Some(off(None))), "000100016700017400000003");
        check(commit(Some(off(Some(9_000)))), "000100016700017400000003");
        check(commit(None), "000100016700017400000003");
        let meta = GroupMetadata {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 77,
            members: vec![MemberMetadata {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        check(
            GroupRecord::GroupMetadata {
                group: "g".into(),
                value: Some(meta.clone()),
            },
            "0002000167",
        );
        check(
            GroupRecord::GroupMetadata {
                group: "g".into(),
                value: None,
            },
            "0002000167",
        );
        // OffsetCommitValue v3 byte for byte: version, offset, leader epoch, metadata, time.
        let v = commit(Some(off(None))).value().unwrap().unwrap();
        assert_eq!(
            v,
            [
                &[0, 3][..],
                &42i64.to_be_bytes(),
                &7i32.to_be_bytes(),
                &[0, 1, b'm'],
                &1000i64.to_be_bytes()
            ]
            .concat()
        );
        // No metadata is stored as Kafka stores it, as an empty string.
        let mut none = off(None);
        none.metadata = None;
        let v = commit(Some(none)).value().unwrap().unwrap();
        let back = GroupRecord::decode(&commit(None).key().unwrap(), Some(&v)).unwrap();
        assert!(
            matches!(back, GroupRecord::OffsetCommit { value: Some(c), .. } if c.metadata.as_deref() == Some(""))
        );
    }

    #[test]
    fn unknown_versions_and_short_fields_are_errors() {
        assert!(GroupRecord::decode(&[0, 9, 0, 0], None).is_err());
        assert!(GroupRecord::decode(&[0, 1, 0, 5, b'a'], None).is_err());
        let key = GroupRecord::GroupMetadata {
            group: "g".into(),
            value: None,
        }
        .key()
        .unwrap();
        assert!(GroupRecord::decode(&key, Some(&[0, 4])).is_err());
        let long = "x".repeat(40_000);
        assert!(
            GroupRecord::GroupMetadata {
                group: long,
                value: None
            }
            .key()
            .is_err()
        );
    }
}
