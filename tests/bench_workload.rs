//! spate-bench workload files: the shipped ones parse, defaults apply, and invalid values are
//! rejected naming the field.

#[allow(dead_code)]
#[path = "../bench/spate_bench/workload.rs"]
mod workload;

use std::path::Path;

use workload::{KeyDistribution, Rate, Workload};

fn workloads_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/workloads"))
}

#[test]
fn shipped_workloads_parse() {
    for name in [
        "throughput-1k",
        "acks-all-1k",
        "latency-50mbps",
        "consume-1k",
        "smoke",
    ] {
        let path = workloads_dir().join(format!("{name}.toml"));
        let w = Workload::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(w.name, name);
        assert!(w.duration_seconds > 0.0);
    }
    let t = Workload::load(&workloads_dir().join("throughput-1k.toml")).unwrap();
    assert_eq!(t.producer_rate, Rate::Max);
    assert_eq!((t.message_size, t.acks), (1024, 1));
    let a = Workload::load(&workloads_dir().join("acks-all-1k.toml")).unwrap();
    assert_eq!(a.acks, -1);
    let l = Workload::load(&workloads_dir().join("latency-50mbps.toml")).unwrap();
    assert_eq!(l.producer_rate, Rate::PerSecond(51_200));
    assert_eq!(l.linger_ms, 1);
    let c = Workload::load(&workloads_dir().join("consume-1k.toml")).unwrap();
    assert!(c.backlog_messages > 0);
    assert_eq!(c.producer_rate, Rate::PerSecond(0));
}

#[test]
fn defaults() {
    let w = Workload::parse("duration_seconds = 10", "mine").unwrap();
    assert_eq!(w.name, "mine");
    assert_eq!(w.topic_prefix, "spate-bench");
    assert_eq!((w.topics, w.partitions_per_topic), (1, 1));
    assert_eq!(w.message_size, 1024);
    assert_eq!(w.key_distribution, KeyDistribution::None);
    assert_eq!((w.producers, w.consumers), (1, 1));
    assert_eq!(w.producer_rate, Rate::Max);
    assert_eq!(w.acks, 1);
    assert_eq!(
        (w.linger_ms, w.batch_bytes, w.max_in_flight),
        (1, 16_384, 1)
    );
    assert_eq!((w.warmup_seconds, w.duration_seconds), (0.0, 10.0));
    assert_eq!(w.backlog_messages, 0);
    assert_eq!(w.fetch_max_wait_ms, 100);
}

#[test]
fn alternative_spellings() {
    let w = Workload::parse(
        r#"
        duration_seconds = 1.5
        acks = "all"
        producer_rate = 1000
        key_distribution = "random"
        "#,
        "x",
    )
    .unwrap();
    assert_eq!(w.acks, -1);
    assert_eq!(w.producer_rate, Rate::PerSecond(1000));
    assert_eq!(w.key_distribution, KeyDistribution::Random);
    assert_eq!(w.duration_seconds, 1.5);
    let w = Workload::parse(
        "duration_seconds = 1\nkey_distribution = \"round-robin\"",
        "x",
    )
    .unwrap();
    assert_eq!(w.key_distribution, KeyDistribution::RoundRobin);
}

#[track_caller]
fn rejects(text: &str, field: &str) {
    let full = if text.contains("duration_seconds") {
        text.to_string()
    } else {
        format!("duration_seconds = 5\n{text}")
    };
    match Workload::parse(&full, "bad") {
        Ok(w) => panic!("accepted {text:?}: {w:?}"),
        Err(e) => {
            assert_eq!(e.field.as_deref(), Some(field), "{text:?}: {e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }
}

#[test]
fn invalid_values_name_the_field() {
    rejects("acks = 2", "acks");
    rejects("acks = \"some\"", "acks");
    rejects("message_size = 4", "message_size");
    rejects("message_size = \"big\"", "message_size");
    rejects("producer_rate = \"fast\"", "producer_rate");
    rejects("producer_rate = -5", "producer_rate");
    rejects("producer_rate = 1.5", "producer_rate");
    rejects("topics = 0", "topics");
    rejects("partitions_per_topic = 0", "partitions_per_topic");
    rejects("producers = 0", "producers");
    rejects("consumers = -1", "consumers");
    rejects("key_distribution = \"sticky\"", "key_distribution");
    rejects("max_in_flight = 0", "max_in_flight");
    rejects("batch_bytes = 0", "batch_bytes");
    rejects("linger_ms = -1", "linger_ms");
    rejects("warmup_seconds = -1", "warmup_seconds");
    rejects("duration_seconds = 0", "duration_seconds");
    rejects("duration_seconds = \"long\"", "duration_seconds");
    rejects("topic_prefix = \"has space\"", "topic_prefix");
    rejects("name = \"\"", "name");
    rejects("partitions = 3", "partitions");
    let missing = Workload::parse("topics = 1", "bad").unwrap_err();
    assert_eq!(
        missing.field.as_deref(),
        Some("duration_seconds"),
        "{missing}"
    );
    let syntax = Workload::parse("topics = [", "bad").unwrap_err();
    assert!(syntax.to_string().contains("invalid TOML"), "{syntax}");
}
