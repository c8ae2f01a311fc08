//! DescribeTransactions: each transactional id's state, asked of its coordinator shard
//! (TRANSACTIONAL_ID_NOT_FOUND for an id with none).

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use super::{RequestContext, str_bytes, topic_name};
use crate::error::ErrorCode;
use crate::shard::calls::DescribeTxn;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in &req.transactional_ids {
        let name = id.0.as_str().to_string();
        let out = TransactionState::default().with_transactional_id(id.clone());
        // Describe on the transactional id; its partitions only of topics the principal may
        // describe, as Kafka.
        use super::{Operation, ResourceType};
        if !ctx.authorize(Operation::Describe, ResourceType::TransactionalId, &name) {
            states
                .push(out.with_error_code(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code()));
            continue;
        }
        states.push(
            match super::txn_call(ctx, &name, DescribeTxn(name.clone())).await {
                Ok(Some(m)) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (t, p) in m
                        .partitions
                        .iter()
                        .filter(|(t, _)| ctx.authorize(Operation::Describe, ResourceType::Topic, t))
                    {
                        match topics.last_mut() {
                            Some(last) if last.topic.0.as_str() == t => last.partitions.push(*p),
                            _ => topics.push(
                                TopicData::default()
                                    .with_topic(topic_name(t))
                                    .with_partitions(vec![*p]),
                            ),
                        }
                    }
                    out.with_transaction_state(str_bytes(m.state.name().to_string()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(topics)
                }
                Ok(None) => out.with_error_code(ErrorCode::TRANSACTIONAL_ID_NOT_FOUND.code()),
                Err(code) => out.with_error_code(code.code()),
            },
        );
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
