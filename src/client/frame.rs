//! Kafka's framing for a client: a 4-byte big-endian size, a request header of the version the
//! API key and version call for, then the body. Shared by [`super::Conn`] and by callers that
//! pipeline requests on a socket of their own (spate-bench's producers, the tests).

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Appends one size-prefixed request frame to `out`.
pub fn encode_request<Req: Encodable>(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    req: &Req,
) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
        .encode(out, api_key.request_header_version(version))
        .map_err(|e| format!("encoding a {api_key:?} request header: {e}"))?;
    req.encode(out, version)
        .map_err(|e| format!("encoding {api_key:?} v{version}: {e}"))?;
    let size = i32::try_from(out.len() - start - 4)
        .map_err(|_| format!("a {api_key:?} request of {} bytes", out.len() - start))?;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads one size-prefixed frame of at most `frame_bytes_max` bytes.
pub fn read_frame(r: &mut impl Read, frame_bytes_max: usize) -> io::Result<Bytes> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let size = i32::from_be_bytes(prefix);
    let Some(size) = usize::try_from(size).ok().filter(|s| *s <= frame_bytes_max) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a response frame of {size} bytes (at most {frame_bytes_max} accepted)"),
        ));
    };
    let mut body = vec![0u8; size];
    r.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Takes the response header off `frame`; returns its correlation id.
pub fn response_header(frame: &mut Bytes, api_key: ApiKey, version: i16) -> Result<i32, String> {
    ResponseHeader::decode(frame, api_key.response_header_version(version))
        .map(|h| h.correlation_id)
        .map_err(|e| format!("a bad {api_key:?} response header: {e}"))
}

/// Decodes a response frame: (correlation id, body).
pub fn decode_response<Resp: Decodable>(
    mut frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<(i32, Resp), String> {
    let correlation_id = response_header(&mut frame, api_key, version)?;
    let body = Resp::decode(&mut frame, version)
        .map_err(|e| format!("cannot decode a {api_key:?} v{version} response: {e}"))?;
    Ok((correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

    #[test]
    fn request_frames_carry_their_size_and_header() {
        let mut out = BytesMut::from(&b"xx"[..]);
        encode_request(
            &mut out,
            ApiKey::ApiVersions,
            3,
            42,
            "t",
            &ApiVersionsRequest::default(),
        )
        .unwrap();
        let size = i32::from_be_bytes(out[2..6].try_into().unwrap()) as usize;
        assert_eq!(size, out.len() - 6);
        let mut body = Bytes::copy_from_slice(&out[6..]);
        let h = RequestHeader::decode(&mut body, 2).unwrap();
        assert_eq!((h.request_api_key, h.request_api_version), (18, 3));
        assert_eq!((h.correlation_id, h.client_id.as_deref()), (42, Some("t")));
    }

    #[test]
    fn frames_are_bounded() {
        let mut ok = Vec::new();
        ok.extend_from_slice(&3i32.to_be_bytes());
        ok.extend_from_slice(b"abc");
        assert_eq!(read_frame(&mut &ok[..], 3).unwrap(), &b"abc"[..]);
        assert!(read_frame(&mut &ok[..], 2).is_err());
        assert!(read_frame(&mut &(-1i32).to_be_bytes()[..], 10).is_err());
        assert!(read_frame(&mut &ok[..5], 3).is_err());
        let mut resp = BytesMut::new();
        resp.extend_from_slice(&7i32.to_be_bytes());
        ApiVersionsResponse::default().encode(&mut resp, 0).unwrap();
        let (corr, r) =
            decode_response::<ApiVersionsResponse>(resp.freeze(), ApiKey::ApiVersions, 0).unwrap();
        assert_eq!((corr, r.error_code), (7, 0));
    }
}
