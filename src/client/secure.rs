//! How the tools reach a secured listener: TLS (rustls) under the Kafka protocol, a SASL login
//! over it, and Kafka's client properties (`--command-config`) that say which.
//!
//! A connection's [`Stream`] is plain TCP or TLS over TCP; both read and write with the
//! socket's timeouts. [`Stream::split`] gives a reader half and a writer half for two threads
//! (spate-bench's pipelined producer): over TLS they share the rustls connection under a mutex,
//! the reader decrypting what it read from its clone of the socket, the writer encrypting and
//! sending everything the connection has to send, so records leave in sequence order.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use super::conn::SaslLogin;

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// A reader half and a writer half for two threads.
    pub fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        match self {
            Stream::Plain(s) => {
                let r = s.try_clone()?;
                Ok((ReadHalf::Plain(r), WriteHalf::Plain(s)))
            }
            Stream::Tls(s) => {
                let rustls::StreamOwned { conn, sock } = *s;
                let r = sock.try_clone()?;
                let conn = Arc::new(Mutex::new(conn));
                Ok((
                    ReadHalf::Tls {
                        conn: Arc::clone(&conn),
                        sock: r,
                    },
                    WriteHalf::Tls {
                        conn,
                        sock,
                        out: Vec::new(),
                    },
                ))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn poisoned() -> io::Error {
    io::Error::other("the TLS connection's lock is poisoned")
}

/// The reader half of a split [`Stream`].
pub enum ReadHalf {
    Plain(TcpStream),
    Tls {
        conn: Arc<Mutex<ClientConnection>>,
        sock: TcpStream,
    },
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (conn, sock) = match self {
            ReadHalf::Plain(s) => return s.read(buf),
            ReadHalf::Tls { conn, sock } => (conn, sock),
        };
        let mut wire = [0u8; 16 * 1024];
        loop {
            {
                let mut c = conn.lock().map_err(|_| poisoned())?;
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // Nothing decrypted yet: read from the socket without holding the lock (the
            // writer encrypts meanwhile), then hand the bytes to the connection.
            let n = sock.read(&mut wire)?;
            let mut c = conn.lock().map_err(|_| poisoned())?;
            if n == 0 {
                // EOF: rustls tells a clean close_notify (Ok(0)) from a truncation.
                return c.reader().read(buf);
            }
            let mut fed = &wire[..n];
            while !fed.is_empty() {
                c.read_tls(&mut fed)?;
                c.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
    }
}

/// The writer half of a split [`Stream`].
pub enum WriteHalf {
    Plain(TcpStream),
    Tls {
        conn: Arc<Mutex<ClientConnection>>,
        sock: TcpStream,
        out: Vec<u8>,
    },
}

impl WriteHalf {
    /// Shuts the socket down (both directions: the reader half sees EOF).
    pub fn shutdown(&self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.shutdown(Shutdown::Both),
            WriteHalf::Tls { sock, .. } => sock.shutdown(Shutdown::Both),
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(s) => s.write(buf),
            WriteHalf::Tls { conn, sock, out } => {
                // Encrypt under the lock, send after it: only this half writes to the socket,
                // so the records leave in the order the connection numbered them.
                out.clear();
                let n = {
                    let mut c = conn.lock().map_err(|_| poisoned())?;
                    let n = c.writer().write(buf)?;
                    while c.wants_write() {
                        c.write_tls(out)?;
                    }
                    n
                };
                sock.write_all(out)?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.flush(),
            WriteHalf::Tls { sock, .. } => sock.flush(),
        }
    }
}

/// How a tool secures its connections: TLS (SSL, SASL_SSL) and a SASL login (SASL_PLAINTEXT,
/// SASL_SSL). The default is PLAINTEXT.
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<Arc<ClientConfig>>,
    pub login: Option<SaslLogin>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("login", &self.login)
            .finish()
    }
}

/// The TLS part of Kafka's client properties (librdkafka's names), files not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProps {
    /// `ssl.ca.location`: PEM CAs the broker's certificate must chain to.
    pub ca: PathBuf,
    /// `ssl.certificate.location` and `ssl.key.location`: the client's certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// `ssl.endpoint.identification.algorithm=https` (the default): the broker's certificate
    /// must name the host connected to; `none` (or empty) skips only that check.
    pub check_host: bool,
}

/// Kafka's client properties as the tools take them (`--command-config`).
#[derive(Debug, Clone, Default)]
pub struct CommandConfig {
    pub tls: Option<TlsProps>,
    pub login: Option<SaslLogin>,
}

impl CommandConfig {
    /// Reads and parses a properties file.
    pub fn read(path: &Path) -> Result<CommandConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        CommandConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a properties text: `security.protocol` (PLAINTEXT, SASL_PLAINTEXT, SSL,
    /// SASL_SSL), `sasl.mechanism`, the user as `sasl.username`/`sasl.password` (librdkafka)
    /// or in `sasl.jaas.config` (the Java client's `... username="u" password="p";`),
    /// `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location` and
    /// `ssl.endpoint.identification.algorithm`.
    pub fn parse(text: &str) -> Result<CommandConfig, String> {
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
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SASL_PLAINTEXT" => (false, true),
            "SSL" => (true, false),
            "SASL_SSL" => (true, true),
            other => {
                return Err(format!(
                    "security.protocol={other} is not a security protocol \
                     (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
                ));
            }
        };
        let tls = if tls {
            Some(tls_props(&props, &protocol)?)
        } else {
            None
        };
        let login = if sasl {
            Some(sasl_login(&props, &protocol)?)
        } else {
            None
        };
        Ok(CommandConfig { tls, login })
    }

    /// Loads the TLS files: what the connections use.
    pub fn security(&self) -> Result<Security, String> {
        let tls = match &self.tls {
            None => None,
            Some(t) => Some(client_config(t)?),
        };
        Ok(Security {
            tls,
            login: self.login.clone(),
        })
    }
}

fn tls_props(props: &BTreeMap<String, String>, protocol: &str) -> Result<TlsProps, String> {
    let path = |key: &str| props.get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    let ca = path("ssl.ca.location").ok_or_else(|| {
        format!(
            "security.protocol={protocol} needs ssl.ca.location (the PEM file of the CA that \
             signed the broker's certificate)"
        )
    })?;
    let identity = match (path("ssl.certificate.location"), path("ssl.key.location")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(
                "a client certificate needs both ssl.certificate.location and ssl.key.location"
                    .to_string(),
            );
        }
    };
    if props.contains_key("ssl.key.password") {
        return Err(
            "ssl.key.password: encrypted private keys are not supported (give an unencrypted \
             PEM key)"
                .to_string(),
        );
    }
    let check_host = match props
        .get("ssl.endpoint.identification.algorithm")
        .map(|a| a.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("https") => true,
        Some("none") | Some("") => false,
        Some(other) => {
            return Err(format!(
                "ssl.endpoint.identification.algorithm={other}: https or none"
            ));
        }
    };
    Ok(TlsProps {
        ca,
        identity,
        check_host,
    })
}

fn sasl_login(props: &BTreeMap<String, String>, protocol: &str) -> Result<SaslLogin, String> {
    let mechanism = props
        .get("sasl.mechanism")
        .or_else(|| props.get("sasl.mechanisms"))
        .cloned()
        .ok_or_else(|| format!("security.protocol={protocol} needs sasl.mechanism"))?;
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
    Ok(SaslLogin {
        mechanism: mechanism.to_ascii_uppercase(),
        username,
        password,
    })
}

/// The rustls client configuration of `props`: the CA, the client certificate if any, and
/// without the host-name check when `check_host` is off.
pub fn client_config(props: &TlsProps) -> Result<Arc<ClientConfig>, String> {
    let identity = props
        .identity
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let config = crate::tls::client_config(&props.ca, identity)?;
    if props.check_host {
        return Ok(config);
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::load_certs(&props.ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: a CA is not usable: {e}", props.ca.display()))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(config.crypto_provider()),
    )
    .build()
    .map_err(|e| format!("{}: {e}", props.ca.display()))?;
    let mut config = (*config).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AnyHostName(inner)));
    Ok(Arc::new(config))
}

/// Kafka's `ssl.endpoint.identification.algorithm=none`: the broker's certificate must still
/// chain to the CA, be current and sign the handshake; only the host name is not checked.
/// (webpki checks the chain before the name, so a name error means the chain was good.)
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What a TLS failure means to a person: the rustls error in words, with what to check.
pub fn explain(e: &rustls::Error, host: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the broker's certificate is not signed by a CA in ssl.ca.location ({e})")
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the broker's certificate is not valid for host '{host}' ({e}; connect by a name \
             the certificate carries, or set ssl.endpoint.identification.algorithm=none)"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the broker's certificate has expired ({e})")
        }
        E::AlertReceived(A::CertificateRequired) => "the broker requires a client certificate \
             (set ssl.certificate.location and ssl.key.location)"
            .to_string(),
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => format!(
            "the broker refused our client certificate ({e}): is it signed by the CA the \
             broker trusts?"
        ),
        E::InvalidMessage(_) => {
            format!("not a TLS answer ({e}): is this listener PLAINTEXT or SASL_PLAINTEXT?")
        }
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_properties_as_kafka_tools_take_them() {
        let c = CommandConfig::parse("# nothing\n").unwrap();
        assert!(c.tls.is_none() && c.login.is_none());
        let l = CommandConfig::parse(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.username=alice\nsasl.password=a=b:c\n",
        )
        .unwrap()
        .login
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
        let l = CommandConfig::parse(java).unwrap().login.unwrap();
        assert_eq!((l.username.as_str(), l.password.as_str()), ("bob", "pw x"));
        assert!(format!("{l:?}").contains("bob") && !format!("{l:?}").contains("pw x"));
        assert!(CommandConfig::parse("security.protocol=SASL_PLAINTEXT\n").is_err());
        assert!(CommandConfig::parse("security.protocol=BOGUS\n").is_err());
    }

    #[test]
    fn ssl_properties_as_librdkafka_takes_them() {
        let c = CommandConfig::parse(
            "security.protocol=ssl\nssl.ca.location=/x/ca.pem\n\
             ssl.certificate.location=/x/c.pem\nssl.key.location = /x/c.key\n",
        )
        .unwrap();
        assert!(c.login.is_none());
        assert_eq!(
            c.tls.unwrap(),
            TlsProps {
                ca: "/x/ca.pem".into(),
                identity: Some(("/x/c.pem".into(), "/x/c.key".into())),
                check_host: true,
            }
        );
        let c = CommandConfig::parse(
            "security.protocol=SASL_SSL\nssl.ca.location=ca.pem\nsasl.mechanism=PLAIN\n\
             sasl.username=u\nsasl.password=p\nssl.endpoint.identification.algorithm=none\n",
        )
        .unwrap();
        let t = c.tls.unwrap();
        assert!(t.identity.is_none() && !t.check_host);
        assert_eq!(c.login.unwrap().mechanism, "PLAIN");
        let empty = "security.protocol=SSL\nssl.ca.location=ca.pem\n\
                     ssl.endpoint.identification.algorithm=\n";
        assert!(!CommandConfig::parse(empty).unwrap().tls.unwrap().check_host);
        let https = "security.protocol=SSL\nssl.ca.location=ca.pem\n\
                     ssl.endpoint.identification.algorithm=HTTPS\n";
        assert!(CommandConfig::parse(https).unwrap().tls.unwrap().check_host);
        for (bad, says) in [
            ("security.protocol=SSL\n", "ssl.ca.location"),
            (
                "security.protocol=SSL\nssl.ca.location=ca.pem\nssl.key.location=k\n",
                "both",
            ),
            (
                "security.protocol=SSL\nssl.ca.location=ca.pem\n\
                 ssl.endpoint.identification.algorithm=ldap\n",
                "https or none",
            ),
            (
                "security.protocol=SSL\nssl.ca.location=ca.pem\nssl.key.password=x\n",
                "encrypted",
            ),
            (
                "security.protocol=SASL_SSL\nssl.ca.location=ca.pem\n",
                "sasl.mechanism",
            ),
        ] {
            let e = CommandConfig::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn missing_tls_files_are_named() {
        let c =
            CommandConfig::parse("security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n")
                .unwrap();
        let e = c.security().unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
