//! Fuzzes the TLS handshake input of a TLS listener (`spate::server::transport::handshake`,
//! the code a connection runs before its first request) with a seeded PRNG: random bytes,
//! random TLS records, and mutations of a real client's handshake flights (made by a rustls
//! client) must end in Ok or Err, never a panic. The same cases run with client certificates
//! required. The default seed is fixed, so CI runs the same corpus every time.
//!
//! Another seed: `SPATE_FUZZ_SEED=<seed> cargo test --test tls_fuzz -- --nocapture`;
//! `SPATE_FUZZ_CASES=<n>` changes the number of cases (default 2000). For coverage-guided runs:
//! `cd fuzz && cargo +nightly fuzz run tls_handshake`.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use spate::server::transport::handshake_from_bytes;
use spate::tls::{TlsFiles, server_config};

/// xorshift64*: small, seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A real client's bytes: its first flight (the ClientHello) alone, and its whole side of a
/// handshake against an in-memory server (ClientHello, then certificate and Finished).
fn client_flights(with_cert: bool) -> Vec<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in spate::tls::load_certs(&fixture("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let client = if with_cert {
        builder
            .with_client_auth_cert(
                spate::tls::load_certs(&fixture("client.pem")).unwrap(),
                spate::tls::load_key(&fixture("client.key")).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let server = config(with_cert);
    let mut c =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let mut all = hello.clone();
    let mut pending = hello.clone();
    for _ in 0..10 {
        s.read_tls(&mut &pending[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut back = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut back).unwrap();
        }
        c.read_tls(&mut &back[..]).unwrap();
        c.process_new_packets().unwrap();
        pending.clear();
        while c.wants_write() {
            c.write_tls(&mut pending).unwrap();
        }
        all.extend_from_slice(&pending);
        if !s.is_handshaking() && !c.is_handshaking() {
            break;
        }
    }
    assert!(!s.is_handshaking(), "the in-memory handshake completes");
    vec![hello, all]
}

fn config(client_certs: bool) -> Arc<rustls::ServerConfig> {
    server_config(&TlsFiles {
        cert: fixture("server.pem"),
        key: fixture("server-pkcs8.key"),
        client_ca: client_certs.then(|| fixture("ca.pem")),
    })
    .unwrap()
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let extra = rng.bytes(n);
                v.splice(i..i, extra);
            }
            _ if v.len() > 2 => {
                let i = rng.below(v.len() - 1);
                v.remove(i);
            }
            _ => {}
        }
    }
    v
}

fn run(client_certs: bool) {
    let seed: u64 = std::env::var("SPATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7715_2026);
    let cases: usize = std::env::var("SPATE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut rng = Rng(seed.max(1));
    let server = config(client_certs);
    let flights = client_flights(client_certs);
    // The unmutated first flight is a valid start: the server answers and waits for more.
    let mut conn = rustls::ServerConnection::new(server.clone()).unwrap();
    assert!(matches!(
        handshake_from_bytes(&mut conn, &flights[0], 1 << 16),
        Err(spate::server::transport::HandshakeError::Closed)
    ));
    let (mut errors, mut oks) = (0, 0);
    for case in 0..cases {
        let input = match case % 4 {
            0 => {
                let n = rng.below(2048);
                rng.bytes(n)
            }
            1 => {
                // A TLS record header with a plausible type and version, then noise.
                let n = rng.below(600);
                let mut v = vec![20 + rng.below(5) as u8, 3, rng.below(5) as u8];
                v.extend_from_slice(&(n as u16).to_be_bytes());
                v.extend(rng.bytes(n));
                v
            }
            _ => {
                let base = &flights[rng.below(flights.len())];
                mutate(&mut rng, base)
            }
        };
        let step = 1 + rng.below(input.len().max(1));
        let mut conn = rustls::ServerConnection::new(server.clone()).unwrap();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            handshake_from_bytes(&mut conn, &input, step).is_ok()
        }));
        match result {
            Ok(true) => oks += 1,
            Ok(false) => errors += 1,
            Err(_) => panic!(
                "the TLS handshake panicked (SPATE_FUZZ_SEED={seed}, case {case}, step {step}): \
                 input {input:02x?}"
            ),
        }
    }
    println!("seed {seed}: {cases} cases, {errors} errors, {oks} completed");
    // Bytes that a handshake cannot complete from (a client's replayed flight needs the
    // server's fresh randomness), so every case ends in an error.
    assert_eq!(errors, cases);
}

#[test]
fn arbitrary_handshake_bytes_error_and_never_panic() {
    run(false);
}

#[test]
fn arbitrary_handshake_bytes_error_and_never_panic_with_client_certificates() {
    run(true);
}
