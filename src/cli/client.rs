//! The admin CLI's side of the shared blocking client (`crate::client`): its options, one
//! connection per broker address opened on first use, retries of what the cluster may fix by
//! itself, and the hints a person at a terminal needs when a connection fails.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::client::{self as kafka, CommandConfig, Options, Security};

pub use crate::client::Conn;

use super::error::{Error, Result};

/// How long retriable errors (leadership or coordinator moving) are retried.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// Connection options of the CLI.
const OPTIONS: Options = Options::new("spate-cli");

impl From<kafka::Error> for Error {
    fn from(e: kafka::Error) -> Error {
        let text = e.to_string();
        match e {
            kafka::Error::Resolve { .. } => Error::other(text)
                .with_hint("give --bootstrap-server as HOST:PORT, e.g. 127.0.0.1:9092"),
            kafka::Error::Connect { addr, .. } => Error::other(text).with_hint(format!(
                "is the broker running at {addr}? (set --bootstrap-server HOST:PORT)"
            )),
            kafka::Error::Timeout { addr, .. } => Error::other(text)
                .with_hint(format!("is the broker at {addr} overloaded or stuck?")),
            kafka::Error::Closed { .. } => Error::other(text)
                .with_hint("the broker may have refused the request (see its log) or stopped"),
            kafka::Error::Kafka { addr, code } => {
                Error::kafka(format!("ApiVersions with {addr}"), code, None)
            }
            kafka::Error::Authentication { .. } => Error::other(text).with_hint(
                "check sasl.mechanism, sasl.username and sasl.password in --command-config",
            ),
            kafka::Error::Tls { .. } => Error::other(text)
                .with_hint("check security.protocol and the ssl.* locations in --command-config"),
            kafka::Error::Io { .. }
            | kafka::Error::Protocol { .. }
            | kafka::Error::Unsupported(_) => Error::other(text),
        }
    }
}

fn connect(addr: &str, security: &Security) -> Result<Conn> {
    Ok(Conn::connect_secure(addr, &OPTIONS, security)?)
}

/// How the tools reach a secured listener: Kafka's client properties file
/// (`--command-config`, as Kafka's own tools take it), parsed by
/// [`CommandConfig::parse`](crate::client::CommandConfig::parse), its TLS files loaded.
pub fn read_command_config(path: &std::path::Path) -> Result<Security> {
    CommandConfig::read(path)
        .and_then(|c| c.security())
        .map_err(Error::other)
}

/// A broker as Metadata describes it.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Connections by broker address, starting from the bootstrap server.
pub struct Client {
    bootstrap: String,
    security: Security,
    conns: HashMap<String, Conn>,
    /// Node id -> address, from the last Metadata.
    pub brokers: BTreeMap<i32, BrokerInfo>,
}

impl Client {
    /// Connects to the bootstrap server (failing early with a hint when nothing listens).
    pub fn connect(bootstrap: &str) -> Result<Client> {
        Client::connect_secure(bootstrap, Security::default())
    }

    /// Connects to the bootstrap server, every connection secured by `security` (TLS, a SASL
    /// login).
    pub fn connect_secure(bootstrap: &str, security: Security) -> Result<Client> {
        let conn = connect(bootstrap, &security)?;
        let mut conns = HashMap::new();
        conns.insert(bootstrap.to_string(), conn);
        Ok(Client {
            bootstrap: bootstrap.to_string(),
            security,
            conns,
            brokers: BTreeMap::new(),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The bootstrap connection.
    pub fn any(&mut self) -> Result<&mut Conn> {
        let addr = self.bootstrap.clone();
        self.conn(&addr)
    }

    /// The connection to `addr`, opened on first use.
    pub fn conn(&mut self, addr: &str) -> Result<&mut Conn> {
        if !self.conns.contains_key(addr) {
            let c = connect(addr, &self.security)?;
            self.conns.insert(addr.to_string(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| Error::other(format!("no connection to {addr}")))
    }

    /// The connection to broker `node` (from the last Metadata).
    pub fn node(&mut self, node: i32) -> Result<&mut Conn> {
        let addr = self
            .brokers
            .get(&node)
            .map(BrokerInfo::addr)
            .ok_or_else(|| {
                Error::other(format!("broker {node} is not in the cluster's metadata"))
                    .with_hint("the cluster is changing; try again in a moment")
            })?;
        self.conn(&addr)
    }

    /// Drops a connection (after an I/O failure) so the next use reconnects.
    pub fn forget(&mut self, addr: &str) {
        self.conns.remove(addr);
    }
}

/// Runs `f` until it succeeds or fails with a non-retriable error, or [`RETRY_FOR`] passes.
pub fn with_retries<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        match f() {
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
