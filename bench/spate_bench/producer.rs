//! Producers: one thread per producer writes batched Produce requests to each partition
//! leader it needs, with up to `max_in_flight` requests unanswered per connection; a reader
//! thread per connection takes the responses (a broker answers a connection in order) and
//! records each message's publish latency.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use spate::client::secure::{ReadHalf, WriteHalf};

use crate::client::{self, Versions};
use crate::records::BatchBuilder;
use crate::stats::{Recorder, Series, Shared};
use crate::workload::{KeyDistribution, Workload};

/// One partition a producer writes to (or a consumer reads).
#[derive(Debug, Clone)]
pub struct Target {
    pub topic: Arc<str>,
    pub partition: i32,
    /// Index over all partitions of the run.
    pub global: usize,
    pub leader: i32,
}

/// What a producer thread does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Stop after this many messages (backlog) ...
    pub limit: Option<u64>,
    /// ... or at this time (ns since the epoch).
    pub end_ns: u64,
    /// Schedule start (ns since the epoch) and messages/s of this producer; None: max.
    pub start_ns: u64,
    pub rate: Option<f64>,
    /// Whether values carry the send time (backlog messages carry 0: no end-to-end sample).
    pub stamp: bool,
}

pub struct ProducerOutcome {
    pub recorders: Vec<Recorder>,
    /// Messages the schedule wanted sent before the end but that were never sent.
    pub unsent_scheduled: u64,
}

struct Part {
    topic: Arc<str>,
    partition: i32,
    global: usize,
    times: Vec<u64>,
}

struct InFlight {
    correlation_id: i32,
    parts: Vec<Part>,
}

#[derive(Default)]
struct QueueState {
    entries: VecDeque<InFlight>,
    closed: bool,
    failed: Option<String>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

struct LeaderConn {
    writer: WriteHalf,
    queue: Arc<Queue>,
    reader: Option<JoinHandle<Result<Recorder>>>,
    next_correlation: i32,
    /// Targets (indices into the producer's list) with a non-empty batch.
    pending: Vec<usize>,
    /// Send time of the oldest message waiting in a batch.
    oldest_ns: Option<u64>,
    /// Some batch cannot take another message.
    full: bool,
}

impl LeaderConn {
    fn has_room(&self, max: usize) -> Result<bool> {
        let st = self.queue.state.lock().unwrap();
        if let Some(e) = &st.failed {
            bail!("{e}");
        }
        Ok(st.entries.len() < max)
    }

    /// Blocks until fewer than `max` requests are unanswered (or `timeout` passes: false).
    fn wait_room(&self, max: usize, timeout: Duration) -> Result<bool> {
        let st = self.queue.state.lock().unwrap();
        let (st, _) = self
            .queue
            .cv
            .wait_timeout_while(st, timeout, |s| {
                s.entries.len() >= max && s.failed.is_none()
            })
            .unwrap();
        if let Some(e) = &st.failed {
            bail!("{e}");
        }
        Ok(st.entries.len() < max)
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// `key-` and 12 decimal digits of `k`.
fn put_decimal_key(buf: &mut [u8; 16], mut k: u64) {
    buf[..4].copy_from_slice(b"key-");
    for b in buf[4..].iter_mut().rev() {
        *b = b'0' + (k % 10) as u8;
        k /= 10;
    }
}

/// 16 lowercase hex digits of `r`.
fn put_hex_key(buf: &mut [u8; 16], r: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((r >> (60 - 4 * i)) & 0xf) as usize];
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Producer<'a> {
    id: usize,
    w: &'a Workload,
    versions: Versions,
    shared: &'a Arc<Shared>,
    targets: Vec<Target>,
    batches: Vec<BatchBuilder>,
    conns: HashMap<i32, LeaderConn>,
    /// acks=0: no responses; latencies are recorded when the request is written.
    own: Recorder,
    buf: BytesMut,
}

/// Runs one producer to the end of its plan.
pub fn run(
    id: usize,
    w: &Workload,
    versions: Versions,
    targets: Vec<Target>,
    leaders: &HashMap<i32, String>,
    plan: Plan,
    shared: &Arc<Shared>,
) -> Result<ProducerOutcome> {
    let mut p = Producer {
        id,
        w,
        versions,
        shared,
        batches: targets.iter().map(|_| BatchBuilder::new()).collect(),
        targets,
        conns: HashMap::new(),
        own: Recorder::new(Series::Publish),
        buf: BytesMut::new(),
    };
    let mut needed: Vec<i32> = p.targets.iter().map(|t| t.leader).collect();
    needed.sort_unstable();
    needed.dedup();
    for leader in needed {
        let addr = leaders
            .get(&leader)
            .ok_or_else(|| anyhow!("no address for broker {leader}"))?;
        let conn = p.open(addr)?;
        p.conns.insert(leader, conn);
    }
    let result = p.produce(plan);
    let closed = p.close();
    let unsent = result?;
    let mut recorders = closed?;
    recorders.push(p.own);
    Ok(ProducerOutcome {
        recorders,
        unsent_scheduled: unsent,
    })
}

impl Producer<'_> {
    fn open(&self, addr: &str) -> Result<LeaderConn> {
        let (stream, writer) = client::connect(addr)?.split()?;
        let queue = Arc::new(Queue::default());
        let reader = if self.w.acks == 0 {
            None
        } else {
            let queue = Arc::clone(&queue);
            let version = self.versions.produce;
            let size = self.w.message_size as u64;
            let shared = Arc::clone(self.shared);
            Some(
                std::thread::Builder::new()
                    .name(format!("producer-{}-acks", self.id))
                    .spawn(move || read_acks(stream, queue, version, size, shared))?,
            )
        };
        Ok(LeaderConn {
            writer,
            queue,
            reader,
            next_correlation: 1,
            pending: Vec::new(),
            oldest_ns: None,
            full: false,
        })
    }

    fn produce(&mut self, plan: Plan) -> Result<u64> {
        let w = self.w;
        let n = self.targets.len();
        let linger_ns = w.linger_ms * 1_000_000;
        let max_in_flight = w.max_in_flight;
        let interval_ns = plan.rate.filter(|r| *r > 0.0).map(|r| 1e9 / r);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((self.id as u64 + 1) << 17);
        let payload: Vec<u8> = (0..w.message_size)
            .map(|_| xorshift(&mut seed) as u8)
            .collect();
        let full_rec = BatchBuilder::new().record_len(Some(&[0u8; 16]), w.message_size);
        let mut key_buf = [0u8; 16];
        let mut sticky = self.id % n;
        let mut sent: u64 = 0;
        let leader_ids: Vec<i32> = self.conns.keys().copied().collect();
        loop {
            if self.shared.stopped() {
                break;
            }
            let now = self.shared.now_ns();
            if now >= plan.end_ns || plan.limit.is_some_and(|l| sent >= l) {
                break;
            }
            // 1. Send what is ready: a full batch (waiting for room if need be), or a
            //    lingered one when the connection has room.
            let mut lingering_without_room = None;
            for &leader in &leader_ids {
                let c = &self.conns[&leader];
                if c.pending.is_empty() {
                    continue;
                }
                if c.full {
                    while !c.wait_room(max_in_flight, Duration::from_millis(100))? {
                        if self.shared.stopped() {
                            return Ok(0);
                        }
                    }
                    self.send(leader)?;
                } else if c.oldest_ns.is_some_and(|o| o + linger_ns <= now) {
                    if c.has_room(max_in_flight)? {
                        self.send(leader)?;
                    } else {
                        lingering_without_room = Some(leader);
                    }
                }
            }
            // 2. The next message, when it is due.
            let due = match interval_ns {
                Some(iv) => plan.start_ns + (sent as f64 * iv) as u64,
                None => now,
            };
            if due <= now {
                let key: Option<&[u8]> = match w.key_distribution {
                    KeyDistribution::None => None,
                    KeyDistribution::RoundRobin => {
                        put_decimal_key(&mut key_buf, sent % n as u64);
                        Some(&key_buf)
                    }
                    KeyDistribution::Random => {
                        put_hex_key(&mut key_buf, xorshift(&mut seed));
                        Some(&key_buf)
                    }
                };
                let t = match key {
                    None => sticky,
                    Some(k) => (fnv1a(k) % n as u64) as usize,
                };
                let ts = if plan.stamp { due.max(1) } else { 0 };
                let leader = self.targets[t].leader;
                let batch = &mut self.batches[t];
                if !batch.is_empty()
                    && batch.encoded_len() + batch.record_len(key, w.message_size) > w.batch_bytes
                {
                    // Only with keys of another length than `full_rec` assumed.
                    self.conns.get_mut(&leader).expect("conn").full = true;
                    continue;
                }
                let was_empty = batch.is_empty();
                batch.push(key, ts, &payload);
                let is_full = batch.encoded_len() + full_rec > w.batch_bytes;
                let c = self.conns.get_mut(&leader).expect("conn");
                if was_empty {
                    c.pending.push(t);
                }
                let enqueued = if interval_ns.is_some() { due } else { now };
                c.oldest_ns = Some(c.oldest_ns.map_or(enqueued, |o| o.min(enqueued)));
                if is_full {
                    c.full = true;
                    if key.is_none() {
                        sticky = (sticky + 1) % n;
                    }
                }
                sent += 1;
                continue;
            }
            // 3. Nothing due: wait for the next message, a linger deadline or the end.
            let mut wake = due.min(plan.end_ns);
            for c in self.conns.values() {
                if let Some(o) = c.oldest_ns {
                    wake = wake.min(o + linger_ns);
                }
            }
            let wait = Duration::from_nanos(wake.saturating_sub(self.shared.now_ns()));
            match lingering_without_room {
                Some(leader) => {
                    self.conns[&leader]
                        .wait_room(max_in_flight, wait.max(Duration::from_micros(50)))?;
                }
                None if !wait.is_zero() => std::thread::sleep(wait),
                None => {}
            }
        }
        // Send what is left and count what the schedule wanted but never got.
        let leaders: Vec<i32> = self.conns.keys().copied().collect();
        for leader in leaders {
            if self.conns[&leader].pending.is_empty() {
                continue;
            }
            while !self.conns[&leader].wait_room(max_in_flight, Duration::from_millis(100))? {
                if self.shared.stopped() {
                    return Ok(0);
                }
            }
            self.send(leader)?;
        }
        let unsent = match (interval_ns, plan.limit) {
            (Some(iv), None) => {
                let scheduled = (plan.end_ns.saturating_sub(plan.start_ns) as f64 / iv) as u64;
                scheduled.saturating_sub(sent)
            }
            _ => 0,
        };
        Ok(unsent)
    }

    /// Sends every pending batch for `leader` in one Produce request (room was checked).
    fn send(&mut self, leader: i32) -> Result<()> {
        let ts_ms = wall_ms();
        let c = self.conns.get_mut(&leader).expect("conn");
        let mut pending = std::mem::take(&mut c.pending);
        pending.sort_unstable();
        c.oldest_ns = None;
        c.full = false;
        let mut topic_data: Vec<TopicProduceData> = Vec::new();
        let mut parts = Vec::with_capacity(pending.len());
        for t in pending {
            let target = &self.targets[t];
            let (batch, times) = self.batches[t].finish(ts_ms);
            let pd = PartitionProduceData::default()
                .with_index(target.partition)
                .with_records(Some(Bytes::from(batch)));
            match topic_data.last_mut() {
                Some(td) if td.name.0.as_str() == &*target.topic => td.partition_data.push(pd),
                _ => topic_data.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(target.topic.to_string())))
                        .with_partition_data(vec![pd]),
                ),
            }
            parts.push(Part {
                topic: Arc::clone(&target.topic),
                partition: target.partition,
                global: target.global,
                times,
            });
        }
        let req = ProduceRequest::default()
            .with_acks(self.w.acks)
            .with_timeout_ms(self.w.produce_timeout_ms)
            .with_topic_data(topic_data);
        let corr = c.next_correlation;
        c.next_correlation = c.next_correlation.wrapping_add(1);
        self.buf.clear();
        client::encode_request(
            &mut self.buf,
            ApiKey::Produce,
            self.versions.produce,
            corr,
            &req,
        )?;
        if c.reader.is_some() {
            c.queue.state.lock().unwrap().entries.push_back(InFlight {
                correlation_id: corr,
                parts,
            });
            c.writer.write_all(&self.buf).context("send Produce")?;
        } else {
            c.writer.write_all(&self.buf).context("send Produce")?;
            let now = self.shared.now_ns();
            let in_window = self.shared.in_window(now);
            let size = self.w.message_size as u64;
            let mut count = 0;
            for p in &parts {
                for t in &p.times {
                    self.own.record(in_window, now.saturating_sub(*t), size);
                }
                count += p.times.len() as u64;
            }
            self.shared.published.fetch_add(count, Ordering::Relaxed);
            self.shared
                .published_bytes
                .fetch_add(count * size, Ordering::Relaxed);
            self.own.maybe_flush(self.shared, now, false);
        }
        Ok(())
    }

    /// Waits for every answer, then closes the connections; returns the readers' recorders.
    fn close(&mut self) -> Result<Vec<Recorder>> {
        let mut out = Vec::new();
        let mut first_err = None;
        for (_, mut c) in self.conns.drain() {
            {
                let st = c.queue.state.lock().unwrap();
                let (mut st, _) = c
                    .queue
                    .cv
                    .wait_timeout_while(st, client::IO_TIMEOUT, |s| {
                        !s.entries.is_empty() && s.failed.is_none() && !self.shared.stopped()
                    })
                    .unwrap();
                st.closed = true;
            }
            let _ = c.writer.shutdown();
            if let Some(reader) = c.reader.take() {
                match reader.join() {
                    Ok(Ok(rec)) => out.push(rec),
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(anyhow!("producer ack reader panicked"));
                    }
                }
            }
        }
        self.own
            .maybe_flush(self.shared, self.shared.now_ns(), true);
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// The reader side of a producer connection.
fn read_acks(
    stream: ReadHalf,
    queue: Arc<Queue>,
    version: i16,
    message_size: u64,
    shared: Arc<Shared>,
) -> Result<Recorder> {
    let mut rec = Recorder::new(Series::Publish);
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let fail = |msg: String| {
        let mut st = queue.state.lock().unwrap();
        st.failed.get_or_insert(msg.clone());
        queue.cv.notify_all();
        anyhow!(msg)
    };
    loop {
        let frame = match client::read_frame(&mut reader) {
            Ok(f) => f,
            Err(e) => {
                let st = queue.state.lock().unwrap();
                if st.closed {
                    rec.maybe_flush(&shared, shared.now_ns(), true);
                    return Ok(rec);
                }
                drop(st);
                return Err(fail(format!("read Produce response: {e}")));
            }
        };
        let now = shared.now_ns();
        let (corr, resp) =
            match client::decode_response::<ProduceResponse>(frame, ApiKey::Produce, version) {
                Ok(r) => r,
                Err(e) => return Err(fail(e.to_string())),
            };
        let entry = {
            let mut st = queue.state.lock().unwrap();
            let e = st.entries.pop_front();
            queue.cv.notify_all();
            e
        };
        let Some(entry) = entry else {
            return Err(fail(format!("Produce response {corr} without a request")));
        };
        if entry.correlation_id != corr {
            return Err(fail(format!(
                "Produce response correlation id {corr}, expected {}",
                entry.correlation_id
            )));
        }
        let in_window = shared.in_window(now);
        for part in entry.parts {
            let count = part.times.len() as u64;
            let answer = resp
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == &*part.topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == part.partition);
            match answer {
                Some(p) if p.error_code == 0 => {
                    if p.base_offset >= 0 {
                        shared.acked_end[part.global]
                            .fetch_max(p.base_offset + count as i64, Ordering::Relaxed);
                    }
                    for t in &part.times {
                        rec.record(in_window, now.saturating_sub(*t), message_size);
                    }
                    shared.published.fetch_add(count, Ordering::Relaxed);
                    shared
                        .published_bytes
                        .fetch_add(count * message_size, Ordering::Relaxed);
                }
                other => {
                    let before = shared.publish_errors.fetch_add(count, Ordering::Relaxed);
                    if before == 0 {
                        eprintln!(
                            "spate-bench: Produce to {}/{} failed: {}",
                            part.topic,
                            part.partition,
                            match other {
                                Some(p) => format!("error code {}", p.error_code),
                                None => "partition missing from the response".to_string(),
                            }
                        );
                    }
                }
            }
        }
        rec.maybe_flush(&shared, now, false);
    }
}
