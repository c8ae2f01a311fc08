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
    // Create on the cluster, or else on each topic (TOPIC_AUTHORIZATION_FAILED), as Kafka.
    use super::{CLUSTER, Operation, ResourceType};
    let cluster_create = ctx.authorize(Operation::Create, ResourceType::Cluster, CLUSTER);
    for t in &req.topics {
        let mut partitions = t.num_partitions;
        let mut problem = None;
        let mut assignments: Vec<Vec<i32>> = Vec::new();
        if !t.assignments.is_empty() {
            let mut given: Vec<(i32, Vec<i32>)> = t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            given.sort_by_key(|(p, _)| *p);
            let dense = given.iter().enumerate().all(|(i, (p, _))| *p as usize == i);
            let rf = given[0].1.len();
            let distinct = given.iter().all(|(_, r)| {
                let mut s = r.clone();
                s.sort_unstable();
                s.dedup();
                s.len() == r.len()
            });
            if partitions != -1 || t.replication_factor != -1 {
                problem = Some(KafkaError::InvalidRequest(
                    "both manual assignments and a partition count or replication factor were given".into(),
                ));
            } else if !dense {
                problem = Some(KafkaError::InvalidReplicaAssignment(
                    "assignments must cover partitions 0, 1, 2, ... once each".into(),
                ));
            } else if rf == 0 || given.iter().any(|(_, r)| r.len() != rf) || !distinct {
                problem = Some(KafkaError::InvalidReplicaAssignment(
                    "every partition needs the same number of distinct brokers".into(),
                ));
            } else if shard.cluster().is_none()
                && given.iter().any(|(_, r)| r != &[shard.config.node_id])
            {
                problem = Some(KafkaError::InvalidReplicationFactor(format!(
                    "assignments must name exactly this broker ({})",
                    shard.config.node_id
                )));
            } else {
                partitions = given.len() as i32;
                if shard.cluster().is_some() {
                    assignments = given.into_iter().map(|(_, r)| r).collect();
                }
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
            assignments,
        });
        if problem.is_none()
            && !cluster_create
            && !ctx.authorize(Operation::Create, ResourceType::Topic, t.name.0.as_str())
        {
            problem = Some(KafkaError::TopicAuthorizationFailed);
        }
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
                context: ctx.forwarded(),
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
