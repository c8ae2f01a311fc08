//! libFuzzer target: one input is what a client sends to a TLS listener before the handshake
//! completes, handed to `spate::server::transport::handshake` in pieces of a size taken from
//! the first byte. It must return Ok or Err, never panic. tests/tls_fuzz.rs runs a fixed
//! corpus of such inputs in CI. See fuzz/Cargo.toml for how to run it.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use spate::server::transport::handshake_from_bytes;
use spate::tls::{TlsFiles, server_config};

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls");
            server_config(&TlsFiles {
                cert: dir.join("server.pem"),
                key: dir.join("server-pkcs8.key"),
                client_ca: Some(dir.join("ca.pem")),
            })
            .expect("the fixture TLS material loads")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let mut conn = rustls::ServerConnection::new(config()).expect("a server connection");
    let _ = handshake_from_bytes(&mut conn, input, usize::from(step).max(1) * 64);
});
