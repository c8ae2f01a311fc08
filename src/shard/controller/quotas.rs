//! AlterClientQuotas on the controller: each entity's ops are checked, written as
//! `ClientQuotaRecord`s (one batch per entity) and, on one node, pushed to every shard as the
//! whole new quota table; in a cluster every node pushes it when it applies the entry (see
//! `quorum::publish`).

use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::wire::{self, QuotaAlteration, Request};
use crate::error::KafkaError;
use crate::quota::{self, QuotaEntity, QuotaTable};
use crate::shard::Shard;
use crate::shard::calls::QuotasChanged;
use crate::storage::metadata::record::{ClientQuotaRecord, MetadataRecord, QuotaValue};

use super::Controller;

impl Controller {
    /// AlterClientQuotas: one answer per entity. An entity whose entity or any op is invalid
    /// changes nothing (INVALID_REQUEST, as Kafka), the others still apply.
    pub async fn alter_client_quotas(
        &self,
        shard: &Rc<Shard>,
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), entries.len(), || Request::AlterClientQuotas {
                context: context.clone(),
                entries: entries.clone(),
                validate_only,
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(entries.len());
        for entry in &entries {
            let records = match quota_records(entry) {
                Ok(r) => r,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if validate_only || records.is_empty() {
                out.push(Ok(()));
                continue;
            }
            if let Err(e) = self.persist(records).await {
                out.push(Err(e));
                continue;
            }
            tracing::info!(entity = ?entry.entity, ops = ?entry.ops, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "client quotas changed");
            out.push(Ok(()));
        }
        if q.is_none() && !validate_only {
            let table = Arc::new(QuotaTable::from_records(
                self.image.borrow().client_quotas(),
            ));
            if let Err(e) = self.broadcast(shard, || QuotasChanged(table.clone())).await {
                return out.into_iter().map(|r| r.and(Err(e.clone()))).collect();
            }
        }
        out
    }
}

/// The records of one entity's ops, or why they are refused.
fn quota_records(entry: &QuotaAlteration) -> Result<Vec<MetadataRecord>, KafkaError> {
    let invalid = |e: quota::QuotaError| KafkaError::InvalidRequest(e.to_string());
    let entity =
        QuotaEntity::from_parts(entry.entity.iter().map(|(t, n)| (t.as_str(), n.as_deref())))
            .map_err(invalid)?;
    let parts = entity.to_parts();
    let mut records = Vec::with_capacity(entry.ops.len());
    for (key, value) in &entry.ops {
        quota::validate(key, value.map(|v| v.0)).map_err(invalid)?;
        if entry.ops.iter().filter(|(k, _)| k == key).count() > 1 {
            return Err(KafkaError::InvalidRequest(format!(
                "quota key '{key}' appears twice for one entity"
            )));
        }
        records.push(MetadataRecord::ClientQuota(ClientQuotaRecord {
            entity: parts.clone(),
            key: key.clone(),
            value: value.unwrap_or(QuotaValue(0.0)),
            remove: value.is_none(),
        }));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alteration(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> QuotaAlteration {
        QuotaAlteration {
            entity: entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect(),
            ops: ops
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(QuotaValue)))
                .collect(),
        }
    }

    #[test]
    fn quota_changes_become_records_or_invalid_request() {
        let ok = quota_records(&alteration(
            &[("user", None), ("client-id", Some("app"))],
            &[
                ("producer_byte_rate", Some(1024.0)),
                ("consumer_byte_rate", None),
            ],
        ))
        .unwrap();
        assert_eq!(ok.len(), 2);
        let MetadataRecord::ClientQuota(r) = &ok[1] else {
            panic!("{ok:?}");
        };
        assert!(r.remove);
        assert_eq!(r.entity[0].entity_type, "client-id");
        for bad in [
            alteration(&[], &[("producer_byte_rate", Some(1.0))]),
            alteration(
                &[("group", Some("g"))],
                &[("producer_byte_rate", Some(1.0))],
            ),
            alteration(&[("user", None)], &[("bogus", Some(1.0))]),
            alteration(
                &[("user", None)],
                &[("controller_mutation_rate", Some(1.0))],
            ),
            alteration(&[("user", None)], &[("producer_byte_rate", Some(-5.0))]),
            alteration(
                &[("user", None)],
                &[
                    ("producer_byte_rate", Some(1.0)),
                    ("producer_byte_rate", None),
                ],
            ),
        ] {
            let e = quota_records(&bad).unwrap_err();
            assert_eq!(e.code(), 42, "{bad:?}: {e}");
        }
    }
}
