//! The cross-executor wake-up path of the vendored glommio (vendor/glommio/PATCHED.md): an
//! executor about to sleep publishes that it sleeps, fences, and sweeps its channels once more; a
//! sender pushes, fences, and writes the sleeper's eventfd if it saw the flag. Two pairs of
//! executors ping-pong through one-slot channels, so every round trip puts both sides to sleep and
//! wakes them again; a lost wake-up stops the exchange and the deadline turns that into a failure
//! rather than a hang. (It fails when the eventfd write is skipped. On x86 it cannot see a missing
//! fence: the sender's compare-exchange and the atomics the sweep runs are full barriers there.)

use std::sync::mpsc;
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

/// Round trips per pair: each one puts both executors to sleep and wakes them again, so a lost
/// wake-up in any of them stops the exchange.
const ROUND_TRIPS: u64 = 20_000;
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs the future `make` builds on a new executor with its own thread (left detached).
fn on_own_executor<G, F>(make: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(make)
        .expect("executor");
}

/// Two executors on their own threads pass a counter back and forth through one-slot shared
/// channels; returns the last value each side saw.
fn ping_pong(round_trips: u64) -> mpsc::Receiver<(&'static str, u64)> {
    let (done_tx, done_rx) = mpsc::channel();
    let (to_b, from_a) = shared_channel::new_bounded::<u64>(1);
    let (to_a, from_b) = shared_channel::new_bounded::<u64>(1);

    let tx = done_tx.clone();
    on_own_executor(move || async move {
        let to_b = to_b.connect().await;
        let from_b = from_b.connect().await;
        let mut last = 0;
        for i in 0..round_trips {
            to_b.send(i).await.expect("send to b");
            last = from_b.recv().await.expect("b answers");
            assert_eq!(last, i + 1);
        }
        let _ = tx.send(("a", last));
    });
    on_own_executor(move || async move {
        let from_a = from_a.connect().await;
        let to_a = to_a.connect().await;
        let mut last = 0;
        while let Some(i) = from_a.recv().await {
            last = i;
            to_a.send(i + 1).await.expect("send to a");
            if i + 1 == round_trips {
                break;
            }
        }
        let _ = done_tx.send(("b", last));
    });
    done_rx
}

#[test]
fn sleeping_executors_are_always_woken_by_cross_executor_messages() {
    // Two pairs at once: on a 2-core machine they contend for the cores, so executors are
    // preempted at every point of the sleep protocol, not only where they park.
    let pairs = [ping_pong(ROUND_TRIPS), ping_pong(ROUND_TRIPS)];
    for (n, done) in pairs.iter().enumerate() {
        for _ in 0..2 {
            match done.recv_timeout(DEADLINE) {
                Ok((side, last)) => {
                    assert!(
                        last + 1 >= ROUND_TRIPS,
                        "pair {n} side {side} stopped at {last}"
                    )
                }
                Err(e) => panic!(
                    "pair {n}: no answer within {DEADLINE:?} ({e}): a cross-executor wake-up was lost"
                ),
            }
        }
    }
}
