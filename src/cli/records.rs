//! Magic v2 record batches for `spate produce` / `spate consume`: encoding uncompressed
//! batches (CRC32C over attributes..end), decoding what a Fetch returns, and Kafka's default
//! partitioner (murmur2 of the key), so keyed messages land where Java clients put them.

use super::error::{Error, Result};
use crate::protocol::batch::{
    CRC_START, HEADER_LEN, encode_batch as encode_batch_body, put_varint,
};

/// One record to produce, or one consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// Bytes a record adds to a batch (close enough for batching decisions).
pub fn approx_size(r: &Record) -> usize {
    24 + r.key.as_ref().map_or(0, Vec::len)
        + r.value.as_ref().map_or(0, Vec::len)
        + r.headers
            .iter()
            .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// An uncompressed magic v2 batch of `records` (CreateTime timestamps), base offset 0.
pub fn encode_batch(records: &[Record]) -> Vec<u8> {
    let base_ts = records.first().map_or(0, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let mut body = Vec::with_capacity(records.iter().map(approx_size).sum());
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, r.timestamp - base_ts);
        put_varint(&mut rec, i as i64);
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, v.as_deref());
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    encode_batch_body(&body, records.len() as i32, base_ts, max_ts)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(Error::other("a record is cut short"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn varint(&mut self) -> Result<i64> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .b
                .first()
                .ok_or_else(|| Error::other("a varint is cut short"))?;
            self.b = &self.b[1..];
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(Error::other("a varint is too long"))
    }

    fn bytes(&mut self) -> Result<Option<&'a [u8]>> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize).map(Some)
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

/// What a Fetch's records field holds at or after an offset.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// The offset after the last complete batch, when there was one (so a fetch that returned
    /// only control batches still moves the position forward).
    pub next_offset: Option<i64>,
}

/// The records of concatenated batches (a Fetch's records field) at or after `from`.
/// Control batches are skipped; a trailing partial batch is dropped, as clients do.
pub fn decode_batches(mut data: &[u8], from: i64) -> Result<Decoded> {
    let mut out = Vec::new();
    let mut next_offset = None;
    while data.len() >= 12 {
        let base_offset = be_i64(data, 0);
        let len = be_i32(data, 8);
        let total = 12 + len.max(0) as usize;
        if total > data.len() {
            break;
        }
        let batch = &data[..total];
        data = &data[total..];
        if batch.len() < 17 {
            return Err(Error::other("a record batch is too short"));
        }
        let magic = batch[16];
        if magic != 2 {
            return Err(Error::other(format!(
                "a batch at offset {base_offset} has magic v{magic}: spate consume reads v2 batches only"
            )));
        }
        if batch.len() < HEADER_LEN {
            return Err(Error::other("a record batch is too short"));
        }
        let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        if crc32c::crc32c(&batch[CRC_START..]) != crc {
            return Err(Error::other(format!(
                "the batch at offset {base_offset} fails its CRC32C check"
            )));
        }
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        next_offset = Some(base_offset + i64::from(be_i32(batch, 23)) + 1);
        let compression = attributes & 0x7;
        if attributes & 0x20 != 0 {
            continue; // control batch (transaction markers)
        }
        if compression != 0 {
            let name = match compression {
                1 => "gzip",
                2 => "snappy",
                3 => "lz4",
                4 => "zstd",
                _ => "an unknown codec",
            };
            return Err(Error::other(format!(
                "the batch at offset {base_offset} is compressed with {name}: spate consume reads uncompressed batches only"
            ))
            .with_hint("read this topic with kcat or a Kafka client"));
        }
        let log_append_time = attributes & 0x8 != 0;
        let base_ts = be_i64(batch, 27);
        let max_ts = be_i64(batch, 35);
        let count = be_i32(batch, 57);
        let mut r = Reader {
            b: &batch[HEADER_LEN..],
        };
        for _ in 0..count.max(0) {
            let len = r.varint()?;
            let mut rec = Reader {
                b: r.take(len.max(0) as usize)?,
            };
            rec.take(1)?; // attributes
            let ts_delta = rec.varint()?;
            let offset_delta = rec.varint()?;
            let key = rec.bytes()?.map(<[u8]>::to_vec);
            let value = rec.bytes()?.map(<[u8]>::to_vec);
            let nh = rec.varint()?;
            let mut headers = Vec::new();
            for _ in 0..nh.max(0) {
                let k = rec.bytes()?.unwrap_or_default();
                let v = rec.bytes()?.map(<[u8]>::to_vec);
                headers.push((String::from_utf8_lossy(k).into_owned(), v));
            }
            let offset = base_offset + offset_delta;
            if offset < from {
                continue;
            }
            out.push(Record {
                offset,
                timestamp: if log_append_time {
                    max_ts
                } else {
                    base_ts + ts_delta
                },
                key,
                value,
                headers,
            });
        }
    }
    Ok(Decoded {
        records: out,
        next_offset,
    })
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

    #[test]
    fn batches_round_trip() {
        let recs = vec![
            Record {
                offset: 0,
                timestamp: 1000,
                key: Some(b"k".to_vec()),
                value: Some(b"hello".to_vec()),
                headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
            },
            Record {
                offset: 1,
                timestamp: 1005,
                key: None,
                value: None,
                headers: vec![],
            },
        ];
        let mut b = encode_batch(&recs);
        b[0..8].copy_from_slice(&40i64.to_be_bytes());
        let d = decode_batches(&b, 0).expect("decodes");
        assert_eq!(d.next_offset, Some(42));
        let got = d.records;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].offset, 40);
        assert_eq!(got[1].offset, 41);
        assert_eq!(got[0].key, recs[0].key);
        assert_eq!(got[0].headers, recs[0].headers);
        assert_eq!(got[1].timestamp, 1005);
        assert_eq!(decode_batches(&b, 41).expect("decodes").records.len(), 1);
        // A trailing partial batch is dropped.
        assert_eq!(
            decode_batches(&b[..b.len() - 1], 0)
                .expect("ok")
                .records
                .len(),
            0
        );
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_batches(&bad, 0).is_err());
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
