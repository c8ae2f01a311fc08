//! The Fetch response, encoded by hand so that a partition's records can be a range of a
//! segment file instead of bytes in memory.
//!
//! [`encode`] returns the response as [`Chunk`]s in wire order: encoded framing in memory,
//! and for each partition with data a [`FileSlice`] that the connection writes from the file
//! (copying it today; by sendfile once the zero-copy path lands). The encoding follows the
//! Fetch schema for v4..=v16; tests check it against the `kafka-protocol` decoder for every
//! version.

use std::fs::File;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// A byte range of a segment file. The file handle is read-only and the range lies below
/// the log end captured when the slice was made, so the bytes never change under a reader.
#[derive(Clone, Debug)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub pos: u64,
    pub len: usize,
}

/// A partition's records in a response.
#[derive(Clone, Debug)]
pub enum Records {
    /// No data (errors, or nothing at the offset): encoded as an empty record set.
    Empty,
    Mem(Bytes),
    File(FileSlice),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Empty => 0,
            Records::Mem(b) => b.len(),
            Records::File(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One piece of an encoded response, in wire order.
#[derive(Clone, Debug)]
pub enum Chunk {
    Mem(Bytes),
    File(FileSlice),
}

#[derive(Clone, Debug)]
pub struct PartitionOut {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// (producer id, first offset) of the aborted transactions in the returned range, for
    /// read_committed fetches; None (null) for read_uncommitted.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    pub records: Records,
    /// (leader id, leader epoch) for a partition this broker does not lead (KIP-951): sent
    /// as the CurrentLeader tagged field in v12+.
    pub current_leader: Option<(i32, i32)>,
    /// (epoch, end offset) where a follower's log diverges from the leader's (KIP-320, v12+:
    /// the DivergingEpoch tagged field): the follower truncates there before fetching again.
    pub diverging_epoch: Option<(i32, i64)>,
}

/// A broker's endpoint for the v16+ NodeEndpoints tagged field (the leaders named above).
#[derive(Clone, Debug)]
pub struct NodeEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TopicOut {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionOut>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Encodes a whole Fetch response (size prefix included) for `version` (4..=16).
pub fn encode(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    topics: Vec<TopicOut>,
    node_endpoints: &[NodeEndpoint],
) -> Vec<Chunk> {
    let flexible = version >= 12;
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, patched below
    buf.put_i32(correlation_id);
    if flexible {
        put_uvarint(&mut buf, 0); // response header tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(error_code);
        buf.put_i32(0); // session_id: sessions are not kept, every fetch is a full fetch
    }
    put_array_len(&mut buf, flexible, topics.len());
    let mut total = 0usize;
    for topic in topics {
        if version >= 13 {
            buf.put_slice(topic.topic_id.as_bytes());
        } else if flexible {
            put_uvarint(&mut buf, topic.name.len() as u64 + 1);
            buf.put_slice(topic.name.as_bytes());
        } else {
            buf.put_i16(topic.name.len() as i16);
            buf.put_slice(topic.name.as_bytes());
        }
        put_array_len(&mut buf, flexible, topic.partitions.len());
        for p in topic.partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None if flexible => put_uvarint(&mut buf, 0),
                None => buf.put_i32(-1),
                Some(list) => {
                    put_array_len(&mut buf, flexible, list.len());
                    for (producer_id, first_offset) in list {
                        buf.put_i64(*producer_id);
                        buf.put_i64(*first_offset);
                        if flexible {
                            put_uvarint(&mut buf, 0); // tagged fields
                        }
                    }
                }
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            let len = p.records.len();
            if flexible {
                put_uvarint(&mut buf, len as u64 + 1);
            } else {
                buf.put_i32(len as i32);
            }
            match p.records {
                Records::Empty => {}
                Records::Mem(b) => buf.put_slice(&b),
                Records::File(slice) => {
                    total += buf.len();
                    chunks.push(Chunk::Mem(buf.split().freeze()));
                    total += slice.len;
                    chunks.push(Chunk::File(slice));
                }
            }
            if flexible {
                // Partition tagged fields, in tag order: DivergingEpoch (tag 0) for a follower
                // whose log left the leader's, CurrentLeader (tag 1) when the leader is
                // elsewhere.
                let tags = usize::from(p.diverging_epoch.is_some())
                    + usize::from(p.current_leader.is_some());
                put_uvarint(&mut buf, tags as u64);
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    put_uvarint(&mut buf, 0); // tag
                    put_uvarint(&mut buf, 13); // size: int32, int64 and no tagged fields
                    buf.put_i32(epoch);
                    buf.put_i64(end_offset);
                    put_uvarint(&mut buf, 0);
                }
                if let Some((leader, epoch)) = p.current_leader {
                    put_uvarint(&mut buf, 1); // tag
                    put_uvarint(&mut buf, 9); // size: two int32 and no tagged fields
                    buf.put_i32(leader);
                    buf.put_i32(epoch);
                    put_uvarint(&mut buf, 0);
                }
            }
        }
        if flexible {
            put_uvarint(&mut buf, 0); // topic tagged fields
        }
    }
    if flexible {
        // Response tagged fields: NodeEndpoints (tag 0, v16+) for the leaders named above.
        if version >= 16 && !node_endpoints.is_empty() {
            let mut field = BytesMut::new();
            put_array_len(&mut field, true, node_endpoints.len());
            for n in node_endpoints {
                field.put_i32(n.node_id);
                put_uvarint(&mut field, n.host.len() as u64 + 1);
                field.put_slice(n.host.as_bytes());
                field.put_i32(n.port);
                match &n.rack {
                    Some(r) => {
                        put_uvarint(&mut field, r.len() as u64 + 1);
                        field.put_slice(r.as_bytes());
                    }
                    None => put_uvarint(&mut field, 0),
                }
                put_uvarint(&mut field, 0);
            }
            put_uvarint(&mut buf, 1);
            put_uvarint(&mut buf, 0); // tag
            put_uvarint(&mut buf, field.len() as u64);
            buf.put_slice(&field);
        } else {
            put_uvarint(&mut buf, 0);
        }
    }
    total += buf.len();
    chunks.push(Chunk::Mem(buf.freeze()));
    // Patch the size prefix in the first chunk.
    let size = (total - 4) as i32;
    if let Some(Chunk::Mem(first)) = chunks.first_mut() {
        let mut patched = BytesMut::from(&first[..]);
        patched[0..4].copy_from_slice(&size.to_be_bytes());
        *first = patched.freeze();
    }
    chunks
}

/// The bytes a Fetch response puts on the wire (size prefix included), for the consumer
/// byte-rate quota.
pub fn response_len(chunks: &[Chunk]) -> usize {
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Mem(b) => b.len(),
            Chunk::File(s) => s.len,
        })
        .sum()
}

/// Writes `throttle_ms` into an encoded Fetch response of `version` (as [`encode`] lays it
/// out: size, correlation id, header tags in v12+, then throttle_time_ms). The first chunk is
/// changed in place when nothing else holds it, else copied (only throttled responses pay).
pub fn set_throttle_time_ms(chunks: &mut [Chunk], version: i16, throttle_ms: i32) {
    let at = if version >= 12 { 9 } else { 8 };
    let Some(Chunk::Mem(first)) = chunks.first_mut() else {
        debug_assert!(false, "a Fetch response starts with its header in memory");
        return;
    };
    if first.len() < at + 4 {
        debug_assert!(false, "a Fetch response header of {} bytes", first.len());
        return;
    }
    let mut head = std::mem::take(first)
        .try_into_mut()
        .unwrap_or_else(|b| BytesMut::from(&b[..]));
    head[at..at + 4].copy_from_slice(&throttle_ms.to_be_bytes());
    *first = head.freeze();
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn matches_the_crate_decoder_for_every_version() {
        let id = Uuid::new_v4();
        for version in 4..=16i16 {
            let topics = vec![TopicOut {
                name: "orders".into(),
                topic_id: id,
                partitions: vec![
                    PartitionOut {
                        partition: 3,
                        error_code: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 2,
                        aborted_transactions: Some(vec![(7, 3), (9, 5)]),
                        records: Records::Mem(Bytes::from_static(b"recordbytes")),
                        current_leader: None,
                        diverging_epoch: None,
                    },
                    PartitionOut {
                        partition: 4,
                        error_code: 1,
                        high_watermark: 0,
                        last_stable_offset: 0,
                        log_start_offset: 0,
                        aborted_transactions: None,
                        records: Records::Empty,
                        current_leader: Some((7, 3)),
                        diverging_epoch: Some((4, 1234)),
                    },
                ],
            }];
            let endpoints = [NodeEndpoint {
                node_id: 7,
                host: "broker7".into(),
                port: 9092,
                rack: Some("r1".into()),
            }];
            let mut chunks = encode(version, 99, 0, topics, &endpoints);
            let len = response_len(&chunks);
            set_throttle_time_ms(&mut chunks, version, 1234);
            assert_eq!(response_len(&chunks), len);
            let mut wire = BytesMut::new();
            for c in chunks {
                match c {
                    Chunk::Mem(b) => wire.put_slice(&b),
                    Chunk::File(_) => unreachable!(),
                }
            }
            let size = i32::from_be_bytes(wire[0..4].try_into().unwrap()) as usize;
            assert_eq!(size, wire.len() - 4, "v{version}");
            let mut body = wire.freeze().slice(4..);
            let header =
                ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, 99);
            let resp = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: {} bytes left", body.len());
            assert_eq!(resp.throttle_time_ms, 1234, "v{version}");
            let t = &resp.responses[0];
            if version >= 13 {
                assert_eq!(t.topic_id, id);
            } else {
                assert_eq!(t.topic.as_str(), "orders");
            }
            assert_eq!(t.partitions[0].partition_index, 3);
            assert_eq!(t.partitions[0].high_watermark, 10);
            assert_eq!(
                t.partitions[0].records.as_deref(),
                Some(&b"recordbytes"[..])
            );
            if version >= 5 {
                assert_eq!(t.partitions[0].log_start_offset, 2);
            }
            let aborted: Vec<(i64, i64)> = t.partitions[0]
                .aborted_transactions
                .as_ref()
                .unwrap()
                .iter()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, vec![(7, 3), (9, 5)], "v{version}");
            assert!(t.partitions[1].aborted_transactions.is_none(), "v{version}");
            assert_eq!(t.partitions[1].error_code, 1);
            if version >= 12 {
                let l = &t.partitions[1].current_leader;
                assert_eq!((l.leader_id.0, l.leader_epoch), (7, 3), "v{version}");
                assert_eq!(t.partitions[0].current_leader.leader_id.0, -1, "v{version}");
                let d = &t.partitions[1].diverging_epoch;
                assert_eq!((d.epoch, d.end_offset), (4, 1234), "v{version}");
                assert_eq!(t.partitions[0].diverging_epoch.epoch, -1, "v{version}");
            }
            if version >= 16 {
                let n = &resp.node_endpoints[0];
                assert_eq!(
                    (n.node_id.0, n.host.as_str(), n.port, n.rack.as_deref()),
                    (7, "broker7", 9092, Some("r1")),
                    "v{version}"
                );
            }
        }
    }
}
