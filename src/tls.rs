//! TLS for the SSL and SASL_SSL listeners (rustls on the ring provider): the server
//! configuration built from the PEM files of `--tls-cert-file`, `--tls-key-file` and
//! `--tls-client-ca-file`, the client certificate's principal (its subject DN in RFC 2253 form,
//! mapped by `--ssl-principal-mapping-rules` as Kafka's `ssl.principal.mapping.rules`), the
//! SIGHUP reload generation and the kTLS probe. The connection side (handshake, the reader and
//! writer halves) is `server::tls_stream`.
//!
//! Lives on: each shard builds and holds its own `Arc<ServerConfig>` (rustls shares it between
//! the connections of that shard); the only cross-thread state is [`RELOAD_GENERATION`], which
//! the signal thread bumps on SIGHUP and each shard's ticker compares with what it loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Bumped by the signal thread on SIGHUP; a shard that loaded an older generation reloads the
/// certificate, key and client CA from their files (new connections use the new material, open
/// ones keep theirs).
pub static RELOAD_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Where the TLS material is read from (at start and on every SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The server's private key, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// CAs client certificates must chain to; set, a client certificate is required
    /// (Kafka's `ssl.client.auth=required`).
    pub client_ca: Option<PathBuf>,
}

/// The certificates of a PEM file, in file order; none is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the file", path.display()));
    }
    Ok(certs)
}

/// The first private key of a PEM file: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1)
/// or `EC PRIVATE KEY` (SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{}: no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in the file",
            path.display()
        ),
        e => format!("{}: {e}", path.display()),
    })
}

/// The provider every TLS listener uses: ring, TLS 1.3 and 1.2.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration from the files: TLS 1.2 and 1.3, the certificate chain and
/// key (checked to match), and with a client CA, client certificates required and verified.
/// Reads the files (a start-up or reload step, not the data path).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs(&files.cert).map_err(|e| format!("tls_cert_file {e}"))?;
    let key = load_key(&files.key).map_err(|e| format!("tls_key_file {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca).map_err(|e| format!("tls_client_ca_file {e}"))? {
                roots.add(c).map_err(|e| {
                    format!(
                        "tls_client_ca_file {}: a CA is not usable: {e}",
                        ca.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .map_err(|e| format!("tls_client_ca_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_cert_file {} and tls_key_file {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    // Kafka clients speak Kafka inside TLS; no ALPN is negotiated.
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// A client configuration (the tools' and the brokers' side of a TLS connection): servers
/// must chain to a CA of `trust` and match the name connected to; `identity` (certificate
/// chain, key) is presented when the server asks for a client certificate. TLS 1.2 and 1.3.
pub fn client_config(
    trust: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(trust)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: a CA is not usable: {e}", trust.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?,
    };
    Ok(Arc::new(config))
}

/// The name a TLS client checks the server's certificate against: an IP address or a DNS
/// name, from the HOST of `HOST:PORT`.
pub fn server_name(addr: &str) -> Result<rustls_pki_types::ServerName<'static>, String> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("'{host}' is not a host name or address: {e}"))
}

/// A certificate's subject DN in RFC 2253 form, as Java's `X500Principal.getName()` writes it
/// (what Kafka's principal is built from): RDNs last to first, separated by `,`, the
/// attributes of a multi-valued RDN by `+`; CN, C, L, ST, O, OU, STREET, DC and UID by name,
/// others as `OID=#hex` of the value's DER; special characters escaped with `\`.
pub fn subject_dn_rfc2253(cert_der: &[u8]) -> Result<String, String> {
    use x509_parser::asn1_rs::ToDer;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let mut out = String::new();
    for (i, rdn) in cert
        .subject()
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let keyword = match oid.as_str() {
                "2.5.4.3" => Some("CN"),
                "2.5.4.6" => Some("C"),
                "2.5.4.7" => Some("L"),
                "2.5.4.8" => Some("ST"),
                "2.5.4.10" => Some("O"),
                "2.5.4.11" => Some("OU"),
                "2.5.4.9" => Some("STREET"),
                "0.9.2342.19200300.100.1.25" => Some("DC"),
                "0.9.2342.19200300.100.1.1" => Some("UID"),
                _ => None,
            };
            match (keyword, atv.as_str()) {
                (Some(k), Ok(v)) => {
                    out.push_str(k);
                    out.push('=');
                    escape_rfc2253(v, &mut out);
                }
                _ => {
                    out.push_str(&oid);
                    out.push_str("=#");
                    let der = atv
                        .attr_value()
                        .to_der_vec()
                        .map_err(|e| format!("a DN attribute does not encode: {e}"))?;
                    for b in der {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// RFC 2253 section 2.4: `,+"\<>;` escaped, and a leading `#` or space and a trailing space.
fn escape_rfc2253(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One rule of `ssl.principal.mapping.rules`.
#[derive(Clone, Debug)]
enum Rule {
    /// The DN as it is.
    Default,
    Map {
        /// The pattern, anchored: the rule applies when it matches the whole DN.
        whole: regex::Regex,
        /// The pattern as given, for the replacement.
        pattern: regex::Regex,
        /// The replacement in the regex crate's syntax (`${1}`).
        replacement: String,
        case: Case,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// Kafka's `ssl.principal.mapping.rules` (`SslPrincipalMapper`): a comma-separated list of
/// `RULE:pattern/replacement/[LU]` and `DEFAULT`; the first rule whose pattern matches the
/// whole DN gives the name (its replacement, lower- or upper-cased with L or U), `DEFAULT`
/// gives the DN itself, and a DN no rule matches is refused.
#[derive(Clone, Debug)]
pub struct PrincipalRules {
    rules: Vec<Rule>,
    /// As given, for `--print-config` and DescribeConfigs.
    pub text: String,
}

impl PartialEq for PrincipalRules {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// Kafka's `RULE_PATTERN`: DEFAULT, or RULE:pattern/replacement/flag, or anything (invalid).
const RULE_PATTERN: &str = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)";

impl Default for PrincipalRules {
    fn default() -> Self {
        PrincipalRules {
            rules: vec![Rule::Default],
            text: "DEFAULT".into(),
        }
    }
}

impl PrincipalRules {
    /// Parses the rules as Kafka does (`SslPrincipalMapper.fromRules`): the list is split at
    /// the commas between rules (a comma inside a rule's pattern stays in it), and each rule
    /// must be all of DEFAULT or RULE:pattern/replacement/ with an optional L or U.
    pub fn parse(text: &str) -> Result<PrincipalRules, String> {
        let splitter = regex::Regex::new(&format!(r"\s*({RULE_PATTERN})\s*(?:,\s*|$)"))
            .map_err(|e| e.to_string())?;
        let parser =
            regex::Regex::new(&format!("^(?:{RULE_PATTERN})")).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for m in splitter.captures_iter(text.trim()) {
            let Some(rule) = m.get(1).map(|r| r.as_str()) else {
                continue;
            };
            let c = parser
                .captures(rule)
                .ok_or_else(|| format!("invalid rule: {rule}"))?;
            let end = c.get(0).map_or(0, |m| m.end());
            if end != rule.len() {
                return Err(format!(
                    "invalid rule: `{rule}`, unmatched substring: `{}`",
                    &rule[end..]
                ));
            }
            if c.get(1).is_some() {
                rules.push(Rule::Default);
            } else if let (Some(p), Some(r)) = (c.get(2), c.get(3)) {
                let case = match c.get(4).map(|f| f.as_str()) {
                    Some("L") => Case::Lower,
                    Some("U") => Case::Upper,
                    _ => Case::Keep,
                };
                // `\/` writes a slash inside the pattern; the regex crate wants it plain.
                let p = p.as_str().replace(r"\/", "/");
                let bad = |e: regex::Error| format!("rule {rule}: pattern {p}: {e}");
                rules.push(Rule::Map {
                    whole: regex::Regex::new(&format!("^(?:{p})$")).map_err(bad)?,
                    pattern: regex::Regex::new(&p).map_err(bad)?,
                    replacement: java_replacement(r.as_str()),
                    case,
                });
            }
        }
        Ok(PrincipalRules {
            rules,
            text: text.to_string(),
        })
    }

    /// The principal name for a DN, or None when no rule applies (Kafka then refuses the
    /// connection).
    pub fn apply(&self, dn: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Map {
                    whole,
                    pattern,
                    replacement,
                    case,
                } => {
                    if !whole.is_match(dn) {
                        continue;
                    }
                    let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                    return Some(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        None
    }
}

/// A Java `Matcher.replaceAll` replacement in the regex crate's syntax: `$n` is group n
/// (`${n}`), `\c` is the character c, a `$` the crate would read as a group is doubled.
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(n) => out.push(n),
                None => out.push('\\'),
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                if digits.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{digits}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether the kernel offers kTLS: `setsockopt(TCP_ULP, "tls")` on a fresh TCP socket. The
/// kernel looks the ULP up before it checks the socket's state, so ENOENT means no `tls`
/// module, and ENOTCONN (it wants an established socket) means the ULP is there.
pub fn probe_ktls() -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )?;
    let name = b"tls";
    // SAFETY: a valid socket, and a pointer and length of a live byte string.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOTCONN) {
        return Ok(());
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's SslPrincipalMapperTest and the `ssl.principal.mapping.rules` documentation.
    #[test]
    fn kafka_valid_and_invalid_rules() {
        for ok in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            assert!(PrincipalRules::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
        ] {
            assert!(PrincipalRules::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kafka_mapping_examples() {
        let rules = PrincipalRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, \
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
             RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, \
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT",
        )
        .unwrap();
        let map = |dn: &str| rules.apply(dn).unwrap();
        assert_eq!(map("CN=Duke,OU=ServiceUsers,O=Org,C=US"), "duke");
        assert_eq!(map("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"), "duke@sme");
        assert_eq!(map("cn=duke,ou=sme,dc=mycp,dc=com"), "DUKE@SME");
        assert_eq!(map("cN=duke,OU=JavaSoft,O=Sun Microsystems"), "DUKE");
        assert_eq!(
            map("OU=JavaSoft,O=Sun Microsystems,C=US"),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );
        // The documentation's example.
        let doc = PrincipalRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            doc.apply("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .unwrap(),
            "serviceuser"
        );
        assert_eq!(
            doc.apply("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .unwrap(),
            "adminuser@admin"
        );
    }

    #[test]
    fn commas_inside_patterns_and_escaped_commas_in_names() {
        let rules = PrincipalRules::parse("RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/,DEFAULT").unwrap();
        // The pattern's commas stay in the rule; a name with one of its excluded letters
        // falls through to DEFAULT.
        assert_eq!(rules.apply("CN=bob,OU=ITZ").unwrap(), "bob");
        assert_eq!(rules.apply("CN=bob").unwrap(), "bob");
        assert_eq!(rules.apply("CN=Duke,OU=ITZ").unwrap(), "CN=Duke,OU=ITZ");
        let rules = PrincipalRules::parse(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT").unwrap();
        assert_eq!(
            rules
                .apply(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz")
                .unwrap(),
            r"Tkac\, Adam"
        );
    }

    #[test]
    fn no_matching_rule_refuses_and_default_keeps_the_dn() {
        let rules = PrincipalRules::parse("RULE:^CN=(.*?),OU=eng$/$1/").unwrap();
        assert_eq!(rules.apply("CN=alice,OU=eng").unwrap(), "alice");
        assert_eq!(rules.apply("CN=bob,OU=ops"), None);
        assert_eq!(
            PrincipalRules::default().apply("CN=alice,OU=eng").unwrap(),
            "CN=alice,OU=eng"
        );
        // `$1` followed by letters is group 1, then the letters (Java's reading).
        let rules = PrincipalRules::parse("RULE:^CN=(.*?),.*$/$1x\\$/").unwrap();
        assert_eq!(rules.apply("CN=a,O=b").unwrap(), "ax$");
    }

    #[test]
    fn rfc2253_escaping() {
        let mut s = String::new();
        escape_rfc2253("#a, b+c \"d\" <e>;f\\ ", &mut s);
        assert_eq!(s, r#"\#a\, b\+c \"d\" \<e\>\;f\\\ "#);
        let mut s = String::new();
        escape_rfc2253(" x", &mut s);
        assert_eq!(s, r"\ x");
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    /// Runs a handshake in memory; Ok once both sides are done.
    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), String> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
            server
                .read_tls(&mut buf.as_slice())
                .map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
            client
                .read_tls(&mut buf.as_slice())
                .map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| e.to_string())?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        Err("no end to the handshake".into())
    }

    #[test]
    fn the_client_side_verifies_the_server_and_presents_its_certificate() {
        assert!(matches!(
            server_name("127.0.0.1:9093").unwrap(),
            rustls_pki_types::ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("localhost:9093").unwrap(),
            rustls_pki_types::ServerName::DnsName(_)
        ));
        let files = TlsFiles {
            cert: fixture("server.pem"),
            key: fixture("server-pkcs8.key"),
            client_ca: Some(fixture("ca.pem")),
        };
        let server_cfg = server_config(&files).unwrap();
        let identity = (fixture("client.pem"), fixture("client.key"));
        let cfg = client_config(
            &fixture("ca.pem"),
            Some((identity.0.as_path(), identity.1.as_path())),
        )
        .unwrap();
        let mut c = rustls::ClientConnection::new(cfg.clone(), server_name("127.0.0.1:1").unwrap())
            .unwrap();
        let mut s = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert!(s.peer_certificates().is_some_and(|p| !p.is_empty()));
        // A name the certificate does not hold is refused.
        let mut c =
            rustls::ClientConnection::new(cfg, server_name("other.example:1").unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
        assert!(handshake(&mut c, &mut s).is_err());
        // Without a client certificate, a server that requires one refuses.
        let cfg = client_config(&fixture("ca.pem"), None).unwrap();
        let mut c =
            rustls::ClientConnection::new(cfg, server_name("localhost:1").unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server_cfg).unwrap();
        assert!(handshake(&mut c, &mut s).is_err());
        assert!(client_config(&fixture("client.key"), None).is_err());
    }

    #[test]
    fn subject_dn_is_rfc2253_last_rdn_first() {
        let certs = load_certs(&fixture("client.pem")).unwrap();
        // Subject written by openssl as /C=FR/O=Spate Test/OU=eng/CN=alice, Smith/emailAddress=a@x
        assert_eq!(
            subject_dn_rfc2253(&certs[0]).unwrap(),
            "1.2.840.113549.1.9.1=#1603614078,CN=alice\\, Smith,OU=eng,O=Spate Test,C=FR"
        );
        assert!(subject_dn_rfc2253(b"not a certificate").is_err());
    }

    #[test]
    fn keys_load_in_pkcs8_pkcs1_and_sec1_and_match_their_certificates() {
        for (cert, key, kind) in [
            ("server.pem", "server-pkcs8.key", "pkcs8"),
            ("server.pem", "server-pkcs1.key", "pkcs1"),
            ("server-ec.pem", "server-sec1.key", "sec1"),
        ] {
            let k = load_key(&fixture(key)).unwrap();
            let expected = match kind {
                "pkcs8" => matches!(k, PrivateKeyDer::Pkcs8(_)),
                "pkcs1" => matches!(k, PrivateKeyDer::Pkcs1(_)),
                _ => matches!(k, PrivateKeyDer::Sec1(_)),
            };
            assert!(expected, "{key} is not {kind}");
            let files = TlsFiles {
                cert: fixture(cert),
                key: fixture(key),
                client_ca: Some(fixture("ca.pem")),
            };
            server_config(&files).unwrap();
        }
        // The chain file: leaf then CA.
        assert_eq!(load_certs(&fixture("server-chain.pem")).unwrap().len(), 2);
        // A key that is not the certificate's, a file with no key, a missing file.
        let wrong = TlsFiles {
            cert: fixture("server.pem"),
            key: fixture("server-sec1.key"),
            client_ca: None,
        };
        assert!(server_config(&wrong).is_err());
        assert!(
            load_key(&fixture("server.pem"))
                .unwrap_err()
                .contains("no PRIVATE KEY")
        );
        assert!(load_certs(&fixture("server-pkcs8.key")).is_err());
        assert!(load_certs(&fixture("missing.pem")).is_err());
    }
}
