//! Record batches (magic v2) as they sit in a Produce request and in a segment file.
//!
//! Layout of the fixed part (61 bytes), big-endian:
//!
//! ```text
//! 0  base_offset i64        | not covered by the CRC
//! 8  batch_length i32       |   (bytes after this field)
//! 12 partition_leader_epoch |
//! 16 magic i8               |
//! 17 crc u32 (CRC32C of everything from attributes to the end)
//! 21 attributes i16, 23 last_offset_delta i32, 27 base_timestamp i64, 35 max_timestamp i64,
//! 43 producer_id i64, 51 producer_epoch i16, 53 base_sequence i32, 57 records_count i32
//! 61 records...
//! ```
//!
//! The broker rewrites only the fixed part (base offset; for LogAppendTime also attributes,
//! max timestamp and the CRC), so records are written straight from the request's bytes.

use bytes::Bytes;

use crate::error::KafkaError;

/// Bytes of the fixed part of a v2 batch.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length`'s payload: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// First byte covered by the batch CRC32C (the attributes).
pub const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// The fixed part of a batch, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    /// The epoch of the leader that wrote the batch (-1 as producers send it).
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// The idempotent producer that wrote the batch (-1: none), its epoch, and the sequence
    /// number of the batch's first record (each record takes the next, wrapping past
    /// `i32::MAX` to 0).
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed part; None when fewer than [`HEADER_LEN`] bytes are given.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        let i64_at = |i: usize| i64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let i32_at = |i: usize| i32::from_be_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(BatchHeader {
            base_offset: i64_at(0),
            batch_length: i32_at(8),
            partition_leader_epoch: i32_at(12),
            magic: b[16] as i8,
            crc: u32::from_be_bytes([b[17], b[18], b[19], b[20]]),
            attributes: i16::from_be_bytes([b[21], b[22]]),
            last_offset_delta: i32_at(23),
            base_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(43),
            producer_epoch: i16::from_be_bytes([b[51], b[52]]),
            base_sequence: i32_at(53),
            records_count: i32_at(57),
        })
    }

    /// Total bytes of the batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    /// Written inside a transaction (its records count only once it commits).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// A control batch: a transaction marker, not records of the producer's.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// One validated batch of a Produce request: its header and a view of its bytes.
#[derive(Clone, Debug)]
pub struct ProducedBatch {
    pub header: BatchHeader,
    /// The whole batch, a slice of the request frame.
    pub bytes: Bytes,
}

/// Splits a partition's `records` field into batches and checks each one: size, magic, CRC32C
/// and offset counts. Nothing is copied.
pub fn split_produce_records(
    records: &Bytes,
    message_bytes_max: usize,
) -> Result<Vec<ProducedBatch>, KafkaError> {
    if records.is_empty() {
        return Err(KafkaError::InvalidRequest("empty record set".into()));
    }
    let mut batches = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        match next_batch(records, pos, message_bytes_max, true)? {
            Next::Whole(b) => {
                pos += b.bytes.len();
                batches.push(b);
            }
            Next::Partial(why) => return Err(KafkaError::CorruptMessage(why)),
        }
    }
    Ok(batches)
}

/// Splits the record set of a Fetch response (a follower's fetch from its leader) into whole
/// batches, checked as [`split_produce_records`] checks a Produce request's, without copying.
/// A Fetch may end in a partial batch (the leader cuts its response at the byte budget, not at
/// a batch boundary): it is dropped, and the next fetch starts at it. A whole batch that fails
/// a check is an error: the leader's copy or the wire is corrupt, and appending it would
/// replicate the corruption. Control and transactional batches are taken as they are (the
/// leader wrote them).
pub fn split_fetched_records(records: &Bytes) -> Result<Vec<ProducedBatch>, KafkaError> {
    let mut batches = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        match next_batch(records, pos, usize::MAX, false)? {
            Next::Whole(b) => {
                pos += b.bytes.len();
                batches.push(b);
            }
            Next::Partial(_) => break,
        }
    }
    Ok(batches)
}

/// What [`next_batch`] found at a position of a record set.
enum Next {
    Whole(ProducedBatch),
    /// The bytes left end before the batch does (why, in words).
    Partial(String),
}

/// Checks the batch at `pos` of `records`: length, size limit, magic, CRC32C and offset
/// counts. A batch cut short by the end of `records` is [`Next::Partial`], for the caller to
/// reject (a Produce request) or drop (a Fetch response). A producer's batch (`dense`) has
/// one offset per record; a fetched one may come from a compacted log, where a batch's
/// records have gaps between their offsets and an idempotent producer's last batch may be
/// kept with no record at all.
fn next_batch(
    records: &Bytes,
    pos: usize,
    message_bytes_max: usize,
    dense: bool,
) -> Result<Next, KafkaError> {
    let rest = &records[pos..];
    if rest.len() < LOG_OVERHEAD {
        return Ok(Next::Partial(format!(
            "{} trailing bytes do not hold a batch header",
            rest.len()
        )));
    }
    let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(KafkaError::CorruptMessage(format!(
            "batch length {batch_length} is smaller than a batch header"
        )));
    }
    let total = LOG_OVERHEAD + batch_length as usize;
    if total > message_bytes_max {
        return Err(KafkaError::MessageTooLarge {
            size: total,
            max: message_bytes_max,
        });
    }
    if total > rest.len() {
        return Ok(Next::Partial(format!(
            "batch of {total} bytes but only {} left in the request",
            rest.len()
        )));
    }
    let Some(header) = BatchHeader::parse(rest) else {
        return Err(KafkaError::CorruptMessage("truncated batch header".into()));
    };
    if header.magic != 2 {
        return Err(KafkaError::UnsupportedForMessageFormat(format!(
            "magic {} (Produce v3+ carries magic 2 batches only)",
            header.magic
        )));
    }
    let computed = crc32c::crc32c(&rest[CRC_START..total]);
    if computed != header.crc {
        return Err(KafkaError::CorruptMessage(format!(
            "CRC32C mismatch: batch says {:#010x}, bytes give {computed:#010x}",
            header.crc
        )));
    }
    let counts_agree = if dense {
        header.records_count > 0
            && (header.compression() != 0 || header.last_offset_delta == header.records_count - 1)
    } else {
        header.records_count >= 0 && header.last_offset_delta >= header.records_count - 1
    };
    if header.last_offset_delta < 0 || !counts_agree {
        return Err(KafkaError::CorruptMessage(format!(
            "records_count {} and last_offset_delta {} disagree",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(Next::Whole(ProducedBatch {
        header,
        bytes: records.slice(pos..pos + total),
    }))
}

/// Whether every record of a batch has a key: a compacted topic refuses a record without one,
/// as Kafka does (the cleaner could not tell which record of it is the last). Decodes the
/// records (decompressing them) to look, without changing the batch; None when they do not
/// decode.
pub fn every_record_keyed(batch: &Bytes) -> Option<bool> {
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch.clone()).ok()?;
    Some(set.records.iter().all(|r| r.key.is_some()))
}

/// The rewritten fixed part of a batch about to be appended at `base_offset` by the leader of
/// `leader_epoch` (stamped in the header; the field sits before the CRC, which does not cover
/// it). With `log_append_time`, the batch is marked LogAppendTime with that max timestamp and
/// its CRC recomputed (over the new fixed part and the untouched records).
pub fn patched_header(
    batch: &ProducedBatch,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&batch.bytes[..HEADER_LEN]);
    h[0..8].copy_from_slice(&base_offset.to_be_bytes());
    h[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time {
        let attributes = batch.header.attributes | ATTR_TIMESTAMP_TYPE;
        h[21..23].copy_from_slice(&attributes.to_be_bytes());
        h[35..43].copy_from_slice(&now.to_be_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&h[CRC_START..]), &batch.bytes[HEADER_LEN..]);
        h[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    h
}

/// Reads a zigzag varint; returns (value, bytes used).
fn varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// The (offset, timestamp) of a batch's first record whose timestamp is at least `target`,
/// as Kafka finds it: a compressed batch is decompressed (at most 64 MiB) and its records
/// read. LogAppendTime batches are not opened (every record has the max timestamp), nor is a
/// compressed batch that does not decompress: its base offset and max timestamp stand for all
/// its records.
pub fn first_offset_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let header = BatchHeader::parse(batch)?;
    let whole =
        || (header.max_timestamp >= target).then_some((header.base_offset, header.max_timestamp));
    if header.is_log_append_time() {
        return whole();
    }
    if header.compression() != 0 {
        if header.max_timestamp < target {
            return None;
        }
        let end = header.total_len().min(batch.len());
        let payload = Bytes::copy_from_slice(batch.get(HEADER_LEN..end)?);
        let Ok(records) = super::codec::decompress(header.compression(), payload, 64 << 20) else {
            return whole();
        };
        let mut plain = batch[..HEADER_LEN].to_vec();
        plain.extend_from_slice(&records);
        let total = i32::try_from(plain.len() - LOG_OVERHEAD).ok()?;
        plain[8..12].copy_from_slice(&total.to_be_bytes());
        plain[21..23].copy_from_slice(&(header.attributes & !ATTR_COMPRESSION_MASK).to_be_bytes());
        return first_offset_at_or_after(&plain, target).or_else(whole);
    }
    let end = header.total_len().min(batch.len());
    let mut pos = HEADER_LEN;
    for _ in 0..header.records_count {
        let (len, n) = varint(batch.get(pos..end)?)?;
        let body_start = pos + n;
        let body = batch.get(body_start..end)?;
        // attributes (1 byte), timestamp delta, offset delta
        let (ts_delta, n1) = varint(body.get(1..)?)?;
        let (off_delta, _) = varint(body.get(1 + n1..)?)?;
        // Record fields are the client's: never trust them to stay in range.
        let ts = header.base_timestamp.saturating_add(ts_delta);
        if ts >= target {
            let last = header.last_offset().max(header.base_offset);
            let offset = header
                .base_offset
                .saturating_add(off_delta)
                .max(header.base_offset)
                .min(last);
            return Some((offset, ts));
        }
        pos = body_start + usize::try_from(len).ok()?;
    }
    None
}

/// Reads a zigzag varint at `pos`: (value, position after it).
pub(crate) fn get_varint(b: &[u8], mut pos: usize) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(pos)?;
        pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), pos));
        }
    }
    None
}

/// Whether a control batch (uncompressed, as every writer writes them) is a commit marker
/// (Some(true)) or an abort marker (Some(false)); None when its first record is not a
/// transaction marker's key (version 0, type 0 or 1).
pub fn control_is_commit(batch: &[u8]) -> Option<bool> {
    let (_, pos) = get_varint(batch, HEADER_LEN)?; // record length
    let pos = pos + 1; // record attributes
    let (_, pos) = get_varint(batch, pos)?; // timestamp delta
    let (_, pos) = get_varint(batch, pos)?; // offset delta
    let (key_len, pos) = get_varint(batch, pos)?;
    if key_len < 4 {
        return None;
    }
    let key = batch.get(pos..pos + 4)?;
    match (
        i16::from_be_bytes([key[0], key[1]]),
        i16::from_be_bytes([key[2], key[3]]),
    ) {
        (0, 0) => Some(false),
        (0, 1) => Some(true),
        _ => None,
    }
}

/// Appends `v` as a zigzag varint, the encoding of a record's lengths and deltas.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An uncompressed magic-v2 batch around `records` (already encoded, each with its length
/// prefix): base offset 0, CreateTime, no producer id, the CRC32C filled in.
pub fn encode_batch(records: &[u8], count: i32, base_ts: i64, max_ts: i64) -> Vec<u8> {
    encode_batch_of(records, count, base_ts, max_ts, 0, (-1, -1))
}

/// Attribute bit of a batch written inside a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;

/// A transaction marker: a control batch of one control record (key: version 0, type 0 for
/// abort or 1 for commit; value: version 0, coordinator epoch), transactional, of the
/// producer, at sequence -1, as Kafka's `EndTransactionMarker` writes it.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    ts: i64,
) -> Vec<u8> {
    let mut r = vec![0u8]; // attributes
    put_varint(&mut r, 0); // timestamp delta
    put_varint(&mut r, 0); // offset delta
    put_varint(&mut r, 4);
    r.extend_from_slice(&0i16.to_be_bytes());
    r.extend_from_slice(&i16::from(commit).to_be_bytes());
    put_varint(&mut r, 6);
    r.extend_from_slice(&0i16.to_be_bytes());
    r.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varint(&mut r, 0); // headers
    let mut records = Vec::with_capacity(r.len() + 1);
    put_varint(&mut records, r.len() as i64);
    records.extend_from_slice(&r);
    encode_batch_of(
        &records,
        1,
        ts,
        ts,
        ATTR_CONTROL | ATTR_TRANSACTIONAL,
        (producer_id, producer_epoch),
    )
}

/// An uncompressed magic-v2 batch around `records` with the given attributes and producer
/// (sequence -1): what a transactional write of the broker's own (TxnOffsetCommit) is.
pub fn encode_batch_of(
    records: &[u8],
    count: i32,
    base_ts: i64,
    max_ts: i64,
    attributes: i16,
    (producer_id, producer_epoch): (i64, i16),
) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes()); // no compression, CreateTime
    b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn control_batches_say_their_marker() {
        for commit in [true, false] {
            let b = control_batch(7, 3, commit, 0, 1000);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 3, -1)
            );
            assert_eq!(control_is_commit(&b), Some(commit));
            assert_eq!(crc32c::crc32c(&b[CRC_START..]), h.crc);
        }
        assert_eq!(control_is_commit(&batch(0, &[b"x"])), None);
    }

    /// Builds a valid uncompressed batch of `values` (no keys, no headers).
    pub fn batch(base_ts: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = vec![0u8];
            put_varint(&mut r, i as i64 * 10); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            put_varint(&mut r, -1); // null key
            put_varint(&mut r, v.len() as i64);
            r.extend_from_slice(v);
            put_varint(&mut r, 0); // headers
            put_varint(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        let n = values.len() as i32;
        encode_batch(&records, n, base_ts, base_ts + (n as i64 - 1) * 10)
    }

    /// [`batch`] written by idempotent producer `pid` at `epoch`, from sequence `seq`.
    pub fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&[u8]]) -> Vec<u8> {
        let mut b = batch(1000, values);
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn accepts_valid_batches_and_slices_them() {
        let mut two = batch(1000, &[b"a", b"bc"]);
        two.extend(batch(2000, &[b"d"]));
        let records = Bytes::from(two);
        let batches = split_produce_records(&records, 1 << 20).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].header.records_count, 2);
        assert_eq!(batches[1].header.base_timestamp, 2000);
        assert_eq!(
            batches[0].bytes.as_ptr(),
            records.as_ptr(),
            "batch is a view of the request, not a copy"
        );
    }

    #[test]
    fn rejects_bad_batches() {
        let good = batch(0, &[b"x"]);
        let check = |b: Vec<u8>, code: i16| {
            let err = split_produce_records(&Bytes::from(b), 1 << 20).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        };
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        check(bad_crc, 2);
        check(good[..good.len() - 1].to_vec(), 2);
        check(good[..5].to_vec(), 2);
        let mut magic1 = good.clone();
        magic1[16] = 1;
        check(magic1, 43);
        let mut neg = good.clone();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        check(neg, 2);
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        check(huge, 10);
        let err = split_produce_records(&Bytes::from(good), 10).unwrap_err();
        assert_eq!(err.code(), 10);
    }

    #[test]
    fn fetched_records_drop_a_partial_tail_and_reject_a_corrupt_batch() {
        let mut set = batch(1000, &[b"a", b"bc"]);
        set.extend(control_batch(7, 0, true, 0, 1100));
        let whole = set.len();
        let third = batch(2000, &[b"d"]);
        set.extend(&third);
        let records = Bytes::from(set.clone());
        let all = split_fetched_records(&records).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[1].header.is_control(), "control batches are replicated");
        assert_eq!(all[2].bytes.as_ptr(), records[whole..].as_ptr(), "no copy");
        // Cut anywhere inside the third batch: the first two stay, the partial one goes.
        for cut in [1, 11, 12, HEADER_LEN, third.len() - 1] {
            let got = split_fetched_records(&records.slice(..whole + cut)).unwrap();
            assert_eq!(got.len(), 2, "cut {cut} bytes into the third batch");
        }
        assert!(split_fetched_records(&Bytes::new()).unwrap().is_empty());
        // A whole batch with a flipped byte is corrupt, wherever it is.
        let mut bad = set;
        bad[whole - 1] ^= 1;
        let err = split_fetched_records(&Bytes::from(bad)).unwrap_err();
        assert_eq!(err.code(), 2, "{err}");
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let b = ProducedBatch {
            header: BatchHeader::parse(&batch(5, &[b"v"])).unwrap(),
            bytes: Bytes::from(batch(5, &[b"v"])),
        };
        let h = patched_header(&b, 42, 3, Some(777));
        let mut whole = h.to_vec();
        whole.extend_from_slice(&b.bytes[HEADER_LEN..]);
        let parsed = split_produce_records(&Bytes::from(whole), 1 << 20).unwrap();
        assert_eq!(parsed[0].header.base_offset, 42);
        assert_eq!(parsed[0].header.max_timestamp, 777);
        assert_eq!(parsed[0].header.partition_leader_epoch, 3);
        assert!(parsed[0].header.is_log_append_time());
    }

    #[test]
    fn the_leader_epoch_is_stamped_outside_the_crc() {
        let b = ProducedBatch {
            header: BatchHeader::parse(&batch(5, &[b"v"])).unwrap(),
            bytes: Bytes::from(batch(5, &[b"v"])),
        };
        assert_eq!(b.header.partition_leader_epoch, -1, "as producers send it");
        let h = patched_header(&b, 7, 12, None);
        let mut whole = h.to_vec();
        whole.extend_from_slice(&b.bytes[HEADER_LEN..]);
        // The CRC still checks: the epoch field sits before the bytes it covers.
        let parsed = split_produce_records(&Bytes::from(whole), 1 << 20).unwrap();
        assert_eq!(
            (
                parsed[0].header.base_offset,
                parsed[0].header.partition_leader_epoch
            ),
            (7, 12)
        );
        assert_eq!(parsed[0].header.crc, b.header.crc);
    }

    #[test]
    fn hostile_record_deltas_stay_in_range() {
        // Offsets near i64::MAX: base + delta must not overflow.
        let mut b = batch(i64::MAX - 15, &[b"a", b"b"]);
        b[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        assert_eq!(
            first_offset_at_or_after(&b, i64::MAX - 6),
            Some((i64::MAX, i64::MAX - 5))
        );
        // A last_offset_delta that disagrees with the records: the answer stays in the batch.
        let mut b = batch(1000, &[b"a", b"b"]);
        b[0..8].copy_from_slice(&100i64.to_be_bytes());
        b[23..27].copy_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(first_offset_at_or_after(&b, 1005), Some((100, 1010)));
    }

    #[test]
    fn finds_first_record_at_or_after_timestamp() {
        let mut b = batch(1000, &[b"a", b"b", b"c"]);
        b[0..8].copy_from_slice(&100i64.to_be_bytes());
        assert_eq!(first_offset_at_or_after(&b, 0), Some((100, 1000)));
        assert_eq!(first_offset_at_or_after(&b, 1011), Some((102, 1020)));
        assert_eq!(first_offset_at_or_after(&b, 1020), Some((102, 1020)));
        assert_eq!(first_offset_at_or_after(&b, 1021), None);
    }
}
