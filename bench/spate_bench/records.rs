//! Magic-v2 record batches: an uncompressed batch builder for producers and a parser that
//! walks fetched batches record by record (consumers only need offsets and values).

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

/// Reads a zigzag varint at `*pos`, advancing it.
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
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

/// What [`parse_records`] found in a fetched record set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The offset to fetch next (after the last complete batch), if any batch was complete.
    pub next_offset: Option<i64>,
    pub records: u64,
}

/// Walks the complete magic-v2 batches in `data` (as a Fetch returns them), calling
/// `on_record(offset, key_len, value)` for every data record at or after `from_offset`.
/// A trailing partial batch is ignored; control batches are skipped. Compressed batches are
/// an error (spate-bench only reads what it wrote).
pub fn parse_records(
    data: &[u8],
    from_offset: i64,
    mut on_record: impl FnMut(i64, usize, &[u8]),
) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut rest = data;
    while rest.len() >= 12 {
        let base = i64::from_be_bytes(rest[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(rest[8..12].try_into().unwrap());
        if len < 0 {
            return Err(format!("batch at offset {base}: negative length {len}"));
        }
        let total = 12 + len as usize;
        if total > rest.len() {
            break;
        }
        let batch = &rest[..total];
        rest = &rest[total..];
        if batch.len() < BATCH_HEADER_LEN {
            return Err(format!("batch at offset {base}: {} bytes", batch.len()));
        }
        let magic = batch[16];
        if magic != 2 {
            return Err(format!("batch at offset {base}: magic {magic}"));
        }
        let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap());
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
        let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
        out.next_offset = Some(base + last_delta as i64 + 1);
        if attributes & 0x20 != 0 {
            continue; // control batch
        }
        if attributes & 0x07 != 0 {
            return Err(format!(
                "batch at offset {base}: compressed (codec {}), not supported",
                attributes & 0x07
            ));
        }
        let recs = &batch[BATCH_HEADER_LEN..];
        let mut pos = 0;
        for _ in 0..count {
            let bad = || format!("batch at offset {base}: malformed record");
            let rec_len = get_varint(recs, &mut pos).ok_or_else(bad)?;
            let end = pos
                .checked_add(usize::try_from(rec_len).map_err(|_| bad())?)
                .filter(|e| *e <= recs.len())
                .ok_or_else(bad)?;
            let rec = &recs[..end];
            let mut p = pos + 1; // attributes
            get_varint(rec, &mut p).ok_or_else(bad)?; // timestamp delta
            let offset_delta = get_varint(rec, &mut p).ok_or_else(bad)?;
            let key_len = get_varint(rec, &mut p).ok_or_else(bad)?;
            if key_len > 0 {
                p += key_len as usize;
            }
            let value_len = get_varint(rec, &mut p).ok_or_else(bad)?;
            let value = if value_len < 0 {
                &[][..]
            } else {
                rec.get(p..p + value_len as usize).ok_or_else(bad)?
            };
            let offset = base + offset_delta;
            if offset >= from_offset {
                on_record(offset, key_len.max(0) as usize, value);
                out.records += 1;
            }
            pos = end;
        }
    }
    Ok(out)
}
