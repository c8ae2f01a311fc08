//! `spate group list|describe|delete|reset-offsets`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::api::{self, EARLIEST, LATEST, Member, TopicMeta};
use super::client::{Client, with_retries};
use super::error::{Error, Result};
use super::output::{Table, print_json, write_stdout};
use super::time::parse_millis;
use super::{Common, GroupCommand};
use crate::error::ErrorCode;

pub fn run(common: &Common, cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List => list(common),
        GroupCommand::Describe { groups } => describe(common, &groups),
        GroupCommand::Delete { groups } => delete(common, &groups),
        GroupCommand::ResetOffsets {
            group,
            topics,
            all_topics,
            to_earliest,
            to_latest,
            to_datetime,
            to_offset,
            dry_run,
        } => {
            let target = if to_earliest {
                Target::Earliest
            } else if to_latest {
                Target::Latest
            } else if let Some(t) = to_datetime {
                Target::Time(
                    parse_millis(&t).map_err(|e| Error::other(format!("--to-datetime: {e}")))?,
                )
            } else if let Some(o) = to_offset {
                Target::Offset(o)
            } else {
                return Err(Error::other(
                    "name where to: --to-earliest, --to-latest, --to-datetime or --to-offset",
                ));
            };
            reset_offsets(common, &group, &topics, all_topics, target, dry_run)
        }
    }
}

fn list(common: &Common) -> Result<()> {
    let mut client = common.client()?;
    let groups = api::list_groups(&mut client)?;
    if common.json {
        return print_json(&groups);
    }
    let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE"]);
    for g in &groups {
        table.row(vec![
            g.group.clone(),
            g.state.clone(),
            if g.protocol_type.is_empty() {
                "-".into()
            } else {
                g.protocol_type.clone()
            },
        ]);
    }
    table.print()
}

#[derive(Serialize)]
struct OffsetRow {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
}

#[derive(Serialize)]
struct DescribedGroup {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    coordinator: String,
    members: Vec<Member>,
    offsets: Vec<OffsetRow>,
}

/// Metadata of the topics named, skipping those that no longer exist.
fn topics_meta(
    client: &mut Client,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, TopicMeta>> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list: Vec<String> = names.iter().cloned().collect();
    let md = api::metadata(client, Some(&list), false)?;
    Ok(md
        .topics
        .into_iter()
        .filter(|t| t.error_code == 0)
        .map(|t| (t.name.clone(), t))
        .collect())
}

fn describe_one(client: &mut Client, group: &str) -> Result<DescribedGroup> {
    let coordinator = api::find_coordinator(client, group)?;
    let desc = with_retries(|| api::describe_group(client, &coordinator, group))?;
    let committed = api::offset_fetch(client, &coordinator, group)?;
    if desc.state == "Dead" && committed.is_empty() && desc.members.is_empty() {
        return Err(Error::kafka(
            format!("describing group '{group}'"),
            ErrorCode::GROUP_ID_NOT_FOUND.code(),
            None,
        ));
    }
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &desc.members {
        for (t, parts) in &m.assignment {
            for p in parts {
                owner.insert((t.clone(), *p), m.member_id.clone());
            }
        }
    }
    let keys: BTreeSet<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
    let names: BTreeSet<String> = keys.iter().map(|(t, _)| t.clone()).collect();
    let metas = topics_meta(client, &names)?;
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (name, meta) in &metas {
        let parts: Vec<i32> = keys
            .iter()
            .filter(|(t, p)| t == name && meta.partitions.iter().any(|m| m.partition == *p))
            .map(|(_, p)| *p)
            .collect();
        if let Ok(offsets) = api::list_offsets(client, meta, &parts, LATEST) {
            for (p, (o, _)) in offsets {
                ends.insert((name.clone(), p), o);
            }
        }
    }
    let offsets = keys
        .into_iter()
        .map(|k| {
            let committed = committed.get(&k).copied();
            let end = ends.get(&k).copied();
            OffsetRow {
                lag: match (committed, end) {
                    (Some(c), Some(e)) => Some((e - c).max(0)),
                    _ => None,
                },
                member_id: owner.get(&k).cloned(),
                committed_offset: committed,
                log_end_offset: end,
                topic: k.0,
                partition: k.1,
            }
        })
        .collect();
    Ok(DescribedGroup {
        group: group.to_string(),
        state: desc.state,
        protocol_type: desc.protocol_type,
        protocol: desc.protocol,
        coordinator,
        members: desc.members,
        offsets,
    })
}

fn describe(common: &Common, groups: &[String]) -> Result<()> {
    let mut client = common.client()?;
    let mut out = Vec::new();
    for g in groups {
        out.push(describe_one(&mut client, g)?);
    }
    if common.json {
        return print_json(&out);
    }
    let dash = |o: Option<i64>| o.map_or("-".to_string(), |o| o.to_string());
    let mut text = String::new();
    for (i, g) in out.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let protocol = match (g.protocol_type.is_empty(), g.protocol.is_empty()) {
            (true, _) => "-".to_string(),
            (false, true) => g.protocol_type.clone(),
            (false, false) => format!("{} ({})", g.protocol_type, g.protocol),
        };
        text.push_str(&format!(
            "Group: {}  State: {}  Protocol: {}  Members: {}  Coordinator: {}\n",
            g.group,
            g.state,
            protocol,
            g.members.len(),
            g.coordinator
        ));
        if !g.offsets.is_empty() {
            text.push('\n');
            let mut t = Table::new(&[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "LOG-END",
                "LAG",
                "MEMBER",
            ]);
            for o in &g.offsets {
                t.row(vec![
                    o.topic.clone(),
                    o.partition.to_string(),
                    dash(o.committed_offset),
                    dash(o.log_end_offset),
                    dash(o.lag),
                    o.member_id.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            text.push_str(&t.render());
        }
        if !g.members.is_empty() {
            text.push('\n');
            let kip848 = g.members.iter().any(|m| m.member_epoch.is_some());
            let mut headers = vec!["MEMBER", "INSTANCE", "CLIENT-ID", "HOST", "ASSIGNMENT"];
            if kip848 {
                headers.extend(["EPOCH", "TARGET"]);
            }
            let mut t = Table::new(&headers);
            let show = |a: &BTreeMap<String, Vec<i32>>| {
                a.iter()
                    .map(|(topic, parts)| {
                        let parts: Vec<String> = parts.iter().map(i32::to_string).collect();
                        format!("{topic}:{}", parts.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            for m in &g.members {
                let assignment = show(&m.assignment);
                let mut row = vec![
                    m.member_id.clone(),
                    m.group_instance_id.clone().unwrap_or_else(|| "-".into()),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    if assignment.is_empty() {
                        "-".into()
                    } else {
                        assignment
                    },
                ];
                if kip848 {
                    let target = m.target.as_ref().map(&show).unwrap_or_default();
                    row.push(m.member_epoch.map_or("-".into(), |e| e.to_string()));
                    row.push(if target.is_empty() {
                        "-".into()
                    } else {
                        target
                    });
                }
                t.row(row);
            }
            text.push_str(&t.render());
        }
    }
    write_stdout(&text)
}

fn delete(common: &Common, groups: &[String]) -> Result<()> {
    let mut client = common.client()?;
    for g in groups {
        let coordinator = api::find_coordinator(&mut client, g)?;
        with_retries(|| api::delete_group(&mut client, &coordinator, g))?;
    }
    if common.json {
        return print_json(&serde_json::json!({ "deleted": groups }));
    }
    let text: String = groups
        .iter()
        .map(|g| format!("Deleted group {g}.\n"))
        .collect();
    write_stdout(&text)
}

#[derive(Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Time(i64),
    Offset(i64),
}

#[derive(Serialize)]
struct ResetRow {
    topic: String,
    partition: i32,
    previous_offset: Option<i64>,
    new_offset: i64,
}

/// `--topic` values: TOPIC (all partitions) or TOPIC:P,P.
fn parse_topic_spec(s: &str) -> Result<(String, Option<Vec<i32>>)> {
    match s.split_once(':') {
        None => Ok((s.to_string(), None)),
        Some((t, parts)) => {
            let parts = parts
                .split(',')
                .map(|p| {
                    p.trim().parse::<i32>().map_err(|_| {
                        Error::other(format!("--topic '{s}': '{p}' is not a partition number"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((t.to_string(), Some(parts)))
        }
    }
}

fn reset_offsets(
    common: &Common,
    group: &str,
    topic_specs: &[String],
    all_topics: bool,
    target: Target,
    dry_run: bool,
) -> Result<()> {
    let mut client = common.client()?;
    let coordinator = api::find_coordinator(&mut client, group)?;
    let desc = with_retries(|| api::describe_group(&mut client, &coordinator, group))?;
    if !desc.members.is_empty() || !matches!(desc.state.as_str(), "Empty" | "Dead" | "") {
        return Err(Error::kafka(
            format!("resetting the offsets of group '{group}'"),
            ErrorCode::NON_EMPTY_GROUP.code(),
            Some(&format!(
                "the group is {} with {} member{}",
                desc.state,
                desc.members.len(),
                if desc.members.len() == 1 { "" } else { "s" }
            )),
        )
        .with_hint(
            "stop the group's consumers first; reset-offsets needs a group without members",
        ));
    }
    let committed = api::offset_fetch(&mut client, &coordinator, group)?;
    // Which (topic, partitions) to reset.
    let mut wanted: BTreeMap<String, Option<Vec<i32>>> = BTreeMap::new();
    if all_topics {
        for (t, p) in committed.keys() {
            if let Some(list) = wanted.entry(t.clone()).or_insert_with(|| Some(Vec::new())) {
                list.push(*p);
            }
        }
        if wanted.is_empty() {
            return Err(Error::other(format!(
                "group '{group}' has no committed offsets: name the topics with --topic"
            )));
        }
    }
    for spec in topic_specs {
        let (t, parts) = parse_topic_spec(spec)?;
        wanted.insert(t, parts);
    }
    let mut new_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, parts) in &wanted {
        let meta = api::topic_metadata(&mut client, topic, false)?;
        let parts: Vec<i32> = match parts {
            Some(p) => p.clone(),
            None => meta.partitions.iter().map(|p| p.partition).collect(),
        };
        let earliest = api::list_offsets(&mut client, &meta, &parts, EARLIEST)?;
        let latest = api::list_offsets(&mut client, &meta, &parts, LATEST)?;
        let at_time = match target {
            Target::Time(ms) => Some(api::list_offsets(&mut client, &meta, &parts, ms)?),
            _ => None,
        };
        for p in parts {
            let lo = earliest.get(&p).map_or(0, |o| o.0);
            let hi = latest.get(&p).map_or(lo, |o| o.0);
            let new = match target {
                Target::Earliest => lo,
                Target::Latest => hi,
                // No record at or after the time: the end, as Kafka's tool does.
                Target::Time(_) => at_time
                    .as_ref()
                    .and_then(|m| m.get(&p))
                    .map(|o| o.0)
                    .filter(|o| *o >= 0)
                    .unwrap_or(hi),
                Target::Offset(o) => o.clamp(lo, hi),
            };
            new_offsets.insert((topic.clone(), p), new);
        }
    }
    if !dry_run {
        api::offset_commit(&mut client, &coordinator, group, &new_offsets)?;
    }
    let rows: Vec<ResetRow> = new_offsets
        .iter()
        .map(|((t, p), o)| ResetRow {
            topic: t.clone(),
            partition: *p,
            previous_offset: committed.get(&(t.clone(), *p)).copied(),
            new_offset: *o,
        })
        .collect();
    if common.json {
        return print_json(&serde_json::json!({
            "group": group,
            "dry_run": dry_run,
            "offsets": rows,
        }));
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "PREVIOUS", "NEW"]);
    for r in &rows {
        table.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.previous_offset.map_or("-".into(), |o| o.to_string()),
            r.new_offset.to_string(),
        ]);
    }
    let mut text = table.render();
    text.push_str(if dry_run {
        "(dry run: nothing committed)\n"
    } else {
        "Committed.\n"
    });
    write_stdout(&text)
}
