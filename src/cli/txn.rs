//! `spate txn list|describe|abort`: transactions, as Kafka's `kafka-transactions.sh` shows
//! them. `abort` writes an abort marker (WriteTxnMarkers) to a partition for each producer
//! whose transaction is open there (or the one named), with the producer id and epoch that
//! DescribeProducers reports: the way out of a transaction that holds a partition's last
//! stable offset and that no coordinator will end.

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, ProducerId,
    TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::api;
use super::client::{Client, with_retries};
use super::error::{Error, Result, check};
use super::output::{Table, print_json};
use super::{Common, TxnCommand};

pub fn run(common: &Common, cmd: TxnCommand) -> Result<()> {
    match cmd {
        TxnCommand::List => list(common),
        TxnCommand::Describe { ids } => describe(common, &ids),
        TxnCommand::Abort {
            topic,
            partition,
            producer_id,
        } => abort(common, &topic, partition, producer_id),
    }
}

#[derive(Debug, Serialize)]
struct Listed {
    transactional_id: String,
    producer_id: i64,
    state: String,
}

fn list(common: &Common) -> Result<()> {
    let mut client = common.client()?;
    api::metadata(&mut client, Some(&[]), false)?;
    let nodes: Vec<i32> = client.brokers.keys().copied().collect();
    let mut out = Vec::new();
    for node in nodes {
        let conn = client.node(node)?;
        let v = conn.version_of::<ListTransactionsRequest>(1)?;
        let resp = conn.call(
            &ListTransactionsRequest::default().with_duration_filter(-1),
            v,
        )?;
        check(resp.error_code, "listing transactions", None)?;
        out.extend(resp.transaction_states.iter().map(|t| Listed {
            transactional_id: t.transactional_id.0.to_string(),
            producer_id: t.producer_id.0,
            state: t.transaction_state.to_string(),
        }));
    }
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    if common.json {
        return print_json(&out);
    }
    let mut table = Table::new(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"]);
    for t in &out {
        table.row(vec![
            t.transactional_id.clone(),
            t.producer_id.to_string(),
            t.state.clone(),
        ]);
    }
    table.print()
}

#[derive(Debug, Serialize)]
struct Described {
    transactional_id: String,
    state: String,
    producer_id: i64,
    producer_epoch: i16,
    timeout_ms: i32,
    start_time_ms: i64,
    partitions: Vec<String>,
}

fn describe(common: &Common, ids: &[String]) -> Result<()> {
    let mut client = common.client()?;
    let mut out = Vec::new();
    for id in ids {
        let coordinator = find_txn_coordinator(&mut client, id)?;
        let conn = client.conn(&coordinator)?;
        let v = conn.version_of::<DescribeTransactionsRequest>(0)?;
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.clone()))]);
        let resp = conn.call(&req, v)?;
        let t = resp
            .transaction_states
            .first()
            .ok_or_else(|| Error::other(format!("transaction '{id}': empty answer")))?;
        check(t.error_code, format!("transaction '{id}'"), None)?;
        out.push(Described {
            transactional_id: id.clone(),
            state: t.transaction_state.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.transaction_timeout_ms,
            start_time_ms: t.transaction_start_time_ms,
            partitions: t
                .topics
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", tp.topic.0))
                })
                .collect(),
        });
    }
    if common.json {
        return print_json(&out);
    }
    let mut table = Table::new(&[
        "TRANSACTIONAL-ID",
        "STATE",
        "PRODUCER-ID",
        "EPOCH",
        "TIMEOUT-MS",
        "START-MS",
        "PARTITIONS",
    ]);
    for t in &out {
        table.row(vec![
            t.transactional_id.clone(),
            t.state.clone(),
            t.producer_id.to_string(),
            t.producer_epoch.to_string(),
            t.timeout_ms.to_string(),
            t.start_time_ms.to_string(),
            t.partitions.join(","),
        ]);
    }
    table.print()
}

/// The coordinator of a transactional id, HOST:PORT.
fn find_txn_coordinator(client: &mut Client, id: &str) -> Result<String> {
    use kafka_protocol::messages::FindCoordinatorRequest;
    with_retries(|| {
        let conn = client.any()?;
        let v = conn.version_of::<FindCoordinatorRequest>(3)?;
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(id.to_string()))
            .with_key_type(1);
        let resp = conn.call(&req, v)?;
        check(
            resp.error_code,
            format!("finding the coordinator of transaction '{id}'"),
            resp.error_message.as_deref(),
        )?;
        Ok(format!("{}:{}", resp.host, resp.port))
    })
}

#[derive(Debug, Serialize)]
struct Aborted {
    producer_id: i64,
    producer_epoch: i16,
    first_offset: i64,
}

fn abort(common: &Common, topic: &str, partition: i32, only: Option<i64>) -> Result<()> {
    let mut client = common.client()?;
    let meta = api::metadata(&mut client, Some(&[topic.to_string()]), false)?;
    let leader = meta
        .topic(topic)?
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .map(|p| p.leader)
        .ok_or_else(|| Error::other(format!("topic '{topic}' has no partition {partition}")))?;
    let conn = client.node(leader)?;
    let v = conn.version_of::<DescribeProducersRequest>(0)?;
    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![partition]),
    ]);
    let resp = conn.call(&req, v)?;
    let part = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| Error::other("DescribeProducers: empty answer"))?;
    check(
        part.error_code,
        format!("producers of {topic}-{partition}"),
        part.error_message.as_deref(),
    )?;
    let open: Vec<Aborted> = part
        .active_producers
        .iter()
        .filter(|p| p.current_txn_start_offset >= 0)
        .filter(|p| only.is_none_or(|id| id == p.producer_id.0))
        .map(|p| Aborted {
            producer_id: p.producer_id.0,
            producer_epoch: i16::try_from(p.producer_epoch).unwrap_or(i16::MAX),
            first_offset: p.current_txn_start_offset,
        })
        .collect();
    if open.is_empty() {
        return Err(Error::other(format!(
            "no open transaction in {topic}-{partition}{}",
            only.map_or(String::new(), |id| format!(" of producer {id}"))
        )));
    }
    let markers = open
        .iter()
        .map(|a| {
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(a.producer_id))
                .with_producer_epoch(a.producer_epoch)
                .with_transaction_result(false)
                .with_coordinator_epoch(-1)
                .with_topics(vec![
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partition_indexes(vec![partition]),
                ])
        })
        .collect();
    let v = conn.version_of::<WriteTxnMarkersRequest>(1)?;
    let resp = conn.call(&WriteTxnMarkersRequest::default().with_markers(markers), v)?;
    for m in &resp.markers {
        for t in &m.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    format!(
                        "abort marker of producer {} in {topic}-{partition}",
                        m.producer_id.0
                    ),
                    None,
                )?;
            }
        }
    }
    if common.json {
        return print_json(&open);
    }
    let mut table = Table::new(&["ABORTED-PRODUCER-ID", "EPOCH", "FIRST-OFFSET"]);
    for a in &open {
        table.row(vec![
            a.producer_id.to_string(),
            a.producer_epoch.to_string(),
            a.first_offset.to_string(),
        ]);
    }
    table.print()
}
