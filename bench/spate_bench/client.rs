//! spate-bench's side of the shared blocking client (`spate::client`): its options, the API
//! versions it speaks, Metadata and CreateTopics.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, TopicName, create_topics_request::CreatableTopic,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use spate::client::{Options, Security, Stream, frame};

pub use spate::client::Conn;

/// Connection options: a response may take up to a minute (acks=all under load included).
pub const OPTIONS: Options = Options {
    client_id: "spate-bench",
    connect_timeout: Duration::from_secs(10),
    io_timeout: Duration::from_secs(60),
    frame_bytes_max: 1 << 30,
};

/// Longest wait for any single response.
pub const IO_TIMEOUT: Duration = OPTIONS.io_timeout;

/// How every connection is secured (`--command-config`; PLAINTEXT when unset).
static SECURITY: OnceLock<Security> = OnceLock::new();

/// Sets how every connection is secured; the first call wins (main calls it once, first).
pub fn set_security(security: Security) {
    let _ = SECURITY.set(security);
}

fn security() -> &'static Security {
    SECURITY.get_or_init(Security::default)
}

/// A socket with TCP_NODELAY and the I/O timeouts (TLS when `--command-config` says so, and
/// the SASL login done), for a producer's pipelined requests.
pub fn connect(addr: &str) -> Result<Stream> {
    let security = security();
    if security.login.is_some() {
        // The login's round trips need a Conn; the stream under it then carries the
        // pipelined requests.
        return Ok(Conn::connect_secure(addr, &OPTIONS, security)?.into_stream());
    }
    Ok(spate::client::open_stream(
        addr,
        &OPTIONS,
        security.tls.as_ref(),
    )?)
}

/// A connection for request/response round trips (setup and consumers), versions negotiated.
pub fn open(addr: &str) -> Result<Conn> {
    Ok(Conn::connect_secure(addr, &OPTIONS, security())?)
}

/// Appends one size-prefixed request frame to `out`.
pub fn encode_request<Req: Encodable>(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> Result<()> {
    frame::encode_request(
        out,
        api_key,
        version,
        correlation_id,
        OPTIONS.client_id,
        req,
    )
    .map_err(|e| anyhow!(e))
}

/// Reads one size-prefixed frame.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Bytes> {
    frame::read_frame(r, OPTIONS.frame_bytes_max)
}

/// Decodes a response frame: (correlation id, body).
pub fn decode_response<Resp: Decodable>(
    frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<(i32, Resp)> {
    frame::decode_response(frame, api_key, version).map_err(|e| anyhow!(e))
}

/// API versions both sides speak.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub create_topics: i16,
}

/// The highest common version of each API spate-bench uses (topics by name, not by id).
/// Fetch stops at v11, the last version without tagged fields: some brokers (Tansu 0.6) send
/// tags in v12 responses that the schema only defines from v16, which the decoder rightly
/// rejects.
pub fn negotiate(conn: &Conn) -> Result<Versions> {
    Ok(Versions {
        produce: conn.version_in::<ProduceRequest>(3, 9)?,
        fetch: conn.version_in::<FetchRequest>(4, 11)?,
        metadata: conn.version_in::<MetadataRequest>(1, 12)?,
        create_topics: conn.version_in::<CreateTopicsRequest>(2, 7)?,
    })
}

/// Where each partition's leader is.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// node id -> "host:port"
    pub brokers: HashMap<i32, String>,
    /// (topic, partition) -> leader node id
    pub leaders: HashMap<(String, i32), i32>,
}

impl Cluster {
    pub fn leader_addr(&self, topic: &str, partition: i32) -> Option<(i32, &str)> {
        let node = *self.leaders.get(&(topic.to_string(), partition))?;
        Some((node, self.brokers.get(&node)?.as_str()))
    }
}

pub fn metadata(conn: &mut Conn, v: &Versions, topics: &[String]) -> Result<Cluster> {
    let req = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = conn.call(&req, v.metadata)?;
    let mut cluster = Cluster::default();
    for b in &resp.brokers {
        cluster
            .brokers
            .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
    }
    for t in &resp.topics {
        if t.error_code != 0 {
            continue;
        }
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            if p.error_code == 0 && p.leader_id.0 >= 0 {
                cluster
                    .leaders
                    .insert((name.0.to_string(), p.partition_index), p.leader_id.0);
            }
        }
    }
    Ok(cluster)
}

/// Creates the topics (an existing one is fine) and waits until every partition has a leader.
pub fn create_topics(
    conn: &mut Conn,
    v: &Versions,
    topics: &[String],
    partitions: i32,
) -> Result<Cluster> {
    const TOPIC_ALREADY_EXISTS: i16 = 36;
    for chunk in topics.chunks(100) {
        let req = CreateTopicsRequest::default()
            .with_topics(
                chunk
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.clone())))
                            .with_num_partitions(partitions)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            )
            .with_timeout_ms(30_000);
        let req = if v.create_topics < 4 {
            // Default replication factor (-1) needs v4+; ask for 1 before that.
            let mut req = req;
            for t in &mut req.topics {
                t.replication_factor = 1;
            }
            req
        } else {
            req
        };
        let resp: CreateTopicsResponse = conn.call(&req, v.create_topics)?;
        for t in &resp.topics {
            if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                bail!(
                    "CreateTopics {}: error code {} {}",
                    t.name.0.as_str(),
                    t.error_code,
                    t.error_message.as_ref().map(|m| m.as_str()).unwrap_or("")
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cluster = metadata(conn, v, topics)?;
        let missing = topics
            .iter()
            .flat_map(|t| (0..partitions).map(move |p| (t, p)))
            .find(|(t, p)| cluster.leader_addr(t, *p).is_none());
        match missing {
            None => return Ok(cluster),
            Some((t, p)) if Instant::now() >= deadline => {
                bail!("partition {t}/{p} has no leader after 30 s")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
