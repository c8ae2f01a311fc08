//! DescribeCluster (API 60): the cluster id, the active controller and the brokers that
//! serve (v2: fenced ones too, flagged), from this shard's copy of the metadata.

use super::RequestContext;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::error::ErrorCode;

/// Authorized operations "not requested" (INT32_MIN), as Kafka sends.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// endpoint_type 1: brokers (2 asks for controllers, which combined-mode nodes are too).
const ENDPOINT_BROKERS: i8 = 1;

pub async fn handle(ctx: &RequestContext, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let shard = &ctx.shard;
    // Kafka asks no ACL for DescribeCluster; the operations the principal may do on the
    // cluster, when asked for, need Describe on it (0 without).
    use super::{CLUSTER, Operation, ResourceType};
    let ops = if !req.include_cluster_authorized_operations {
        AUTHORIZED_OPERATIONS_OMITTED
    } else if ctx.authorize(Operation::Describe, ResourceType::Cluster, CLUSTER) {
        ctx.authorized_operations(ResourceType::Cluster, CLUSTER)
    } else {
        0
    };
    let out = DescribeClusterResponse::default()
        .with_cluster_authorized_operations(ops)
        .with_endpoint_type(req.endpoint_type);
    if ctx.api_version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        return out
            .with_error_code(ErrorCode::UNSUPPORTED_ENDPOINT_TYPE.code())
            .with_error_message(Some(str_bytes(format!(
                "endpoint type {} is not supported (1: brokers)",
                req.endpoint_type
            ))));
    }
    match shard.cluster() {
        None => {
            let (host, port) = ctx.advertised();
            out.with_cluster_id(str_bytes(shard.cluster_id.clone()))
                .with_controller_id(BrokerId(shard.config.node_id))
                .with_brokers(vec![
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(shard.config.node_id))
                        .with_host(str_bytes(host))
                        .with_port(i32::from(port))
                        .with_rack(shard.config.rack.clone().map(str_bytes)),
                ])
        }
        Some(view) => out
            .with_cluster_id(str_bytes(view.cluster_id.clone()))
            .with_controller_id(BrokerId(view.controller_id))
            .with_brokers(
                view.brokers
                    .iter()
                    .filter_map(|b| {
                        let (host, port) = ctx.endpoint_of(b)?;
                        Some(
                            DescribeClusterBroker::default()
                                .with_broker_id(BrokerId(b.id))
                                .with_host(str_bytes(host))
                                .with_port(i32::from(port))
                                .with_rack(b.rack.clone().map(str_bytes)),
                        )
                    })
                    .collect(),
            ),
    }
}
