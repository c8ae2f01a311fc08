//! The admin CLI (`spate topic|group|produce|consume`) against a real broker: each command
//! runs as a process of the `spate` binary, as a person or a script would run it.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::{Broker, call};
use kafka_protocol::messages::{
    GroupId, JoinGroupRequest, SyncGroupRequest, join_group_request::JoinGroupRequestProtocol,
    sync_group_request::SyncGroupRequestAssignment,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

/// How long one CLI run may take before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `spate ARGS --bootstrap-server <broker>` with `stdin`, killed after [`RUN_DEADLINE`].
fn spate_in(broker: &Broker, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(args)
        .arg("--bootstrap-server")
        .arg(broker.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spate");
    let pid = rustix::process::Pid::from_child(&child);
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read stdout");
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        let _ = tx.send((status, out, err));
    });
    let (status, stdout, stderr) = match rx.recv_timeout(RUN_DEADLINE) {
        Ok(r) => r,
        Err(_) => {
            // It is still running, so the reader thread has not reaped it: the pid is its own.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("spate {args:?} did not finish within {RUN_DEADLINE:?}");
        }
    };
    writer.join().expect("stdin writer");
    Run {
        ok: status.success(),
        code: status.code(),
        stdout,
        stderr,
    }
}

fn spate(broker: &Broker, args: &[&str]) -> Run {
    spate_in(broker, args, "")
}

/// Runs and asserts success; returns stdout.
fn ok(broker: &Broker, args: &[&str]) -> Run {
    let r = spate(broker, args);
    assert!(
        r.ok,
        "spate {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    );
    r
}

/// Runs and asserts exit status 1 with `needles` on stderr.
fn fails(broker: &Broker, args: &[&str], needles: &[&str]) -> Run {
    let r = spate(broker, args);
    assert_eq!(
        r.code,
        Some(1),
        "spate {args:?} should fail with status 1:\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "spate {args:?}: stderr lacks {n:?}:\n{}",
            r.stderr
        );
    }
    r
}

fn config<'a>(topic: &'a Value, name: &str) -> &'a Value {
    topic["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("config {name} missing in {topic}"))
}

#[test]
fn topics_create_list_describe_alter_delete() {
    let broker = Broker::start();
    let r = ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    );
    assert_eq!(
        r.stdout,
        "Created topic orders (3 partitions, replication factor 1).\n"
    );
    ok(&broker, &["topic", "create", "audit"]);

    // Errors carry the Kafka name and a hint, and exit 1.
    let r = fails(
        &broker,
        &["topic", "create", "orders"],
        &["TOPIC_ALREADY_EXISTS", "hint:"],
    );
    assert!(
        r.stderr
            .starts_with("error: creating topic 'orders': TOPIC_ALREADY_EXISTS")
    );
    ok(&broker, &["topic", "create", "orders", "--if-not-exists"]);
    fails(
        &broker,
        &["topic", "create", "x", "--partitions", "0"],
        &["INVALID_PARTITIONS"],
    );
    fails(
        &broker,
        &["topic", "create", "x", "--config", "no.such.config=1"],
        &["INVALID_CONFIG", "no.such.config"],
    );
    fails(
        &broker,
        &["topic", "describe", "nope"],
        &[
            "UNKNOWN_TOPIC_OR_PARTITION",
            "check the name with `spate topic list`",
        ],
    );

    let r = ok(&broker, &["topic", "list"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "TOPIC   PARTITIONS  REPLICATION");
    assert_eq!(lines[1], "audit   1           1");
    assert_eq!(lines[2], "orders  3           1");
    let list = ok(&broker, &["topic", "list", "--json"]).json();
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["audit", "orders"]);
    assert_eq!(list[1]["partitions"], 3);

    let d = ok(&broker, &["topic", "describe", "orders", "--json"]).json();
    let t = &d[0];
    assert_eq!(t["name"], "orders");
    let parts = t["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 0);
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["under_replicated"], false);
        assert_eq!(p["earliest_offset"], 0);
        assert_eq!(p["latest_offset"], 0);
    }
    assert_eq!(config(t, "retention.ms")["value"], "3600000");
    assert_eq!(config(t, "retention.ms")["source"], "topic");
    assert_eq!(config(t, "segment.ms")["source"], "default");
    let people = ok(&broker, &["topic", "describe", "orders"]).stdout;
    assert!(people.starts_with("Topic: orders  Id: "), "{people}");
    assert!(
        people.contains(
            "PARTITION  LEADER  EPOCH  REPLICAS  ISR  OFFLINE  EARLIEST  LATEST  STATUS\n\
             0          0       0      0         0    -        0         0       -\n"
        ),
        "{people}"
    );
    assert!(
        people.lines().any(|l| l.starts_with("retention.ms")
            && l.contains("3600000")
            && l.ends_with("topic")),
        "{people}"
    );

    // Alter: set one, remove another; describe shows both.
    let r = ok(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "segment.ms=120000",
            "--delete-config",
            "retention.ms",
        ],
    );
    assert_eq!(
        r.stdout,
        "Set segment.ms=120000 on topic orders.\nRemoved retention.ms from topic orders (back to the default).\n"
    );
    let d = ok(&broker, &["topic", "describe", "orders", "--json"]).json();
    assert_eq!(config(&d[0], "segment.ms")["value"], "120000");
    assert_eq!(config(&d[0], "segment.ms")["source"], "topic");
    assert_eq!(config(&d[0], "retention.ms")["source"], "default");
    fails(
        &broker,
        &["topic", "alter", "orders", "--config", "retention.ms=soon"],
        &["INVALID_CONFIG"],
    );

    // Delete.
    let r = ok(&broker, &["topic", "delete", "orders", "--json"]).json();
    assert_eq!(r["deleted"], serde_json::json!(["orders"]));
    let names: Vec<String> = ok(&broker, &["topic", "list", "--json"])
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["audit"]);
    fails(
        &broker,
        &["topic", "delete", "orders"],
        &["UNKNOWN_TOPIC_OR_PARTITION"],
    );
    ok(&broker, &["topic", "delete", "orders", "--if-exists"]);
    broker.stop();
}

#[test]
fn produce_with_keys_and_headers_then_consume_with_a_format() {
    let broker = Broker::start();
    ok(&broker, &["topic", "create", "greetings"]);
    let r = spate_in(
        &broker,
        &[
            "produce",
            "greetings",
            "--key-separator",
            ":",
            "--header",
            "source=cli",
            "--header",
            "n=1",
        ],
        "user1:hello\nuser2:world:again\nno key here\n",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "Produced 3 messages (27 bytes) to greetings: partition 0 offsets 0..2.\n"
    );
    let r = ok(
        &broker,
        &[
            "produce",
            "greetings",
            "--value",
            "v4",
            "--key",
            "k4",
            "--json",
        ],
    )
    .json();
    assert_eq!(r["messages"], 1);
    assert_eq!(r["partitions"]["0"]["first_offset"], 3);

    let r = ok(
        &broker,
        &[
            "consume",
            "greetings",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "%t/%p/%o %k=%s [%h]\\n",
        ],
    );
    assert_eq!(
        r.stdout,
        "greetings/0/0 user1=hello [source=cli,n=1]\n\
         greetings/0/1 user2=world:again [source=cli,n=1]\n\
         greetings/0/2 =no key here [source=cli,n=1]\n\
         greetings/0/3 k4=v4 []\n"
    );
    // Default format: the value per line; --offset and --max-messages.
    let r = ok(
        &broker,
        &[
            "consume",
            "greetings",
            "--offset",
            "1",
            "--max-messages",
            "2",
        ],
    );
    assert_eq!(r.stdout, "world:again\nno key here\n");
    let r = ok(&broker, &["consume", "greetings", "--offset", "-1", "-e"]);
    assert_eq!(r.stdout, "v4\n");
    // From the end with --exit-at-end: nothing, at once.
    assert_eq!(ok(&broker, &["consume", "greetings", "-e"]).stdout, "");
    // JSON lines.
    let r = ok(
        &broker,
        &["consume", "greetings", "--from-beginning", "-e", "--json"],
    );
    let first: Value =
        serde_json::from_str(r.stdout.lines().next().expect("a line")).expect("json");
    assert_eq!(first["key"], "user1");
    assert_eq!(first["value"], "hello");
    assert_eq!(first["offset"], 0);
    assert_eq!(first["headers"]["source"], "cli");
    assert!(first["timestamp"].as_i64().expect("timestamp") > 0);

    // Keyed messages over several partitions: one key, one partition (murmur2).
    ok(&broker, &["topic", "create", "keyed", "--partitions", "4"]);
    let input: String = (0..40).map(|i| format!("key{}:m{i}\n", i % 5)).collect();
    let r = spate_in(
        &broker,
        &["produce", "keyed", "--key-separator", ":"],
        &input,
    );
    assert!(r.ok, "{}", r.stderr);
    let r = ok(
        &broker,
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "-e",
            "-f",
            "%k %p\\n",
        ],
    );
    let mut seen = std::collections::BTreeMap::new();
    for line in r.stdout.lines() {
        let (k, p) = line.split_once(' ').expect("key partition");
        assert_eq!(
            *seen.entry(k.to_string()).or_insert(p.to_string()),
            p,
            "{k}"
        );
    }
    assert_eq!(r.stdout.lines().count(), 40);
    assert_eq!(seen.len(), 5);
    let r = ok(
        &broker,
        &[
            "consume",
            "keyed",
            "--partition",
            "0",
            "--from-beginning",
            "-e",
            "-f",
            "%p\\n",
        ],
    );
    assert!(r.stdout.lines().all(|l| l == "0"), "{}", r.stdout);

    fails(
        &broker,
        &["consume", "keyed", "--partition", "9", "-e"],
        &["UNKNOWN_TOPIC_OR_PARTITION", "partitions 0..3"],
    );
    fails(
        &broker,
        &["consume", "keyed", "-e", "--format", "%x"],
        &["unknown placeholder"],
    );
    broker.stop();
}

fn committed(desc: &Value) -> Vec<(i64, i64, i64)> {
    desc[0]["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| {
            (
                o["partition"].as_i64().expect("partition"),
                o["committed_offset"].as_i64().expect("committed"),
                o["lag"].as_i64().expect("lag"),
            )
        })
        .collect()
}

#[test]
fn group_list_describe_and_reset_offsets() {
    let broker = Broker::start();
    ok(&broker, &["topic", "create", "events", "--partitions", "2"]);
    for i in 0..5 {
        let v = format!("e{i}");
        ok(
            &broker,
            &["produce", "events", "--partition", "0", "--value", &v],
        );
    }
    ok(
        &broker,
        &["produce", "events", "--partition", "1", "--value", "x"],
    );

    // A group with no members gets offsets by a reset (generation -1, no member id).
    let r = ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-earliest",
        ],
    );
    assert_eq!(
        r.stdout,
        "TOPIC   PARTITION  PREVIOUS  NEW\nevents  0          -         0\nevents  1          -         0\nCommitted.\n"
    );
    let list = ok(&broker, &["group", "list", "--json"]).json();
    assert_eq!(list[0]["group"], "billing");
    assert_eq!(list[0]["state"], "Empty");
    let people = ok(&broker, &["group", "list"]).stdout;
    assert_eq!(people, "GROUP    STATE  PROTOCOL-TYPE\nbilling  Empty  -\n");

    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(d[0]["state"], "Empty");
    assert_eq!(committed(&d), [(0, 0, 5), (1, 0, 1)]);
    let people = ok(&broker, &["group", "describe", "billing"]).stdout;
    assert!(people.contains("TOPIC   PARTITION  COMMITTED  LOG-END  LAG  MEMBER\nevents  0          0          5        5    -\n"), "{people}");

    ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--all-topics",
            "--to-latest",
        ],
    );
    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(committed(&d), [(0, 5, 0), (1, 1, 0)]);

    let r = ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events:0",
            "--to-offset",
            "2",
            "--json",
        ],
    )
    .json();
    assert_eq!(r["offsets"][0]["previous_offset"], 5);
    assert_eq!(r["offsets"][0]["new_offset"], 2);
    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(committed(&d), [(0, 2, 3), (1, 1, 0)]);
    // Out-of-range offsets are clamped into the partition.
    ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-offset",
            "99",
        ],
    );
    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(committed(&d), [(0, 5, 0), (1, 1, 0)]);

    // --to-datetime: the first offset whose timestamp is at or after the time.
    let stamps: Vec<(i64, i64)> = ok(
        &broker,
        &[
            "consume",
            "events",
            "--partition",
            "0",
            "--from-beginning",
            "-e",
            "-f",
            "%o %T\\n",
        ],
    )
    .stdout
    .lines()
    .map(|l| {
        let (o, t) = l.split_once(' ').expect("offset timestamp");
        (o.parse().expect("offset"), t.parse().expect("timestamp"))
    })
    .collect();
    let t3 = stamps[3].1;
    let want = stamps.iter().find(|(_, t)| *t >= t3).expect("found").0;
    let t3s = t3.to_string();
    ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events:0",
            "--to-datetime",
            &t3s,
        ],
    );
    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(committed(&d)[0].1, want);
    ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-datetime",
            "2000-01-01T00:00:00Z",
        ],
    );
    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(committed(&d), [(0, 0, 5), (1, 0, 1)]);
    // A time after every record: the end.
    let r = ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-datetime",
            "9999-01-01T00:00:00Z",
            "--dry-run",
        ],
    );
    assert!(
        r.stdout.ends_with("(dry run: nothing committed)\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("events  0          0         5\n"),
        "{}",
        r.stdout
    );
    let d = ok(&broker, &["group", "describe", "billing", "--json"]).json();
    assert_eq!(committed(&d), [(0, 0, 5), (1, 0, 1)], "dry run committed");

    fails(
        &broker,
        &["group", "describe", "nobody"],
        &["GROUP_ID_NOT_FOUND", "spate group list"],
    );
    fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "nope",
            "--to-earliest",
        ],
        &["UNKNOWN_TOPIC_OR_PARTITION"],
    );

    ok(&broker, &["group", "delete", "billing"]);
    assert_eq!(
        ok(&broker, &["group", "list", "--json"]).json(),
        serde_json::json!([])
    );
    broker.stop();
}

/// A consumer-protocol assignment: version 0, [(topic, [partitions])], no user data.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
    for p in partitions {
        b.extend_from_slice(&p.to_be_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

#[test]
fn group_with_members_shows_assignments_and_refuses_reset() {
    let broker = Broker::start_with(1, &["--group-initial-rebalance-delay-ms", "0"]);
    ok(&broker, &["topic", "create", "jobs", "--partitions", "2"]);
    ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to-earliest",
        ],
    );

    // One member joins and takes both partitions (JoinGroup v5: member id required first).
    let mut s = broker.connect();
    let protocol = JoinGroupRequestProtocol::default()
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(Bytes::from_static(&[
            0, 0, 0, 0, 0, 1, 0, 4, b'j', b'o', b'b', b's', 255, 255, 255, 255,
        ]));
    let join = |member: StrBytes, s: &mut std::net::TcpStream| {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("workers")))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(member)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![protocol.clone()]);
        call(s, 5, &req)
    };
    let first = join(StrBytes::from_static_str(""), &mut s);
    let member = if first.error_code == 79 {
        join(first.member_id.clone(), &mut s)
    } else {
        first
    };
    assert_eq!(member.error_code, 0, "JoinGroup");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("workers")))
        .with_generation_id(member.generation_id)
        .with_member_id(member.member_id.clone())
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(member.member_id.clone())
                .with_assignment(assignment("jobs", &[0, 1])),
        ]);
    let synced = call(&mut s, 3, &sync);
    assert_eq!(synced.error_code, 0, "SyncGroup");

    let d = ok(&broker, &["group", "describe", "workers", "--json"]).json();
    assert_eq!(d[0]["state"], "Stable");
    assert_eq!(d[0]["protocol_type"], "consumer");
    assert_eq!(d[0]["protocol"], "range");
    assert_eq!(d[0]["members"][0]["member_id"], member.member_id.as_str());
    assert_eq!(
        d[0]["members"][0]["assignment"]["jobs"],
        serde_json::json!([0, 1])
    );
    assert_eq!(d[0]["offsets"][1]["member_id"], member.member_id.as_str());
    let people = ok(&broker, &["group", "describe", "workers"]).stdout;
    assert!(
        people.contains("Group: workers  State: Stable  Protocol: consumer (range)  Members: 1"),
        "{people}"
    );
    assert!(people.lines().any(|l| l.ends_with("jobs:0,1")), "{people}");

    let r = fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to-latest",
        ],
        &["NON_EMPTY_GROUP", "stop the group's consumers first"],
    );
    assert!(r.stderr.contains("Stable with 1 member"), "{}", r.stderr);
    fails(
        &broker,
        &["group", "delete", "workers"],
        &["NON_EMPTY_GROUP", "stop the group's consumers first"],
    );
    drop(s);
    broker.stop();
}

#[test]
fn connection_refused_says_where_it_looked() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["topic", "list", "--bootstrap-server", &addr])
        .output()
        .expect("run spate");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to {addr}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("is the broker running at {addr}?")),
        "{stderr}"
    );
}
