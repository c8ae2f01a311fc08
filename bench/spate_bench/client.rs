//! A small blocking Kafka client: framing, ApiVersions negotiation, Metadata and CreateTopics.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
    create_topics_request::CreatableTopic, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// Longest wait for any single response (acks=all under load included).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_FRAME: usize = 1 << 30;

/// Connects with TCP_NODELAY and read/write timeouts.
pub fn connect(addr: &str) -> Result<TcpStream> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
    let s = TcpStream::connect_timeout(&sock, Duration::from_secs(10))
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Appends one size-prefixed request frame to `out`.
pub fn encode_request<Req: Encodable>(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("spate-bench")))
        .encode(out, api_key.request_header_version(version))
        .map_err(|e| anyhow!("encode {api_key:?} header: {e}"))?;
    req.encode(out, version)
        .map_err(|e| anyhow!("encode {api_key:?} v{version}: {e}"))?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads one size-prefixed frame.
pub fn read_frame(r: &mut impl Read) -> io::Result<Bytes> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as usize > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response size prefix {size}"),
        ));
    }
    let mut body = vec![0u8; size as usize];
    r.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Decodes a response frame: (correlation id, body).
pub fn decode_response<Resp: Decodable>(
    mut frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<(i32, Resp)> {
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
        .map_err(|e| anyhow!("decode {api_key:?} response header: {e}"))?;
    let body = Resp::decode(&mut frame, version)
        .map_err(|e| anyhow!("decode {api_key:?} v{version} response: {e}"))?;
    Ok((header.correlation_id, body))
}

/// A connection for request/response round trips (setup and admin work).
pub struct Conn {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Result<Conn> {
        Ok(Conn {
            stream: connect(addr)?,
            next_correlation: 1,
        })
    }

    pub fn call<Req: Request>(&mut self, version: i16, req: &Req) -> Result<Req::Response> {
        let key = ApiKey::try_from(Req::KEY).map_err(|_| anyhow!("api key {}", Req::KEY))?;
        let corr = self.next_correlation;
        self.next_correlation += 1;
        let mut buf = BytesMut::new();
        encode_request(&mut buf, key, version, corr, req)?;
        self.stream
            .write_all(&buf)
            .with_context(|| format!("send {key:?}"))?;
        let frame = read_frame(&mut self.stream).with_context(|| format!("read {key:?}"))?;
        let (got, resp) = decode_response::<Req::Response>(frame, key, version)?;
        if got != corr {
            bail!("{key:?}: correlation id {got}, expected {corr}");
        }
        Ok(resp)
    }
}

/// API versions both sides speak.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub create_topics: i16,
}

/// The versions spate-bench can speak (topics by name, not by id). Fetch stops at v11, the
/// last version without tagged fields: some brokers (Tansu 0.6) send tags in v12 responses that
/// the schema only defines from v16, which the decoder rightly rejects.
const OURS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
];

/// Asks the broker for its API versions and picks the highest common one per API.
pub fn negotiate(conn: &mut Conn) -> Result<Versions> {
    let resp: ApiVersionsResponse = match conn.call(3, &ApiVersionsRequest::default()) {
        Ok(r) if r.error_code == 0 => r,
        _ => {
            // A broker without v3 answers v0; reconnect and ask with v0.
            *conn = Conn::connect(&conn.stream.peer_addr()?.to_string())?;
            conn.call(0, &ApiVersionsRequest::default())?
        }
    };
    if resp.error_code != 0 {
        bail!("ApiVersions: error code {}", resp.error_code);
    }
    let pick = |key: ApiKey| -> Result<i16> {
        let (_, lo, hi) = OURS.iter().find(|(k, _, _)| *k == key).expect("listed");
        let theirs = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .ok_or_else(|| anyhow!("the broker does not support {key:?}"))?;
        let v = (*hi).min(theirs.max_version);
        if v < *lo.max(&theirs.min_version) {
            bail!(
                "no common {key:?} version: broker {}..={}, spate-bench {lo}..={hi}",
                theirs.min_version,
                theirs.max_version
            );
        }
        Ok(v)
    };
    Ok(Versions {
        produce: pick(ApiKey::Produce)?,
        fetch: pick(ApiKey::Fetch)?,
        metadata: pick(ApiKey::Metadata)?,
        create_topics: pick(ApiKey::CreateTopics)?,
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
    let resp: MetadataResponse = conn.call(v.metadata, &req)?;
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
        let resp: CreateTopicsResponse = conn.call(v.create_topics, &req)?;
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
