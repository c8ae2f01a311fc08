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
//! - With a transactional id: transactions are not implemented yet. The answer is
//!   UNSUPPORTED_VERSION: the Java client fails `initTransactions` at once with it (not
//!   retriable), librdkafka logs "API version not supported: retrying" and fails
//!   `init_transactions` with it at its timeout. A retriable code (COORDINATOR_NOT_AVAILABLE)
//!   would only time out with no word of why, and TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//!   would blame ACLs that do not exist. FindCoordinator names this broker for transactional
//!   ids so that clients get this far.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use crate::error::KafkaError;

pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let answer = if let Some(t) = &req.transactional_id {
        // Kafka refuses an empty transactional id (clients send null when they have none).
        Err(if t.0.is_empty() {
            KafkaError::InvalidRequest("empty transactional id".into())
        } else {
            KafkaError::Unsupported("transactions (InitProducerId with a transactional id)")
        })
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
