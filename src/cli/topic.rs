//! `spate topic create|list|describe|delete|alter|reassign|reassignments|elect-leaders`.

use serde::Serialize;

use super::api::{self, ConfigEntry, EARLIEST, LATEST};
use super::error::{Error, Result};
use super::output::{Table, nodes, print_json, write_stdout};
use super::{Common, TopicCommand, key_value};
use crate::error::ErrorCode;

pub fn run(common: &Common, cmd: TopicCommand) -> Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => create(
            common,
            &name,
            partitions,
            replication_factor,
            &configs,
            if_not_exists,
        ),
        TopicCommand::List => list(common),
        TopicCommand::Describe { names } => describe(common, &names),
        TopicCommand::Delete { names, if_exists } => delete(common, &names, if_exists),
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
        } => alter(common, &name, &configs, &delete_configs),
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            cancel,
        } => reassign(common, &name, partition, (!cancel).then_some(&replicas[..])),
        TopicCommand::Reassignments { name } => reassignments(common, name.as_deref()),
        TopicCommand::ElectLeaders { targets, unclean } => elect_leaders(common, &targets, unclean),
    }
}

fn reassign(common: &Common, name: &str, partition: i32, replicas: Option<&[i32]>) -> Result<()> {
    let mut client = common.client()?;
    api::alter_reassignment(&mut client, name, partition, replicas)?;
    if common.json {
        return print_json(&serde_json::json!({
            "topic": name,
            "partition": partition,
            "replicas": replicas,
            "cancelled": replicas.is_none(),
        }));
    }
    match replicas {
        Some(r) => write_stdout(&format!(
            "Reassignment of {name}:{partition} to replicas {} started (see `spate topic reassignments`).\n",
            nodes(r)
        )),
        None => write_stdout(&format!("Reassignment of {name}:{partition} cancelled.\n")),
    }
}

fn reassignments(common: &Common, name: Option<&str>) -> Result<()> {
    let mut client = common.client()?;
    let list = api::list_reassignments(&mut client, name)?;
    if common.json {
        return print_json(&list);
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
    for r in &list {
        let or_dash = |v: &[i32]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                nodes(v)
            }
        };
        table.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            nodes(&r.replicas),
            or_dash(&r.adding),
            or_dash(&r.removing),
        ]);
    }
    table.print()
}

fn elect_leaders(common: &Common, targets: &[String], unclean: bool) -> Result<()> {
    let mut client = common.client()?;
    let mut partitions = Vec::new();
    for t in targets {
        match t.rsplit_once(':') {
            Some((topic, p)) => {
                let p = p.parse::<i32>().map_err(|_| {
                    Error::other(format!("'{t}': the partition after ':' must be a number"))
                })?;
                partitions.push((topic.to_string(), p));
            }
            None => {
                let md = api::metadata(&mut client, Some(std::slice::from_ref(t)), false)?;
                let meta = md.topic(t)?;
                partitions.extend(meta.partitions.iter().map(|p| (t.clone(), p.partition)));
            }
        }
    }
    let results = api::elect_leaders(&mut client, unclean, Some(&partitions))?;
    if common.json {
        return print_json(&results);
    }
    let mut text = String::new();
    let mut failed = 0;
    for r in &results {
        let tp = format!("{}:{}", r.topic, r.partition);
        match ErrorCode::from_code(r.error_code) {
            c if c.is_none() => text.push_str(&format!("Elected a new leader for {tp}.\n")),
            ErrorCode::ELECTION_NOT_NEEDED => {
                text.push_str(&format!("{tp}: its leader is the one asked for already.\n"))
            }
            _ => {
                failed += 1;
                let e = Error::kafka(
                    format!("electing the leader of {tp}"),
                    r.error_code,
                    r.error_message.as_deref(),
                );
                text.push_str(&format!("{e}\n"));
            }
        }
    }
    write_stdout(&text)?;
    if failed > 0 {
        return Err(Error::other(format!("{failed} election(s) failed")));
    }
    Ok(())
}

fn create(
    common: &Common,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
    if_not_exists: bool,
) -> Result<()> {
    let configs = configs
        .iter()
        .map(|c| key_value(c, "--config"))
        .collect::<Result<Vec<_>>>()?;
    let mut client = common.client()?;
    let created =
        match api::create_topic(&mut client, name, partitions, replication_factor, &configs) {
            Err(e) if if_not_exists && e.code == Some(36) => None,
            other => Some(other?),
        };
    if common.json {
        #[derive(Serialize)]
        struct Out<'a> {
            topic: &'a str,
            created: bool,
            partitions: Option<i32>,
            replication_factor: Option<i16>,
        }
        return print_json(&Out {
            topic: name,
            created: created.is_some(),
            partitions: created.as_ref().map(|c| c.partitions),
            replication_factor: created.as_ref().map(|c| c.replication_factor),
        });
    }
    match created {
        Some(c) => write_stdout(&format!(
            "Created topic {name} ({} partition{}, replication factor {}).\n",
            c.partitions,
            if c.partitions == 1 { "" } else { "s" },
            c.replication_factor
        )),
        None => write_stdout(&format!("Topic {name} already exists.\n")),
    }
}

#[derive(Serialize)]
struct ListedTopic {
    name: String,
    id: String,
    partitions: usize,
    replication_factor: usize,
    internal: bool,
}

fn list(common: &Common) -> Result<()> {
    let mut client = common.client()?;
    let md = api::metadata(&mut client, None, false)?;
    let topics: Vec<ListedTopic> = md
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| ListedTopic {
            name: t.name.clone(),
            id: t.id.to_string(),
            partitions: t.partitions.len(),
            replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len()),
            internal: t.internal,
        })
        .collect();
    if common.json {
        return print_json(&topics);
    }
    let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION"]);
    for t in &topics {
        table.row(vec![
            t.name.clone(),
            t.partitions.to_string(),
            t.replication_factor.to_string(),
        ]);
    }
    table.print()
}

#[derive(Serialize)]
struct DescribedPartition {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
    /// The ISR is shorter than the replicas: a replica is behind or down, so the partition
    /// has fewer copies of its latest records than its replication factor.
    under_replicated: bool,
    earliest_offset: Option<i64>,
    latest_offset: Option<i64>,
}

#[derive(Serialize)]
struct DescribedTopic {
    name: String,
    id: String,
    internal: bool,
    partitions: Vec<DescribedPartition>,
    configs: Vec<ConfigEntry>,
}

fn describe(common: &Common, names: &[String]) -> Result<()> {
    let mut client = common.client()?;
    let md = if names.is_empty() {
        api::metadata(&mut client, None, false)?
    } else {
        api::metadata(&mut client, Some(names), false)?
    };
    let wanted: Vec<String> = if names.is_empty() {
        md.topics.iter().map(|t| t.name.clone()).collect()
    } else {
        names.to_vec()
    };
    let mut out = Vec::new();
    for name in &wanted {
        let t = md.topic(name)?.clone();
        let ids: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
        let earliest = api::list_offsets(&mut client, &t, &ids, EARLIEST).ok();
        let latest = api::list_offsets(&mut client, &t, &ids, LATEST).ok();
        let configs = api::describe_topic_configs(&mut client, name)?;
        out.push(DescribedTopic {
            name: t.name.clone(),
            id: t.id.to_string(),
            internal: t.internal,
            partitions: t
                .partitions
                .iter()
                .map(|p| DescribedPartition {
                    partition: p.partition,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    offline: p.offline.clone(),
                    under_replicated: p.isr.len() < p.replicas.len(),
                    earliest_offset: earliest
                        .as_ref()
                        .and_then(|m| m.get(&p.partition))
                        .map(|o| o.0),
                    latest_offset: latest
                        .as_ref()
                        .and_then(|m| m.get(&p.partition))
                        .map(|o| o.0),
                })
                .collect(),
            configs,
        });
    }
    if common.json {
        return print_json(&out);
    }
    let mut text = String::new();
    for (i, t) in out.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!(
            "Topic: {}  Id: {}  Partitions: {}  Replication factor: {}\n\n",
            t.name,
            t.id,
            t.partitions.len(),
            t.partitions.first().map_or(0, |p| p.replicas.len())
        ));
        let mut parts = Table::new(&[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "OFFLINE",
            "EARLIEST",
            "LATEST",
            "STATUS",
        ]);
        let opt = |o: Option<i64>| o.map_or("-".to_string(), |o| o.to_string());
        for p in &t.partitions {
            parts.row(vec![
                p.partition.to_string(),
                if p.leader < 0 {
                    "none".to_string()
                } else {
                    p.leader.to_string()
                },
                p.leader_epoch.to_string(),
                nodes(&p.replicas),
                nodes(&p.isr),
                if p.offline.is_empty() {
                    "-".to_string()
                } else {
                    nodes(&p.offline)
                },
                opt(p.earliest_offset),
                opt(p.latest_offset),
                if p.leader < 0 {
                    "offline".to_string()
                } else if p.under_replicated {
                    "under-replicated".to_string()
                } else {
                    "-".to_string()
                },
            ]);
        }
        text.push_str(&parts.render());
        if !t.configs.is_empty() {
            text.push('\n');
            let mut configs = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
            for c in &t.configs {
                let value = if c.sensitive {
                    "(sensitive)".to_string()
                } else {
                    c.value.clone().unwrap_or_else(|| "(null)".into())
                };
                configs.row(vec![c.name.clone(), value, c.source.to_string()]);
            }
            text.push_str(&configs.render());
        }
    }
    write_stdout(&text)
}

fn delete(common: &Common, names: &[String], if_exists: bool) -> Result<()> {
    let mut client = common.client()?;
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match api::delete_topic(&mut client, name) {
            Ok(()) => deleted.push(name.clone()),
            Err(e)
                if if_exists
                    && e.code.map(ErrorCode::from_code)
                        == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) =>
            {
                missing.push(name.clone())
            }
            Err(e) => return Err(e),
        }
    }
    if common.json {
        return print_json(&serde_json::json!({ "deleted": deleted, "missing": missing }));
    }
    let mut text = String::new();
    for n in &deleted {
        text.push_str(&format!("Deleted topic {n}.\n"));
    }
    for n in &missing {
        text.push_str(&format!("Topic {n} does not exist.\n"));
    }
    write_stdout(&text)
}

fn alter(common: &Common, name: &str, configs: &[String], delete: &[String]) -> Result<()> {
    let set = configs
        .iter()
        .map(|c| key_value(c, "--config"))
        .collect::<Result<Vec<_>>>()?;
    if let Some(k) = delete.iter().find(|k| set.iter().any(|(s, _)| s == *k)) {
        return Err(Error::other(format!(
            "config '{k}' is both set (--config) and deleted (--delete-config)"
        )));
    }
    let mut client = common.client()?;
    api::alter_topic_configs(&mut client, name, &set, delete)?;
    if common.json {
        let set: serde_json::Map<String, serde_json::Value> = set
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        return print_json(&serde_json::json!({ "topic": name, "set": set, "deleted": delete }));
    }
    let mut text = String::new();
    for (k, v) in &set {
        text.push_str(&format!("Set {k}={v} on topic {name}.\n"));
    }
    for k in delete {
        text.push_str(&format!(
            "Removed {k} from topic {name} (back to the default).\n"
        ));
    }
    write_stdout(&text)
}
