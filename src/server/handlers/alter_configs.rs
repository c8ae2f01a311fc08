//! IncrementalAlterConfigs (SET and DELETE of topic configs) and the legacy AlterConfigs
//! (replaces a topic's whole set of configs). Changes are validated and applied by the
//! controller (shard 0), wherever the request arrived. Broker settings come from the command
//! line; the replication throttle rates (as `kafka-reassign-partitions --throttle` sets them)
//! and the topic defaults of `DYNAMIC_BROKER_CONFIGS` (retention, segment size and age,
//! message.max.bytes, compression.type, the timestamp bounds) can also be set at run time, as
//! dynamic broker configs on a BROKER resource (a broker id, or empty for every broker); every
//! broker applies them within a second.

use super::RequestContext;
use std::rc::Rc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC};
use super::str_bytes;
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::Shard;
use crate::shard::calls::{AlterTopicConfig, AlterTopicConfigs};
use crate::shard::controller::DYNAMIC_BROKER_CONFIGS;
use crate::storage::catalog;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Checks what can be checked without the catalog: the resource type and topic name, and
/// that a broker resource changes only the dynamic broker configs. Returns whether it is a
/// broker resource.
fn check_resource<'a>(
    resource_type: i8,
    name: &str,
    mut configs: impl Iterator<Item = &'a str>,
) -> Result<bool, KafkaError> {
    match resource_type {
        RESOURCE_TOPIC => catalog::validate_topic_name(name).map(|()| false),
        RESOURCE_BROKER => match configs.find(|c| !DYNAMIC_BROKER_CONFIGS.contains(c)) {
            None => Ok(true),
            Some(c) => Err(KafkaError::InvalidRequest(format!(
                "broker setting '{c}' is set on the command line of `spate serve` and cannot \
                 be changed at run time (only {} can); change topic configs instead",
                DYNAMIC_BROKER_CONFIGS.join(", ")
            ))),
        },
        other => Err(KafkaError::InvalidRequest(format!(
            "resource type {other} is not supported here; TOPIC ({RESOURCE_TOPIC}) and BROKER \
             ({RESOURCE_BROKER}) configs can be changed, and BROKER_LOGGER \
             ({RESOURCE_BROKER_LOGGER}) log levels with IncrementalAlterConfigs"
        ))),
    }
}

/// Rejects a config named twice in one resource, as Kafka does.
fn check_unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), KafkaError> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(KafkaError::InvalidRequest(format!(
                "config '{n}' appears more than once in one resource"
            )));
        }
    }
    Ok(())
}

/// Sends the changes that passed the local checks to the controller and returns one result
/// per resource, in request order. `Ok(None)`: a change already applied here.
async fn apply(
    shard: &Rc<Shard>,
    changes: Vec<Result<Option<AlterTopicConfig>, KafkaError>>,
    validate_only: bool,
    context: crate::cluster::wire::Forwarded,
) -> Vec<Result<(), KafkaError>> {
    let to_send: Vec<AlterTopicConfig> = changes
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned().flatten())
        .collect();
    let n = to_send.len();
    let mut answers = if n == 0 {
        Vec::new()
    } else {
        match shard
            .call(
                CONTROLLER_SHARD,
                AlterTopicConfigs {
                    changes: to_send,
                    validate_only,
                    context,
                },
            )
            .await
        {
            Ok(r) => r,
            Err(_) => vec![Err(KafkaError::NotController); n],
        }
    }
    .into_iter();
    changes
        .into_iter()
        .map(|c| match c {
            Ok(Some(_)) => answers.next().unwrap_or(Err(KafkaError::NotController)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        })
        .collect()
}

/// The (code, message) a resource result carries.
fn outcome(r: Result<(), KafkaError>, topic: &str) -> (i16, Option<String>) {
    match r {
        Ok(()) => (0, None),
        Err(KafkaError::UnknownTopicOrPartition) => (
            KafkaError::UnknownTopicOrPartition.code(),
            Some(format!("topic '{topic}' does not exist")),
        ),
        Err(e) => (e.code(), Some(e.message())),
    }
}

/// Log levels of this broker (BROKER_LOGGER, see [`crate::log_levels`]): SET a logger's
/// level, DELETE it back to root's. Applied here, not by the controller: they are this
/// process's, as in Kafka.
fn alter_loggers(
    ctx: &RequestContext,
    r: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), KafkaError> {
    let node = ctx.shard.config.node_id.to_string();
    if r.resource_name.as_str() != node {
        return Err(KafkaError::InvalidRequest(format!(
            "broker '{}' is not this broker (node id {node}): log levels change on the broker \
             they are sent to",
            r.resource_name.as_str()
        )));
    }
    let changes = r
        .configs
        .iter()
        .map(|c| {
            let name = c.name.as_str().to_string();
            match c.config_operation {
                OP_SET => Ok((name, c.value.as_ref().map(|v| v.as_str().to_string()))),
                OP_DELETE => Ok((name, None)),
                other => Err(KafkaError::InvalidRequest(format!(
                    "operation {other} does not apply to a log level ('{name}'): SET or DELETE"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if changes.iter().any(|(_, v)| v.as_deref() == Some("")) {
        return Err(KafkaError::InvalidConfig(
            "a log level cannot be empty".into(),
        ));
    }
    if validate_only {
        for (logger, level) in &changes {
            if !crate::log_levels::valid_logger(logger)
                || level
                    .as_deref()
                    .is_some_and(|l| crate::log_levels::level_of(l).is_none())
            {
                return Err(KafkaError::InvalidConfig(format!(
                    "'{logger}' = {level:?} is not a logger and a log level"
                )));
            }
        }
        return Ok(());
    }
    crate::log_levels::change(&changes).map_err(KafkaError::InvalidConfig)
}

pub async fn handle_incremental(
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let shard = &ctx.shard;
    let changes = req
        .resources
        .iter()
        .map(|r| {
            // AlterConfigs on the topic, or on the cluster for a broker's, as Kafka.
            if let Some(e) = super::describe_configs::config_refused(
                ctx,
                super::Operation::AlterConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            ) {
                return Err(e);
            }
            if r.resource_type == RESOURCE_BROKER_LOGGER {
                // Applied here at once: nothing goes to the controller.
                return alter_loggers(ctx, r, req.validate_only).map(|()| None);
            }
            let topic = r.resource_name.as_str();
            let broker = check_resource(
                r.resource_type,
                topic,
                r.configs.iter().map(|c| c.name.as_str()),
            )?;
            check_unique(r.configs.iter().map(|c| c.name.as_str()))?;
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    let name = c.name.as_str().to_string();
                    match c.config_operation {
                        OP_SET => match &c.value {
                            Some(v) => Ok((name, Some(v.as_str().to_string()))),
                            None => Err(KafkaError::InvalidConfig(format!(
                                "SET of '{name}' has no value"
                            ))),
                        },
                        OP_DELETE => Ok((name, None)),
                        OP_APPEND | OP_SUBTRACT => Err(KafkaError::InvalidConfig(format!(
                            "APPEND and SUBTRACT apply to list configs only; '{name}' is not one"
                        ))),
                        other => Err(KafkaError::InvalidRequest(format!(
                            "unknown config operation {other} for '{name}'"
                        ))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(AlterTopicConfig {
                topic: topic.to_string(),
                broker,
                replace: false,
                ops,
            }))
        })
        .collect();
    let results = apply(shard, changes, req.validate_only, ctx.forwarded()).await;
    let responses = req
        .resources
        .iter()
        .zip(results)
        .map(|(r, result)| {
            let (code, message) = outcome(result, r.resource_name.as_str());
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub async fn handle_legacy(ctx: &RequestContext, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let shard = &ctx.shard;
    let changes = req
        .resources
        .iter()
        .map(|r| {
            if let Some(e) = super::describe_configs::config_refused(
                ctx,
                super::Operation::AlterConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            ) {
                return Err(e);
            }
            let topic = r.resource_name.as_str();
            let broker = check_resource(
                r.resource_type,
                topic,
                r.configs.iter().map(|c| c.name.as_str()),
            )?;
            check_unique(r.configs.iter().map(|c| c.name.as_str()))?;
            Ok(Some(AlterTopicConfig {
                topic: topic.to_string(),
                broker,
                replace: true,
                ops: r
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.as_str().to_string(),
                            c.value.as_ref().map(|v| v.as_str().to_string()),
                        )
                    })
                    .collect(),
            }))
        })
        .collect();
    let results = apply(shard, changes, req.validate_only, ctx.forwarded()).await;
    let responses = req
        .resources
        .iter()
        .zip(results)
        .map(|(r, result)| {
            let (code, message) = outcome(result, r.resource_name.as_str());
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
