//! InitProducerId: hands an idempotent producer its producer id and epoch.
//!
//! - With no transactional id (null) and no producer id (-1): a fresh id at epoch 0, from this shard's block of ids (see
//!   `Shard::new_producer_id`: blocks come from the controller, durable before use).
//! - With a producer id and epoch (KIP-360, v3+: the client lost track of its sequence
//!   numbers and bumps its epoch to start again from 0): the same id at the next epoch, or a
//!   fresh id when the epoch would pass `i16::MAX`. Partitions accept a higher epoch only from
//!   sequence 0 (`storage::producers`). Kafka itself answers such an idempotent request with a
//!   fresh id; bumping keeps the id stable and is equally safe, since no other producer holds
//!   it.
//! - With an empty transactional id: INVALID_REQUEST, as Kafka answers.
//! - With a transactional id: the id's transaction coordinator answers (the shard that owns
//!   its `__transaction_state` partition, see `shard/txn.rs`): a fresh id at epoch 0 the first
//!   time, then the same id at the next epoch, fencing the previous producer and aborting its
//!   open transaction first. A timeout above `--transaction-max-timeout-ms` is
//!   INVALID_TRANSACTION_TIMEOUT; PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v4, as in
//!   Kafka. In a cluster the coordinator is the broker that leads the id's partition of
//!   `__transaction_state`; another broker answers NOT_COORDINATOR.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{CLUSTER, Operation, RequestContext, ResourceType};
use crate::error::{ErrorCode, KafkaError};
use crate::shard::calls::TxnInit;

pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let answer = if let Some(t) = &req.transactional_id {
        // Kafka refuses an empty transactional id (clients send null when they have none).
        if t.0.is_empty() {
            Err(KafkaError::InvalidRequest("empty transactional id".into()))
        } else if !ctx.authorize(
            Operation::Write,
            ResourceType::TransactionalId,
            t.0.as_str(),
        ) {
            // Write on the transactional id, as Kafka.
            Err(KafkaError::TransactionalIdAuthorizationFailed)
        } else {
            return transactional(ctx, &req).await;
        }
    } else if !ctx.authorize(Operation::IdempotentWrite, ResourceType::Cluster, CLUSTER)
        && !ctx.authorize_any(Operation::Write, ResourceType::Topic)
    {
        // An idempotent producer: IdempotentWrite on the cluster, or Write on any topic
        // (KIP-679), so default-idempotent clients work with Write ACLs alone.
        Err(KafkaError::ClusterAuthorizationFailed)
    } else if req.producer_id.0 >= 0 && (0..i16::MAX).contains(&req.producer_epoch) {
        Ok((req.producer_id.0, req.producer_epoch + 1))
    } else {
        ctx.shard.new_producer_id().await.map(|id| (id, 0))
    };
    match answer {
        Ok((id, epoch)) => {
            tracing::debug!(
                client = %ctx.client.client_id,
                producer_id = id,
                producer_epoch = epoch,
                "producer id handed out"
            );
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
        }
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// PRODUCER_FENCED as the request's version can say it (v4 introduced it, KIP-588).
pub(crate) fn fenced_for(code: ErrorCode, version: i16, fenced_since: i16) -> ErrorCode {
    if code == ErrorCode::PRODUCER_FENCED && version < fenced_since {
        ErrorCode::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

async fn transactional(
    ctx: &RequestContext,
    req: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_string())
        .unwrap_or_default();
    let call = TxnInit {
        transactional_id: id.clone(),
        timeout_ms: req.transaction_timeout_ms,
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
    };
    let answer = super::txn_call(ctx, &id, call).await.unwrap_or_else(Err);
    match answer {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(code) => InitProducerIdResponse::default()
            .with_error_code(fenced_for(code, ctx.api_version, 4).code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
