//! Three Raft nodes on one glommio executor, wired by an in-memory transport that can cut a
//! node off, each with a trivial state machine (the list of applied data).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use raft::eraftpb::Message;

use super::*;

const VOTERS: [u64; 3] = [1, 2, 3];
const WAIT: Duration = Duration::from_secs(20);

fn on_executor<F: std::future::Future<Output = ()>>(f: F) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(f);
}

/// Routes messages between the nodes; drops those from or to an isolated node.
#[derive(Default)]
struct Net {
    nodes: RefCell<HashMap<u64, RaftHandle>>,
    isolated: RefCell<HashSet<u64>>,
    /// Snapshot messages still to drop (a lost snapshot must be sent again).
    snapshots_to_drop: std::cell::Cell<usize>,
}

struct NetTransport {
    net: Rc<Net>,
    from: u64,
}

impl Transport for NetTransport {
    fn send(&self, msg: Message) {
        {
            let cut = self.net.isolated.borrow();
            if cut.contains(&self.from) || cut.contains(&msg.to) {
                return;
            }
        }
        if msg.msg_type == raft::eraftpb::MessageType::MsgSnapshot
            && self.net.snapshots_to_drop.get() > 0
        {
            self.net
                .snapshots_to_drop
                .set(self.net.snapshots_to_drop.get() - 1);
            return;
        }
        let to = self.net.nodes.borrow().get(&msg.to).cloned();
        if let Some(h) = to {
            h.step(msg);
        }
    }
}

/// The test state machine: every applied data, in order.
#[derive(Default)]
struct Sm {
    applied: u64,
    term: u64,
    data: Vec<Vec<u8>>,
    snapshots: usize,
    /// An entry at or below the applied index was delivered.
    duplicate: bool,
}

fn encode(data: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in data {
        out.extend_from_slice(&(d.len() as u32).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn decode(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len..];
    }
    out
}

struct TestNode {
    id: u64,
    dir: PathBuf,
    sm: Rc<RefCell<Sm>>,
    handle: RaftHandle,
    driver: glommio::Task<()>,
    applier: glommio::Task<()>,
}

fn start_node(
    net: &Rc<Net>,
    id: u64,
    dir: &Path,
    sm: Rc<RefCell<Sm>>,
    compact_every: u64,
) -> TestNode {
    let cfg = RaftConfig {
        tick_ms: 10,
        election_ticks: 10,
        heartbeat_ticks: 2,
        compact_every,
        ..RaftConfig::new(id, VOTERS.to_vec(), dir.to_path_buf())
    };
    let applied = sm.borrow().applied;
    let producer: SnapshotProducer = {
        let sm = sm.clone();
        Rc::new(move || {
            let s = sm.borrow();
            Ok((s.applied, s.term, encode(&s.data)))
        })
    };
    let transport = Rc::new(NetTransport {
        net: net.clone(),
        from: id,
    });
    let (handle, mut committed, driver) = start(cfg, applied, producer, transport).unwrap();
    net.nodes.borrow_mut().insert(id, handle.clone());
    let driver = glommio::spawn_local(driver);
    let applier = {
        let sm = sm.clone();
        let handle = handle.clone();
        glommio::spawn_local(async move {
            while let Some(c) = committed.next().await {
                let applied = {
                    let mut s = sm.borrow_mut();
                    match c {
                        Committed::Entry { index, term, data } => {
                            if index <= s.applied {
                                s.duplicate = true;
                            }
                            s.applied = index;
                            s.term = term;
                            // A new leader's empty entry counts as applied, holds no data.
                            if !data.is_empty() {
                                s.data.push(data);
                            }
                        }
                        Committed::Snapshot { index, term, data } => {
                            s.applied = index;
                            s.term = term;
                            s.data = decode(&data);
                            s.snapshots += 1;
                        }
                    }
                    s.applied
                };
                handle.set_applied(applied);
            }
        })
    };
    TestNode {
        id,
        dir: dir.to_path_buf(),
        sm,
        handle,
        driver,
        applier,
    }
}

impl TestNode {
    /// Stops the node and waits for its driver and applier to end; returns its state machine.
    async fn stop(self, net: &Net) -> (PathBuf, Rc<RefCell<Sm>>) {
        net.nodes.borrow_mut().remove(&self.id);
        self.handle.stop();
        self.driver.await;
        self.applier.await;
        (self.dir, self.sm)
    }

    fn data(&self) -> Vec<Vec<u8>> {
        self.sm.borrow().data.clone()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until exactly one of `nodes` leads and all of them follow it; returns its index in
/// `nodes`.
async fn one_leader(nodes: &[&TestNode]) -> usize {
    wait_until("one leader that every node knows", || {
        let leaders: Vec<u64> = nodes
            .iter()
            .filter(|n| n.handle.is_leader())
            .map(|n| n.id)
            .collect();
        leaders.len() == 1 && nodes.iter().all(|n| n.handle.leader_id() == leaders[0])
    })
    .await;
    nodes.iter().position(|n| n.handle.is_leader()).unwrap()
}

/// Proposes `data` on whichever of `nodes` leads, retrying through elections.
async fn propose(nodes: &[&TestNode], data: &str) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "could not commit {data}");
        if let Some(leader) = nodes.iter().find(|n| n.handle.is_leader())
            && let Ok(index) = leader.handle.propose(data.as_bytes().to_vec()).await
        {
            return index;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// The index the log file starts after (its header: frame header, magic, index).
fn log_start_on_disk(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join(disk::ENTRIES_FILE)).unwrap();
    u64::from_be_bytes(bytes[9..17].try_into().unwrap())
}

fn strings(data: &[Vec<u8>]) -> Vec<String> {
    data.iter()
        .map(|d| String::from_utf8(d.clone()).unwrap())
        .collect()
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn start_three(net: &Rc<Net>, dirs: &[tempfile::TempDir], compact_every: u64) -> Vec<TestNode> {
    VOTERS
        .iter()
        .zip(dirs)
        .map(|(&id, dir)| start_node(net, id, dir.path(), Rc::default(), compact_every))
        .collect()
}

fn tempdirs() -> Vec<tempfile::TempDir> {
    (0..3).map(|_| tempfile::tempdir().unwrap()).collect()
}

#[test]
fn three_nodes_elect_one_leader_and_deliver_in_order() {
    on_executor(async {
        let net = Rc::new(Net::default());
        let dirs = tempdirs();
        let nodes = start_three(&net, &dirs, 10_000);
        let all: Vec<&TestNode> = nodes.iter().collect();
        let l = one_leader(&all).await;
        let leader = &nodes[l];
        let status = leader.handle.status();
        assert_eq!(status.role, "Leader");
        assert_eq!(status.peers.len(), 3);

        // One at a time, then ten at once: indexes grow in the order of the proposals.
        let mut last = 0;
        for i in 0..10 {
            let index = leader
                .handle
                .propose(format!("e{i}").into_bytes())
                .await
                .unwrap();
            assert!(index > last);
            last = index;
        }
        let at_once = futures_util::future::join_all(
            (10..20).map(|i| leader.handle.propose(format!("e{i}").into_bytes())),
        )
        .await;
        for r in at_once {
            let index = r.unwrap();
            assert!(index > last);
            last = index;
        }
        wait_until("every node applied 20 entries", || {
            nodes.iter().all(|n| n.sm.borrow().data.len() == 20)
        })
        .await;
        for n in &nodes {
            assert_eq!(strings(&n.data()), names("e", 0..20), "node {}", n.id);
            assert!(!n.sm.borrow().duplicate);
        }

        // A follower answers NotLeader with the leader's id.
        let follower = nodes.iter().find(|n| n.id != leader.id).unwrap();
        assert_eq!(
            follower.handle.propose(b"x".to_vec()).await,
            Err(ProposeError::NotLeader {
                leader_id: leader.id
            })
        );
        let status = follower.handle.status();
        assert_eq!(
            (status.role.as_str(), status.leader_id),
            ("Follower", leader.id)
        );
        assert!(status.peers.is_empty());

        for n in nodes {
            n.stop(&net).await;
        }
    });
}

#[test]
fn an_isolated_leader_steps_down_and_the_majority_goes_on() {
    on_executor(async {
        let net = Rc::new(Net::default());
        let dirs = tempdirs();
        let nodes = start_three(&net, &dirs, 10_000);
        let all: Vec<&TestNode> = nodes.iter().collect();
        let old = &nodes[one_leader(&all).await];
        for i in 0..3 {
            propose(&all, &format!("a{i}")).await;
        }
        let old_term = old.handle.term();

        net.isolated.borrow_mut().insert(old.id);
        // Still leader for now: this proposal is appended but can never commit.
        let lost = {
            let h = old.handle.clone();
            glommio::spawn_local(async move { h.propose(b"lost".to_vec()).await })
        };
        glommio::executor().yield_now().await;
        let others: Vec<&TestNode> = nodes.iter().filter(|n| n.id != old.id).collect();
        let changed = old.handle.changed();
        let new_id = others[one_leader(&others).await].id;
        let new = nodes.iter().find(|n| n.id == new_id).unwrap();
        assert!(new.handle.term() > old_term);
        // check_quorum: the cut-off leader steps down, and its proposal fails.
        wait_until("the old leader to step down", || !old.handle.is_leader()).await;
        // Registered before the step-down, so it has resolved by now.
        futures_lite::future::poll_once(changed).await.unwrap();
        assert_eq!(lost.await, Err(ProposeError::Dropped));
        assert!(matches!(
            old.handle.propose(b"x".to_vec()).await,
            Err(ProposeError::NotLeader { .. })
        ));
        for i in 0..3 {
            propose(&others, &format!("b{i}")).await;
        }

        net.isolated.borrow_mut().clear();
        let want: Vec<String> = names("a", 0..3)
            .into_iter()
            .chain(names("b", 0..3))
            .collect();
        wait_until("every node applied the same 6 entries", || {
            nodes.iter().all(|n| n.sm.borrow().data.len() == 6)
        })
        .await;
        for n in &nodes {
            assert_eq!(strings(&n.data()), want, "node {}", n.id);
        }
        // Pre-vote: the returning node did not depose the leader.
        assert!(new.handle.is_leader());
        assert_eq!(
            one_leader(&all).await,
            nodes.iter().position(|n| n.id == new.id).unwrap()
        );

        for n in nodes {
            n.stop(&net).await;
        }
    });
}

#[test]
fn a_restarted_node_catches_up_without_duplicates() {
    on_executor(async {
        let net = Rc::new(Net::default());
        let dirs = tempdirs();
        let mut nodes = start_three(&net, &dirs, 10_000);
        let all: Vec<&TestNode> = nodes.iter().collect();
        let l = one_leader(&all).await;
        for i in 0..10 {
            propose(&all, &format!("e{i}")).await;
        }
        wait_until("every node applied 10 entries", || {
            nodes.iter().all(|n| n.sm.borrow().data.len() == 10)
        })
        .await;

        // Stop a follower, keep its (durable) state machine, go on without it.
        let f = (l + 1) % 3;
        let down = nodes.remove(f);
        let id = down.id;
        let (dir, sm) = down.stop(&net).await;
        let up: Vec<&TestNode> = nodes.iter().collect();
        for i in 10..20 {
            propose(&up, &format!("e{i}")).await;
        }
        let restarted = start_node(&net, id, &dir, sm, 10_000);
        wait_until("the restarted node applied 20 entries", || {
            restarted.sm.borrow().data.len() == 20
        })
        .await;
        assert_eq!(strings(&restarted.data()), names("e", 0..20));
        assert!(!restarted.sm.borrow().duplicate);
        assert_eq!(restarted.sm.borrow().snapshots, 0);

        nodes.push(restarted);
        for n in nodes {
            n.stop(&net).await;
        }
    });
}

#[test]
fn a_node_behind_the_compaction_catches_up_from_a_snapshot() {
    on_executor(async {
        let net = Rc::new(Net::default());
        let dirs = tempdirs();
        let mut nodes = start_three(&net, &dirs, 5);
        let all: Vec<&TestNode> = nodes.iter().collect();
        let l = one_leader(&all).await;
        for i in 0..3 {
            propose(&all, &format!("e{i}")).await;
        }
        wait_until("every node applied 3 entries", || {
            nodes.iter().all(|n| n.sm.borrow().data.len() == 3)
        })
        .await;

        let f = (l + 1) % 3;
        let down = nodes.remove(f);
        let id = down.id;
        let (dir, sm) = down.stop(&net).await;
        let up: Vec<&TestNode> = nodes.iter().collect();
        for i in 3..30 {
            propose(&up, &format!("e{i}")).await;
        }
        // Compaction follows the applied index: the leader's log no longer holds entry 4.
        wait_until("every running node's log to be compacted", || {
            nodes.iter().all(|n| log_start_on_disk(&n.dir) > 4)
        })
        .await;

        // The first snapshot sent is lost: the leader sends another.
        net.snapshots_to_drop.set(1);
        let restarted = start_node(&net, id, &dir, sm, 5);
        wait_until("the restarted node applied 30 entries", || {
            restarted.sm.borrow().data.len() == 30
        })
        .await;
        assert_eq!(strings(&restarted.data()), names("e", 0..30));
        assert!(restarted.sm.borrow().snapshots >= 1);
        assert_eq!(net.snapshots_to_drop.get(), 0);

        // Its state machine lost (or behind the snapshot on its disk): the snapshot on disk is
        // delivered first at start, then the entries after it.
        let (dir, _) = restarted.stop(&net).await;
        let fresh = start_node(&net, id, &dir, Rc::default(), 5);
        wait_until("the fresh state machine rebuilt 30 entries", || {
            fresh.sm.borrow().data.len() == 30
        })
        .await;
        assert_eq!(strings(&fresh.data()), names("e", 0..30));
        assert!(fresh.sm.borrow().snapshots >= 1);

        nodes.push(fresh);
        for n in nodes {
            n.stop(&net).await;
        }
    });
}

#[test]
fn stop_does_not_wait_for_a_quorum() {
    on_executor(async {
        let net = Rc::new(Net::default());
        let dir = tempfile::tempdir().unwrap();
        // One voter of three: it can never elect a leader.
        let node = start_node(&net, 1, dir.path(), Rc::default(), 10_000);
        glommio::timer::sleep(Duration::from_millis(300)).await;
        assert!(!node.handle.is_leader());
        assert!(matches!(
            node.handle.propose(b"x".to_vec()).await,
            Err(ProposeError::NotLeader { leader_id: 0 })
        ));
        let handle = node.handle.clone();
        let started = Instant::now();
        node.stop(&net).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(handle.status().stopped);
        assert_eq!(
            handle.propose(b"x".to_vec()).await,
            Err(ProposeError::Stopped)
        );
    });
}

#[test]
fn a_disk_failure_stops_the_driver_and_fails_proposals() {
    on_executor(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RaftConfig {
            tick_ms: 10,
            ..RaftConfig::new(1, vec![1], dir.path().to_path_buf())
        };
        let net = Rc::new(Net::default());
        let transport = Rc::new(NetTransport {
            net: net.clone(),
            from: 1,
        });
        let (handle, _committed, driver) =
            start(cfg, 0, Rc::new(|| Ok((0, 0, Vec::new()))), transport).unwrap();
        // The hard state's temporary file cannot be created: the first vote fails to persist.
        std::fs::create_dir(dir.path().join("hardstate.tmp")).unwrap();
        let changed = handle.changed();
        let driver = glommio::spawn_local(driver);
        changed.await;
        driver.await;
        let status = handle.status();
        assert!(status.stopped);
        assert!(status.disk_error.is_some(), "{status:?}");
        assert!(!handle.is_leader());
        assert!(matches!(
            handle.propose(b"x".to_vec()).await,
            Err(ProposeError::Disk(_))
        ));
    });
}
