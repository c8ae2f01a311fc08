//! AlterClientQuotas (API 49, KIP-546): sets or removes client quotas, applied by the
//! controller as metadata records (forwarded to the active controller in a cluster); one
//! answer per entity, INVALID_REQUEST for an unknown entity type or key, `validate_only`
//! checks without writing.

use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use super::{RequestContext, str_bytes};
use crate::cluster::wire::QuotaAlteration;
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::AlterClientQuotas;
use crate::storage::metadata::record::QuotaValue;

pub async fn handle(
    ctx: &RequestContext,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let entries: Vec<QuotaAlteration> = req
        .entries
        .iter()
        .map(|e| QuotaAlteration {
            entity: e
                .entity
                .iter()
                .map(|p| {
                    (
                        p.entity_type.as_str().to_string(),
                        p.entity_name.as_ref().map(|n| n.as_str().to_string()),
                    )
                })
                .collect(),
            ops: e
                .ops
                .iter()
                .map(|o| {
                    let value = (!o.remove).then_some(QuotaValue(o.value));
                    (o.key.as_str().to_string(), value)
                })
                .collect(),
        })
        .collect();
    let n = entries.len();
    // AlterConfigs on the cluster, else every entry answers CLUSTER_AUTHORIZATION_FAILED, as
    // Kafka.
    let answers = if let Some(e) = ctx.cluster_refused(super::Operation::AlterConfigs) {
        vec![Err(e); n]
    } else {
        let call = AlterClientQuotas {
            entries,
            validate_only: req.validate_only,
            context: ctx.forwarded(),
        };
        match ctx.shard.call(CONTROLLER_SHARD, call).await {
            Ok(r) if r.len() == n => r,
            _ => vec![Err(KafkaError::NotController); n],
        }
    };
    let entries = req
        .entries
        .iter()
        .zip(answers)
        .map(|(e, r)| {
            let entity = e
                .entity
                .iter()
                .map(|p| {
                    EntityData::default()
                        .with_entity_type(p.entity_type.clone())
                        .with_entity_name(p.entity_name.clone())
                })
                .collect();
            let out = EntryData::default().with_entity(entity);
            match r {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message()))),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
