//! Kafka's ACL model and its authorizer, pure: bindings (resource pattern, principal, host,
//! operation, allow or deny), the filters of DescribeAcls/DeleteAcls, and the decision for one
//! request, as Kafka's `StandardAuthorizer` makes it:
//!
//! - a super user may do everything;
//! - a DENY binding that matches (resource pattern, principal or `User:*`, host or `*`, the
//!   operation or ALL) wins over any ALLOW;
//! - else an ALLOW binding that matches allows, where Describe is also allowed by Read,
//!   Write, Delete or Alter, and DescribeConfigs by AlterConfigs;
//! - else, when no binding at all names the resource, `allow_everyone_if_no_acl_found`
//!   decides (false by default).
//!
//! A resource pattern matches a resource when it is LITERAL with the same name or the
//! wildcard `*`, or PREFIXED with a prefix of its name.

use std::collections::BTreeSet;

/// Resource types (Kafka's ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    pub fn id(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    pub fn from_id(id: i8) -> Option<ResourceType> {
        Some(match id {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            _ => return None,
        })
    }
}

/// Pattern types (Kafka's ids): how a binding's resource name matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn id(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_id(id: i8) -> Option<PatternType> {
        match id {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

/// Operations (Kafka's ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    pub fn id(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    pub fn from_id(id: i8) -> Option<Operation> {
        Some(match id {
            2 => Operation::All,
            3 => Operation::Read,
            4 => Operation::Write,
            5 => Operation::Create,
            6 => Operation::Delete,
            7 => Operation::Alter,
            8 => Operation::Describe,
            9 => Operation::ClusterAction,
            10 => Operation::DescribeConfigs,
            11 => Operation::AlterConfigs,
            12 => Operation::IdempotentWrite,
            _ => return None,
        })
    }

    /// Kafka's name of the operation (`IdempotentWrite`), as `kafka-acls` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "All",
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Create => "Create",
            Operation::Delete => "Delete",
            Operation::Alter => "Alter",
            Operation::Describe => "Describe",
            Operation::ClusterAction => "ClusterAction",
            Operation::DescribeConfigs => "DescribeConfigs",
            Operation::AlterConfigs => "AlterConfigs",
            Operation::IdempotentWrite => "IdempotentWrite",
        }
    }

    /// The operation of a name, in any case, `-` and `_` ignored (`idempotent-write`).
    pub fn parse(name: &str) -> Option<Operation> {
        let want: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        (2..=12)
            .filter_map(Operation::from_id)
            .find(|op| op.name().to_ascii_lowercase() == want)
    }

    /// The operations whose ALLOW also allows `self` (Kafka's implied operations).
    fn allowed_by(self) -> &'static [Operation] {
        match self {
            Operation::Describe => &[
                Operation::Describe,
                Operation::Read,
                Operation::Write,
                Operation::Delete,
                Operation::Alter,
            ],
            Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
            Operation::Read => &[Operation::Read],
            Operation::Write => &[Operation::Write],
            Operation::Create => &[Operation::Create],
            Operation::Delete => &[Operation::Delete],
            Operation::Alter => &[Operation::Alter],
            Operation::ClusterAction => &[Operation::ClusterAction],
            Operation::AlterConfigs => &[Operation::AlterConfigs],
            Operation::IdempotentWrite => &[Operation::IdempotentWrite],
            Operation::All => &[Operation::All],
        }
    }
}

/// ALLOW or DENY (Kafka's ids 3 and 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn id(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_id(id: i8) -> Option<Permission> {
        match id {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:alice`, or `User:*` for every principal.
    pub principal: String,
    /// An IP address, or `*` for every host.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Binding {
    fn names(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == "*",
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == host || self.host == "*")
    }
}

/// The operations that apply to a resource type (ALL aside), as Kafka's `AclEntry`
/// supportedOperations; also the bits of Kafka's authorized-operations fields.
pub fn operations_of(resource_type: ResourceType) -> &'static [Operation] {
    use Operation::*;
    match resource_type {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Delete, Describe],
        ResourceType::Cluster => &[
            Create,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ],
        ResourceType::TransactionalId => &[Write, Describe],
    }
}

/// Checks a binding before it is stored, as CreateAcls does (the message says what is wrong).
pub fn validate(b: &Binding) -> Result<(), String> {
    if b.name.is_empty() {
        return Err("the resource name is empty".into());
    }
    if b.resource_type == ResourceType::Cluster
        && (b.name != "kafka-cluster" || b.pattern != PatternType::Literal)
    {
        return Err("the cluster resource is the literal name kafka-cluster".into());
    }
    if b.pattern == PatternType::Prefixed && b.name == "*" {
        return Err("'*' is a literal wildcard, not a prefix".into());
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => return Err(format!("principal '{}' is not TYPE:NAME", b.principal)),
    }
    if b.host != "*" && b.host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("host '{}' is not an IP address or *", b.host));
    }
    let valid =
        b.operation == Operation::All || operations_of(b.resource_type).contains(&b.operation);
    if !valid {
        return Err(format!(
            "operation {:?} does not apply to a {:?} resource",
            b.operation, b.resource_type
        ));
    }
    Ok(())
}

/// A DescribeAcls/DeleteAcls filter: None is ANY; `MatchName` finds every binding that
/// would apply to a resource of that name (literal, wildcard, or a prefix of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    /// None: ANY; Some(None): MATCH; Some(Some(p)): that pattern type.
    pub pattern: Option<Option<PatternType>>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl Filter {
    pub fn matches(&self, b: &Binding) -> bool {
        let name_ok = match (&self.pattern, &self.name) {
            (_, None) => self
                .pattern
                .is_none_or(|p| p.is_none_or(|p| p == b.pattern)),
            (Some(None), Some(n)) => b.names(b.resource_type, n),
            (Some(Some(p)), Some(n)) => b.pattern == *p && b.name == *n,
            (None, Some(n)) => b.name == *n,
        };
        self.resource_type.is_none_or(|t| t == b.resource_type)
            && name_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }

    /// The filter's enum fields as Kafka's ids ([`WireIds::filter`] reads them back).
    pub fn wire_ids(&self) -> WireIds {
        WireIds {
            resource_type: self.resource_type.map_or(ANY_ID, ResourceType::id),
            pattern: match self.pattern {
                None => ANY_ID,
                Some(None) => MATCH_ID,
                Some(Some(p)) => p.id(),
            },
            operation: self.operation.map_or(ANY_ID, Operation::id),
            permission: self.permission.map_or(ANY_ID, Permission::id),
        }
    }
}

/// Kafka's ANY: in a DescribeAcls/DeleteAcls filter, an enum field open to every value.
pub const ANY_ID: i8 = 1;
/// Kafka's MATCH pattern type: a filter finding every binding that applies to its name.
pub const MATCH_ID: i8 = 2;

/// The enum fields of a binding or a filter as Kafka's ids, as the ACL APIs carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireIds {
    pub resource_type: i8,
    pub pattern: i8,
    pub operation: i8,
    pub permission: i8,
}

impl WireIds {
    /// The binding of these ids; Err names the first id this build does not know.
    pub fn binding(self, name: &str, principal: &str, host: &str) -> Result<Binding, String> {
        let bad = |what: &str, id: i8| format!("invalid {what} {id}");
        Ok(Binding {
            resource_type: ResourceType::from_id(self.resource_type)
                .ok_or_else(|| bad("resource type", self.resource_type))?,
            name: name.to_string(),
            pattern: PatternType::from_id(self.pattern)
                .ok_or_else(|| bad("pattern type", self.pattern))?,
            principal: principal.to_string(),
            host: host.to_string(),
            operation: Operation::from_id(self.operation)
                .ok_or_else(|| bad("operation", self.operation))?,
            permission: Permission::from_id(self.permission)
                .ok_or_else(|| bad("permission type", self.permission))?,
        })
    }

    /// The filter of these ids ([`ANY_ID`] leaves a field open); Err names the first id this
    /// build does not know, UNKNOWN (0) included.
    pub fn filter(
        self,
        name: Option<&str>,
        principal: Option<&str>,
        host: Option<&str>,
    ) -> Result<Filter, String> {
        fn open<T>(id: i8, of: fn(i8) -> Option<T>, what: &str) -> Result<Option<T>, String> {
            match id {
                ANY_ID => Ok(None),
                id => of(id)
                    .map(Some)
                    .ok_or_else(|| format!("invalid {what} {id}")),
            }
        }
        Ok(Filter {
            resource_type: open(self.resource_type, ResourceType::from_id, "resource type")?,
            name: name.map(str::to_string),
            pattern: match self.pattern {
                MATCH_ID => Some(None),
                id => open(id, PatternType::from_id, "pattern type")?.map(Some),
            },
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: open(self.operation, Operation::from_id, "operation")?,
            permission: open(self.permission, Permission::from_id, "permission type")?,
        })
    }
}

/// The authorizer's settings.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Principals allowed everything (`--super-users User:a;User:b`).
    pub super_users: BTreeSet<String>,
    /// Whether a resource that no binding names is open to all (Kafka's
    /// `allow.everyone.if.no.acl.found`, default false).
    pub allow_everyone_if_no_acl_found: bool,
}

/// What a decision was, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    SuperUser,
    Denied,
    Allowed,
    NoAclFound(bool),
    NotAllowed,
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(
            self,
            Decision::SuperUser | Decision::Allowed | Decision::NoAclFound(true)
        )
    }
}

/// Whether `principal` connected from `host` may do `operation` on the resource.
pub fn authorize(
    policy: &Policy,
    acls: &[Binding],
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
) -> Decision {
    if policy.super_users.contains(principal) {
        return Decision::SuperUser;
    }
    let mut named = false;
    let mut allowed = false;
    for b in acls.iter().filter(|b| b.names(resource_type, name)) {
        named = true;
        if !b.applies_to(principal, host) {
            continue;
        }
        let op_matches =
            |ops: &[Operation]| b.operation == Operation::All || ops.contains(&b.operation);
        match b.permission {
            Permission::Deny if op_matches(&[operation]) => return Decision::Denied,
            Permission::Allow if op_matches(operation.allowed_by()) => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allowed
    } else if !named {
        Decision::NoAclFound(policy.allow_everyone_if_no_acl_found)
    } else {
        Decision::NotAllowed
    }
}

/// Whether `principal` may do `operation` on some resource of `resource_type` (KIP-679:
/// an idempotent producer's InitProducerId needs Write on any topic): an ALLOW binding for
/// it exists, and no literal-wildcard DENY takes every such resource away.
pub fn authorize_any(
    policy: &Policy,
    acls: &[Binding],
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
) -> bool {
    if policy.super_users.contains(principal) {
        return true;
    }
    let relevant = acls.iter().filter(|b| {
        b.resource_type == resource_type
            && b.applies_to(principal, host)
            && (b.operation == Operation::All || b.operation == operation)
    });
    let mut allowed = false;
    for b in relevant {
        match b.permission {
            Permission::Deny if b.pattern == PatternType::Literal && b.name == "*" => return false,
            Permission::Allow => allowed = true,
            Permission::Deny => {}
        }
    }
    allowed
        || (policy.allow_everyone_if_no_acl_found
            && !acls.iter().any(|b| b.resource_type == resource_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> Binding {
        Binding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn the_issues_cases() {
        let acls = vec![
            b(Topic, "orders-", Prefixed, "User:alice", Write, Allow),
            b(Group, "billing", Literal, "User:bob", Describe, Allow),
            b(Topic, "payments", Literal, "User:carol", Read, Allow),
            b(Topic, "payments", Literal, "User:carol", Read, Deny),
        ];
        let p = Policy::default();
        let ok = |who: &str, op, rt, name: &str| {
            authorize(&p, &acls, who, "10.0.0.1", op, rt, name).allowed()
        };
        // A prefixed allow: orders-eu yes, payments no.
        assert!(ok("User:alice", Write, Topic, "orders-eu"));
        assert!(!ok("User:alice", Write, Topic, "payments"));
        // Write implies Describe, not Read.
        assert!(ok("User:alice", Describe, Topic, "orders-eu"));
        assert!(!ok("User:alice", Read, Topic, "orders-eu"));
        // Describe on a group is not Read on it.
        assert!(!ok("User:bob", Read, Group, "billing"));
        // A deny beats an allow.
        assert_eq!(
            authorize(&p, &acls, "User:carol", "h", Read, Topic, "payments"),
            Decision::Denied
        );
        // No ACL names the topic: closed unless the policy opens it.
        assert!(!ok("User:dave", Read, Topic, "other"));
        let open = Policy {
            allow_everyone_if_no_acl_found: true,
            ..Default::default()
        };
        assert!(authorize(&open, &acls, "User:dave", "h", Read, Topic, "other").allowed());
        assert!(!authorize(&open, &acls, "User:dave", "h", Read, Topic, "payments").allowed());
        // Super users pass everything.
        let su = Policy {
            super_users: ["User:admin".to_string()].into(),
            ..Default::default()
        };
        assert!(authorize(&su, &acls, "User:admin", "h", Read, Topic, "payments").allowed());
    }

    #[test]
    fn wildcards_all_hosts_and_configs() {
        let mut acls = vec![b(Topic, "*", Literal, "User:*", All, Allow)];
        acls.push(Binding {
            host: "10.0.0.9".into(),
            ..b(Topic, "secret", Literal, "User:eve", All, Deny)
        });
        acls.push(b(Topic, "cfg", Literal, "User:ops", AlterConfigs, Allow));
        let p = Policy::default();
        let d = |who: &str, host: &str, op, name: &str| {
            authorize(&p, &acls, who, host, op, Topic, name).allowed()
        };
        assert!(d("User:anyone", "1.1.1.1", Write, "x"));
        assert!(!d("User:eve", "10.0.0.9", Read, "secret"));
        assert!(d("User:eve", "10.0.0.8", Read, "secret"));
        // AlterConfigs implies DescribeConfigs (and the wildcard All allows anyway).
        let only = vec![b(Topic, "cfg", Literal, "User:ops", AlterConfigs, Allow)];
        assert!(authorize(&p, &only, "User:ops", "h", DescribeConfigs, Topic, "cfg").allowed());
        assert!(!authorize(&p, &only, "User:ops", "h", Describe, Topic, "cfg").allowed());
        // KIP-679: Write on any topic lets an idempotent producer init.
        let w = vec![b(Topic, "t-", Prefixed, "User:p", Write, Allow)];
        assert!(authorize_any(&p, &w, "User:p", "h", Write, Topic));
        assert!(!authorize_any(&p, &w, "User:q", "h", Write, Topic));
        let mut wd = w.clone();
        wd.push(b(Topic, "*", Literal, "User:p", Write, Deny));
        assert!(!authorize_any(&p, &wd, "User:p", "h", Write, Topic));
    }

    #[test]
    fn operation_names_parse_back() {
        for id in 2..=12 {
            let op = Operation::from_id(id).unwrap();
            assert_eq!(Operation::parse(op.name()), Some(op));
        }
        assert_eq!(Operation::parse("idempotent-write"), Some(IdempotentWrite));
        assert_eq!(Operation::parse("READ"), Some(Read));
        assert_eq!(Operation::parse("Any"), None);
    }

    #[test]
    fn filters_and_validation() {
        let acls = [
            b(Topic, "orders-", Prefixed, "User:alice", Write, Allow),
            b(Topic, "orders-eu", Literal, "User:bob", Read, Allow),
            b(Topic, "*", Literal, "User:carol", Describe, Allow),
            b(Group, "g", Literal, "User:bob", Read, Allow),
        ];
        let count = |f: Filter| acls.iter().filter(|x| f.matches(x)).count();
        assert_eq!(count(Filter::default()), 4);
        assert_eq!(
            count(Filter {
                resource_type: Some(Topic),
                name: Some("orders-eu".into()),
                pattern: Some(None),
                ..Default::default()
            }),
            3
        );
        assert_eq!(
            count(Filter {
                name: Some("orders-".into()),
                pattern: Some(Some(Prefixed)),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                principal: Some("User:bob".into()),
                ..Default::default()
            }),
            2
        );
        assert!(validate(&acls[0]).is_ok());
        assert!(
            validate(&b(
                Cluster,
                "kafka-cluster",
                Literal,
                "User:a",
                ClusterAction,
                Allow
            ))
            .is_ok()
        );
        assert!(
            validate(&b(
                Cluster,
                "other",
                Literal,
                "User:a",
                ClusterAction,
                Allow
            ))
            .is_err()
        );
        assert!(validate(&b(Group, "g", Literal, "User:a", Write, Allow)).is_err());
        assert!(validate(&b(Topic, "t", Literal, "alice", Read, Allow)).is_err());
        assert!(
            validate(&Binding {
                host: "not-an-ip".into(),
                ..acls[0].clone()
            })
            .is_err()
        );
    }

    #[test]
    fn filters_and_bindings_round_trip_through_wire_ids() {
        let filters = [
            Filter::default(),
            Filter {
                resource_type: Some(ResourceType::Topic),
                name: Some("orders".into()),
                pattern: Some(None),
                principal: Some("User:alice".into()),
                host: Some("*".into()),
                operation: Some(Operation::Write),
                permission: Some(Permission::Deny),
            },
            Filter {
                resource_type: Some(ResourceType::Group),
                pattern: Some(Some(PatternType::Prefixed)),
                ..Filter::default()
            },
        ];
        for f in filters {
            let back = f
                .wire_ids()
                .filter(f.name.as_deref(), f.principal.as_deref(), f.host.as_deref())
                .unwrap();
            assert_eq!(back, f);
        }
        let ids = WireIds {
            resource_type: ResourceType::TransactionalId.id(),
            pattern: PatternType::Literal.id(),
            operation: Operation::Describe.id(),
            permission: Permission::Allow.id(),
        };
        let b = ids.binding("tx-1", "User:bob", "10.0.0.1").unwrap();
        assert_eq!(
            (b.resource_type, b.pattern, b.operation, b.permission),
            (
                ResourceType::TransactionalId,
                PatternType::Literal,
                Operation::Describe,
                Permission::Allow
            )
        );
        // ANY and MATCH are filter ids, never a binding's.
        let open = WireIds {
            pattern: MATCH_ID,
            ..ids
        };
        assert_eq!(
            open.binding("t", "User:a", "*").unwrap_err(),
            "invalid pattern type 2"
        );
        assert_eq!(
            WireIds {
                operation: ANY_ID,
                ..ids
            }
            .binding("t", "User:a", "*")
            .unwrap_err(),
            "invalid operation 1"
        );
    }
}
