//! CreateAcls (API 30), DescribeAcls (API 29) and DeleteAcls (API 31), Kafka's ACL APIs: the
//! ACLs are metadata records written by the controller (forwarded to the active one in a
//! cluster), so every broker authorizes with them once it has applied them. Without an
//! authorizer each answers SECURITY_DISABLED, as Kafka; with one, CreateAcls and DeleteAcls
//! need Alter on the cluster and DescribeAcls Describe on it (CLUSTER_AUTHORIZATION_FAILED).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{CLUSTER, Operation, RequestContext, ResourceType, str_bytes};
use crate::auth::acl::{Binding, Filter, PatternType, Permission};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::AlterAcls;

/// Kafka's ANY (1) of every filter enum, and MATCH (2) of the pattern type.
const ANY: i8 = 1;
const MATCH: i8 = 2;

/// The binding a creation names, or why it is not one (INVALID_REQUEST, as Kafka).
fn creation_binding(
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> Result<Binding, KafkaError> {
    let bad = |what: &str, id: i8| KafkaError::InvalidRequest(format!("invalid {what} {id}"));
    let b = Binding {
        resource_type: ResourceType::from_id(c.resource_type)
            .ok_or_else(|| bad("resource type", c.resource_type))?,
        name: c.resource_name.to_string(),
        pattern: PatternType::from_id(c.resource_pattern_type)
            .ok_or_else(|| bad("pattern type", c.resource_pattern_type))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_id(c.operation).ok_or_else(|| bad("operation", c.operation))?,
        permission: Permission::from_id(c.permission_type)
            .ok_or_else(|| bad("permission type", c.permission_type))?,
    };
    crate::auth::acl::validate(&b).map_err(KafkaError::InvalidRequest)?;
    Ok(b)
}

/// A DescribeAcls/DeleteAcls filter from its wire fields; UNKNOWN (0) or an id this broker
/// does not know is INVALID_REQUEST.
#[allow(clippy::too_many_arguments)]
fn filter_of(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<Filter, KafkaError> {
    let bad = |what: &str, id: i8| KafkaError::InvalidRequest(format!("invalid {what} {id}"));
    Ok(Filter {
        resource_type: match resource_type {
            ANY => None,
            id => Some(ResourceType::from_id(id).ok_or_else(|| bad("resource type", id))?),
        },
        name: name.map(|n| n.to_string()),
        pattern: match pattern {
            ANY => None,
            MATCH => Some(None),
            id => Some(Some(
                PatternType::from_id(id).ok_or_else(|| bad("pattern type", id))?,
            )),
        },
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: match operation {
            ANY => None,
            id => Some(Operation::from_id(id).ok_or_else(|| bad("operation", id))?),
        },
        permission: match permission {
            ANY => None,
            id => Some(Permission::from_id(id).ok_or_else(|| bad("permission type", id))?),
        },
    })
}

/// Why the principal may not change or read ACLs here, if it may not.
fn refused(ctx: &RequestContext, op: Operation) -> Option<KafkaError> {
    if !ctx.authorizer_on() {
        return Some(KafkaError::SecurityDisabled);
    }
    (!ctx.authorize(op, ResourceType::Cluster, CLUSTER))
        .then_some(KafkaError::ClusterAuthorizationFailed)
}

pub async fn handle_create(ctx: &RequestContext, req: CreateAclsRequest) -> CreateAclsResponse {
    let result = |r: Result<(), KafkaError>| match r {
        Ok(()) => AclCreationResult::default(),
        Err(e) => AclCreationResult::default()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.message()))),
    };
    if let Some(e) = refused(ctx, Operation::Alter) {
        return CreateAclsResponse::default().with_results(
            req.creations
                .iter()
                .map(|_| result(Err(e.clone())))
                .collect(),
        );
    }
    let checked: Vec<Result<Binding, KafkaError>> =
        req.creations.iter().map(creation_binding).collect();
    let create: Vec<_> = checked
        .iter()
        .filter_map(|b| b.as_ref().ok())
        .map(|b| crate::shard::acl::record_of(uuid::Uuid::new_v4(), b))
        .collect();
    let n = create.len();
    let mut answers = if n == 0 {
        Vec::new()
    } else {
        let call = AlterAcls {
            create,
            remove: Vec::new(),
            context: ctx.forwarded(),
        };
        match ctx.shard.call(CONTROLLER_SHARD, call).await {
            Ok(a) if a.len() == n => a,
            _ => vec![Err(KafkaError::NotController); n],
        }
    }
    .into_iter();
    let results = checked
        .into_iter()
        .map(|c| result(c.and_then(|_| answers.next().unwrap_or(Err(KafkaError::NotController)))))
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub async fn handle_describe(
    ctx: &RequestContext,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let err = |e: KafkaError| {
        DescribeAclsResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.message())))
    };
    if let Some(e) = refused(ctx, Operation::Describe) {
        return err(e);
    }
    let filter = match filter_of(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => return err(e),
    };
    let acls = ctx.shard.acls();
    let mut by_resource: BTreeMap<(ResourceType, &str, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for b in acls.bindings.iter().filter(|b| filter.matches(b)) {
        by_resource
            .entry((b.resource_type, b.name.as_str(), b.pattern))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(b.principal.clone()))
                    .with_host(str_bytes(b.host.clone()))
                    .with_operation(b.operation.id())
                    .with_permission_type(b.permission.id()),
            );
    }
    DescribeAclsResponse::default().with_resources(
        by_resource
            .into_iter()
            .map(|((rt, name, pattern), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(rt.id())
                    .with_resource_name(str_bytes(name.to_string()))
                    .with_pattern_type(pattern.id())
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub async fn handle_delete(ctx: &RequestContext, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let failed = |e: &KafkaError| {
        DeleteAclsFilterResult::default()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.message())))
    };
    if let Some(e) = refused(ctx, Operation::Alter) {
        return DeleteAclsResponse::default()
            .with_filter_results(req.filters.iter().map(|_| failed(&e)).collect());
    }
    let acls = ctx.shard.acls();
    // Per filter: its matches (indexes into the table), or why it is not a filter.
    let matched: Vec<Result<Vec<usize>, KafkaError>> = req
        .filters
        .iter()
        .map(|f| {
            let filter = filter_of(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )?;
            Ok((0..acls.bindings.len())
                .filter(|i| filter.matches(&acls.bindings[*i]))
                .collect())
        })
        .collect();
    let mut remove: Vec<usize> = matched
        .iter()
        .filter_map(|m| m.as_ref().ok())
        .flatten()
        .copied()
        .collect();
    remove.sort_unstable();
    remove.dedup();
    let mut outcome: BTreeMap<usize, Result<(), KafkaError>> = BTreeMap::new();
    if !remove.is_empty() {
        let call = AlterAcls {
            create: Vec::new(),
            remove: remove.iter().map(|i| acls.ids[*i]).collect(),
            context: ctx.forwarded(),
        };
        let answers = match ctx.shard.call(CONTROLLER_SHARD, call).await {
            Ok(a) if a.len() == remove.len() => a,
            _ => vec![Err(KafkaError::NotController); remove.len()],
        };
        outcome.extend(remove.into_iter().zip(answers));
    }
    let results = matched
        .into_iter()
        .map(|m| match m {
            Err(e) => failed(&e),
            Ok(ids) => DeleteAclsFilterResult::default().with_matching_acls(
                ids.into_iter()
                    .map(|i| {
                        let b = &acls.bindings[i];
                        let acl = DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.id())
                            .with_resource_name(str_bytes(b.name.clone()))
                            .with_pattern_type(b.pattern.id())
                            .with_principal(str_bytes(b.principal.clone()))
                            .with_host(str_bytes(b.host.clone()))
                            .with_operation(b.operation.id())
                            .with_permission_type(b.permission.id());
                        match outcome.get(&i) {
                            Some(Err(e)) => acl
                                .with_error_code(e.code())
                                .with_error_message(Some(str_bytes(e.message()))),
                            _ => acl,
                        }
                    })
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_from_the_wire() {
        let name = StrBytes::from_static_str("orders-eu");
        let f = filter_of(2, Some(&name), MATCH, None, None, ANY, 3).unwrap();
        assert_eq!(f.resource_type, Some(ResourceType::Topic));
        assert_eq!(f.pattern, Some(None));
        assert_eq!(f.operation, None);
        assert_eq!(f.permission, Some(Permission::Allow));
        let any = filter_of(ANY, None, ANY, None, None, ANY, ANY).unwrap();
        assert_eq!(any, Filter::default());
        for (rt, pt, op, perm) in [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)] {
            assert!(
                matches!(
                    filter_of(rt, None, pt, None, None, op, perm),
                    Err(KafkaError::InvalidRequest(_))
                ),
                "{rt} {pt} {op} {perm}"
            );
        }
    }
}
