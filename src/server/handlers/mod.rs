//! One file per Kafka API. Each handler takes the decoded request and returns the encoded
//! response as chunks (or none: Produce with acks=0 is not answered).

mod alter_configs;
mod api_versions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_configs;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod sync_group;

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::error::KafkaError;
use crate::protocol::fetch::Chunk;
use crate::protocol::{Request, encode_response};
use crate::router::{GroupAnswer, GroupCall, ShardReply, ShardRequest};
use crate::shard::Shard;
use crate::shard::assignment;

pub use api_versions::unsupported_version_response;

/// Who sent a request, as group members are described.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub client_id: String,
    /// "/IP", as Kafka reports client hosts.
    pub host: String,
}

/// Sends a group request to the shard that coordinates `group`.
pub(crate) async fn group_call(
    shard: &Rc<Shard>,
    api: &str,
    group: &str,
    call: GroupCall,
) -> Result<GroupAnswer, KafkaError> {
    let owner = assignment::group_owner(group, shard.shards());
    tracing::debug!(
        "group request api={api} group={group} connection_shard={} coordinator_shard={owner}",
        shard.id
    );
    match shard.call(owner, ShardRequest::Group(call)).await? {
        ShardReply::Group(answer) => Ok(answer),
        other => Err(KafkaError::InvalidRequest(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// Where an item's answer goes in a per-partition request: (topic index, partition index).
pub(crate) type Slot = (usize, usize);

/// One answer per item, in order.
pub(crate) type Answers<R> = Vec<Result<R, KafkaError>>;

/// Sends every owner shard its items in one message, all owners concurrently, and returns
/// each answer with its slot. A lost or malformed reply answers all of that owner's items
/// with an error, so every item gets exactly one answer.
pub(crate) async fn scatter<I, R: Clone>(
    shard: &Rc<Shard>,
    by_owner: BTreeMap<usize, Vec<(Slot, I)>>,
    request: fn(Vec<I>) -> ShardRequest,
    reply: fn(ShardReply) -> Option<Answers<R>>,
) -> Vec<(Slot, Result<R, KafkaError>)> {
    let calls = by_owner.into_iter().map(|(owner, items)| {
        let shard = shard.clone();
        async move {
            let (slots, items): (Vec<Slot>, Vec<I>) = items.into_iter().unzip();
            let n = items.len();
            let answers = match shard.call(owner, request(items)).await.map(reply) {
                Ok(Some(r)) if r.len() == n => r,
                Ok(_) => vec![Err(KafkaError::NotAvailable); n],
                Err(e) => vec![Err(e); n],
            };
            slots.into_iter().zip(answers).collect::<Vec<_>>()
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

pub(crate) fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_string())
}

/// Held by a request's handler while the connection's next request must not start; dropped
/// (released) when the handler finishes, or earlier by a handler that has reached the point
/// after which running later requests alongside it keeps Kafka's in-order semantics (Produce:
/// once its batches are queued at their owners).
pub struct Ordered(#[allow(dead_code)] futures_channel::oneshot::Sender<()>);

impl Ordered {
    /// A hold, and what resolves when it is released.
    pub fn new() -> (Ordered, futures_channel::oneshot::Receiver<()>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        (Ordered(tx), rx)
    }
}

/// Runs the handler of `req`; Ok(None) means no response is sent.
pub async fn dispatch(
    shard: &Rc<Shard>,
    req: Request,
    peer_ip: &str,
    ordered: Ordered,
) -> anyhow::Result<Option<Vec<Chunk>>> {
    let (key, version, corr) = (req.api_key, req.version, req.header.correlation_id);
    let client = ClientInfo {
        client_id: req
            .header
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        host: format!("/{peer_ip}"),
    };
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
        RequestKind::Produce(r) => match produce::handle(shard, r, version, ordered).await {
            Some(resp) => one(respond(key, version, corr, &resp)?),
            None => Ok(None),
        },
        RequestKind::Fetch(r) => Ok(Some(fetch::handle(shard, r, version, corr).await)),
        RequestKind::FindCoordinator(r) => one(respond(
            key,
            version,
            corr,
            &find_coordinator::handle(shard, r, version),
        )?),
        RequestKind::JoinGroup(r) => one(respond(
            key,
            version,
            corr,
            &join_group::handle(shard, r, version, &client).await,
        )?),
        RequestKind::SyncGroup(r) => one(respond(
            key,
            version,
            corr,
            &sync_group::handle(shard, r, version).await,
        )?),
        RequestKind::Heartbeat(r) => one(respond(
            key,
            version,
            corr,
            &heartbeat::handle(shard, r).await,
        )?),
        RequestKind::LeaveGroup(r) => one(respond(
            key,
            version,
            corr,
            &leave_group::handle(shard, r, version).await,
        )?),
        RequestKind::OffsetCommit(r) => one(respond(
            key,
            version,
            corr,
            &offset_commit::handle(shard, r, version).await,
        )?),
        RequestKind::OffsetFetch(r) => one(respond(
            key,
            version,
            corr,
            &offset_fetch::handle(shard, r, version).await,
        )?),
        RequestKind::DescribeGroups(r) => one(respond(
            key,
            version,
            corr,
            &describe_groups::handle(shard, r, version).await,
        )?),
        RequestKind::ListGroups(r) => one(respond(
            key,
            version,
            corr,
            &list_groups::handle(shard, r, version).await,
        )?),
        RequestKind::DeleteGroups(r) => one(respond(
            key,
            version,
            corr,
            &delete_groups::handle(shard, r).await,
        )?),
        RequestKind::OffsetDelete(r) => one(respond(
            key,
            version,
            corr,
            &offset_delete::handle(shard, r).await,
        )?),
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
