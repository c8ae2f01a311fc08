//! Kafka wire framing on top of the `kafka-protocol` crate. Pure: nothing here touches a
//! socket or a file.
//!
//! - [`decode_request`] turns one frame (the bytes after the size prefix) into a header and a
//!   typed request, or a [`FrameError`] that closes the connection.
//! - [`encode_response`] frames a typed response for the request's version.
//! - [`batch`] parses and patches record batches without copying their records.
//! - [`fetch`] hand-encodes the Fetch response so its records can come straight from segment
//!   files.

pub mod batch;
pub mod codec;
pub mod fetch;
pub mod versions;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::error::FrameError;

/// A decoded request, ready for its handler.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A request of a supported API and version.
    Request(Box<Request>),
    /// An ApiVersions request of a version this broker does not know: answered in the v0
    /// format with UNSUPPORTED_VERSION so the client can retry with one it does.
    ApiVersionsUnsupported { correlation_id: i32 },
}

thread_local! {
    /// Set while a decoder runs under `catch_unwind` on this thread.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic now would be caught by [`decode_request`] (for the process panic hook).
pub fn catching_decoder_panic() -> bool {
    CATCHING.get()
}

/// Decodes one request frame. The frame is sliced, never copied: record bytes in a Produce
/// stay views into `frame`.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Undecodable(format!(
            "frame of {} bytes is shorter than a request header",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let Some(range) = versions::supported(api_key) else {
        return Err(FrameError::UnknownApiKey(key));
    };
    if !range.contains(&version) {
        if api_key == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Ok(Decoded::ApiVersionsUnsupported { correlation_id });
        }
        return Err(FrameError::UnsupportedVersion {
            api: versions::name(api_key),
            version,
        });
    }
    let header_version = api_key.request_header_version(version);
    // The crate's decoders are bounded (see vendor/kafka-protocol/PATCHED.md) and return errors
    // on short input; catch_unwind is a second line so that a decoder bug costs one connection,
    // not the broker.
    CATCHING.set(true);
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let header = RequestHeader::decode(&mut frame, header_version)?;
        let body = RequestKind::decode(api_key, &mut frame, version)?;
        anyhow::Ok((header, body))
    }));
    CATCHING.set(false);
    match decoded {
        Ok(Ok((header, body))) => Ok(Decoded::Request(Box::new(Request {
            api_key,
            version,
            header,
            body,
        }))),
        Ok(Err(e)) => Err(FrameError::Undecodable(format!(
            "{} v{version}: {e}",
            versions::name(api_key)
        ))),
        Err(_) => Err(FrameError::Undecodable(format!(
            "{} v{version}: decoder panicked",
            versions::name(api_key)
        ))),
    }
}

/// Frames a response: size prefix, response header of the right version, body.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let size = i32::try_from(buf.len() - 4)?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Reads a frame's 4-byte size prefix and checks it against the limit before anything of
/// that size is allocated.
pub fn frame_size(prefix: [u8; 4], request_bytes_max: usize) -> Result<usize, FrameError> {
    let size = (&prefix[..]).get_i32();
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size = size as usize;
    if size > request_bytes_max {
        return Err(FrameError::TooLarge {
            size,
            max: request_bytes_max,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_supported_requests() {
        let f = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        match decode_request(f).unwrap() {
            Decoded::Request(r) => {
                assert_eq!(r.api_key, ApiKey::Metadata);
                assert_eq!(r.header.correlation_id, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_api_versions_version_is_answered() {
        let mut f =
            BytesMut::from(&frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())[..]);
        f[2..4].copy_from_slice(&99i16.to_be_bytes());
        match decode_request(f.freeze()).unwrap() {
            Decoded::ApiVersionsUnsupported { correlation_id } => assert_eq!(correlation_id, 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let check = |bytes: &[u8]| decode_request(Bytes::copy_from_slice(bytes)).is_err();
        assert!(check(&[]));
        assert!(check(&[0, 3, 0, 1]));
        assert!(check(&[0x7f, 0x00, 0, 1, 0, 0, 0, 1]), "unknown api key");
        assert!(
            check(&[0, 3, 0x7f, 0, 0, 0, 0, 1]),
            "unsupported metadata version"
        );
        // Metadata v1 whose topics array claims i32::MAX entries.
        assert!(check(&[
            0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff
        ]));
    }

    #[test]
    fn frame_size_limits() {
        assert!(frame_size((-1i32).to_be_bytes(), 100).is_err());
        assert!(frame_size(101i32.to_be_bytes(), 100).is_err());
        assert_eq!(frame_size(100i32.to_be_bytes(), 100).unwrap(), 100);
    }
}
