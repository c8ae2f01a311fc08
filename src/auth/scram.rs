//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them over
//! SaslAuthenticate: the server side's state machine, the stored credentials, PLAIN's
//! password check against the same credentials, and the client side (the admin tools log in
//! with it). Pure: the caller supplies the nonces and looks the user's credential up.
//!
//! A credential never holds the password: only the salt, the iteration count, StoredKey =
//! H(HMAC(SaltedPassword, "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"),
//! as Kafka stores them (`UserScramCredentialsRecord`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The two SCRAM mechanisms Kafka defines (KIP-84), with Kafka's numbers (KIP-554).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's ScramMechanism id (DescribeUserScramCredentials / AlterUserScramCredentials).
    pub fn id(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_id(id: i8) -> Option<Mechanism> {
        match id {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable_hmac());
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable_hmac());
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword = PBKDF2-HMAC(password, salt, iterations), what AlterUserScramCredentials
    /// carries.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Mechanism::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// HMAC takes keys of any length: `new_from_slice` cannot fail for it.
fn unreachable_hmac() -> ! {
    unreachable!("HMAC accepts keys of every length")
}

/// Iterations Kafka accepts for a SCRAM credential (AlterUserScramCredentials).
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// One user's credential for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    // Keys are secrets: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("mechanism", &self.mechanism.name())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The credential of `password` under `salt` (the caller draws it at random).
    pub fn new(mechanism: Mechanism, password: &str, salt: Vec<u8>, iterations: u32) -> Credential {
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        Credential::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// The credential of a salted password (AlterUserScramCredentials sends that, never the
    /// password).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Credential {
        let client_key = mechanism.hmac(salted, b"Client Key");
        Credential {
            mechanism,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// Whether `password` is this credential's (SASL/PLAIN against SCRAM credentials), in
    /// constant time over the keys.
    pub fn verifies(&self, password: &str) -> bool {
        let salted =
            self.mechanism
                .salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        constant_time_eq(&self.mechanism.hash(&client_key), &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed. The client is told only that authentication failed (which of
/// user and password was wrong is never said); this is for the broker's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScramError {
    Malformed(String),
    UnknownUser,
    InvalidProof,
}

/// The server's side of one exchange.
#[derive(Debug)]
pub enum Server {
    /// Waiting for client-first-message.
    Start {
        mechanism: Mechanism,
    },
    /// server-first-message sent; waiting for client-final-message.
    Challenged {
        user: String,
        credential: Credential,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// The user name in a client-first-message ("=2C" is ',' and "=3D" is '=').
fn unescape_user(s: &str) -> Result<String, ScramError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name".into())),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of `key=` among comma-separated attributes.
fn attr<'a>(parts: &[&'a str], key: char) -> Option<&'a str> {
    parts
        .iter()
        .find(|p| p.starts_with(key) && p.as_bytes().get(1) == Some(&b'='))
        .map(|p| &p[2..])
}

impl Server {
    pub fn new(mechanism: Mechanism) -> Server {
        Server::Start { mechanism }
    }

    /// The user name of a client-first-message, so the caller can look its credential up.
    pub fn user_of(client_first: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("not UTF-8".into()))?;
        let bare = Self::bare(text)?;
        let parts: Vec<&str> = bare.split(',').collect();
        unescape_user(attr(&parts, 'n').ok_or_else(|| ScramError::Malformed("no n=".into()))?)
    }

    /// client-first-message-bare: what follows the GS2 header ("n,," or "n,a=authzid,";
    /// channel binding is not offered, as Kafka).
    fn bare(text: &str) -> Result<&str, ScramError> {
        let (cb, rest) = text
            .split_once(',')
            .ok_or_else(|| ScramError::Malformed("no GS2 header".into()))?;
        if cb != "n" && cb != "y" {
            return Err(ScramError::Malformed(
                "channel binding is not supported".into(),
            ));
        }
        let (_authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| ScramError::Malformed("no GS2 header".into()))?;
        Ok(bare)
    }

    /// Takes a message from the client and returns the server's answer. `credential` is the
    /// user's (None: unknown user) and `server_nonce` fresh random printable text; both are
    /// used by the first step only.
    pub fn step(
        &mut self,
        message: &[u8],
        credential: Option<Credential>,
        server_nonce: &str,
    ) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8".into()))?;
        match std::mem::replace(self, Server::Done) {
            Server::Start { mechanism } => {
                let bare = Self::bare(text)?;
                let parts: Vec<&str> = bare.split(',').collect();
                if parts.first().is_some_and(|p| p.starts_with("m=")) {
                    return Err(ScramError::Malformed("mandatory extension".into()));
                }
                let user = unescape_user(
                    attr(&parts, 'n').ok_or_else(|| ScramError::Malformed("no n=".into()))?,
                )?;
                let client_nonce =
                    attr(&parts, 'r').ok_or_else(|| ScramError::Malformed("no r=".into()))?;
                if client_nonce.is_empty() {
                    return Err(ScramError::Malformed("empty nonce".into()));
                }
                let credential = credential
                    .filter(|c| c.mechanism == mechanism)
                    .ok_or(ScramError::UnknownUser)?;
                let nonce = format!("{client_nonce}{server_nonce}");
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    B64.encode(&credential.salt),
                    credential.iterations
                );
                let out = server_first.clone().into_bytes();
                *self = Server::Challenged {
                    user,
                    credential,
                    client_first_bare: bare.to_string(),
                    server_first,
                    nonce,
                };
                Ok(out)
            }
            Server::Challenged {
                credential,
                client_first_bare,
                server_first,
                nonce,
                ..
            } => {
                let (without_proof, proof) = text
                    .rsplit_once(",p=")
                    .ok_or_else(|| ScramError::Malformed("no p=".into()))?;
                let parts: Vec<&str> = without_proof.split(',').collect();
                if attr(&parts, 'r') != Some(nonce.as_str()) {
                    return Err(ScramError::Malformed("nonce does not match".into()));
                }
                if attr(&parts, 'c').is_none() {
                    return Err(ScramError::Malformed("no c=".into()));
                }
                let proof = B64
                    .decode(proof)
                    .map_err(|_| ScramError::Malformed("proof is not base64".into()))?;
                let m = credential.mechanism;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Err(ScramError::InvalidProof);
                }
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                if !constant_time_eq(&m.hash(&client_key), &credential.stored_key) {
                    return Err(ScramError::InvalidProof);
                }
                let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
                Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
            }
            Server::Done => Err(ScramError::Malformed("the exchange is over".into())),
        }
    }

    /// The authenticated user, once the exchange succeeded.
    pub fn is_done(&self) -> bool {
        matches!(self, Server::Done)
    }
}

/// The client's side of one exchange: `first`, then `answer` the server-first-message, then
/// `verify` the server-final-message (which proves the server knows the credential).
pub struct Client {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    /// The expected server signature, once the client-final-message is made.
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for Client {
    // The password is a secret: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("mechanism", &self.mechanism.name())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `nonce`: fresh random printable text without ',' (the caller draws it).
    pub fn new(mechanism: Mechanism, user: &str, password: &str, nonce: &str) -> Client {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Client {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={user},r={nonce}"),
            client_nonce: nonce.to_string(),
            server_signature: None,
        }
    }

    /// client-first-message (no channel binding, no authorization id, as Kafka's clients).
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// client-final-message for the server-first-message `server_first`. Refuses a nonce
    /// that does not extend the client's, and iteration counts outside what Kafka accepts
    /// (a server could otherwise make the client spin).
    pub fn answer(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("not UTF-8".into()))?;
        let parts: Vec<&str> = text.split(',').collect();
        let nonce = attr(&parts, 'r').ok_or_else(|| ScramError::Malformed("no r=".into()))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Malformed(
                "the server nonce does not extend ours".into(),
            ));
        }
        let salt = B64
            .decode(attr(&parts, 's').ok_or_else(|| ScramError::Malformed("no s=".into()))?)
            .map_err(|_| ScramError::Malformed("salt is not base64".into()))?;
        let iterations: u32 = attr(&parts, 'i')
            .and_then(|i| i.parse().ok())
            .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
            .ok_or_else(|| ScramError::Malformed("bad i=".into()))?;
        let m = self.mechanism;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.server_signature = Some(m.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message: `v=` must be the server signature (`e=` is the
    /// server's error).
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("not UTF-8".into()))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Malformed(format!("the server says {e}")));
        }
        let v = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or_else(|| ScramError::Malformed("no v=".into()))?;
        match &self.server_signature {
            Some(expected) if constant_time_eq(expected, &v) => Ok(()),
            _ => Err(ScramError::InvalidProof),
        }
    }
}

/// A client's whole SASL login over SaslAuthenticate, PLAIN or SCRAM-SHA-256/512: the tokens
/// to send in turn, and the check of what the server answers (the tools and the brokers'
/// inter-broker login drive it over their own connections). No `Debug`: it holds the
/// password.
pub enum Login {
    /// PLAIN: one token; its answer ends the login.
    Plain(String),
    /// SCRAM: client-first, then client-final; the server-final-message is verified.
    Scram { client: Client, answered: bool },
}

impl Login {
    /// The login of `user` with `password` by `mechanism` (its SaslHandshake name); `nonce`
    /// is fresh random printable text without ',' (see [`random_nonce`]).
    pub fn new(mechanism: &str, user: &str, password: &str, nonce: &str) -> Result<Login, String> {
        if mechanism == "PLAIN" {
            return Ok(Login::Plain(format!("\0{user}\0{password}")));
        }
        let m = Mechanism::from_name(mechanism).ok_or_else(|| {
            format!("unknown mechanism {mechanism} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
        })?;
        Ok(Login::Scram {
            client: Client::new(m, user, password, nonce),
            answered: false,
        })
    }

    /// The first token.
    pub fn first(&self) -> Vec<u8> {
        match self {
            Login::Plain(msg) => msg.clone().into_bytes(),
            Login::Scram { client, .. } => client.first(),
        }
    }

    /// Takes the server's answer to the last token: the next token to send, or None when the
    /// login is complete (for SCRAM, once the server proved it knows the credential).
    pub fn next(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            Login::Plain(_) => Ok(None),
            Login::Scram { client, answered } if !*answered => {
                *answered = true;
                client
                    .answer(server)
                    .map(Some)
                    .map_err(|e| format!("bad server-first-message: {e:?}"))
            }
            Login::Scram { client, .. } => client
                .verify(server)
                .map(|()| None)
                .map_err(|e| format!("the broker did not prove it knows the credential: {e:?}")),
        }
    }
}

/// A fresh client nonce: 24 random bytes in unpadded base64.
pub fn random_nonce() -> Result<String, String> {
    let mut raw = [0u8; 24];
    getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness for a nonce: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw))
}

/// `--sasl-users-file`: one `name:password` per line, split at the first `:`; empty lines and
/// lines starting with `#` are skipped. The error names the line (never its password).
pub fn parse_users_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                if out.iter().any(|(n, _)| n == name) {
                    return Err(format!("line {}: user '{name}' is listed twice", i + 1));
                }
                out.push((name.to_string(), password.to_string()));
            }
            _ => {
                return Err(format!(
                    "line {} is not name:password (both non-empty)",
                    i + 1
                ));
            }
        }
    }
    Ok(out)
}

/// SASL/PLAIN's message: `authzid NUL authcid NUL password`. Returns (user, password); an
/// authorization id other than empty or the user is refused, as Kafka.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), ScramError> {
    let text =
        std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8".into()))?;
    let mut it = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(ScramError::Malformed(
            "PLAIN is authzid NUL user NUL password".into(),
        ));
    };
    if user.is_empty() || password.is_empty() {
        return Err(ScramError::Malformed("empty user or password".into()));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(ScramError::Malformed(
            "an authorization id other than the user".into(),
        ));
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, byte for byte.
    #[test]
    fn rfc_7677_sha256_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = Credential::new(Mechanism::Sha256, "pencil", salt, 4096);
        let mut s = Server::new(Mechanism::Sha256);
        let first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        assert_eq!(Server::user_of(first).unwrap(), "user");
        let server_first = s
            .step(first, Some(cred.clone()), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
            .unwrap();
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let final_msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let server_final = s.step(final_msg, None, "").unwrap();
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(s.is_done());
        assert!(cred.verifies("pencil") && !cred.verifies("pencil2"));
    }

    /// The client's side of RFC 7677's example, byte for byte, then against our server.
    #[test]
    fn the_client_side_of_rfc_7677_and_of_our_server() {
        let mut c = Client::new(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let final_msg = c
            .answer(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(final_msg).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(
            c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_ok()
        );
        assert_eq!(
            c.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::InvalidProof)
        );

        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let cred = Credential::new(m, "s3cret", b"salty".to_vec(), 4096);
            let mut c = Client::new(m, "a=b,c", "s3cret", "clientnonce");
            let mut s = Server::new(m);
            assert_eq!(Server::user_of(&c.first()).unwrap(), "a=b,c");
            let sf = s
                .step(&c.first(), Some(cred.clone()), "servernonce")
                .unwrap();
            let cf = c.answer(&sf).unwrap();
            let fin = s.step(&cf, None, "").unwrap();
            assert!(c.verify(&fin).is_ok());
            // A wrong password fails at the server.
            let mut c = Client::new(m, "a=b,c", "wrong", "clientnonce");
            let mut s = Server::new(m);
            let sf = s.step(&c.first(), Some(cred), "servernonce").unwrap();
            let cf = c.answer(&sf).unwrap();
            assert_eq!(s.step(&cf, None, ""), Err(ScramError::InvalidProof));
        }
        // A server that does not extend our nonce, or asks for absurd iterations.
        let mut c = Client::new(Mechanism::Sha256, "u", "p", "abc");
        assert!(c.answer(b"r=xyz,s=c2FsdA==,i=4096").is_err());
        assert!(c.answer(b"r=abc,s=c2FsdA==,i=4096").is_err());
        assert!(c.answer(b"r=abcd,s=c2FsdA==,i=100000000").is_err());
        assert!(c.answer(b"\xff").is_err());
    }

    #[test]
    fn a_login_sends_its_tokens_in_turn() {
        let cred = Credential::new(Mechanism::Sha256, "pw", b"salt".to_vec(), 4096);
        let mut login = Login::new("SCRAM-SHA-256", "u", "pw", "abc").unwrap();
        let mut server = Server::new(Mechanism::Sha256);
        let sf = server.step(&login.first(), Some(cred), "def").unwrap();
        let fin = login.next(&sf).unwrap().unwrap();
        let ok = server.step(&fin, None, "").unwrap();
        assert_eq!(login.next(&ok), Ok(None));
        let mut plain = Login::new("PLAIN", "u", "pw", "").unwrap();
        assert_eq!(plain.first(), b"\0u\0pw");
        assert_eq!(plain.next(b""), Ok(None));
        assert!(Login::new("GSSAPI", "u", "pw", "n").is_err());
        let mut bad = Login::new("SCRAM-SHA-256", "u", "pw", "abc").unwrap();
        let sf = b"r=abcdef,s=c2FsdA==,i=4096";
        assert!(bad.next(sf).unwrap().is_some());
        assert!(bad.next(b"v=AAAA").is_err(), "a wrong server proof");
        assert!(random_nonce().unwrap().len() >= 32);
    }

    #[test]
    fn a_wrong_proof_an_unknown_user_and_garbage_fail() {
        let cred = Credential::new(Mechanism::Sha512, "secret", b"salt".to_vec(), 4096);
        let mut s = Server::new(Mechanism::Sha512);
        s.step(b"n,,n=alice,r=abc", Some(cred.clone()), "xyz")
            .unwrap();
        let bad = format!("c=biws,r=abcxyz,p={}", B64.encode([0u8; 64]));
        assert_eq!(
            s.step(bad.as_bytes(), None, ""),
            Err(ScramError::InvalidProof)
        );
        let mut s = Server::new(Mechanism::Sha512);
        assert_eq!(
            s.step(b"n,,n=bob,r=abc", None, "xyz"),
            Err(ScramError::UnknownUser)
        );
        // A SHA-256 credential does not answer a SHA-512 exchange.
        let c256 = Credential::new(Mechanism::Sha256, "secret", b"salt".to_vec(), 4096);
        let mut s = Server::new(Mechanism::Sha512);
        assert_eq!(
            s.step(b"n,,n=alice,r=abc", Some(c256), "xyz"),
            Err(ScramError::UnknownUser)
        );
        for garbage in [
            &b""[..],
            b"p,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"\xff\xfe",
            b"n,,n=a=2,r=x",
        ] {
            let mut s = Server::new(Mechanism::Sha256);
            assert!(
                s.step(garbage, Some(cred.clone()), "x").is_err(),
                "{garbage:?}"
            );
        }
        assert_eq!(Server::user_of(b"n,,n=a=2Cb=3Dc,r=x").unwrap(), "a,b=c");
    }

    #[test]
    fn users_files() {
        let ok = parse_users_file("# admins\n\nalice:pa:ss\nbob:x\r\n").unwrap();
        assert_eq!(
            ok,
            vec![("alice".into(), "pa:ss".into()), ("bob".into(), "x".into())]
        );
        assert!(parse_users_file("alice\n").unwrap_err().contains("line 1"));
        assert!(
            parse_users_file("a:1\n:pw\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            parse_users_file("a:1\na:2\n")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            !parse_users_file("a:secret\nb\n")
                .unwrap_err()
                .contains("secret")
        );
    }

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".into(), "pw".into())
        );
        assert!(parse_plain(b"alice\0alice\0pw").is_ok());
        assert!(parse_plain(b"bob\0alice\0pw").is_err());
        assert!(parse_plain(b"\0alice").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }
}
