//! CreateAcls and DeleteAcls on the controller: each new ACL checked (`auth::acl::validate`)
//! and written as an `AccessControlEntryRecord`, each removal as a
//! `RemoveAccessControlEntryRecord`; on one node the whole new table is pushed to every shard,
//! in a cluster every node pushes it when it applies the entry (see `quorum::publish`).

use std::rc::Rc;
use std::sync::Arc;

use uuid::Uuid;

use crate::cluster::wire::{self, Request};
use crate::error::KafkaError;
use crate::shard::Shard;
use crate::shard::acl::{AclTable, binding_of};
use crate::shard::calls::AclsChanged;
use crate::storage::metadata::record::{
    AccessControlEntryRecord, MetadataRecord, RemoveAccessControlEntryRecord,
};

use super::Controller;

impl Controller {
    /// One answer per creation, then one per removal. A creation that is invalid is
    /// INVALID_REQUEST (the message says why); one identical to an existing ACL changes
    /// nothing, as Kafka; a removal of an id that is gone already succeeds.
    pub async fn alter_acls(
        &self,
        shard: &Rc<Shard>,
        create: Vec<AccessControlEntryRecord>,
        remove: Vec<Uuid>,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        let n = create.len() + remove.len();
        if let Some(answers) = self
            .forward_change(q.as_deref(), n, || Request::AlterAcls {
                context: context.clone(),
                create: create.clone(),
                remove: remove.clone(),
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(n);
        let mut changed = false;
        for r in create {
            let record = {
                let image = self.image.borrow();
                acl_record(r, image.acls().values())
            };
            out.push(match record {
                Ok(None) => Ok(()),
                Ok(Some(record)) => {
                    let logged = format!("{record:?}");
                    let result = self
                        .persist(vec![MetadataRecord::AccessControlEntry(record)])
                        .await;
                    if result.is_ok() {
                        changed = true;
                        tracing::info!(acl = %logged, principal = %context.principal, client = %context.client_addr, via_broker = context.via_broker, "ACL created");
                    }
                    result
                }
                Err(e) => Err(e),
            });
        }
        for id in remove {
            if !self.image.borrow().acls().contains_key(&id) {
                out.push(Ok(()));
                continue;
            }
            let result = self
                .persist(vec![MetadataRecord::RemoveAccessControlEntry(
                    RemoveAccessControlEntryRecord { id },
                )])
                .await;
            if result.is_ok() {
                changed = true;
                tracing::info!(acl = %id, principal = %context.principal, client = %context.client_addr, via_broker = context.via_broker, "ACL deleted");
            }
            out.push(result);
        }
        if q.is_none() && changed {
            let table = Arc::new(AclTable::from_records(self.image.borrow().acls()));
            if let Err(e) = self.broadcast(shard, || AclsChanged(table.clone())).await {
                return out.into_iter().map(|r| r.and(Err(e.clone()))).collect();
            }
        }
        out
    }
}

/// The record to write for a new ACL: None when an identical ACL exists, Err when it is not
/// valid (unknown ids, or what `auth::acl::validate` refuses).
fn acl_record<'a>(
    r: AccessControlEntryRecord,
    existing: impl Iterator<Item = &'a AccessControlEntryRecord>,
) -> Result<Option<AccessControlEntryRecord>, KafkaError> {
    let binding = binding_of(&r)
        .ok_or_else(|| KafkaError::InvalidRequest(format!("an ACL with unknown ids: {r:?}")))?;
    crate::auth::acl::validate(&binding).map_err(KafkaError::InvalidRequest)?;
    if existing.filter_map(binding_of).any(|b| b == binding) {
        return Ok(None);
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u128, name: &str, op: i8) -> AccessControlEntryRecord {
        AccessControlEntryRecord {
            id: Uuid::from_u128(n),
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission_type: 3,
        }
    }

    #[test]
    fn new_acls_are_checked_and_duplicates_skipped() {
        let existing = [rec(1, "orders", 4)];
        assert_eq!(
            acl_record(rec(2, "payments", 4), existing.iter()).unwrap(),
            Some(rec(2, "payments", 4))
        );
        // The same binding under another id: nothing to write.
        assert_eq!(
            acl_record(rec(3, "orders", 4), existing.iter()).unwrap(),
            None
        );
        // Unknown operation id, and an operation that does not apply to a topic.
        for bad in [rec(4, "x", 42), rec(5, "x", 9), rec(6, "", 4)] {
            let e = acl_record(bad, existing.iter()).unwrap_err();
            assert!(matches!(e, KafkaError::InvalidRequest(_)), "{e:?}");
        }
    }
}
