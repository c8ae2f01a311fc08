//! Requests from this broker to another broker's Kafka listener, for what one broker asks of
//! another outside replication (which has its own fetchers, `replica.rs`): a transaction
//! coordinator's WriteTxnMarkers to the leaders of a transaction's partitions, and a partition
//! leader's KIP-890 verification (AddPartitionsToTxn v4, verify only) with a transaction's
//! coordinator. Kafka's protocol, as Kafka brokers speak it to each other.
//!
//! Per shard: at most one idle connection per broker is kept; a request takes it out for its
//! exchange (a concurrent request to the same broker opens its own), and puts it back only
//! after a complete exchange, so a connection in an unknown state is never reused. Every
//! exchange has a deadline. No `RefCell` borrow is held across an await.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::Shard;

const CLIENT_ID: &str = "spate-broker";
/// Largest response accepted from another broker (WriteTxnMarkers and AddPartitionsToTxn
/// answers are small).
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// This shard's connections to other brokers.
#[derive(Default)]
pub struct Peers {
    idle: RefCell<HashMap<i32, TcpStream>>,
    correlation: Cell<i32>,
}

impl Shard {
    /// Sends `req` to broker `broker` (its advertised Kafka listener, from the cluster view)
    /// and decodes its answer, within `timeout`. Err: a message for the log; the caller
    /// retries or answers a retriable error.
    pub async fn broker_request<Req: Encodable, Resp: Decodable>(
        &self,
        broker: i32,
        api: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let endpoint = self
            .cluster()
            .and_then(|v| v.broker(broker).cloned())
            .ok_or_else(|| format!("broker {broker} is not in the cluster view"))?;
        let correlation = self.peers.correlation.get().wrapping_add(1);
        self.peers.correlation.set(correlation);
        let mut out = BytesMut::new();
        crate::client::frame::encode_request(&mut out, api, version, correlation, CLIENT_ID, req)?;
        let idle = self.peers.idle.borrow_mut().remove(&broker);
        let exchange = async {
            let mut conn = match idle {
                Some(c) => c,
                None => {
                    let addr = format!("{}:{}", endpoint.host, endpoint.port);
                    let s = TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| format!("connect to broker {broker} at {addr}: {e}"))?;
                    let _ = s.set_nodelay(true);
                    s
                }
            };
            conn.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut prefix = [0u8; 4];
            conn.read_exact(&mut prefix)
                .await
                .map_err(|e| e.to_string())?;
            let size = usize::try_from(i32::from_be_bytes(prefix))
                .ok()
                .filter(|n| *n <= RESPONSE_BYTES_MAX)
                .ok_or_else(|| format!("a bad response frame size from broker {broker}"))?;
            let mut body = vec![0u8; size];
            conn.read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            let (corr, resp) =
                crate::client::frame::decode_response::<Resp>(Bytes::from(body), api, version)?;
            if corr != correlation {
                return Err(format!(
                    "broker {broker} answered correlation id {corr}, expected {correlation}"
                ));
            }
            Ok((conn, resp))
        };
        let answered = futures_lite::future::or(async { Some(exchange.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match answered {
            Some(Ok((conn, resp))) => {
                self.peers.idle.borrow_mut().insert(broker, conn);
                Ok(resp)
            }
            Some(Err(e)) => Err(format!("{api:?} to broker {broker}: {e}")),
            None => Err(format!(
                "{api:?} to broker {broker}: no answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}
