//! A produced batch's records section, decompressed and compressed again: the topic config
//! `compression.type` other than `producer` stores every batch in one codec, and the
//! `message.timestamp.*.max.ms` checks read records' timestamps.
//!
//! Recompression never parses a record: the records section is decompressed as bytes and
//! compressed again in the topic's codec, and only the fixed part changes (the codec bits of
//! the attributes, the batch length and the CRC). Offsets, timestamps, producer id, epoch and
//! sequence, the transactional flag and every record byte (duplicate header keys included)
//! are kept.
//!
//! Memory: a compressed batch may expand to at most [`expanded_bytes_max`] bytes; a batch
//! that would expand further is refused (CORRUPT_MESSAGE) before that much is allocated, so a
//! small "zip bomb" cannot take the shard's memory.

use std::io::{Read, Write};

use bytes::Bytes;

use super::batch::{BatchHeader, CRC_START, HEADER_LEN, LOG_OVERHEAD, ProducedBatch};
use crate::error::KafkaError;

/// Codec ids of the batch attributes.
pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The codec to store batches in and its level (None: the codec's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub codec: i16,
    pub level: Option<i32>,
}

/// The most bytes one batch's records may take once decompressed: 64 MiB, or 16 times the
/// largest batch the topic accepts when that is more.
pub fn expanded_bytes_max(message_bytes_max: usize) -> usize {
    (64 << 20).max(message_bytes_max.saturating_mul(16))
}

fn corrupt(what: String) -> KafkaError {
    KafkaError::CorruptMessage(what)
}

/// Reads all of `r`, failing once more than `max` bytes come out.
fn read_bounded(r: impl Read, max: usize, codec: &str) -> Result<Vec<u8>, KafkaError> {
    let mut out = Vec::new();
    let n = r
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(format!("cannot decompress the {codec} batch: {e}")))?;
    if n > max {
        return Err(corrupt(format!(
            "the {codec} batch expands to more than {max} bytes"
        )));
    }
    Ok(out)
}

/// The records section of `batch`, decompressed (a copy only when it was compressed).
pub fn records_of(batch: &ProducedBatch, max: usize) -> Result<Bytes, KafkaError> {
    decompress(
        batch.header.compression(),
        batch.bytes.slice(HEADER_LEN..),
        max,
    )
}

/// A records section `payload` in `codec`, decompressed to at most `max` bytes.
pub fn decompress(codec: i16, payload: Bytes, max: usize) -> Result<Bytes, KafkaError> {
    match codec {
        NONE => Ok(payload),
        GZIP => {
            read_bounded(flate2::read::GzDecoder::new(&payload[..]), max, "gzip").map(Bytes::from)
        }
        LZ4 => {
            let d = lz4::Decoder::new(&payload[..])
                .map_err(|e| corrupt(format!("cannot decompress the lz4 batch: {e}")))?;
            read_bounded(d, max, "lz4").map(Bytes::from)
        }
        ZSTD => {
            let d = zstd::stream::read::Decoder::new(&payload[..])
                .map_err(|e| corrupt(format!("cannot decompress the zstd batch: {e}")))?;
            read_bounded(d, max, "zstd").map(Bytes::from)
        }
        SNAPPY => snappy_decompress(&payload, max).map(Bytes::from),
        other => Err(corrupt(format!("unknown compression codec {other}"))),
    }
}

/// The Java snappy framing Kafka clients write (a 16-byte magic header, then blocks of a
/// big-endian u32 length and a raw snappy block), or one raw snappy block without it.
fn snappy_decompress(b: &[u8], max: usize) -> Result<Vec<u8>, KafkaError> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let block = |data: &[u8], out: &mut Vec<u8>| -> Result<(), KafkaError> {
        let len = snap::raw::decompress_len(data)
            .map_err(|e| corrupt(format!("cannot decompress the snappy batch: {e}")))?;
        if out.len() + len > max {
            return Err(corrupt(format!(
                "the snappy batch expands to more than {max} bytes"
            )));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(data, &mut out[start..])
            .map_err(|e| corrupt(format!("cannot decompress the snappy batch: {e}")))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !b.starts_with(MAGIC) {
        block(b, &mut out)?;
        return Ok(out);
    }
    let mut pos = 16;
    while pos < b.len() {
        let len = b
            .get(pos..pos + 4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .ok_or_else(|| corrupt("truncated snappy block length".into()))?;
        let data = b
            .get(pos + 4..pos + 4 + len)
            .ok_or_else(|| corrupt("truncated snappy block".into()))?;
        block(data, &mut out)?;
        pos += 4 + len;
    }
    Ok(out)
}

/// `records` compressed with `target`.
fn compress(records: &[u8], target: Target) -> Result<Vec<u8>, KafkaError> {
    let failed = |e: std::io::Error| KafkaError::Storage(format!("cannot compress a batch: {e}"));
    match target.codec {
        NONE => Ok(records.to_vec()),
        GZIP => {
            let level = match target.level {
                Some(l) if l >= 0 => flate2::Compression::new(l as u32),
                _ => flate2::Compression::default(),
            };
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(records).map_err(failed)?;
            e.finish().map_err(failed)
        }
        LZ4 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(target.level.unwrap_or(9).max(0) as u32)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .map_err(failed)?;
            e.write_all(records).map_err(failed)?;
            let (out, r) = e.finish();
            r.map_err(failed)?;
            Ok(out)
        }
        ZSTD => zstd::stream::encode_all(records, target.level.unwrap_or(3)).map_err(failed),
        SNAPPY => {
            // The framing Kafka's clients read: magic header, then length-prefixed blocks.
            let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            let mut enc = snap::raw::Encoder::new();
            for chunk in records.chunks(32 * 1024) {
                let block = enc
                    .compress_vec(chunk)
                    .map_err(|e| KafkaError::Storage(format!("cannot compress a batch: {e}")))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        other => Err(KafkaError::Storage(format!(
            "unknown compression codec {other}"
        ))),
    }
}

/// `batch` stored in `target`'s codec: the same batch when it already is, else its records
/// decompressed (at most `max` bytes) and compressed again under a new fixed part.
pub fn recompress(
    batch: ProducedBatch,
    target: Target,
    max: usize,
) -> Result<ProducedBatch, KafkaError> {
    if batch.header.compression() == target.codec {
        return Ok(batch);
    }
    let records = records_of(&batch, max)?;
    let payload = compress(&records, target)?;
    let batch_length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + payload.len())
        .map_err(|_| corrupt("the recompressed batch is too large".into()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&batch.bytes[..HEADER_LEN]);
    out.extend_from_slice(&payload);
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (batch.header.attributes & !0x07) | target.codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    let header = BatchHeader::parse(&out)
        .ok_or_else(|| corrupt("the recompressed batch has no header".into()))?;
    Ok(ProducedBatch {
        header,
        bytes: Bytes::from(out),
    })
}

/// The smallest and largest record timestamp of an uncompressed records section under
/// `header`; None when the records do not parse (the batch is then left to the consumer, as
/// its records always were).
pub fn timestamp_range(header: &BatchHeader, records: &[u8]) -> Option<(i64, i64)> {
    let mut pos = 0;
    let mut range: Option<(i64, i64)> = None;
    for _ in 0..header.records_count {
        let (len, after_len) = super::batch::get_varint(records, pos)?;
        // attributes (1 byte), then the timestamp delta
        let (delta, _) = super::batch::get_varint(records, after_len + 1)?;
        let ts = header.base_timestamp.saturating_add(delta);
        range = Some(range.map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts))));
        pos = after_len.checked_add(usize::try_from(len).ok()?)?;
    }
    range
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::split_produce_records;
    use crate::protocol::batch::tests::batch;

    fn produced(bytes: Vec<u8>) -> ProducedBatch {
        split_produce_records(&Bytes::from(bytes), 1 << 20)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn every_codec_round_trips_the_records_bytes() {
        let plain = produced(batch(1000, &[b"alpha", b"beta", &[7u8; 3000]]));
        let records = plain.bytes.slice(HEADER_LEN..);
        for codec in [GZIP, SNAPPY, LZ4, ZSTD, NONE] {
            let target = Target { codec, level: None };
            let c = recompress(plain.clone(), target, 1 << 20).unwrap();
            assert_eq!(c.header.compression(), codec);
            // The result is a valid batch (CRC and length) with the same fixed fields.
            let again = produced(c.bytes.to_vec());
            assert_eq!(again.header.records_count, 3);
            assert_eq!(again.header.base_timestamp, 1000);
            assert_eq!(records_of(&again, 1 << 20).unwrap(), records);
            // And back to another codec.
            let z = recompress(
                again,
                Target {
                    codec: ZSTD,
                    level: Some(5),
                },
                1 << 20,
            )
            .unwrap();
            assert_eq!(records_of(&z, 1 << 20).unwrap(), records);
        }
    }

    #[test]
    fn a_batch_that_expands_too_far_is_refused() {
        let plain = produced(batch(0, &[&[0u8; 100_000]]));
        let gz = recompress(
            plain,
            Target {
                codec: GZIP,
                level: Some(9),
            },
            1 << 20,
        )
        .unwrap();
        assert!(gz.bytes.len() < 2000);
        let e = records_of(&gz, 50_000).unwrap_err();
        assert_eq!(e.code(), 2, "{e}");
        let sn = recompress(
            produced(batch(0, &[&[0u8; 100_000]])),
            Target {
                codec: SNAPPY,
                level: None,
            },
            1 << 20,
        )
        .unwrap();
        assert!(records_of(&sn, 50_000).is_err());
    }

    /// ListOffsets by time looks inside compressed batches, as Kafka does.
    #[test]
    fn a_timestamp_is_found_inside_a_compressed_batch() {
        let plain = produced(batch(1000, &[b"a", b"b", b"c"]));
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let c = recompress(plain.clone(), Target { codec, level: None }, 1 << 20).unwrap();
            let find = |t| crate::protocol::batch::first_offset_at_or_after(&c.bytes, t);
            assert_eq!(find(1015), Some((2, 1020)), "codec {codec}");
            assert_eq!(find(0), Some((0, 1000)), "codec {codec}");
            assert_eq!(find(1021), None, "codec {codec}");
        }
    }

    #[test]
    fn timestamps_of_every_record() {
        let b = produced(batch(5000, &[b"a", b"b", b"c"]));
        let range = timestamp_range(&b.header, &b.bytes[HEADER_LEN..]).unwrap();
        assert_eq!(range.0, 5000);
        assert!(range.1 >= 5000);
    }
}
