//! DeleteTopics: by name (v1-v5) or by name or id (v6); applied by the controller.

use super::RequestContext;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{str_bytes, topic_name};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::DeleteTopics;

pub async fn handle(ctx: &RequestContext, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    // (name if known, id as asked, error found before asking the controller)
    let mut wanted: Vec<(Option<String>, uuid::Uuid, Option<KafkaError>)> = Vec::new();
    if version >= 6 {
        for t in &req.topics {
            match &t.name {
                Some(n) => wanted.push((Some(n.0.as_str().to_string()), t.topic_id, None)),
                None => match shard.topic_by_id(t.topic_id) {
                    Some(meta) => wanted.push((Some(meta.name), t.topic_id, None)),
                    None => wanted.push((None, t.topic_id, Some(KafkaError::UnknownTopicId))),
                },
            }
        }
    } else {
        for n in &req.topic_names {
            wanted.push((Some(n.0.as_str().to_string()), uuid::Uuid::nil(), None));
        }
    }
    // Delete on each topic (TOPIC_AUTHORIZATION_FAILED), as Kafka.
    for (name, _, problem) in &mut wanted {
        if let Some(n) = name
            && problem.is_none()
            && !ctx.authorize(super::Operation::Delete, super::ResourceType::Topic, n)
        {
            *problem = Some(KafkaError::TopicAuthorizationFailed);
        }
    }
    let names: Vec<String> = wanted
        .iter()
        .filter(|(_, _, e)| e.is_none())
        .filter_map(|(n, _, _)| n.clone())
        .collect();
    let mut answers = match shard
        .call(
            CONTROLLER_SHARD,
            DeleteTopics {
                names: names.clone(),
                context: ctx.forwarded(),
            },
        )
        .await
    {
        Ok(r) => r,
        Err(_) => names
            .iter()
            .map(|_| Err(KafkaError::NotController))
            .collect(),
    }
    .into_iter();
    let responses = wanted
        .into_iter()
        .map(|(name, id, problem)| {
            let answer = match problem {
                Some(e) => Err(e),
                None => answers.next().unwrap_or(Err(KafkaError::NotController)),
            };
            let r = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
            let r = if version >= 6 { r.with_topic_id(id) } else { r };
            match answer {
                Ok(()) => r,
                Err(e) if version >= 5 => r
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message()))),
                Err(e) => r.with_error_code(e.code()),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
