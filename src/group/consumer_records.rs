//! The records of a consumer-protocol group in `__consumer_offsets`, in Kafka's layouts
//! (`group-coordinator/src/main/resources/common/message/ConsumerGroup*.json`):
//!
//! | key version | key | value (version 0) |
//! |---|---|---|
//! | 3 | ConsumerGroupMetadataKey `(group)` | `epoch` |
//! | 5 | ConsumerGroupMemberMetadataKey `(group, member)` | instance, rack, client id and host, subscribed names and regex, rebalance timeout, server assignor |
//! | 6 | ConsumerGroupTargetAssignmentMetadataKey `(group)` | `assignment epoch` |
//! | 7 | ConsumerGroupTargetAssignmentMemberKey `(group, member)` | `[topic id, [partition]]` |
//! | 8 | ConsumerGroupCurrentMemberAssignmentKey `(group, member)` | member epoch, previous epoch, state, assigned, pending revocation |
//!
//! Keys are the classic encoding (i16-length strings); values are flexible versions: compact
//! strings and arrays (unsigned varint length + 1, 0 for null) and a tagged-field section
//! after each struct, which we write empty and skip when reading. A null value is a
//! tombstone.

use std::io;

use uuid::Uuid;

use super::consumer::Assignment;

pub(super) const KEY_METADATA: i16 = 3;
pub(super) const KEY_MEMBER_METADATA: i16 = 5;
pub(super) const KEY_TARGET_METADATA: i16 = 6;
pub(super) const KEY_TARGET_MEMBER: i16 = 7;
pub(super) const KEY_CURRENT_ASSIGNMENT: i16 = 8;
const VALUE_VERSION: i16 = 0;

/// A member's subscription and identity (ConsumerGroupMemberMetadataValue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// A member's reconciliation state (ConsumerGroupCurrentMemberAssignmentValue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: i8,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// One consumer-group record; None values are tombstones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerRecord {
    Metadata {
        group: String,
        epoch: Option<i32>,
    },
    MemberMetadata {
        group: String,
        member: String,
        value: Option<MemberMetadataValue>,
    },
    TargetMetadata {
        group: String,
        assignment_epoch: Option<i32>,
    },
    TargetMember {
        group: String,
        member: String,
        value: Option<Assignment>,
    },
    CurrentAssignment {
        group: String,
        member: String,
        value: Option<CurrentAssignmentValue>,
    },
}

impl ConsumerRecord {
    pub fn group(&self) -> &str {
        match self {
            ConsumerRecord::Metadata { group, .. }
            | ConsumerRecord::MemberMetadata { group, .. }
            | ConsumerRecord::TargetMetadata { group, .. }
            | ConsumerRecord::TargetMember { group, .. }
            | ConsumerRecord::CurrentAssignment { group, .. } => group,
        }
    }

    pub fn member(&self) -> Option<&str> {
        match self {
            ConsumerRecord::MemberMetadata { member, .. }
            | ConsumerRecord::TargetMember { member, .. }
            | ConsumerRecord::CurrentAssignment { member, .. } => Some(member),
            ConsumerRecord::Metadata { .. } | ConsumerRecord::TargetMetadata { .. } => None,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        match self {
            ConsumerRecord::Metadata { epoch, .. } => epoch.is_none(),
            ConsumerRecord::MemberMetadata { value, .. } => value.is_none(),
            ConsumerRecord::TargetMetadata {
                assignment_epoch, ..
            } => assignment_epoch.is_none(),
            ConsumerRecord::TargetMember { value, .. } => value.is_none(),
            ConsumerRecord::CurrentAssignment { value, .. } => value.is_none(),
        }
    }

    fn key_version(&self) -> i16 {
        match self {
            ConsumerRecord::Metadata { .. } => KEY_METADATA,
            ConsumerRecord::MemberMetadata { .. } => KEY_MEMBER_METADATA,
            ConsumerRecord::TargetMetadata { .. } => KEY_TARGET_METADATA,
            ConsumerRecord::TargetMember { .. } => KEY_TARGET_MEMBER,
            ConsumerRecord::CurrentAssignment { .. } => KEY_CURRENT_ASSIGNMENT,
        }
    }

    pub fn key(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.key_version().to_be_bytes());
        put_key_str(&mut out, self.group())?;
        if let Some(m) = self.member() {
            put_key_str(&mut out, m)?;
        }
        Ok(out)
    }

    pub fn value(&self) -> io::Result<Option<Vec<u8>>> {
        if self.is_tombstone() {
            return Ok(None);
        }
        let mut out = VALUE_VERSION.to_be_bytes().to_vec();
        match self {
            ConsumerRecord::Metadata { epoch: Some(e), .. }
            | ConsumerRecord::TargetMetadata {
                assignment_epoch: Some(e),
                ..
            } => out.extend_from_slice(&e.to_be_bytes()),
            ConsumerRecord::MemberMetadata { value: Some(v), .. } => {
                put_opt(&mut out, v.instance_id.as_deref());
                put_opt(&mut out, v.rack_id.as_deref());
                put_opt(&mut out, Some(&v.client_id));
                put_opt(&mut out, Some(&v.client_host));
                put_len(&mut out, Some(v.subscribed_topic_names.len()));
                for t in &v.subscribed_topic_names {
                    put_opt(&mut out, Some(t));
                }
                put_opt(&mut out, v.subscribed_topic_regex.as_deref());
                out.extend_from_slice(&v.rebalance_timeout_ms.to_be_bytes());
                put_opt(&mut out, v.server_assignor.as_deref());
            }
            ConsumerRecord::TargetMember { value: Some(a), .. } => put_assignment(&mut out, a),
            ConsumerRecord::CurrentAssignment { value: Some(v), .. } => {
                out.extend_from_slice(&v.member_epoch.to_be_bytes());
                out.extend_from_slice(&v.previous_member_epoch.to_be_bytes());
                out.extend_from_slice(&v.state.to_be_bytes());
                put_assignment(&mut out, &v.assigned);
                put_assignment(&mut out, &v.pending_revocation);
            }
            _ => return Ok(None),
        }
        // The value struct's (empty) tagged fields.
        out.push(0);
        Ok(Some(out))
    }

    /// Decodes a record whose key version is one of this module's (`key` is past the
    /// version).
    pub fn decode(version: i16, key: &[u8], value: Option<&[u8]>) -> io::Result<ConsumerRecord> {
        let mut k = Flex(key);
        let group = k.key_str()?;
        let mut v = value.map(Flex);
        if let Some(v) = v.as_mut() {
            let vv = v.i16()?;
            if vv != VALUE_VERSION {
                return Err(invalid(format!(
                    "unknown value version {vv} of __consumer_offsets key version {version}"
                )));
            }
        }
        let rec = match version {
            KEY_METADATA => ConsumerRecord::Metadata {
                group,
                epoch: v.as_mut().map(Flex::i32).transpose()?,
            },
            KEY_TARGET_METADATA => ConsumerRecord::TargetMetadata {
                group,
                assignment_epoch: v.as_mut().map(Flex::i32).transpose()?,
            },
            KEY_MEMBER_METADATA => {
                let member = k.key_str()?;
                let value = match v.as_mut() {
                    None => None,
                    Some(r) => Some(MemberMetadataValue {
                        instance_id: r.opt_str()?,
                        rack_id: r.opt_str()?,
                        client_id: r.str()?,
                        client_host: r.str()?,
                        subscribed_topic_names: {
                            let n = r.len()?.unwrap_or(0);
                            let mut names = Vec::new();
                            for _ in 0..n {
                                names.push(r.str()?);
                            }
                            names
                        },
                        subscribed_topic_regex: r.opt_str()?,
                        rebalance_timeout_ms: r.i32()?,
                        server_assignor: r.opt_str()?,
                    }),
                };
                ConsumerRecord::MemberMetadata {
                    group,
                    member,
                    value,
                }
            }
            KEY_TARGET_MEMBER => {
                let member = k.key_str()?;
                ConsumerRecord::TargetMember {
                    group,
                    member,
                    value: v.as_mut().map(Flex::assignment).transpose()?,
                }
            }
            KEY_CURRENT_ASSIGNMENT => {
                let member = k.key_str()?;
                let value = match v.as_mut() {
                    None => None,
                    Some(r) => Some(CurrentAssignmentValue {
                        member_epoch: r.i32()?,
                        previous_member_epoch: r.i32()?,
                        state: r.take(1)?[0] as i8,
                        assigned: r.assignment()?,
                        pending_revocation: r.assignment()?,
                    }),
                };
                ConsumerRecord::CurrentAssignment {
                    group,
                    member,
                    value,
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown __consumer_offsets key version {other}"
                )));
            }
        };
        if let Some(v) = v.as_mut() {
            v.tagged_fields()?;
        }
        Ok(rec)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn put_key_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    let len = i16::try_from(s.len())
        .map_err(|_| invalid(format!("a key string of {} bytes", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A compact length: n + 1, or 0 for null.
fn put_len(out: &mut Vec<u8>, n: Option<usize>) {
    put_uvarint(out, n.map_or(0, |n| n as u64 + 1));
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    put_len(out, s.map(str::len));
    if let Some(s) = s {
        out.extend_from_slice(s.as_bytes());
    }
}

fn put_assignment(out: &mut Vec<u8>, a: &Assignment) {
    put_len(out, Some(a.len()));
    for (topic, partitions) in a {
        out.extend_from_slice(topic.as_bytes());
        put_len(out, Some(partitions.len()));
        for p in partitions {
            out.extend_from_slice(&p.to_be_bytes());
        }
        out.push(0);
    }
}

/// A cursor over a flexible value; every read checks the length.
struct Flex<'a>(&'a [u8]);

impl Flex<'_> {
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

    fn uvarint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid("a varint longer than 10 bytes".into()))
    }

    /// A compact length; None for null. Bounded by the bytes left (each item takes one).
    fn len(&mut self) -> io::Result<Option<usize>> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let n = usize::try_from(n - 1).map_err(|_| invalid("a length over usize".into()))?;
        if n > self.0.len() {
            return Err(invalid(format!(
                "a length of {n} but {} bytes left",
                self.0.len()
            )));
        }
        Ok(Some(n))
    }

    fn opt_str(&mut self) -> io::Result<Option<String>> {
        let Some(n) = self.len()? else {
            return Ok(None);
        };
        String::from_utf8(self.take(n)?.to_vec())
            .map(Some)
            .map_err(|_| invalid("a string is not UTF-8".into()))
    }

    fn str(&mut self) -> io::Result<String> {
        self.opt_str()?
            .ok_or_else(|| invalid("null where a string is required".into()))
    }

    fn key_str(&mut self) -> io::Result<String> {
        let len = self.i16()?;
        let n = usize::try_from(len).map_err(|_| invalid("a null key string".into()))?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| invalid("a key is not UTF-8".into()))
    }

    fn assignment(&mut self) -> io::Result<Assignment> {
        let n = self.len()?.unwrap_or(0);
        let mut out = Assignment::new();
        for _ in 0..n {
            let mut id = [0u8; 16];
            id.copy_from_slice(self.take(16)?);
            let parts = out.entry(Uuid::from_bytes(id)).or_default();
            for _ in 0..self.len()?.unwrap_or(0) {
                parts.insert(self.i32()?);
            }
            self.tagged_fields()?;
        }
        Ok(out)
    }

    fn tagged_fields(&mut self) -> io::Result<()> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()?;
            let size =
                usize::try_from(size).map_err(|_| invalid("a tagged field over usize".into()))?;
            self.take(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn round_trip(rec: ConsumerRecord) {
        let key = rec.key().unwrap();
        let value = rec.value().unwrap();
        let version = i16::from_be_bytes([key[0], key[1]]);
        let back = ConsumerRecord::decode(version, &key[2..], value.as_deref()).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn consumer_records_round_trip_in_kafkas_layout() {
        let t = Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let a = Assignment::from([(t, BTreeSet::from([0, 3]))]);
        let meta = ConsumerRecord::Metadata {
            group: "g".into(),
            epoch: Some(7),
        };
        // Key version 3, "g"; value version 0, epoch 7, no tagged fields.
        assert_eq!(meta.key().unwrap(), [0, 3, 0, 1, b'g']);
        assert_eq!(meta.value().unwrap().unwrap(), [0, 0, 0, 0, 0, 7, 0]);
        let target = ConsumerRecord::TargetMember {
            group: "g".into(),
            member: "m".into(),
            value: Some(a.clone()),
        };
        let mut want = vec![0, 0, 2];
        want.extend_from_slice(t.as_bytes());
        want.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!(target.value().unwrap().unwrap(), want);
        assert_eq!(target.key().unwrap(), [0, 7, 0, 1, b'g', 0, 1, b'm']);
        for rec in [
            meta,
            target,
            ConsumerRecord::TargetMetadata {
                group: "g".into(),
                assignment_epoch: Some(7),
            },
            ConsumerRecord::MemberMetadata {
                group: "g".into(),
                member: "m".into(),
                value: Some(MemberMetadataValue {
                    instance_id: Some("i".into()),
                    rack_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    subscribed_topic_names: vec!["t".into(), "u".into()],
                    subscribed_topic_regex: Some("x.*".into()),
                    rebalance_timeout_ms: 300_000,
                    server_assignor: None,
                }),
            },
            ConsumerRecord::CurrentAssignment {
                group: "g".into(),
                member: "m".into(),
                value: Some(CurrentAssignmentValue {
                    member_epoch: 7,
                    previous_member_epoch: 6,
                    state: 1,
                    assigned: a.clone(),
                    pending_revocation: Assignment::from([(t, BTreeSet::from([5]))]),
                }),
            },
            ConsumerRecord::CurrentAssignment {
                group: "g".into(),
                member: "m".into(),
                value: None,
            },
        ] {
            round_trip(rec);
        }
        // A truncated value or an unknown value version is an error, never skipped.
        assert!(ConsumerRecord::decode(3, &[0, 1, b'g'], Some(&[0, 0, 0, 0])).is_err());
        assert!(ConsumerRecord::decode(3, &[0, 1, b'g'], Some(&[0, 1, 0, 0, 0, 7, 0])).is_err());
    }
}
