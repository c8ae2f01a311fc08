//! DescribeClientQuotas (API 48, KIP-546): the client quotas whose entities match the filter,
//! answered from this shard's copy of the quota table (which the controller pushes to every
//! shard before an alteration is answered), so no hop.

use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{RequestContext, str_bytes};
use crate::error::ErrorCode;
use crate::quota::{ENTITY_CLIENT_ID, ENTITY_USER, Match, Name};

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    // DescribeConfigs on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(super::str_bytes(e.message())));
    }
    let components: Result<Vec<(String, Match)>, _> = req
        .components
        .iter()
        .map(|c| {
            Match::from_wire(c.match_type, c._match.as_ref().map(|m| m.as_str()))
                .map(|m| (c.entity_type.as_str().to_string(), m))
        })
        .collect();
    let found = components.and_then(|c| ctx.shard.quotas().describe(&c, req.strict));
    let entries = match found {
        Ok(entries) => entries,
        Err(e) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(ErrorCode::INVALID_REQUEST.code())
                .with_error_message(Some(str_bytes(e.to_string())));
        }
    };
    let part = |ty: &str, n: &Name| {
        EntityData::default()
            .with_entity_type(str_bytes(ty.to_string()))
            .with_entity_name(match n {
                Name::Default => None,
                Name::Named(s) => Some(str_bytes(s.clone())),
            })
    };
    let entries = entries
        .into_iter()
        .map(|(entity, values)| {
            let mut parts = Vec::with_capacity(2);
            if let Some(u) = &entity.user {
                parts.push(part(ENTITY_USER, u));
            }
            if let Some(c) = &entity.client_id {
                parts.push(part(ENTITY_CLIENT_ID, c));
            }
            EntryData::default().with_entity(parts).with_values(
                values
                    .into_iter()
                    .map(|(k, v)| {
                        ValueData::default()
                            .with_key(str_bytes(k.to_string()))
                            .with_value(v)
                    })
                    .collect(),
            )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}
