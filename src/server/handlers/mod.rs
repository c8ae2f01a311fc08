//! One file per Kafka API. Each handler takes the decoded request and returns the encoded
//! response as chunks (or none: Produce with acks=0 is not answered).

mod alter_configs;
mod api_versions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_configs;
mod fetch;
mod list_offsets;
mod metadata;
mod produce;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::protocol::fetch::Chunk;
use crate::protocol::{Request, encode_response};
use crate::shard::Shard;

pub use api_versions::unsupported_version_response;

/// Runs the handler of `req`; Ok(None) means no response is sent.
pub async fn dispatch(shard: &Rc<Shard>, req: Request) -> anyhow::Result<Option<Vec<Chunk>>> {
    let (key, version, corr) = (req.api_key, req.version, req.header.correlation_id);
    let one = |b: Bytes| Ok(Some(vec![Chunk::Mem(b)]));
    match req.body {
        RequestKind::ApiVersions(_) => one(respond(key, version, corr, &api_versions::handle())?),
        RequestKind::Metadata(r) => one(respond(
            key,
            version,
            corr,
            &metadata::handle(shard, r, version).await,
        )?),
        RequestKind::CreateTopics(r) => one(respond(
            key,
            version,
            corr,
            &create_topics::handle(shard, r, version).await,
        )?),
        RequestKind::DeleteTopics(r) => one(respond(
            key,
            version,
            corr,
            &delete_topics::handle(shard, r, version).await,
        )?),
        RequestKind::ListOffsets(r) => one(respond(
            key,
            version,
            corr,
            &list_offsets::handle(shard, r, version).await,
        )?),
        RequestKind::DescribeConfigs(r) => one(respond(
            key,
            version,
            corr,
            &describe_configs::handle(shard, r, version).await,
        )?),
        RequestKind::IncrementalAlterConfigs(r) => one(respond(
            key,
            version,
            corr,
            &alter_configs::handle_incremental(shard, r).await,
        )?),
        RequestKind::AlterConfigs(r) => one(respond(
            key,
            version,
            corr,
            &alter_configs::handle_legacy(shard, r).await,
        )?),
        RequestKind::DeleteRecords(r) => one(respond(
            key,
            version,
            corr,
            &delete_records::handle(shard, r).await,
        )?),
        RequestKind::Produce(r) => match produce::handle(shard, r, version).await {
            Some(resp) => one(respond(key, version, corr, &resp)?),
            None => Ok(None),
        },
        RequestKind::Fetch(r) => Ok(Some(fetch::handle(shard, r, version, corr).await)),
        other => anyhow::bail!("no handler for {other:?}"),
    }
}

fn respond<T: Encodable>(key: ApiKey, version: i16, corr: i32, body: &T) -> anyhow::Result<Bytes> {
    encode_response(key, version, corr, body)
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn str_bytes(s: String) -> StrBytes {
    StrBytes::from_string(s)
}
