//! `spate admin cluster status`: the brokers that serve, the active controller, each voter of
//! the metadata quorum with its lag behind the leader, and the partitions without a leader.
//! `spate admin cluster config`: a broker's settings, and the dynamic broker configs.

use serde::Serialize;

use super::api::{self, ClusterBroker, Quorum};
use super::error::Result;
use super::output::{Table, print_json, write_stdout};
use super::{ClusterCommand, Common};

#[derive(Serialize)]
struct Leaderless {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
}

#[derive(Serialize)]
struct Status {
    cluster_id: String,
    controller: i32,
    brokers: Vec<ClusterBroker>,
    quorum: Quorum,
    leaderless: Vec<Leaderless>,
}

pub fn run(common: &Common, cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Status => status(common),
        ClusterCommand::Config {
            broker,
            configs,
            delete_configs,
        } => config(common, broker, &configs, &delete_configs),
    }
}

fn config(
    common: &Common,
    broker: Option<i32>,
    configs: &[String],
    delete: &[String],
) -> Result<()> {
    let mut client = common.client()?;
    let name = broker.map(|b| b.to_string()).unwrap_or_default();
    if configs.is_empty() && delete.is_empty() {
        // Show: a broker's settings (the one named, else the one bootstrapped from).
        let node = match broker {
            Some(b) => b.to_string(),
            None => api::describe_cluster(&mut client)?
                .brokers
                .first()
                .map(|b| b.id.to_string())
                .unwrap_or_default(),
        };
        let entries = api::describe_configs(&mut client, api::RESOURCE_BROKER, &node)?;
        if common.json {
            return print_json(&entries);
        }
        let mut t = Table::new(&["CONFIG", "VALUE", "SOURCE", "DYNAMIC"]);
        for e in &entries {
            t.row(vec![
                e.name.clone(),
                e.value.clone().unwrap_or_else(|| "-".into()),
                e.source.to_string(),
                if e.read_only { "no" } else { "yes" }.to_string(),
            ]);
        }
        return write_stdout(&t.render());
    }
    let set = configs
        .iter()
        .map(|c| super::key_value(c, "--config"))
        .collect::<Result<Vec<_>>>()?;
    api::alter_configs(&mut client, api::RESOURCE_BROKER, &name, &set, delete)?;
    let whom = broker.map_or("every broker".to_string(), |b| format!("broker {b}"));
    if common.json {
        return print_json(&serde_json::json!({
            "broker": broker, "set": set.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(), "deleted": delete
        }));
    }
    let mut text = String::new();
    for (k, v) in &set {
        text.push_str(&format!("Set {k}={v} for {whom}.\n"));
    }
    for k in delete {
        text.push_str(&format!("Removed {k} for {whom}.\n"));
    }
    write_stdout(&text)
}

fn status(common: &Common) -> Result<()> {
    let mut client = common.client()?;
    let cluster = api::describe_cluster(&mut client)?;
    let quorum = api::describe_quorum(&mut client)?;
    let md = api::metadata(&mut client, None, false)?;
    let leaderless: Vec<Leaderless> = md
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader < 0)
                .map(|p| Leaderless {
                    topic: t.name.clone(),
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                })
        })
        .collect();
    let status = Status {
        cluster_id: cluster.cluster_id,
        controller: cluster.controller,
        brokers: cluster.brokers,
        quorum,
        leaderless,
    };
    if common.json {
        return print_json(&status);
    }
    let mut text = format!(
        "Cluster: {}  Active controller: {}\n\n",
        status.cluster_id, status.controller
    );
    let mut brokers = Table::new(&["BROKER", "HOST", "PORT", "RACK"]);
    for b in &status.brokers {
        brokers.row(vec![
            b.id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    text.push_str(&brokers.render());
    text.push_str(&format!(
        "\nMetadata quorum: leader {}  epoch {}  high watermark {}\n\n",
        status.quorum.leader, status.quorum.leader_epoch, status.quorum.high_watermark
    ));
    let mut voters = Table::new(&["VOTER", "STATE", "LOG END", "LAG"]);
    for v in &status.quorum.voters {
        let state = if v.id == status.quorum.leader {
            "Leader"
        } else {
            "Follower"
        };
        voters.row(vec![
            v.id.to_string(),
            state.to_string(),
            v.log_end_offset.to_string(),
            v.lag.to_string(),
        ]);
    }
    text.push_str(&voters.render());
    if status.leaderless.is_empty() {
        text.push_str("\nEvery partition has a leader.\n");
    } else {
        text.push_str(&format!(
            "\n{} partitions without a leader:\n",
            status.leaderless.len()
        ));
        let mut t = Table::new(&["TOPIC", "PARTITION", "REPLICAS"]);
        for p in &status.leaderless {
            t.row(vec![
                p.topic.clone(),
                p.partition.to_string(),
                super::output::nodes(&p.replicas),
            ]);
        }
        text.push_str(&t.render());
    }
    write_stdout(&text)
}
