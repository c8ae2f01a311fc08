//! Fuzzes the SASL login with a seeded PRNG: arbitrary and mutated SCRAM and PLAIN messages
//! must fail cleanly, never panic.
//!
//! - The pure exchange (`spate::auth::scram`): the server's `user_of`/`step` and PLAIN's
//!   parser, fed mutations of a real exchange and random bytes, panicking fails the test.
//! - A real broker's SASL listener: connections that send random SaslHandshake mechanisms,
//!   random or mutated SaslAuthenticate bytes, random frames before the handshake, or hang up
//!   mid-exchange each get an error answer and/or a closed connection; the broker stays up
//!   and a correct SCRAM login still works afterwards.
//!
//! Reproduce with `SPATE_FUZZ_SEED=<seed> cargo test --test sasl_fuzz -- --nocapture`;
//! `SPATE_FUZZ_CASES=<n>` sets the number of pure cases (default 3000; a tenth of that many
//! connections).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use spate::auth::scram::{Client, Credential, Mechanism, Server, parse_plain};
use spate::client::{Conn, Options, SaslLogin, connect_stream};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("SPATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn cases() -> usize {
    std::env::var("SPATE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

/// Characters that matter to SCRAM's syntax, and a multi-byte one.
const SPECIAL: &[&[u8]] = &[
    b",",
    b"=",
    b"n=",
    b"r=",
    b"p=",
    b"c=",
    b"s=",
    b"i=",
    b"=2C",
    b"=3D",
    b"=",
    b"\0",
    "é".as_bytes(),
    b"\xff",
];

/// One mutation of `msg`: flip, drop, cut, splice a special token, or replace entirely.
fn mutate(rng: &mut Rng, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m.remove(i);
            }
            2 => m.truncate(rng.below(m.len() + 1)),
            3 => {
                let at = rng.below(m.len() + 1);
                let tok = SPECIAL[rng.below(SPECIAL.len())];
                m.splice(at..at, tok.iter().copied());
            }
            4 => m = rng.bytes(64),
            _ => m.extend(rng.bytes(8)),
        }
    }
    m
}

fn no_panic<T>(what: &str, input: &[u8], seed: u64, f: impl FnOnce() -> T) {
    if panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!("{what} panicked on {input:?} (SPATE_FUZZ_SEED={seed})");
    }
}

#[test]
fn the_scram_and_plain_parsers_never_panic() {
    let seed = seed();
    println!("SPATE_FUZZ_SEED={seed}");
    let mut rng = Rng::new(seed);
    let cred = Credential::new(Mechanism::Sha512, "secret", b"salt".to_vec(), 4096);
    // A real exchange to mutate.
    let mut client = Client::new(Mechanism::Sha512, "alice", "secret", "clientnonce");
    let first = client.first();
    let mut server = Server::new(Mechanism::Sha512);
    let server_first = server
        .step(&first, Some(cred.clone()), "servernonce")
        .unwrap();
    let fin = client.answer(&server_first).unwrap();
    let mut accepted = 0;
    for _ in 0..cases() {
        let m = mutate(&mut rng, &first);
        no_panic("Server::user_of", &m, seed, || Server::user_of(&m));
        let mut s = Server::new(Mechanism::Sha512);
        no_panic("Server::step (first)", &m, seed, || {
            s.step(&m, Some(cred.clone()), "servernonce")
        });
        // The second step: a mutated final message after a real first one.
        let mut s = Server::new(Mechanism::Sha512);
        s.step(&first, Some(cred.clone()), "servernonce").unwrap();
        let f = mutate(&mut rng, &fin);
        no_panic("Server::step (final)", &f, seed, || {
            if s.step(&f, None, "").is_ok() {
                accepted += 1;
            }
        });
        let p = mutate(&mut rng, b"\0alice\0secret");
        no_panic("parse_plain", &p, seed, || parse_plain(&p));
        // The client side against a hostile server.
        let sf = mutate(&mut rng, &server_first);
        let mut c = Client::new(Mechanism::Sha512, "alice", "secret", "clientnonce");
        no_panic("Client::answer", &sf, seed, || {
            let _ = c.answer(&sf);
            let _ = c.verify(&sf);
        });
    }
    // A mutation that keeps the proof valid is possible (a flip in the c= attribute's
    // unchecked content is not: c= is part of the signed message), but must be rare.
    assert!(
        accepted < cases() / 10,
        "{accepted} mutated proofs accepted"
    );
}

fn handshake(s: &mut TcpStream, mechanism: &str) -> SaslHandshakeResponse {
    call(
        s,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into())),
    )
}

/// Reads until the broker closes the connection or the read times out; true when closed.
fn closes(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn a_sasl_listener_survives_garbage_logins() {
    let seed = seed();
    println!("SPATE_FUZZ_SEED={seed}");
    let mut rng = Rng::new(seed ^ 0x5a5a);
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:alice-secret\n").expect("users file");
    let users = users.display().to_string();
    let (mut broker, sasl) = Broker::start_sasl(
        1,
        &[
            "--sasl-users-file",
            &users,
            "--sasl-enabled-mechanisms",
            "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        ],
    );
    let sasl = sasl.to_string();
    let login = |mechanism: &str, password: &str| {
        let l = SaslLogin {
            mechanism: mechanism.into(),
            username: "alice".into(),
            password: password.into(),
        };
        Conn::connect_login(&sasl, &Options::new("sasl-fuzz"), Some(&l))
    };
    // The users file is applied once the broker serves; wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while login("SCRAM-SHA-512", "alice-secret").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "alice never logged in: {}",
            broker.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let real_first = Client::new(Mechanism::Sha512, "alice", "x", "n0nce").first();
    let connections = (cases() / 10).max(20);
    for i in 0..connections {
        let mut s = connect_stream(&sasl, &OPTIONS).expect("connect");
        match rng.below(4) {
            // Random bytes as a frame before any handshake.
            0 => {
                let mut body = rng.bytes(200);
                if body.len() >= 2 && body[..2] == (ApiKey::ApiVersions as i16).to_be_bytes() {
                    body[1] ^= 0x40; // ApiVersions is admitted before login: not garbage
                }
                let _ = send_frame(&mut s, &body);
                assert!(closes(&mut s), "case {i}: random frame (seed {seed})");
            }
            // A random mechanism name.
            1 => {
                let name: String = (0..rng.below(20))
                    .map(|_| char::from(b' ' + rng.below(95) as u8))
                    .collect();
                let r = handshake(&mut s, &name);
                if !["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].contains(&name.as_str()) {
                    assert_ne!(r.error_code, 0, "case {i}: mechanism {name:?}");
                }
            }
            // A real mechanism, then mutated or random authentication bytes.
            _ => {
                let mech = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"][rng.below(3)];
                assert_eq!(handshake(&mut s, mech).error_code, 0, "case {i}");
                let bytes = if rng.below(2) == 0 {
                    mutate(&mut rng, &real_first)
                } else {
                    rng.bytes(300)
                };
                let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
                // Err: closed without an answer. Ok with no error: a server-first-message;
                // the client hangs up mid-exchange.
                if let Ok(body) = try_request(&mut s, ApiKey::SaslAuthenticate, 2, &req) {
                    let r: SaslAuthenticateResponse = decode_body(body, 2);
                    if r.error_code != 0 {
                        assert!(closes(&mut s), "case {i}: refused login stays open");
                    }
                }
            }
        }
    }
    broker.assert_alive("after the SASL fuzz");
    for mech in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
        login(mech, "alice-secret").unwrap_or_else(|e| panic!("{mech}: {e}"));
        assert!(
            login(mech, "wrong").is_err(),
            "{mech} with a wrong password"
        );
    }
}
