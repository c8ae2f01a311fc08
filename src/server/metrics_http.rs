//! The Prometheus endpoint: `GET /metrics` on `--metrics-listen`, served by shard 0, which
//! gathers every shard's [`Snapshot`] with a typed call through the router and renders them
//! (`metrics::render`). Nothing is shared between cores.

use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::metrics::{Snapshot, render};
use crate::shard::Shard;
use crate::shard::calls::Metrics;

/// Largest HTTP request head a scrape may send.
const HTTP_HEAD_BYTES_MAX: usize = 8192;

/// Gathers every shard's snapshot (from shard 0's point of view: any shard works).
pub async fn gather(shard: &Rc<Shard>) -> Vec<Snapshot> {
    let calls = (0..shard.shards()).map(|to| shard.call(to, Metrics));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

/// Serves `GET /metrics` on `listener` until the task is cancelled (shard 0 runs it).
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    if let Err(e) = answer(&shard, stream).await {
                        tracing::debug!(error = %e, "metrics scrape failed");
                    }
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn answer(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > HTTP_HEAD_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            let snaps = gather(shard).await;
            let mut body = render(&snaps);
            // The controller lives on this shard (0): its counters are added here.
            if let Some(ctl) = &shard.controller {
                body.push_str(&controller_metrics(ctl.unclean_leader_elections()));
            }
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        } else {
            (
                "404 Not Found",
                "text/plain",
                "try GET /metrics\n".to_string(),
            )
        };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.close().await
}

/// The controller's counters, in the exposition format.
fn controller_metrics(unclean_leader_elections: u64) -> String {
    format!(
        "# HELP spate_unclean_leader_elections_total Leaders this node elected out of the ISR as the active controller (unclean.leader.election.enable): records may have been lost.\n\
         # TYPE spate_unclean_leader_elections_total counter\n\
         spate_unclean_leader_elections_total {unclean_leader_elections}\n"
    )
}
