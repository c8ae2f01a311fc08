//! DescribeLogDirs (API 35, v1-v4): the broker's one log directory (`--data-dir`) with the size
//! of each partition replica it holds (all its segment files) and its offset lag (log end
//! minus high watermark), and from v4 the file system's total and usable bytes. Consoles show
//! disk use from it. `topics` null: every replica; otherwise the ones asked for that exist
//! here (others are left out, as Kafka does).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{RequestContext, str_bytes, topic_name};
use crate::error::ErrorCode;
use crate::shard::calls::LogDirSizes;

pub async fn handle(ctx: &RequestContext, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    // Describe on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::Describe) {
        return DescribeLogDirsResponse::default().with_error_code(e.code());
    }
    let shard = &ctx.shard;
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.topic.0.as_str().to_string(), t.partitions.clone()))
            .collect()
    });
    let calls = (0..shard.shards()).map(|to| shard.call(to, LogDirSizes(wanted.clone())));
    let mut by_topic: BTreeMap<String, Vec<(i32, i64, i64)>> = BTreeMap::new();
    let mut failed = false;
    for answer in futures_util::future::join_all(calls).await {
        match answer {
            Ok(rows) => {
                for (topic, partition, size, lag) in rows {
                    by_topic
                        .entry(topic)
                        .or_default()
                        .push((partition, size, lag));
                }
            }
            Err(_) => failed = true,
        }
    }
    let dir = shard.config.data_dir.display().to_string();
    let mut result = DescribeLogDirsResult::default().with_log_dir(str_bytes(dir));
    if failed {
        result = result.with_error_code(ErrorCode::UNKNOWN_SERVER_ERROR.code());
    }
    if ctx.api_version >= 4 {
        let (total, usable) = match rustix::fs::statvfs(&shard.config.data_dir) {
            Ok(s) => {
                let unit = s.f_frsize.max(1);
                let bytes =
                    |blocks: u64| i64::try_from(blocks.saturating_mul(unit)).unwrap_or(i64::MAX);
                (bytes(s.f_blocks), bytes(s.f_bavail))
            }
            Err(_) => (-1, -1),
        };
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_unstable();
            DescribeLogDirsTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, size, lag)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(p)
                                .with_partition_size(size)
                                .with_offset_lag(lag)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(vec![result.with_topics(topics)])
}
