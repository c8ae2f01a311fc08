//! EndTxn: commits or aborts the producer's transaction; answered once the markers are on
//! disk in every partition of it and the transaction is complete (see `shard/txn.rs`).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::RequestContext;
use super::init_producer_id::fenced_for;
use crate::shard::calls::TxnEnd;

pub async fn handle(ctx: &RequestContext, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.as_str().to_string();
    // Write on the transactional id, as Kafka.
    if !ctx.authorize(
        super::Operation::Write,
        super::ResourceType::TransactionalId,
        &id,
    ) {
        return EndTxnResponse::default().with_error_code(
            crate::error::ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code(),
        );
    }
    let call = TxnEnd {
        transactional_id: id.clone(),
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        commit: req.committed,
    };
    let code = super::txn_call(ctx, &id, call)
        .await
        .unwrap_or_else(|code| code);
    EndTxnResponse::default().with_error_code(fenced_for(code, ctx.api_version, 2).code())
}
