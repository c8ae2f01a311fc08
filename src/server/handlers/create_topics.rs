//! CreateTopics: validated and applied by the controller (shard 0), wherever the request
//! arrived.

use super::RequestContext;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{str_bytes, topic_name};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::{CreateTopic, CreateTopics};

pub async fn handle(ctx: &RequestContext, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let mut specs = Vec::with_capacity(req.topics.len());
    let mut early: Vec<Option<KafkaError>> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = t.num_partitions;
        let mut problem = None;
        if !t.assignments.is_empty() {
            if partitions != -1 || t.replication_factor != -1 {
                problem = Some(KafkaError::InvalidRequest(
                    "both manual assignments and a partition count or replication factor were given".into(),
                ));
            } else if t
                .assignments
                .iter()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != shard.config.node_id)
            {
                problem = Some(KafkaError::InvalidReplicationFactor(format!(
                    "assignments must name exactly this broker ({})",
                    shard.config.node_id
                )));
            } else {
                partitions = t.assignments.len() as i32;
            }
        }
        let configs = t
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_string(),
                    c.value
                        .as_ref()
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        specs.push(CreateTopic {
            name: t.name.0.as_str().to_string(),
            partitions,
            replication_factor: if t.assignments.is_empty() {
                t.replication_factor
            } else {
                -1
            },
            configs,
            if_not_exists: false,
            internal: false,
        });
        early.push(problem);
    }
    let to_send: Vec<CreateTopic> = specs
        .iter()
        .zip(&early)
        .filter(|(_, e)| e.is_none())
        .map(|(s, _)| s.clone())
        .collect();
    let mut answers = match shard
        .call(
            CONTROLLER_SHARD,
            CreateTopics {
                topics: to_send,
                validate_only: req.validate_only,
            },
        )
        .await
    {
        Ok(r) => r,
        Err(_) => specs
            .iter()
            .map(|_| Err(KafkaError::NotController))
            .collect(),
    }
    .into_iter();
    let results = specs
        .into_iter()
        .zip(early)
        .map(|(spec, problem)| {
            let answer = match problem {
                Some(e) => Err(e),
                None => answers.next().unwrap_or(Err(KafkaError::NotController)),
            };
            let r = CreatableTopicResult::default().with_name(topic_name(&spec.name));
            match answer {
                Ok(meta) if version >= 5 => r
                    .with_topic_id(if version >= 7 {
                        meta.topic_id
                    } else {
                        uuid::Uuid::nil()
                    })
                    .with_num_partitions(meta.partitions)
                    .with_replication_factor(1)
                    .with_configs(Some(vec![])),
                Ok(_) => r,
                Err(e) => r
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}
