//! ListTransactions: the transactional ids of every shard, filtered by state, producer id and
//! (v1) how long the transaction has been open. A state filter that names no state is
//! returned in `unknown_state_filters`, as Kafka does.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{RequestContext, str_bytes};
use crate::clock::now_ms;
use crate::shard::calls::ListTxns;
use crate::txn::state::TxnState;

const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub async fn handle(
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let shard = &ctx.shard;
    let wanted: Vec<&str> = req.state_filters.iter().map(|s| s.as_str()).collect();
    let unknown = req
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let calls = (0..shard.shards()).map(|to| shard.call(to, ListTxns));
    let mut states = Vec::new();
    for all in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
    {
        for (id, m) in all {
            let state_ok = wanted.is_empty() || wanted.contains(&m.state.name());
            let pid_ok = req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id);
            let open_long_enough = ctx.api_version < 1
                || req.duration_filter < 0
                || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter);
            // Only the transactional ids the principal may describe, as Kafka.
            if state_ok
                && pid_ok
                && open_long_enough
                && ctx.authorize(
                    super::Operation::Describe,
                    super::ResourceType::TransactionalId,
                    &id,
                )
            {
                states.push(
                    TransactionState::default()
                        .with_transactional_id(TransactionalId(str_bytes(id)))
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_transaction_state(str_bytes(m.state.name().to_string())),
                );
            }
        }
    }
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
