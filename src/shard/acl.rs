//! The ACLs this shard authorizes with: the metadata image's `AccessControlEntryRecord`s as
//! `auth::acl` bindings, replaced whole by the controller's push ([`AclsChanged`] on one node,
//! `quorum::publish` in a cluster), so a new ACL reaches every open connection as soon as the
//! shard has applied it. The decisions themselves are `auth::acl`'s (pure); this is the
//! shell that keeps its inputs.
//!
//! [`AclsChanged`]: crate::shard::calls::AclsChanged

use std::collections::BTreeMap;
use std::rc::Rc;

use uuid::Uuid;

use crate::auth::acl::{Binding, Operation, PatternType, Permission, Policy, ResourceType};
use crate::shard::Shard;
use crate::storage::metadata::record::AccessControlEntryRecord;

/// Every ACL, as bindings (for decisions) and with their ids (for DeleteAcls).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclTable {
    pub ids: Vec<Uuid>,
    pub bindings: Vec<Binding>,
}

impl AclTable {
    /// The table of the image's ACLs; a record that names an id this build does not know is
    /// left out with an ERROR (it cannot be authorized on; the controller never writes one).
    pub fn from_records(acls: &BTreeMap<Uuid, AccessControlEntryRecord>) -> AclTable {
        let mut out = AclTable::default();
        for (id, r) in acls {
            match binding_of(r) {
                Some(b) => {
                    out.ids.push(*id);
                    out.bindings.push(b);
                }
                None => tracing::error!(acl = ?r, "an ACL record with unknown ids is ignored"),
            }
        }
        out
    }
}

/// The binding a record holds, None where one of its ids is unknown.
pub fn binding_of(r: &AccessControlEntryRecord) -> Option<Binding> {
    Some(Binding {
        resource_type: ResourceType::from_id(r.resource_type)?,
        name: r.resource_name.clone(),
        pattern: PatternType::from_id(r.pattern_type)?,
        principal: r.principal.clone(),
        host: r.host.clone(),
        operation: Operation::from_id(r.operation)?,
        permission: Permission::from_id(r.permission_type)?,
    })
}

/// The record of a binding, under `id`.
pub fn record_of(id: Uuid, b: &Binding) -> AccessControlEntryRecord {
    AccessControlEntryRecord {
        id,
        resource_type: b.resource_type.id(),
        resource_name: b.name.clone(),
        pattern_type: b.pattern.id(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.id(),
        permission_type: b.permission.id(),
    }
}

/// The authorizer's policy under `config`: None without `--authorizer acl`.
pub fn policy_of(config: &crate::config::Config) -> Option<Policy> {
    config.authorizer_acl.then(|| Policy {
        super_users: config.super_users.iter().cloned().collect(),
        allow_everyone_if_no_acl_found: config.allow_everyone_if_no_acl_found,
    })
}

impl Shard {
    /// Replaces this shard's ACLs (the controller's push).
    pub fn set_acls(&self, table: AclTable) {
        tracing::debug!(shard = self.id, acls = table.bindings.len(), "ACLs changed");
        *self.acls.borrow_mut() = Rc::new(table);
    }

    /// This shard's ACLs.
    pub fn acls(&self) -> Rc<AclTable> {
        self.acls.borrow().clone()
    }

    /// The authorizer's policy; None when the broker authorizes nothing (`--authorizer none`).
    pub fn acl_policy(&self) -> Option<&Policy> {
        self.acl_policy.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_bindings_convert_both_ways() {
        let b = Binding {
            resource_type: ResourceType::Topic,
            name: "orders-".into(),
            pattern: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        let r = record_of(Uuid::from_u128(7), &b);
        assert_eq!(binding_of(&r), Some(b.clone()));
        let mut map = BTreeMap::new();
        map.insert(r.id, r.clone());
        let bad = AccessControlEntryRecord {
            id: Uuid::from_u128(8),
            operation: 99,
            ..r
        };
        map.insert(bad.id, bad);
        let t = AclTable::from_records(&map);
        assert_eq!(t.ids, vec![Uuid::from_u128(7)]);
        assert_eq!(t.bindings, vec![b]);
    }
}
