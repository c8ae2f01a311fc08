//! WriteTxnMarkers (v1): writes commit or abort markers to partitions this broker leads, as a
//! transaction coordinator does (each marker appended by the partition's owner shard and
//! fdatasync'd before the answer). On one node the coordinator writes its own markers through
//! the shards directly; this API is what an operator's tool uses to abort a hanging
//! transaction (`spate txn abort`, Kafka's `kafka-transactions.sh abort`), with the producer
//! id and epoch DescribeProducers shows. A marker with an epoch older than the partition
//! knows is refused by the partition (INVALID_PRODUCER_EPOCH).

use std::collections::BTreeMap;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::RequestContext;
use crate::error::{ErrorCode, KafkaError};
use crate::shard::calls::{MarkerItem, WriteTxnMarkers};

/// Markers to send each owner shard, with their (topic, partition) slots.
type ByOwner = BTreeMap<usize, Vec<((usize, usize), MarkerItem)>>;

pub async fn handle(ctx: &RequestContext, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let shard = &ctx.shard;
    let mut markers = Vec::with_capacity(req.markers.len());
    // Brokers' own request: ClusterAction on the cluster, else every partition answers
    // CLUSTER_AUTHORIZATION_FAILED, as Kafka.
    let allowed = ctx.authorize(
        super::Operation::ClusterAction,
        super::ResourceType::Cluster,
        super::CLUSTER,
    );
    for m in &req.markers {
        // (topic index, partition index) -> code; markers of one request go out one by one,
        // each to all its partitions' owners at once.
        let mut codes: Vec<Vec<ErrorCode>> = Vec::new();
        let mut by_owner: ByOwner = BTreeMap::new();
        for (ti, t) in m.topics.iter().enumerate() {
            let name = t.name.0.as_str();
            let meta = shard.topic(name);
            let mut row = Vec::new();
            for (pi, &p) in t.partition_indexes.iter().enumerate() {
                match &meta {
                    _ if !allowed => row.push(ErrorCode::CLUSTER_AUTHORIZATION_FAILED),
                    Some(mt) if (0..mt.partitions).contains(&p) && shard.leads(mt, p) => {
                        by_owner.entry(shard.owner(name, p)).or_default().push((
                            (ti, pi),
                            MarkerItem {
                                topic: name.to_string(),
                                partition: p,
                                producer_id: m.producer_id.0,
                                producer_epoch: m.producer_epoch,
                                commit: m.transaction_result,
                                coordinator_epoch: m.coordinator_epoch,
                            },
                        ));
                        row.push(ErrorCode::NONE);
                    }
                    Some(mt) if (0..mt.partitions).contains(&p) => {
                        row.push(ErrorCode::NOT_LEADER_OR_FOLLOWER)
                    }
                    _ => row.push(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                }
            }
            codes.push(row);
        }
        let calls = by_owner.into_iter().map(|(owner, items)| async move {
            let (slots, items): (Vec<_>, Vec<_>) = items.into_iter().unzip();
            let n = slots.len();
            let answers = match shard.call(owner, WriteTxnMarkers(items)).await {
                Ok(a) if a.len() == n => a,
                _ => vec![Err(KafkaError::NotLeaderOrFollower); n],
            };
            slots.into_iter().zip(answers).collect::<Vec<_>>()
        });
        for (slot, r) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
        {
            codes[slot.0][slot.1] = match r {
                Ok(()) => ErrorCode::NONE,
                Err(e) => e.error_code(),
            };
        }
        let topics = m
            .topics
            .iter()
            .zip(codes)
            .map(|(t, row)| {
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .zip(row)
                            .map(|(&p, c)| {
                                WritableTxnMarkerPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_error_code(c.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
