//! libFuzzer target: one input is one request frame (the bytes after the size prefix).
//! `decode_request` must return Ok or Err, and the Produce path's batch checks must not
//! panic on whatever records a decoded Produce carries, nor on the raw input.
//! See fuzz/Cargo.toml for how to run it.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate::protocol::batch::{BatchHeader, first_offset_at_or_after, split_produce_records};
use spate::protocol::{Decoded, decode_request};

fn batches(records: &Bytes) {
    if let Ok(batches) = split_produce_records(records, 1 << 20) {
        for b in &batches {
            let _ = first_offset_at_or_after(&b.bytes, 0);
        }
    }
    let _ = BatchHeader::parse(records);
    let _ = first_offset_at_or_after(records, 0);
}

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(Decoded::Request(req)) = decode_request(frame.clone())
        && let kafka_protocol::messages::RequestKind::Produce(p) = &req.body
    {
        for t in &p.topic_data {
            for part in &t.partition_data {
                if let Some(records) = &part.records {
                    batches(records);
                }
            }
        }
    }
    batches(&frame);
});
