//! ApiVersions: advertises exactly [`crate::protocol::versions::SUPPORTED`].

use super::RequestContext;
use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, api_versions_response::ApiVersion,
};

use crate::protocol::{encode_response, versions};

pub async fn handle(_ctx: &RequestContext, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    supported()
}

/// The versions this broker supports, as ApiVersions answers them.
fn supported() -> ApiVersionsResponse {
    let api_keys = versions::SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

/// The v0-format answer to an ApiVersions request of a version we do not know: the client
/// reads the error and our ranges, and retries with a version we support.
pub fn unsupported_version_response(correlation_id: i32) -> anyhow::Result<Bytes> {
    let body = supported().with_error_code(ResponseError::UnsupportedVersion.code());
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
}
