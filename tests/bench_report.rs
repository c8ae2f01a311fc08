//! spate-bench reports: percentiles of known latencies, the JSON fields, the SVG chart, and
//! the producers' batch builder read back by the crate's decoder.

#[allow(dead_code)]
#[path = "../bench/spate_bench/report.rs"]
mod report;

#[allow(dead_code)]
#[path = "../bench/spate_bench/records.rs"]
mod records;

use bytes::Bytes;
use hdrhistogram::Histogram;
use report::{LatencySummary, Machine, Report, Throughput, Totals};
use spate::client::records::decode_fetched;

/// As spate-bench records: microseconds, 4 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 4).unwrap()
}

/// 1..=10_000 microseconds, one sample each.
fn uniform_us() -> Histogram<u64> {
    let mut h = histogram();
    for us in 1..=10_000u64 {
        h.record(us).unwrap();
    }
    h
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= want * 0.002 + 0.001
}

fn sample_report() -> Report {
    let mut e2e = histogram();
    for ms in 1..=100u64 {
        e2e.record(ms * 1000).unwrap();
    }
    Report {
        label: "unit <test>".into(),
        broker: "127.0.0.1:9092".into(),
        started_unix: 1_700_000_000,
        workload: serde_json::json!({"name": "unit", "message_size": 1024}),
        machine: Machine::detect(),
        details: serde_json::json!({}),
        publish: Throughput {
            messages: 10_000,
            bytes: 10 * 1024 * 1024,
            seconds: 2.0,
        },
        consume: Some(Throughput {
            messages: 100,
            bytes: 100 * 1024,
            seconds: 2.0,
        }),
        publish_latency: uniform_us(),
        e2e_latency: Some(e2e),
        totals: Totals {
            produced: 10_000,
            consumed: 10_000,
            ..Totals::default()
        },
    }
}

#[test]
fn percentiles_of_known_latencies() {
    let s = LatencySummary::of(&uniform_us());
    assert_eq!(s.count, 10_000);
    assert!(close(s.get("p50"), 5.0), "p50 {}", s.get("p50"));
    assert!(close(s.get("p99"), 9.9), "p99 {}", s.get("p99"));
    assert!(close(s.get("p99_9"), 9.99), "p99.9 {}", s.get("p99_9"));
    assert!(close(s.get("p99_99"), 9.999), "p99.99 {}", s.get("p99_99"));
    assert!(close(s.max_ms, 10.0), "max {}", s.max_ms);
    assert!(close(s.min_ms, 0.001), "min {}", s.min_ms);
    assert!(close(s.mean_ms, 5.0005), "mean {}", s.mean_ms);
}

#[test]
fn throughput_figures() {
    let t = Throughput {
        messages: 3000,
        bytes: 3 * 1024 * 1024,
        seconds: 1.5,
    };
    assert_eq!(t.msgs_per_sec(), 2000.0);
    assert_eq!(t.mb_per_sec(), 2.0);
    assert_eq!(Throughput::default().mb_per_sec(), 0.0);
}

#[test]
fn json_has_every_figure() {
    let r = sample_report();
    let j = r.to_json();
    for key in [
        "label", "broker", "workload", "machine", "publish", "consume", "totals",
    ] {
        assert!(j.get(key).is_some(), "no {key} in {j}");
    }
    assert_eq!(j["broker"], "127.0.0.1:9092");
    assert_eq!(j["workload"]["message_size"], 1024);
    assert!(j["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(j["machine"].get("kernel").is_some());
    let pl = &j["publish"]["latency_ms"];
    for key in ["p50", "p99", "p99_9", "p99_99", "max", "count"] {
        assert!(pl.get(key).is_some(), "no publish {key} in {pl}");
    }
    assert_eq!(pl["p99"].as_f64().unwrap(), 9.9);
    assert_eq!(pl["max"].as_f64().unwrap(), 10.0);
    assert_eq!(j["publish"]["throughput"]["msgs_per_sec"], 5000.0);
    assert_eq!(j["publish"]["throughput"]["mb_per_sec"], 5.0);
    let el = &j["consume"]["end_to_end_latency_ms"];
    assert!((el["p50"].as_f64().unwrap() - 50.0).abs() < 0.1, "{el}");
    assert!((el["max"].as_f64().unwrap() - 100.0).abs() < 0.1, "{el}");
    assert_eq!(j["totals"]["produced"], 10_000);
    assert_eq!(j["totals"]["consumed"], 10_000);

    let table = r.table();
    assert!(
        table.contains("publish") && table.contains("end-to-end"),
        "{table}"
    );
    assert!(table.contains("9.900"), "{table}");
}

/// A minimal XML well-formedness check: tags nest and close, attributes are quoted.
fn assert_well_formed(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "'<' inside tag: {tag}");
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
            let name = tag.split_whitespace().next().expect("tag name");
            stack.push(name.to_string());
        }
        let text = &rest[end + 1..];
        let next = text.find('<').unwrap_or(text.len());
        assert!(!text[..next].contains('>'), "stray '>' in text");
        rest = text;
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn svg_chart_is_well_formed_with_each_series() {
    let r = sample_report();
    let svg = r.svg();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_well_formed(&svg);
    assert!(svg.contains(r#"data-series="publish""#));
    assert!(svg.contains(r#"data-series="end-to-end""#));
    assert!(svg.contains("99.9%"));
    assert!(svg.contains("unit &lt;test&gt;"), "label escaped");
    assert_eq!(svg.matches("<polyline").count(), 2);

    // No samples: still a valid chart.
    let mut empty = sample_report();
    empty.publish_latency.reset();
    empty.e2e_latency = None;
    let svg = empty.svg();
    assert_well_formed(&svg);
    assert!(svg.contains("no samples"));
}

#[test]
fn writes_json_and_svg_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = sample_report();
    let (json, svg) = r.write(&dir.path().join("out")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(parsed["label"], "unit <test>");
    assert!(
        json.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("unit__test_-20231114-")
    );
    assert_well_formed(&std::fs::read_to_string(svg).unwrap());
}

#[test]
fn utc_stamps() {
    assert_eq!(report::utc_stamp(0), "19700101-000000");
    assert_eq!(report::utc_stamp(1_700_000_000), "20231114-221320");
    assert_eq!(report::utc_stamp(951_782_400), "20000229-000000");
}

#[test]
fn record_batches_round_trip() {
    let payload = vec![7u8; 100];
    let mut b = records::BatchBuilder::new();
    b.push(None, 11, &payload);
    b.push(Some(b"key-000000000001"), 22, &payload);
    b.push(None, 33, &payload);
    let (mut batch, times) = b.finish(1_700_000_000_000);
    assert!(b.is_empty());
    assert_eq!(times, vec![11, 22, 33]);
    // As a broker stores it at base offset 40, followed by a partial batch.
    batch[0..8].copy_from_slice(&40i64.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    assert_eq!(&batch[17..21], &crc.to_be_bytes());
    let mut data = batch.clone();
    data.extend_from_slice(&batch[..30]);

    // The crate's decoder reads the fast path's batches, with or without a partial batch
    // after them.
    let fetched = decode_fetched(&Bytes::from(data), 41).unwrap();
    let seen: Vec<(i64, Option<usize>, u64)> = fetched
        .records
        .iter()
        .map(|r| {
            let value = r.value.as_ref().unwrap();
            assert_eq!(value.len(), 100);
            assert_eq!(&value[8..], &payload[8..]);
            (
                r.offset,
                r.key.as_ref().map(|k| k.len()),
                u64::from_be_bytes(value[..8].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(seen, vec![(41, Some(16), 22), (42, None, 33)]);
    assert_eq!(fetched.next_offset, Some(43));
    assert!(
        fetched
            .records
            .iter()
            .all(|r| r.timestamp == 1_700_000_000_000)
    );
}
