//! The producers' batch builder: uncompressed magic-v2 batches written straight into one
//! reused buffer. Consumers read batches with the `kafka-protocol` crate's decoder
//! (`spate::client::records`).
//!
//! This is a fast path on purpose. The crate's `RecordBatchEncoder` takes `Record` values that
//! own their key and value as `Bytes`, so every message would cost an allocation and a copy of
//! its payload before being copied again into the batch, and a pass over the records to size
//! the batch. Here a message is written once, in place, with its length prefix known up front
//! (`record_len`). The bench tests check this builder's batches against the crate's decoder.

use spate::protocol::batch::{HEADER_LEN as BATCH_HEADER_LEN, encode_batch, put_varint};

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Accumulates records of one batch; each record's value is `ts` (8 bytes, big-endian)
/// followed by the rest of a payload.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    /// Per-record send time (nanoseconds on the run's clock), in record order.
    pub times: Vec<u64>,
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the batch if it were finished now.
    pub fn encoded_len(&self) -> usize {
        BATCH_HEADER_LEN + self.records.len()
    }

    /// Bytes a record with this key and value length adds to the batch.
    pub fn record_len(&self, key: Option<&[u8]>, value_len: usize) -> usize {
        let body = self.body_len(key, value_len);
        varint_len(body as i64) + body
    }

    fn body_len(&self, key: Option<&[u8]>, value_len: usize) -> usize {
        let key_part = match key {
            None => varint_len(-1),
            Some(k) => varint_len(k.len() as i64) + k.len(),
        };
        1 + varint_len(0)
            + varint_len(self.count as i64)
            + key_part
            + varint_len(value_len as i64)
            + value_len
            + varint_len(0)
    }

    /// Appends a record whose value is `ts` (big-endian) then `payload[8..]`;
    /// `payload.len()` (at least 8) is the value's size.
    pub fn push(&mut self, key: Option<&[u8]>, ts: u64, payload: &[u8]) {
        debug_assert!(payload.len() >= 8);
        let body = self.body_len(key, payload.len());
        put_varint(&mut self.records, body as i64);
        self.records.push(0); // attributes
        put_varint(&mut self.records, 0); // timestamp delta
        put_varint(&mut self.records, self.count as i64); // offset delta
        match key {
            None => put_varint(&mut self.records, -1),
            Some(k) => {
                put_varint(&mut self.records, k.len() as i64);
                self.records.extend_from_slice(k);
            }
        }
        put_varint(&mut self.records, payload.len() as i64);
        self.records.extend_from_slice(&ts.to_be_bytes());
        self.records.extend_from_slice(&payload[8..]);
        put_varint(&mut self.records, 0); // headers
        self.count += 1;
        self.times.push(ts);
    }

    /// The finished batch (base offset 0, CreateTime `timestamp_ms`, no producer id); the
    /// builder is empty afterwards. Returns the batch and the records' send times.
    pub fn finish(&mut self, timestamp_ms: i64) -> (Vec<u8>, Vec<u64>) {
        let b = encode_batch(&self.records, self.count, timestamp_ms, timestamp_ms);
        self.records.clear();
        self.count = 0;
        (b, std::mem::take(&mut self.times))
    }
}
