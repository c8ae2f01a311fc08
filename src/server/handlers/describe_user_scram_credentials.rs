//! DescribeUserScramCredentials (API 50, KIP-554): each user's SCRAM mechanisms and
//! iterations (never a key), from the metadata. A null or empty list is every user with
//! credentials;
//! a named user without any is RESOURCE_NOT_FOUND, a user named twice DUPLICATE_RESOURCE.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{RequestContext, str_bytes};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::ScramCredentials;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    // Describe on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(super::str_bytes(e.message())));
    }
    let all = match ctx.shard.call(CONTROLLER_SHARD, ScramCredentials).await {
        Ok(all) => all,
        Err(_) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(KafkaError::NotController.code());
        }
    };
    let mut by_user: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for (user, mechanism, r) in all {
        by_user.entry(user).or_default().push(
            CredentialInfo::default()
                .with_mechanism(mechanism)
                .with_iterations(i32::try_from(r.iterations).unwrap_or(i32::MAX)),
        );
    }
    let result = |user: &str, e: Option<KafkaError>| {
        let out =
            DescribeUserScramCredentialsResult::default().with_user(str_bytes(user.to_string()));
        match e {
            Some(e) => out
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.message()))),
            None => out.with_credential_infos(by_user.get(user).cloned().unwrap_or_default()),
        }
    };
    let results = match &req.users {
        // Null or empty: every user (KIP-554; librdkafka sends an empty list).
        None => by_user.keys().map(|u| result(u, None)).collect(),
        Some(users) if users.is_empty() => by_user.keys().map(|u| result(u, None)).collect(),
        Some(users) => {
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for u in users {
                *seen.entry(u.name.as_str()).or_default() += 1;
            }
            seen.into_iter()
                .map(|(u, n)| {
                    if n > 1 {
                        result(
                            u,
                            Some(KafkaError::DuplicateResource(format!(
                                "user '{u}' is named {n} times"
                            ))),
                        )
                    } else if !by_user.contains_key(u) {
                        result(
                            u,
                            Some(KafkaError::ResourceNotFound(format!(
                                "user '{u}' has no SCRAM credentials"
                            ))),
                        )
                    } else {
                        result(u, None)
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
