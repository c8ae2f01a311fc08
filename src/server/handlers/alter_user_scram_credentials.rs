//! AlterUserScramCredentials (API 51, KIP-554): SCRAM credentials set (from a salted
//! password, its salt and iterations, as the admin clients send them) or removed, applied by
//! the controller (forwarded to the active one in a cluster) as metadata records, so every
//! broker has them. One result per user: the first error of its changes; a user and mechanism
//! named twice is DUPLICATE_RESOURCE and nothing of that user changes.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

use super::{RequestContext, str_bytes};
use crate::cluster::wire::ScramChange;
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::AlterScram;

pub async fn handle(
    ctx: &RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut changes: Vec<ScramChange> = req
        .deletions
        .iter()
        .map(|d| ScramChange {
            user: d.name.as_str().to_string(),
            mechanism: d.mechanism,
            upsert: None,
        })
        .collect();
    changes.extend(req.upsertions.iter().map(|u| ScramChange {
        user: u.name.as_str().to_string(),
        mechanism: u.mechanism,
        upsert: Some((u.iterations, u.salt.to_vec(), u.salted_password.to_vec())),
    }));
    // Per user: an error found here, or the indexes of its changes to send.
    let mut users: BTreeMap<String, Result<Vec<usize>, KafkaError>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in changes.iter().enumerate() {
        let entry = users
            .entry(c.user.clone())
            .or_insert_with(|| Ok(Vec::new()));
        if !seen.insert((c.user.clone(), c.mechanism)) {
            *entry = Err(KafkaError::DuplicateResource(format!(
                "user '{}' and mechanism {} appear more than once",
                c.user, c.mechanism
            )));
        } else if let Ok(v) = entry {
            v.push(i);
        }
    }
    let to_send: Vec<usize> = users
        .values()
        .filter_map(|r| r.as_ref().ok())
        .flatten()
        .copied()
        .collect();
    // Alter on the cluster, else every user answers CLUSTER_AUTHORIZATION_FAILED, as Kafka.
    let refused = ctx.cluster_refused(super::Operation::Alter);
    let answers = if let Some(e) = &refused {
        vec![Err(e.clone()); to_send.len()]
    } else if to_send.is_empty() {
        Vec::new()
    } else {
        let sent: Vec<ScramChange> = to_send.iter().map(|&i| changes[i].clone()).collect();
        let n = sent.len();
        ctx.shard
            .call(
                CONTROLLER_SHARD,
                AlterScram {
                    changes: sent,
                    context: ctx.forwarded(),
                },
            )
            .await
            .unwrap_or_else(|_| vec![Err(KafkaError::NotController); n])
    };
    let answer_of: BTreeMap<usize, Result<(), KafkaError>> =
        to_send.into_iter().zip(answers).collect();
    let results = users
        .into_iter()
        .map(|(user, r)| {
            let r = match &refused {
                Some(e) => Err(e.clone()),
                None => r,
            };
            let outcome = r.and_then(|idx| {
                idx.iter()
                    .map(|i| {
                        answer_of
                            .get(i)
                            .cloned()
                            .unwrap_or(Err(KafkaError::NotController))
                    })
                    .find(Result::is_err)
                    .unwrap_or(Ok(()))
            });
            let out = AlterUserScramCredentialsResult::default().with_user(str_bytes(user));
            match outcome {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message()))),
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
