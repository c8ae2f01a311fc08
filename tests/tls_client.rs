//! The tools' blocking client over TLS against a broker's SSL listener: `Conn` with the
//! properties of `--command-config` (CA, client certificate), and the split reader and writer
//! halves of a TLS stream carrying pipelined requests from two threads, as spate-bench's
//! producer uses them.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest};
use spate::client::{CommandConfig, Conn, Error, Options, frame, open_stream};

use common::{Broker, tls_fixture};

const OPTIONS: Options = Options::new("tls-client-test");

fn config(with_cert: bool) -> CommandConfig {
    let mut text = format!(
        "security.protocol=SSL\nssl.ca.location={}\n",
        tls_fixture("ca.pem")
    );
    if with_cert {
        text += &format!(
            "ssl.certificate.location={}\nssl.key.location={}\n",
            tls_fixture("client.pem"),
            tls_fixture("client.key")
        );
    }
    CommandConfig::parse(&text).expect("properties")
}

#[test]
fn conn_over_ssl_with_and_without_a_client_certificate() {
    let ca = tls_fixture("ca.pem");
    let (broker, ssl) = Broker::start_ssl(1, &["--tls-client-ca-file", &ca]);
    let security = config(true).security().expect("TLS files");
    let mut conn = Conn::connect_secure(&ssl.to_string(), &OPTIONS, &security).expect("connect");
    let v = conn.version_of::<MetadataRequest>(12).expect("version");
    let resp = conn
        .call(&MetadataRequest::default(), v)
        .expect("Metadata over TLS");
    assert!(!resp.brokers.is_empty(), "{resp:?}");

    let without = config(false).security().expect("TLS files");
    match Conn::connect_secure(&ssl.to_string(), &OPTIONS, &without) {
        Err(Error::Tls { why, .. }) => {
            assert!(why.contains("requires a client certificate"), "{why}")
        }
        Err(e) => panic!("expected a TLS error, got {e}"),
        Ok(_) => panic!("connected without the client certificate the listener requires"),
    }
    // TLS to the PLAINTEXT listener is a TLS error, not a hang or a protocol error.
    match Conn::connect_secure(&broker.addr.to_string(), &OPTIONS, &security) {
        Err(Error::Tls { .. } | Error::Closed { .. }) => {}
        Err(e) => panic!("expected a TLS error, got {e}"),
        Ok(_) => panic!("TLS handshake with a PLAINTEXT listener succeeded"),
    }
    broker.stop();
}

#[test]
fn split_tls_halves_carry_pipelined_requests_from_two_threads() {
    let (broker, ssl) = Broker::start_ssl(2, &[]);
    let security = config(false).security().expect("TLS files");
    let stream = open_stream(&ssl.to_string(), &OPTIONS, security.tls.as_ref()).expect("TLS");
    let (mut reader, mut writer) = stream.split().expect("split");
    const N: i32 = 2000;
    let sender = std::thread::spawn(move || {
        let mut buf = BytesMut::new();
        for corr in 1..=N {
            buf.clear();
            // Alternate small and larger requests so records of both sizes interleave.
            if corr % 2 == 0 {
                frame::encode_request(
                    &mut buf,
                    ApiKey::ApiVersions,
                    0,
                    corr,
                    OPTIONS.client_id,
                    &ApiVersionsRequest::default(),
                )
            } else {
                frame::encode_request(
                    &mut buf,
                    ApiKey::Metadata,
                    1,
                    corr,
                    OPTIONS.client_id,
                    &MetadataRequest::default(),
                )
            }
            .expect("encode");
            writer.write_all(&buf).expect("send");
        }
        writer.flush().expect("flush");
        writer
    });
    for corr in 1..=N {
        let mut f = frame::read_frame(&mut reader, 1 << 24).expect("response");
        let (key, version) = if corr % 2 == 0 {
            (ApiKey::ApiVersions, 0)
        } else {
            (ApiKey::Metadata, 1)
        };
        let got = frame::response_header(&mut f, key, version).expect("header");
        assert_eq!(got, corr, "responses in order");
    }
    let writer = sender.join().expect("sender");
    writer.shutdown().expect("shutdown");
    // The reader sees the end of the stream, not a hang.
    let t = std::time::Instant::now();
    assert!(frame::read_frame(&mut reader, 1 << 24).is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
    broker.stop();
}
