//! AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the producer's
//! transaction, so the transaction's markers reach the group coordinator, which then commits
//! (or drops) the offsets TxnOffsetCommit staged for it.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::RequestContext;
use super::init_producer_id::fenced_for;
use crate::error::ErrorCode;
use crate::placement::{OFFSETS_TOPIC, offsets_partition};
use crate::shard::calls::TxnAddPartitions;

pub async fn handle(ctx: &RequestContext, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.as_str().to_string();
    let group = req.group_id.0.as_str();
    use super::{Operation, ResourceType};
    // Write on the transactional id, then Read on the group, as Kafka.
    let code = if !ctx.authorize(Operation::Write, ResourceType::TransactionalId, &id) {
        ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !ctx.authorize(Operation::Read, ResourceType::Group, group) {
        ErrorCode::GROUP_AUTHORIZATION_FAILED
    } else if group.is_empty() {
        ErrorCode::INVALID_GROUP_ID
    } else {
        let p = offsets_partition(group, ctx.shard.config.offsets_topic_num_partitions);
        let call = TxnAddPartitions {
            transactional_id: id.clone(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            partitions: vec![(OFFSETS_TOPIC.to_string(), p)],
        };
        super::txn_call(ctx, &id, call)
            .await
            .unwrap_or_else(|code| code)
    };
    AddOffsetsToTxnResponse::default().with_error_code(fenced_for(code, ctx.api_version, 2).code())
}
