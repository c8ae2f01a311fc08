//! The admin CLI's side of the shared blocking client (`crate::client`): its options, one
//! connection per broker address opened on first use, retries of what the cluster may fix by
//! itself, and the hints a person at a terminal needs when a connection fails.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::client::{self as kafka, Options, SaslLogin};

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
            kafka::Error::Io { .. }
            | kafka::Error::Protocol { .. }
            | kafka::Error::Unsupported(_) => Error::other(text),
        }
    }
}

fn connect(addr: &str, login: Option<&SaslLogin>) -> Result<Conn> {
    Ok(Conn::connect_login(addr, &OPTIONS, login)?)
}

/// How the tools reach a secured listener: Kafka's client properties file
/// (`--command-config`, as Kafka's own tools take it): `security.protocol`,
/// `sasl.mechanism`, and the user as `sasl.username`/`sasl.password` (librdkafka's names) or
/// in `sasl.jaas.config` (the Java client's `... username="u" password="p";`).
pub fn read_command_config(path: &std::path::Path) -> Result<Option<SaslLogin>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::other(format!("cannot read {}: {e}", path.display())))?;
    parse_command_config(&text).map_err(|e| Error::other(format!("{}: {e}", path.display())))
}

/// The SASL login of a client properties text (None: PLAINTEXT).
pub fn parse_command_config(text: &str) -> std::result::Result<Option<SaslLogin>, String> {
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line
            .split_once(['=', ':'])
            .ok_or_else(|| format!("'{line}' is not key=value"))?;
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    let protocol = props
        .get("security.protocol")
        .map_or("PLAINTEXT".to_string(), |p| p.to_ascii_uppercase());
    match protocol.as_str() {
        "PLAINTEXT" => return Ok(None),
        "SASL_PLAINTEXT" => {}
        "SSL" | "SASL_SSL" => {
            return Err(format!(
                "security.protocol={protocol}: the spate tools do not speak TLS yet"
            ));
        }
        other => {
            return Err(format!(
                "security.protocol={other} is not a security protocol"
            ));
        }
    }
    let mechanism = props
        .get("sasl.mechanism")
        .or_else(|| props.get("sasl.mechanisms"))
        .cloned()
        .ok_or("security.protocol=SASL_PLAINTEXT needs sasl.mechanism")?;
    let jaas = props
        .get("sasl.jaas.config")
        .map(String::as_str)
        .unwrap_or("");
    let quoted = |key: &str| -> Option<String> {
        let at = jaas.find(&format!("{key}=\""))? + key.len() + 2;
        let end = jaas[at..].find('"')?;
        Some(jaas[at..at + end].to_string())
    };
    let username = props
        .get("sasl.username")
        .cloned()
        .or_else(|| quoted("username"))
        .ok_or("no sasl.username (or username= in sasl.jaas.config)")?;
    let password = props
        .get("sasl.password")
        .cloned()
        .or_else(|| quoted("password"))
        .ok_or("no sasl.password (or password= in sasl.jaas.config)")?;
    Ok(Some(SaslLogin {
        mechanism: mechanism.to_ascii_uppercase(),
        username,
        password,
    }))
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
    login: Option<SaslLogin>,
    conns: HashMap<String, Conn>,
    /// Node id -> address, from the last Metadata.
    pub brokers: BTreeMap<i32, BrokerInfo>,
}

impl Client {
    /// Connects to the bootstrap server (failing early with a hint when nothing listens).
    pub fn connect(bootstrap: &str) -> Result<Client> {
        Client::connect_login(bootstrap, None)
    }

    /// Connects to the bootstrap server, logging in with `login` on every connection.
    pub fn connect_login(bootstrap: &str, login: Option<SaslLogin>) -> Result<Client> {
        let conn = connect(bootstrap, login.as_ref())?;
        let mut conns = HashMap::new();
        conns.insert(bootstrap.to_string(), conn);
        Ok(Client {
            bootstrap: bootstrap.to_string(),
            login,
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
            let c = connect(addr, self.login.as_ref())?;
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

#[cfg(test)]
mod command_config_tests {
    use super::*;

    #[test]
    fn client_properties_as_kafka_tools_take_them() {
        assert!(parse_command_config("# nothing\n").unwrap().is_none());
        let l = parse_command_config(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.username=alice\nsasl.password=a=b:c\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                l.mechanism.as_str(),
                l.username.as_str(),
                l.password.as_str()
            ),
            ("SCRAM-SHA-512", "alice", "a=b:c")
        );
        let java = "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
             required username=\"bob\" password=\"pw x\";\n";
        let l = parse_command_config(java).unwrap().unwrap();
        assert_eq!((l.username.as_str(), l.password.as_str()), ("bob", "pw x"));
        assert!(format!("{l:?}").contains("bob") && !format!("{l:?}").contains("pw x"));
        assert!(parse_command_config("security.protocol=SASL_PLAINTEXT\n").is_err());
        assert!(parse_command_config("security.protocol=SSL\n").is_err());
        assert!(parse_command_config("security.protocol=BOGUS\n").is_err());
    }
}
