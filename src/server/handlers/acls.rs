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

use super::{Operation, RequestContext, ResourceType, str_bytes};
use crate::auth::acl::{Binding, Filter, PatternType, WireIds};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::AlterAcls;

/// The binding a creation names, or why it is not one (INVALID_REQUEST, as Kafka).
fn creation_binding(
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> Result<Binding, KafkaError> {
    let b = WireIds {
        resource_type: c.resource_type,
        pattern: c.resource_pattern_type,
        operation: c.operation,
        permission: c.permission_type,
    }
    .binding(&c.resource_name, &c.principal, &c.host)
    .map_err(KafkaError::InvalidRequest)?;
    crate::auth::acl::validate(&b).map_err(KafkaError::InvalidRequest)?;
    Ok(b)
}

/// A DescribeAcls/DeleteAcls filter from its wire fields; UNKNOWN (0) or an id this broker
/// does not know is INVALID_REQUEST.
fn filter_of(
    ids: WireIds,
    name: Option<&StrBytes>,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
) -> Result<Filter, KafkaError> {
    ids.filter(
        name.map(|n| n.as_str()),
        principal.map(|p| p.as_str()),
        host.map(|h| h.as_str()),
    )
    .map_err(KafkaError::InvalidRequest)
}

/// Why the principal may not change or read ACLs here, if it may not.
fn refused(ctx: &RequestContext, op: Operation) -> Option<KafkaError> {
    if !ctx.authorizer_on() {
        return Some(KafkaError::SecurityDisabled);
    }
    ctx.cluster_refused(op)
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
    let ids = WireIds {
        resource_type: req.resource_type_filter,
        pattern: req.pattern_type_filter,
        operation: req.operation,
        permission: req.permission_type,
    };
    let filter = match filter_of(
        ids,
        req.resource_name_filter.as_ref(),
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
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
            let ids = WireIds {
                resource_type: f.resource_type_filter,
                pattern: f.pattern_type_filter,
                operation: f.operation,
                permission: f.permission_type,
            };
            let filter = filter_of(
                ids,
                f.resource_name_filter.as_ref(),
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
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
    use crate::auth::acl::{ANY_ID as ANY, MATCH_ID as MATCH, Permission};

    fn ids(resource_type: i8, pattern: i8, operation: i8, permission: i8) -> WireIds {
        WireIds {
            resource_type,
            pattern,
            operation,
            permission,
        }
    }

    #[test]
    fn filters_from_the_wire() {
        let name = StrBytes::from_static_str("orders-eu");
        let f = filter_of(ids(2, MATCH, ANY, 3), Some(&name), None, None).unwrap();
        assert_eq!(f.resource_type, Some(ResourceType::Topic));
        assert_eq!(f.pattern, Some(None));
        assert_eq!(f.operation, None);
        assert_eq!(f.permission, Some(Permission::Allow));
        let any = filter_of(ids(ANY, ANY, ANY, ANY), None, None, None).unwrap();
        assert_eq!(any, Filter::default());
        for (rt, pt, op, perm) in [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)] {
            assert!(
                matches!(
                    filter_of(ids(rt, pt, op, perm), None, None, None),
                    Err(KafkaError::InvalidRequest(_))
                ),
                "{rt} {pt} {op} {perm}"
            );
        }
    }
}
