//! spate-bench end to end: a short workload against a real broker; the run succeeds, writes
//! its JSON and SVG, and everything produced is consumed. No assertion on performance.

mod common;

use std::path::Path;
use std::process::Command;

use common::Broker;

fn run_bench(broker: &Broker, workload: &Path, out: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_spate-bench"))
        .arg("--bootstrap-server")
        .arg(broker.addr.to_string())
        .arg("--workload")
        .arg(workload)
        .arg("--out-dir")
        .arg(out)
        .arg("--label")
        .arg("smoke-test")
        .output()
        .expect("run spate-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "spate-bench exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker:\n{}",
        output.status,
        broker.stderr()
    );
    assert!(stdout.contains("publish"), "{stdout}");
    let jsons: Vec<_> = std::fs::read_dir(out)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(jsons.len(), 1, "{jsons:?}");
    let svg = jsons[0].with_extension("svg");
    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    serde_json::from_str(&std::fs::read_to_string(&jsons[0]).expect("json")).expect("valid json")
}

#[test]
fn smoke_workload_produces_and_consumes_everything() {
    let broker = Broker::start_with(2, &[]);
    let out = tempfile::tempdir().expect("tempdir");
    let workload = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/workloads/smoke.toml"
    ));
    let j = run_bench(&broker, workload, out.path());

    assert_eq!(j["broker"], broker.addr.to_string());
    assert_eq!(j["workload"]["name"], "smoke");
    let produced = j["totals"]["produced"].as_u64().expect("produced");
    let consumed = j["totals"]["consumed"].as_u64().expect("consumed");
    assert!(produced > 0, "{j}");
    assert_eq!(consumed, produced, "{j}");
    assert_eq!(j["totals"]["publish_errors"], 0, "{j}");
    assert!(
        j["publish"]["throughput"]["messages"].as_u64().unwrap() > 0,
        "{j}"
    );
    for lat in [
        &j["publish"]["latency_ms"],
        &j["consume"]["end_to_end_latency_ms"],
    ] {
        assert!(lat["count"].as_u64().unwrap() > 0, "{j}");
        assert!(lat["p50"].as_f64().unwrap() > 0.0, "{j}");
        assert!(
            lat["max"].as_f64().unwrap() >= lat["p99"].as_f64().unwrap(),
            "{j}"
        );
    }
    broker.stop();
}

#[test]
fn backlog_then_consume_at_max_rate_with_acks_all() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = dir.path().join("backlog.toml");
    std::fs::write(
        &workload,
        r#"
        name = "backlog"
        topics = 1
        partitions_per_topic = 4
        message_size = 100
        key_distribution = "random"
        producers = 1
        consumers = 3
        producer_rate = "max"
        backlog_messages = 2000
        acks = -1
        linger_ms = 0
        batch_bytes = 4096
        max_in_flight = 3
        warmup_seconds = 0.2
        duration_seconds = 1
        "#,
    )
    .expect("write workload");
    let out = dir.path().join("out");
    let j = run_bench(&broker, &workload, &out);
    let produced = j["totals"]["produced"].as_u64().unwrap();
    assert!(produced > 2000, "{j}");
    assert_eq!(j["totals"]["backlog"], 2000, "{j}");
    assert_eq!(j["totals"]["consumed"].as_u64().unwrap(), produced, "{j}");
    assert_eq!(j["workload"]["acks"], -1);
    broker.stop();
}

#[test]
fn bad_workload_exits_non_zero_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = dir.path().join("bad.toml");
    std::fs::write(&workload, "duration_seconds = 1\nacks = 7\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_spate-bench"))
        .args(["--bootstrap-server", "127.0.0.1:1", "--workload"])
        .arg(&workload)
        .output()
        .expect("run spate-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`acks`"), "{stderr}");
}
