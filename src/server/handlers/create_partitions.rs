//! CreatePartitions (API 37): grows topics to a new partition count, applied by the
//! controller (forwarded to the active controller in a cluster).

use super::RequestContext;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::str_bytes;
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::CreatePartitions;

pub async fn handle(
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let shard = &ctx.shard;
    // Alter on each topic (TOPIC_AUTHORIZATION_FAILED), as Kafka.
    let allowed: Vec<bool> = req
        .topics
        .iter()
        .map(|t| {
            ctx.authorize(
                super::Operation::Alter,
                super::ResourceType::Topic,
                t.name.0.as_str(),
            )
        })
        .collect();
    let topics: Vec<(String, i32, Vec<Vec<i32>>)> = req
        .topics
        .iter()
        .zip(&allowed)
        .filter(|(_, ok)| **ok)
        .map(|(t, _)| {
            let assignments = t
                .assignments
                .as_ref()
                .map(|a| {
                    a.iter()
                        .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                })
                .unwrap_or_default();
            (t.name.0.as_str().to_string(), t.count, assignments)
        })
        .collect();
    let n = topics.len();
    let answers = match shard
        .call(
            CONTROLLER_SHARD,
            CreatePartitions {
                topics,
                validate_only: req.validate_only,
                context: ctx.forwarded(),
            },
        )
        .await
    {
        Ok(r) if r.len() == n => r,
        _ => vec![Err(KafkaError::NotController); n],
    };
    let mut answers = answers.into_iter();
    let results = req
        .topics
        .iter()
        .zip(allowed)
        .map(|(t, ok)| {
            let r = if ok {
                answers.next().unwrap_or(Err(KafkaError::NotController))
            } else {
                Err(KafkaError::TopicAuthorizationFailed)
            };
            let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match r {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
