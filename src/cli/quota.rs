//! `spate quota set|remove|list`: client quotas (KIP-546's AlterClientQuotas and
//! DescribeClientQuotas). An entity is `--user`, `--client-id` or both; the name `<default>`
//! stands for the type's default entity, as Kafka's tools write it.

use serde::Serialize;

use super::api::{self, QuotaEntry};
use super::error::{Error, Result};
use super::output::{Table, print_json, write_stdout};
use super::{Common, QuotaCommand, QuotaEntityArgs};
use crate::quota::{ENTITY_CLIENT_ID, ENTITY_USER, QuotaEntity};

/// How the CLI names a default entity.
const DEFAULT_NAME: &str = "<default>";

pub fn run(common: &Common, cmd: QuotaCommand) -> Result<()> {
    match cmd {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let ops: Vec<(String, Option<f64>)> = [
                ("producer_byte_rate", producer_byte_rate),
                ("consumer_byte_rate", consumer_byte_rate),
                ("request_percentage", request_percentage),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), Some(v))))
            .collect();
            if ops.is_empty() {
                return Err(Error::other(
                    "nothing to set: give --producer-byte-rate, --consumer-byte-rate or --request-percentage",
                ));
            }
            alter(common, &entity, &ops)
        }
        QuotaCommand::Remove {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let all = !(producer_byte_rate || consumer_byte_rate || request_percentage);
            let ops: Vec<(String, Option<f64>)> = [
                ("producer_byte_rate", producer_byte_rate),
                ("consumer_byte_rate", consumer_byte_rate),
                ("request_percentage", request_percentage),
            ]
            .into_iter()
            .filter(|(_, chosen)| all || *chosen)
            .map(|(k, _)| (k.to_string(), None))
            .collect();
            alter(common, &entity, &ops)
        }
        QuotaCommand::List { entity } => list(common, &entity),
    }
}

/// The entity's (type, name) parts; `required` refuses an empty one.
fn parts(entity: &QuotaEntityArgs, required: bool) -> Result<Vec<(String, Option<String>)>> {
    let name = |n: &String| (n != DEFAULT_NAME).then(|| n.clone());
    let mut out = Vec::new();
    if let Some(u) = &entity.user {
        out.push((ENTITY_USER.to_string(), name(u)));
    }
    if let Some(c) = &entity.client_id {
        out.push((ENTITY_CLIENT_ID.to_string(), name(c)));
    }
    if required && out.is_empty() {
        return Err(Error::other(
            "name the entity: --user, --client-id or both (<default> for the default one)",
        ));
    }
    Ok(out)
}

fn alter(common: &Common, entity: &QuotaEntityArgs, ops: &[(String, Option<f64>)]) -> Result<()> {
    let parts = parts(entity, true)?;
    let mut client = common.client()?;
    api::alter_client_quotas(&mut client, &parts, ops)?;
    let what: Vec<String> = ops
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k} removed"),
        })
        .collect();
    write_stdout(&format!("{}: {}\n", path(&parts), what.join(", ")))
}

/// Kafka's path of an entity (`users/alice/clients/<default>`).
fn path(parts: &[(String, Option<String>)]) -> String {
    QuotaEntity::from_parts(parts.iter().map(|(t, n)| (t.as_str(), n.as_deref())))
        .map(|e| e.path())
        .unwrap_or_else(|_| format!("{parts:?}"))
}

#[derive(Serialize)]
struct Listed {
    entity: String,
    quotas: std::collections::BTreeMap<String, f64>,
}

fn list(common: &Common, entity: &QuotaEntityArgs) -> Result<()> {
    let filter = parts(entity, false)?;
    let mut client = common.client()?;
    let entries: Vec<QuotaEntry> = api::describe_client_quotas(&mut client, &filter)?;
    let mut listed: Vec<Listed> = entries
        .into_iter()
        .map(|e| Listed {
            entity: path(&e.entity),
            quotas: e.values,
        })
        .collect();
    listed.sort_by(|a, b| a.entity.cmp(&b.entity));
    if common.json {
        return print_json(&listed);
    }
    let mut t = Table::new(&["ENTITY", "QUOTAS"]);
    for l in &listed {
        let quotas: Vec<String> = l.quotas.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![l.entity.clone(), quotas.join(" ")]);
    }
    write_stdout(&t.render())
}
