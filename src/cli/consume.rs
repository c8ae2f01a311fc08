//! `spate consume`: fetches a topic's partitions from their leaders and prints each message
//! with a kcat-like format (or as JSON lines).

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;

use super::ConsumeArgs;
use super::api::{self, EARLIEST, LATEST, TopicMeta};
use super::client::Client;
use super::error::{Error, Result};
use super::output::Progress;
use crate::client::records::{Record, decode_fetched};
use crate::error::ErrorCode;

/// Long-poll wait of a fetch while following the end of the log.
const FOLLOW_WAIT_MS: i32 = 500;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(Vec<u8>),
    Key,
    Value,
    KeyLen,
    ValueLen,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

/// Parses a kcat-style format: %k %s/%v %K %S %t %p %o %T %h %%, and \n \t \r \\ escapes.
fn parse_format(f: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut text = Vec::new();
    let mut chars = f.chars();
    let flush = |text: &mut Vec<u8>, out: &mut Vec<Piece>| {
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(text)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next() {
                    Some('k') => Piece::Key,
                    Some('s') | Some('v') => Piece::Value,
                    Some('K') => Piece::KeyLen,
                    Some('S') => Piece::ValueLen,
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('T') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some('%') => {
                        text.push(b'%');
                        continue;
                    }
                    other => {
                        return Err(Error::other(format!(
                            "--format: unknown placeholder '%{}'",
                            other.map(String::from).unwrap_or_default()
                        ))
                        .with_hint("use %k %s (or %v) %K %S %t %p %o %T %h %%"));
                    }
                };
                flush(&mut text, &mut out);
                out.push(piece);
            }
            '\\' => match chars.next() {
                Some('n') => text.push(b'\n'),
                Some('t') => text.push(b'\t'),
                Some('r') => text.push(b'\r'),
                Some('0') => text.push(0),
                Some('\\') => text.push(b'\\'),
                Some(o) => {
                    text.push(b'\\');
                    let mut b = [0; 4];
                    text.extend_from_slice(o.encode_utf8(&mut b).as_bytes());
                }
                None => text.push(b'\\'),
            },
            c => {
                let mut b = [0; 4];
                text.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    flush(&mut text, &mut out);
    Ok(out)
}

fn render(out: &mut Vec<u8>, pieces: &[Piece], topic: &str, partition: i32, r: &Record) {
    for p in pieces {
        match p {
            Piece::Text(t) => out.extend_from_slice(t),
            Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
            Piece::KeyLen => out.extend_from_slice(
                r.key
                    .as_ref()
                    .map_or(-1, |k| k.len() as i64)
                    .to_string()
                    .as_bytes(),
            ),
            Piece::ValueLen => out.extend_from_slice(
                r.value
                    .as_ref()
                    .map_or(-1, |v| v.len() as i64)
                    .to_string()
                    .as_bytes(),
            ),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
            Piece::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(v.as_deref().unwrap_or_default());
                }
            }
        }
    }
}

fn json_line(out: &mut Vec<u8>, topic: &str, partition: i32, r: &Record) {
    let text = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| serde_json::Value::String(String::from_utf8_lossy(b).into_owned()))
            .unwrap_or(serde_json::Value::Null)
    };
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect();
    let v = serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": text(&r.key),
        "value": text(&r.value),
        "headers": headers,
    });
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'\n');
}

/// Where each partition starts.
fn start_positions(
    client: &mut Client,
    topic: &TopicMeta,
    parts: &[i32],
    args: &ConsumeArgs,
) -> Result<BTreeMap<i32, i64>> {
    Ok(match (args.from_beginning, args.offset) {
        (true, _) => api::list_offsets(client, topic, parts, EARLIEST)?
            .into_iter()
            .map(|(p, (o, _))| (p, o))
            .collect(),
        (false, Some(o)) if o >= 0 => parts.iter().map(|p| (*p, o)).collect(),
        (false, Some(back)) => {
            let lo = api::list_offsets(client, topic, parts, EARLIEST)?;
            let hi = api::list_offsets(client, topic, parts, LATEST)?;
            parts
                .iter()
                .map(|p| {
                    let l = lo.get(p).map_or(0, |o| o.0);
                    let h = hi.get(p).map_or(l, |o| o.0);
                    (*p, (h + back).max(l))
                })
                .collect()
        }
        (false, None) => api::list_offsets(client, topic, parts, LATEST)?
            .into_iter()
            .map(|(p, (o, _))| (p, o))
            .collect(),
    })
}

pub fn run(args: ConsumeArgs) -> Result<()> {
    let pieces = parse_format(args.format.as_deref().unwrap_or("%s\\n"))?;
    let mut client = args.common.client()?;
    let mut topic = api::topic_metadata(&mut client, &args.topic, false)?;
    let all: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let parts: Vec<i32> = if args.partitions.is_empty() {
        all.clone()
    } else {
        for p in &args.partitions {
            if !all.contains(p) {
                return Err(Error::kafka(
                    format!("topic '{}' partition {p}", topic.name),
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                    None,
                )
                .with_hint(format!(
                    "topic '{}' has partitions 0..{}",
                    topic.name,
                    all.len().saturating_sub(1)
                )));
            }
        }
        args.partitions.clone()
    };
    let mut positions = start_positions(&mut client, &topic, &parts, &args)?;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    if args.exit_at_end {
        for (p, (o, _)) in api::list_offsets(&mut client, &topic, &parts, LATEST)? {
            ends.insert(p, o);
        }
    }
    let remaining_at_start: Option<u64> = args.exit_at_end.then(|| {
        positions
            .iter()
            .map(|(p, o)| (ends.get(p).copied().unwrap_or(*o) - o).max(0) as u64)
            .sum()
    });
    let total = match (args.max_messages, remaining_at_start) {
        (Some(m), Some(r)) => Some(m.min(r)),
        (m, r) => m.or(r),
    };
    let mut progress = Progress::new("consumed", total);
    let mut count: u64 = 0;
    let stdout = std::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break;
        }
        if args.exit_at_end
            && positions
                .iter()
                .all(|(p, o)| ends.get(p).is_some_and(|e| o >= e))
        {
            break;
        }
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, o) in &positions {
            if args.exit_at_end && ends.get(p).is_some_and(|e| o >= e) {
                continue;
            }
            let leader = topic
                .partitions
                .iter()
                .find(|m| m.partition == *p)
                .map_or(-1, |m| m.leader);
            by_leader.entry(leader).or_default().push((*p, *o));
        }
        let wait = if args.exit_at_end { 0 } else { FOLLOW_WAIT_MS };
        let mut refresh = false;
        for (leader, wanted) in by_leader {
            let fetched = match api::fetch(&mut client, leader, &topic, &wanted, wait) {
                Ok(f) => f,
                Err(e) if e.is_retriable() => {
                    refresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for f in fetched {
                let Some(pos) = positions.get(&f.partition).copied() else {
                    continue;
                };
                match ErrorCode::from_code(f.error_code) {
                    ErrorCode::NONE => {}
                    ErrorCode::NOT_LEADER_OR_FOLLOWER | ErrorCode::LEADER_NOT_AVAILABLE => {
                        refresh = true;
                        continue;
                    }
                    ErrorCode::OFFSET_OUT_OF_RANGE => {
                        return Err(Error::kafka(
                            format!(
                                "fetching '{}' partition {} at offset {pos}",
                                topic.name, f.partition
                            ),
                            f.error_code,
                            None,
                        )
                        .with_hint(format!(
                            "the partition holds offsets {}..{}; use --from-beginning or an --offset in that range",
                            f.log_start_offset.max(0),
                            f.high_watermark
                        )));
                    }
                    c => {
                        return Err(Error::kafka(
                            format!("fetching '{}' partition {}", topic.name, f.partition),
                            c.code(),
                            None,
                        ));
                    }
                }
                let decoded = decode_fetched(&f.records, pos).map_err(|e| {
                    Error::other(format!(
                        "reading '{}' partition {}: {e}",
                        topic.name, f.partition
                    ))
                })?;
                let mut next = decoded.next_offset.unwrap_or(pos).max(pos);
                for r in &decoded.records {
                    if args.max_messages.is_some_and(|m| count >= m) {
                        break;
                    }
                    if args.exit_at_end && ends.get(&f.partition).is_some_and(|e| r.offset >= *e) {
                        break;
                    }
                    if args.common.json {
                        json_line(&mut buf, &topic.name, f.partition, r);
                    } else {
                        render(&mut buf, &pieces, &topic.name, f.partition, r);
                    }
                    count += 1;
                    progress.add(1, r.value.as_ref().map_or(0, Bytes::len) as u64);
                    next = next.max(r.offset + 1);
                }
                positions.insert(f.partition, next);
                let mut out = stdout.lock();
                if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(Error::other(format!("writing to stdout: {e}")));
                }
                buf.clear();
            }
        }
        if refresh {
            topic = api::topic_metadata(&mut client, &args.topic, false)?;
        }
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_kcat() {
        let pieces = parse_format("%k=%s %h p%p o%o %t %K/%S 100%%\\n").expect("parses");
        let r = crate::client::records::new_record(
            7,
            5,
            Some(Bytes::from_static(b"user1")),
            Some(Bytes::from_static(b"hello")),
            [
                ("a".to_string(), Some(Bytes::from_static(b"1"))),
                ("b".to_string(), Some(Bytes::from_static(b"2"))),
            ],
        );
        let mut out = Vec::new();
        render(&mut out, &pieces, "greetings", 2, &r);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "user1=hello a=1,b=2 p2 o7 greetings 5/5 100%\n"
        );
        assert!(parse_format("%x").is_err());
    }
}
