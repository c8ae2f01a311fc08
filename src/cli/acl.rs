//! `spate acl add|list|remove`: ACLs through CreateAcls, DescribeAcls and DeleteAcls, with
//! `kafka-acls`' flags (`--allow-principal`, `--deny-principal`, `--operation`, `--topic`,
//! `--group`, `--cluster`, `--transactional-id`, `--resource-pattern-type`, `--host`).

use crate::auth::acl::{Binding, Filter, Operation, PatternType, Permission, ResourceType};

use super::api;
use super::error::{Error, Result};
use super::output::{Table, print_json, write_stdout};
use super::{AclCommand, AclEntries, AclResources, Common};

pub fn run(common: &Common, cmd: AclCommand) -> Result<()> {
    match cmd {
        AclCommand::Add { resources, entries } => add(common, &resources, &entries),
        AclCommand::List {
            resources,
            principal,
        } => list(common, &resources, principal),
        AclCommand::Remove { resources, entries } => remove(common, &resources, &entries),
    }
}

/// The named resources: (type, name).
fn resources_of(r: &AclResources) -> Vec<(ResourceType, String)> {
    let mut out: Vec<(ResourceType, String)> = Vec::new();
    out.extend(r.topics.iter().map(|t| (ResourceType::Topic, t.clone())));
    out.extend(r.groups.iter().map(|g| (ResourceType::Group, g.clone())));
    out.extend(
        r.transactional_ids
            .iter()
            .map(|t| (ResourceType::TransactionalId, t.clone())),
    );
    if r.cluster {
        out.push((ResourceType::Cluster, "kafka-cluster".to_string()));
    }
    out
}

/// `--resource-pattern-type`: None is ANY, Some(None) MATCH (list and remove only).
fn pattern_filter(r: &AclResources) -> Result<Option<Option<PatternType>>> {
    match r
        .resource_pattern_type
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => Ok(None),
        Some(p) => match p.as_str() {
            "any" => Ok(None),
            "match" => Ok(Some(None)),
            "literal" => Ok(Some(Some(PatternType::Literal))),
            "prefixed" => Ok(Some(Some(PatternType::Prefixed))),
            other => Err(Error::other(format!(
                "--resource-pattern-type '{other}' is not any, match, literal or prefixed"
            ))),
        },
    }
}

fn operations_of(names: &[String]) -> Result<Vec<Operation>> {
    names
        .iter()
        .map(|n| {
            Operation::parse(n).ok_or_else(|| {
                Error::other(format!(
                    "--operation '{n}' is not one of Read, Write, Create, Delete, Alter, \
                     Describe, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, All"
                ))
            })
        })
        .collect()
}

/// (principal, permission) pairs of `--allow-principal` and `--deny-principal`.
fn principals_of(e: &AclEntries) -> Vec<(String, Permission)> {
    e.allow
        .iter()
        .map(|p| (p.clone(), Permission::Allow))
        .chain(e.deny.iter().map(|p| (p.clone(), Permission::Deny)))
        .collect()
}

/// The bindings `spate acl add` creates: every resource x principal x operation x host.
fn bindings(resources: &AclResources, entries: &AclEntries) -> Result<Vec<Binding>> {
    let named = resources_of(resources);
    if named.is_empty() {
        return Err(Error::other(
            "name a resource: --topic, --group, --transactional-id or --cluster",
        ));
    }
    let pattern = match pattern_filter(resources)? {
        None if resources.resource_pattern_type.is_none() => PatternType::Literal,
        Some(Some(p)) => p,
        _ => {
            return Err(Error::other(
                "--resource-pattern-type of a new ACL is literal or prefixed",
            ));
        }
    };
    let principals = principals_of(entries);
    if principals.is_empty() {
        return Err(Error::other(
            "name a principal: --allow-principal or --deny-principal (User:alice)",
        ));
    }
    let ops = operations_of(&entries.operations)?;
    if ops.is_empty() {
        return Err(Error::other(
            "name an operation: --operation Read (repeatable)",
        ));
    }
    let hosts = if entries.hosts.is_empty() {
        vec!["*".to_string()]
    } else {
        entries.hosts.clone()
    };
    let mut out = Vec::new();
    for (rt, name) in &named {
        for (principal, permission) in &principals {
            for op in &ops {
                for host in &hosts {
                    let b = Binding {
                        resource_type: *rt,
                        name: name.clone(),
                        pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: *op,
                        permission: *permission,
                    };
                    crate::auth::acl::validate(&b).map_err(Error::other)?;
                    out.push(b);
                }
            }
        }
    }
    Ok(out)
}

/// The filters `spate acl list/remove` send: one per named resource (or any resource),
/// principal, operation and host given (each open where none is given).
fn filters(
    resources: &AclResources,
    principals: &[(Option<String>, Option<Permission>)],
    entries: &AclEntries,
) -> Result<Vec<Filter>> {
    let pattern = pattern_filter(resources)?;
    let named: Vec<(Option<ResourceType>, Option<String>)> = match resources_of(resources) {
        r if r.is_empty() => vec![(None, None)],
        r => r.into_iter().map(|(t, n)| (Some(t), Some(n))).collect(),
    };
    let ops: Vec<Option<Operation>> = match operations_of(&entries.operations)? {
        o if o.is_empty() => vec![None],
        o => o.into_iter().map(Some).collect(),
    };
    let hosts: Vec<Option<String>> = match &entries.hosts {
        h if h.is_empty() => vec![None],
        h => h.iter().cloned().map(Some).collect(),
    };
    let mut out = Vec::new();
    for (rt, name) in &named {
        for (principal, permission) in principals {
            for op in &ops {
                for host in &hosts {
                    out.push(Filter {
                        resource_type: *rt,
                        name: name.clone(),
                        pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: *op,
                        permission: *permission,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn print(common: &Common, acls: &[Binding], verb: &str) -> Result<()> {
    let kind = |t: ResourceType| match t {
        ResourceType::Topic => "TOPIC",
        ResourceType::Group => "GROUP",
        ResourceType::Cluster => "CLUSTER",
        ResourceType::TransactionalId => "TRANSACTIONAL_ID",
    };
    let pattern = |p: PatternType| match p {
        PatternType::Literal => "LITERAL",
        PatternType::Prefixed => "PREFIXED",
    };
    let permission = |p: Permission| match p {
        Permission::Allow => "ALLOW",
        Permission::Deny => "DENY",
    };
    if common.json {
        let out: Vec<serde_json::Value> = acls
            .iter()
            .map(|b| {
                serde_json::json!({
                    "resource_type": kind(b.resource_type),
                    "name": b.name,
                    "pattern_type": pattern(b.pattern),
                    "principal": b.principal,
                    "host": b.host,
                    "operation": b.operation.name(),
                    "permission": permission(b.permission),
                })
            })
            .collect();
        return print_json(&out);
    }
    let mut t = Table::new(&[
        "RESOURCE_TYPE",
        "NAME",
        "PATTERN",
        "PRINCIPAL",
        "HOST",
        "OPERATION",
        "PERMISSION",
    ]);
    for b in acls {
        t.row(vec![
            kind(b.resource_type).to_string(),
            b.name.clone(),
            pattern(b.pattern).to_string(),
            b.principal.clone(),
            b.host.clone(),
            b.operation.name().to_string(),
            permission(b.permission).to_string(),
        ]);
    }
    let mut text = t.render();
    if !verb.is_empty() {
        text = format!("{verb} {} ACL(s).\n{text}", acls.len());
    }
    write_stdout(&text)
}

fn add(common: &Common, resources: &AclResources, entries: &AclEntries) -> Result<()> {
    let acls = bindings(resources, entries)?;
    let mut client = common.client()?;
    api::create_acls(&mut client, &acls)?;
    print(common, &acls, "Added")
}

fn list(common: &Common, resources: &AclResources, principal: Option<String>) -> Result<()> {
    let filters = filters(resources, &[(principal, None)], &AclEntries::default())?;
    let mut client = common.client()?;
    let mut acls = Vec::new();
    for f in &filters {
        acls.extend(api::describe_acls(&mut client, f)?);
    }
    acls.sort();
    acls.dedup();
    print(common, &acls, "")
}

fn remove(common: &Common, resources: &AclResources, entries: &AclEntries) -> Result<()> {
    let principals: Vec<(Option<String>, Option<Permission>)> = match principals_of(entries) {
        p if p.is_empty() => vec![(None, None)],
        p => p
            .into_iter()
            .map(|(p, perm)| (Some(p), Some(perm)))
            .collect(),
    };
    let filters = filters(resources, &principals, entries)?;
    let mut client = common.client()?;
    let removed = api::delete_acls(&mut client, &filters)?;
    print(common, &removed, "Removed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_makes_every_combination_and_checks_it() {
        let resources = AclResources {
            topics: vec!["orders-".into()],
            groups: vec!["billing".into()],
            resource_pattern_type: Some("prefixed".into()),
            ..Default::default()
        };
        let entries = AclEntries {
            allow: vec!["User:alice".into()],
            deny: vec!["User:eve".into()],
            operations: vec!["read".into()],
            hosts: vec![],
        };
        let b = bindings(&resources, &entries).unwrap();
        assert_eq!(b.len(), 4);
        assert!(
            b.iter()
                .all(|b| b.pattern == PatternType::Prefixed && b.host == "*")
        );
        assert_eq!(
            b.iter()
                .filter(|b| b.permission == Permission::Deny)
                .count(),
            2
        );
        // Write does not apply to a group: refused here, before the broker.
        let write = AclEntries {
            operations: vec!["Write".into()],
            ..entries.clone()
        };
        assert!(bindings(&resources, &write).is_err());
        assert!(bindings(&AclResources::default(), &entries).is_err());
        let match_pattern = AclResources {
            resource_pattern_type: Some("match".into()),
            ..resources.clone()
        };
        assert!(bindings(&match_pattern, &entries).is_err());
        // Remove with only a resource: one open filter per resource.
        let f = filters(&resources, &[(None, None)], &AclEntries::default()).unwrap();
        assert_eq!(f.len(), 2);
        assert!(
            f.iter()
                .all(|f| f.principal.is_none() && f.operation.is_none())
        );
    }
}
