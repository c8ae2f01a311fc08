//! Record batches through the `kafka-protocol` crate's codecs: decoding what a Fetch returns
//! (every codec a Kafka client may produce with: gzip, snappy, lz4, zstd), encoding batches to
//! produce, and Kafka's default partitioner (murmur2 of the key), so keyed messages land where
//! Java clients put them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

pub use kafka_protocol::records::{Compression, Record, TimestampType};

use crate::protocol::batch::{BatchHeader, HEADER_LEN, LOG_OVERHEAD};

/// A batch that could not be read (or written), with the offset it starts at.
#[derive(Debug, thiserror::Error)]
#[error("the record batch at offset {base_offset}: {why}")]
pub struct BatchError {
    pub base_offset: i64,
    pub why: String,
}

/// What a Fetch's records field holds at or after an offset.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Data records in offset order (control batches are left out).
    pub records: Vec<Record>,
    /// The offset after the last complete batch, when there was one, so a fetch that returned
    /// only control batches (or records before `from`) still moves the position forward.
    pub next_offset: Option<i64>,
}

/// The records of the complete batches in `data` (a Fetch's records field) at or after
/// `from`. A trailing partial batch is dropped, as clients do: a broker may cut the last batch
/// at the fetch's size limit.
///
/// The batch framing (length, last offset, LogAppendTime) is read here, because the crate's
/// decoder errors on a partial batch and does not report the last offset delta; the records,
/// the CRC and decompression are the crate's. Keys and values of uncompressed batches are
/// slices of `data`, not copies.
pub fn decode_fetched(data: &Bytes, from: i64) -> Result<Fetched, BatchError> {
    let mut out = Fetched::default();
    let mut rest = data.clone();
    while rest.len() >= LOG_OVERHEAD {
        let base_offset = i64::from_be_bytes(prefix(&rest, 0));
        let len = i32::from_be_bytes(prefix(&rest, 8));
        let bad = |why: String| BatchError { base_offset, why };
        let Ok(len) = usize::try_from(len) else {
            return Err(bad(format!("negative length {len}")));
        };
        let total = LOG_OVERHEAD + len;
        if total > rest.len() {
            break;
        }
        let mut batch = rest.split_to(total);
        let header = BatchHeader::parse(&batch).ok_or_else(|| {
            bad(format!(
                "{total} bytes, less than a batch header ({HEADER_LEN})"
            ))
        })?;
        if header.magic != 2 {
            return Err(bad(format!(
                "magic v{}: only v2 batches (Kafka 0.11 and later) are read",
                header.magic
            )));
        }
        out.next_offset = Some(header.last_offset().saturating_add(1));
        if header.attributes & ATTR_CONTROL != 0 {
            continue; // Transaction markers carry no data records.
        }
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| bad(format!("{e:#}")))?;
        // The crate stamps every record with the base timestamp plus its delta; for a
        // LogAppendTime batch the broker's time is the batch's max timestamp, as Kafka's
        // clients read it.
        let log_append_time = header.is_log_append_time().then_some(header.max_timestamp);
        out.records.extend(
            set.records
                .into_iter()
                .filter(|r| r.offset >= from)
                .map(|mut r| {
                    if let Some(ts) = log_append_time {
                        r.timestamp = ts;
                    }
                    r
                }),
        );
    }
    Ok(out)
}

/// Attribute bit of a control batch (transaction markers).
const ATTR_CONTROL: i16 = 0x20;

fn prefix<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// A record to produce: CreateTime `timestamp`, no producer id (not idempotent), `offset` its
/// place in the batch (0, 1, ...).
pub fn new_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: impl IntoIterator<Item = (String, Option<Bytes>)>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // The crate keeps records in one batch while offset - sequence stays the same, and
        // derives the base sequence from the first record: sequence = offset - 1 gives one
        // batch with base sequence -1, "none", as a producer without an id must send.
        sequence: (offset as i32).wrapping_sub(1),
        timestamp,
        key,
        value,
        headers: headers
            .into_iter()
            .map(|(k, v)| (StrBytes::from_string(k), v))
            .collect(),
    }
}

/// One magic-v2 batch of `records` (made by [`new_record`], offsets 0, 1, ...), compressed
/// with `compression`.
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes, BatchError> {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options).map_err(|e| BatchError {
        base_offset: 0,
        why: format!("encoding: {e:#}"),
    })?;
    Ok(buf.freeze())
}

/// Kafka's murmur2 (as `org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let m: u32 = 0x5bd1_e995;
    let r = 24;
    let len = data.len();
    let mut h: u32 = seed ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            new_record(
                0,
                1000,
                Some(Bytes::from_static(b"k")),
                Some(Bytes::from_static(b"hello")),
                [
                    ("h".to_string(), Some(Bytes::from_static(b"v"))),
                    ("n".to_string(), None),
                ],
            ),
            new_record(1, 1005, None, None, []),
        ]
    }

    /// `batch` as a broker stores it at `base`.
    fn at_offset(batch: &Bytes, base: i64) -> Bytes {
        let mut b = batch.to_vec();
        b[0..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let recs = sample();
            let b = at_offset(&encode_batch(&recs, codec).unwrap(), 40);
            let d = decode_fetched(&b, 0).unwrap();
            assert_eq!(d.next_offset, Some(42), "{codec:?}");
            let got = d.records;
            assert_eq!(got.len(), 2, "{codec:?}");
            assert_eq!((got[0].offset, got[1].offset), (40, 41), "{codec:?}");
            assert_eq!(got[0].key, recs[0].key, "{codec:?}");
            assert_eq!(got[0].value, recs[0].value, "{codec:?}");
            assert_eq!(got[0].headers, recs[0].headers, "{codec:?}");
            assert_eq!(
                (got[1].timestamp, &got[1].value),
                (1005, &None),
                "{codec:?}"
            );
            assert_eq!(
                decode_fetched(&b, 41).unwrap().records.len(),
                1,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn partial_tail_is_dropped_and_corruption_refused() {
        let b = at_offset(&encode_batch(&sample(), Compression::None).unwrap(), 7);
        let mut two = b.to_vec();
        two.extend_from_slice(&b[..b.len() - 1]);
        let d = decode_fetched(&Bytes::from(two), 0).unwrap();
        assert_eq!((d.records.len(), d.next_offset), (2, Some(9)));

        let cut = decode_fetched(&b.slice(..b.len() - 1), 0).unwrap();
        assert_eq!((cut.records.len(), cut.next_offset), (0, None));

        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let e = decode_fetched(&Bytes::from(bad), 0).unwrap_err();
        assert_eq!(e.base_offset, 7);
        assert!(e.to_string().contains("offset 7"), "{e}");
    }

    #[test]
    fn log_append_time_reads_the_batch_max_timestamp() {
        let mut b = encode_batch(&sample(), Compression::None).unwrap().to_vec();
        // As a LogAppendTime topic's broker rewrites it: attributes, max timestamp, CRC.
        b[22] |= 0x08;
        b[35..43].copy_from_slice(&5000i64.to_be_bytes());
        let crc = crc32c::crc32c(&b[crate::protocol::batch::CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let d = decode_fetched(&Bytes::from(b), 0).unwrap();
        assert!(d.records.iter().all(|r| r.timestamp == 5000));
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
