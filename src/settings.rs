//! Every broker setting, as one flat list that is both the TOML config file's schema and the
//! `spate serve` command line. The effective configuration is: built-in defaults, then the
//! config file (`--config FILE`), then command-line flags. [`Settings::into_config`] checks
//! every value and names the setting in its error; `--print-config` prints the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// How the broker writes its log lines to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// All settings; None means "not given here" (a lower layer or the default applies).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to accept Kafka clients on [default: 127.0.0.1:9092].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address Metadata tells clients to connect to [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// Listeners in Kafka's syntax (listeners), `NAME://HOST:PORT,...`: NAME is a security
    /// protocol (PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL; the last two need --tls-cert-file
    /// and --tls-key-file) or a name --listener-security-protocol-map maps to one. Replaces --listen (the shorthand
    /// for one PLAINTEXT listener); with it no default listener opens [default: none].
    #[arg(long, value_name = "NAME://HOST:PORT,...")]
    pub listeners: Option<String>,
    /// Security protocol of each listener name, `NAME:PROTOCOL,...`
    /// (listener.security.protocol.map) [default: each protocol maps to itself].
    #[arg(long, value_name = "NAME:PROTOCOL,...")]
    pub listener_security_protocol_map: Option<String>,
    /// What Metadata tells clients that came in on each listener, `NAME://HOST:PORT,...`
    /// (advertised.listeners); --advertised-listener HOST:PORT is the shorthand for the first
    /// [default: each listener's own address].
    #[arg(long, value_name = "NAME://HOST:PORT,...")]
    pub advertised_listeners: Option<String>,
    /// The listener other brokers of a cluster connect to for replication, forwarded requests
    /// and transaction verification (inter.broker.listener.name); brokers register every
    /// listener and name this one for each other. It must be PLAINTEXT for now: brokers do
    /// not yet speak TLS or SASL to each other [default: the first listener].
    #[arg(long, value_name = "NAME")]
    pub inter_broker_listener_name: Option<String>,
    /// The SASL mechanism brokers log in with on a SASL inter-broker listener, SCRAM-SHA-256,
    /// SCRAM-SHA-512 or PLAIN (sasl.mechanism.inter.broker.protocol) [default: SCRAM-SHA-512].
    #[arg(long, value_name = "MECHANISM")]
    pub sasl_mechanism_inter_broker_protocol: Option<String>,
    /// The user brokers log in as on a SASL inter-broker listener (Kafka puts it in the
    /// listener's JAAS config); put it in --super-users [default: none].
    #[arg(long, value_name = "NAME")]
    pub inter_broker_sasl_username: Option<String>,
    /// A file holding that user's password (its first line), so it shows neither in `ps`
    /// nor in --print-config [default: none].
    #[arg(long, value_name = "FILE")]
    pub inter_broker_sasl_password_file: Option<PathBuf>,
    /// SASL mechanisms SASL listeners offer, `M1,M2` of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN
    /// and OAUTHBEARER (sasl.enabled.mechanisms) [default: SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long, value_name = "MECHANISMS")]
    pub sasl_enabled_mechanisms: Option<String>,
    /// OAUTHBEARER: the JWKS whose keys sign valid tokens, a file, as a `file:///path` URL or
    /// a path (sasl.oauthbearer.jwks.endpoint.url); re-read on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    pub sasl_oauthbearer_jwks_endpoint_url: Option<String>,
    /// OAUTHBEARER: audiences a token must name one of, `A1,A2`
    /// (sasl.oauthbearer.expected.audience) [default: any].
    #[arg(long, value_name = "AUDIENCES")]
    pub sasl_oauthbearer_expected_audience: Option<String>,
    /// OAUTHBEARER: the issuer a token must name (sasl.oauthbearer.expected.issuer)
    /// [default: any].
    #[arg(long, value_name = "ISSUER")]
    pub sasl_oauthbearer_expected_issuer: Option<String>,
    /// OAUTHBEARER: the claim that names the principal (sasl.oauthbearer.sub.claim.name)
    /// [default: sub].
    #[arg(long, value_name = "CLAIM")]
    pub sasl_oauthbearer_sub_claim_name: Option<String>,
    /// OAUTHBEARER: clock difference allowed when checking exp and nbf
    /// (sasl.oauthbearer.clock.skew.seconds) [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub sasl_oauthbearer_clock_skew_seconds: Option<u64>,
    /// A SASL session lasts this long, then the client authenticates again on the same
    /// connection or is disconnected (connections.max.reauth.ms, KIP-368); 0: the
    /// connection's life [default: 0].
    #[arg(long)]
    pub connections_max_reauth_ms: Option<u64>,
    /// Authorizer: none allows every request; acl authorizes each by the cluster's ACLs
    /// (CreateAcls, `spate acl`), as Kafka's StandardAuthorizer (authorizer.class.name). Turn
    /// it on anywhere but a laptop [default: none].
    #[arg(long, value_name = "none|acl")]
    pub authorizer: Option<String>,
    /// Principals allowed everything, `User:a;User:b` (super.users); brokers' own principals
    /// belong here in a cluster [default: none].
    #[arg(long, value_name = "User:A;User:B")]
    pub super_users: Option<String>,
    /// Whether a resource that no ACL names is open to every principal
    /// (allow.everyone.if.no.acl.found) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// The SSL and SASL_SSL listeners' certificate chain, PEM, leaf first
    /// (ssl.keystore.certificate.chain); reloaded on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file, PEM: PKCS#8, PKCS#1 or SEC1 (ssl.keystore.key);
    /// reloaded on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates, PEM, that TLS clients' certificates must chain to
    /// (ssl.truststore.location); given, every TLS client must present one, as Kafka's
    /// ssl.client.auth=required; reloaded on SIGHUP [default: none, no client certificates].
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How a client certificate's subject DN (RFC 2253) becomes the principal name,
    /// `RULE:pattern/replacement/[LU],...,DEFAULT` (ssl.principal.mapping.rules)
    /// [default: DEFAULT].
    #[arg(long, value_name = "RULES")]
    pub ssl_principal_mapping_rules: Option<String>,
    /// Directory for topics, logs and committed offsets [default: ./spate-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (pinned executors) [default: the number of usable cores].
    #[arg(long)]
    pub shards: Option<usize>,
    /// This broker's node id [default: 0].
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Create unknown topics on Metadata and Produce (auto.create.topics.enable) [default: true].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics (num.partitions) [default: 1].
    #[arg(long)]
    pub default_partitions: Option<i32>,
    /// Largest request frame in bytes (socket.request.max.bytes) [default: 104857600].
    #[arg(long)]
    pub request_bytes_max: Option<usize>,
    /// Largest record batch in bytes (message.max.bytes) [default: 1048588].
    #[arg(long)]
    pub message_bytes_max: Option<usize>,
    /// Segment size in bytes at which the active segment rolls (log.segment.bytes)
    /// [default: 1073741824].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Roll a segment once its records span this many ms (log.roll.ms); -1: never
    /// [default: 604800000].
    #[arg(long, allow_negative_numbers = true)]
    pub segment_ms: Option<i64>,
    /// Delete segments whose newest record is older than this many ms (log.retention.ms);
    /// -1 keeps everything [default: 604800000].
    #[arg(long, allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Delete a partition's oldest segments while it is larger than this many bytes
    /// (log.retention.bytes); -1 keeps everything [default: -1].
    #[arg(long, allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// How often retention runs, in ms (log.retention.check.interval.ms) [default: 60000].
    #[arg(long)]
    pub retention_check_ms: Option<u64>,
    /// Default cleanup.policy of topics (log.cleanup.policy): delete, compact or
    /// compact,delete [default: delete].
    #[arg(long)]
    pub log_cleanup_policy: Option<String>,
    /// How often each shard's log cleaner looks for partitions to compact, in ms
    /// (log.cleaner.backoff.ms) [default: 15000].
    #[arg(long)]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Bytes per second each shard's log cleaner may read and write, so it never starves
    /// produce (log.cleaner.io.max.bytes.per.second); -1: no limit [default: -1].
    #[arg(long, allow_negative_numbers = true)]
    pub log_cleaner_io_bytes_per_sec_max: Option<i64>,
    /// Memory of each shard's log cleaner key map, in bytes (log.cleaner.dedupe.buffer.size):
    /// 32 bytes a distinct key; a log with more keys in its uncleaned part is cleaned in
    /// several passes [default: 33554432].
    #[arg(long)]
    pub log_cleaner_dedupe_buffer_bytes: Option<u64>,
    /// Default delete.retention.ms of topics: how long a tombstone is kept
    /// (log.cleaner.delete.retention.ms) [default: 86400000].
    #[arg(long)]
    pub log_cleaner_delete_retention_ms: Option<u64>,
    /// Default min.cleanable.dirty.ratio of topics (log.cleaner.min.cleanable.ratio)
    /// [default: 0.5].
    #[arg(long)]
    pub log_cleaner_min_cleanable_ratio: Option<f64>,
    /// Descriptors of sealed segments each shard keeps open (3 a segment: log, offset index,
    /// time index), least recently read closed first; active segments always keep theirs
    /// [default: 3072].
    #[arg(long)]
    pub segment_fds_max: Option<usize>,
    /// Flush in the background after this many records (log.flush.interval.messages); with
    /// neither this nor flush_ms, acks=all waits for fdatasync [default: unset].
    #[arg(long)]
    pub flush_messages: Option<u64>,
    /// Flush in the background after this many ms (log.flush.interval.ms) [default: unset].
    #[arg(long)]
    pub flush_ms: Option<u64>,
    /// Send Fetch records with sendfile(2); false copies them through user space
    /// [default: true].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub fetch_zero_copy: Option<bool>,
    /// Upper bound on a Fetch's max_wait_ms [default: 30000].
    #[arg(long)]
    pub fetch_wait_ms_max: Option<u64>,
    /// Request bytes each shard holds at once; connections wait beyond it [default: 268435456].
    #[arg(long)]
    pub inflight_bytes_max: Option<usize>,
    /// Requests of one connection handled at once; answers still go back in order, and a
    /// Produce's appends finish before the next request starts (1 = one at a time)
    /// [default: 16].
    #[arg(long)]
    pub pipeline_requests_max: Option<usize>,
    /// Client connections the whole broker accepts at once; more are closed at accept
    /// [default: 10000].
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// Close a connection that completes no request for this many ms: one that sends
    /// nothing, or stops inside a size prefix or a frame (connections.max.idle.ms); answers
    /// still being handled keep it open [default: 600000].
    #[arg(long)]
    pub connections_max_idle_ms: Option<u64>,
    /// How long a new group's first rebalance waits for more members, in ms
    /// (group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// How often consumer-protocol (KIP-848) members heartbeat, in ms
    /// (group.consumer.heartbeat.interval.ms) [default: 5000].
    #[arg(long)]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// A consumer-protocol member that does not heartbeat for this many ms is removed
    /// (group.consumer.session.timeout.ms) [default: 45000].
    #[arg(long)]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Lowest accepted --group-consumer-session-timeout-ms, in ms [default: 1000].
    #[arg(long)]
    pub group_consumer_min_session_timeout_ms: Option<i32>,
    /// Highest accepted --group-consumer-session-timeout-ms, in ms [default: 60000].
    #[arg(long)]
    pub group_consumer_max_session_timeout_ms: Option<i32>,
    /// Lowest accepted --group-consumer-heartbeat-interval-ms, in ms [default: 100].
    #[arg(long)]
    pub group_consumer_min_heartbeat_interval_ms: Option<i32>,
    /// Highest accepted --group-consumer-heartbeat-interval-ms, in ms [default: 15000].
    #[arg(long)]
    pub group_consumer_max_heartbeat_interval_ms: Option<i32>,
    /// Members a consumer-protocol group accepts; one more is refused with
    /// GROUP_MAX_SIZE_REACHED (group.consumer.max.size) [default: 2147483647].
    #[arg(long)]
    pub group_consumer_max_size: Option<i32>,
    /// Server-side assignor of consumer-protocol groups whose members name none:
    /// `uniform` or `range` (group.remote.assignor) [default: uniform].
    #[arg(long)]
    pub group_remote_assignor: Option<String>,
    /// Committed offsets of a group that stays empty this long are removed, in ms
    /// (Kafka's offsets.retention.minutes, in ms here) [default: 604800000].
    #[arg(long)]
    pub offsets_retention_ms: Option<u64>,
    /// Partitions of the internal `__consumer_offsets` log that groups are spread over
    /// (offsets.topic.num.partitions); fixed once the log exists [default: 50].
    #[arg(long)]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Partitions of the internal `__transaction_state` log that transactional ids are
    /// spread over (transaction.state.log.num.partitions); fixed once the log exists
    /// [default: 50].
    #[arg(long)]
    pub transaction_state_log_num_partitions: Option<i32>,
    /// The longest transaction timeout a producer may ask for, in ms
    /// (transaction.max.timeout.ms) [default: 900000].
    #[arg(long)]
    pub transaction_max_timeout_ms: Option<i32>,
    /// Forget a transactional id with no open transaction that sent no request for this many
    /// ms (transactional.id.expiration.ms) [default: 604800000].
    #[arg(long)]
    pub transactional_id_expiration_ms: Option<u64>,
    /// Drop an idempotent producer's state from a partition it has not written to for this
    /// many ms (producer.id.expiration.ms) [default: 86400000].
    #[arg(long)]
    pub producer_id_expiration_ms: Option<u64>,
    /// Serve Prometheus metrics over HTTP on this address [default: off].
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Log line format on stderr [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The metadata quorum, the same list on every node: `ID@HOST:PORT,...` of each voter's
    /// --controller-listen (controller.quorum.voters). A node in it is a voter and a broker;
    /// without it the broker is a one-node cluster [default: none].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub voters: Option<String>,
    /// Where this node serves metadata quorum traffic (needs --voters); the shorthand for a
    /// PLAINTEXT listener named CONTROLLER [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<SocketAddr>,
    /// The listener of --listeners that serves the metadata quorum instead of Kafka clients
    /// (controller.listener.names), PLAINTEXT or SSL; SSL is mutual TLS between the nodes,
    /// with --tls-cert-file and --tls-client-ca-file [default: --controller-listen].
    #[arg(long, value_name = "NAME")]
    pub controller_listener_names: Option<String>,
    /// Pins the cluster id (as `kafka-storage format --cluster-id`); a quorum with another id
    /// is refused [default: chosen by the first controller].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// A voter that hears no leader for at least this long starts an election, and a leader
    /// that hears from no majority for this long steps down, in ms
    /// (controller.quorum.election.timeout.ms) [default: 1000].
    #[arg(long)]
    pub controller_quorum_election_timeout_ms: Option<u64>,
    /// A voter that hears nothing from the leader starts an election after a random time
    /// between the election timeout and this, in ms (controller.quorum.fetch.timeout.ms)
    /// [default: 2000].
    #[arg(long)]
    pub controller_quorum_fetch_timeout_ms: Option<u64>,
    /// How often a broker heartbeats to the active controller, in ms
    /// (broker.heartbeat.interval.ms) [default: 500].
    #[arg(long)]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// A broker that misses heartbeats for this long is fenced and its partitions lose their
    /// leader, in ms (broker.session.timeout.ms) [default: 3000].
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// A partition that flushes in the background (flush.ms/flush.messages) whose last in-sync
    /// replica restarted after an unclean shutdown is led by the replica with the longest log;
    /// this is how long that waits for replicas that are down before comparing those that
    /// are up, in ms (unclean.recovery.timeout.ms, KIP-966) [default: 300000].
    #[arg(long)]
    pub unclean_recovery_timeout_ms: Option<u64>,
    /// Replication factor of auto-created topics and of CreateTopics with -1
    /// (default.replication.factor) [default: 1].
    #[arg(long)]
    pub default_replication_factor: Option<i16>,
    /// This broker's rack, for rack-aware replica placement (broker.rack) [default: none].
    #[arg(long)]
    pub rack: Option<String>,
    /// Applied entries the metadata quorum's Raft log keeps before it compacts them away (a
    /// node further behind then gets the metadata as a snapshot) [default: 10000].
    #[arg(long)]
    pub controller_log_compact_entries: Option<u64>,
    /// acks=all is refused with NOT_ENOUGH_REPLICAS when fewer in-sync replicas than this remain (min.insync.replicas; a topic config overrides it) [default: 1].
    #[arg(long)]
    pub min_insync_replicas: Option<i32>,
    /// A follower that has not caught up with its leader's log end for this long leaves the ISR, in ms (replica.lag.time.max.ms) [default: 30000].
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Bytes a follower asks for per partition in one replica Fetch (replica.fetch.max.bytes) [default: 1048576].
    #[arg(long)]
    pub replica_fetch_max_bytes: Option<i32>,
    /// Bytes a follower asks for in one replica Fetch over all its partitions (replica.fetch.response.max.bytes) [default: 10485760].
    #[arg(long)]
    pub replica_fetch_response_max_bytes: Option<i32>,
    /// How long a follower's Fetch waits at the leader for new data, in ms (replica.fetch.wait.max.ms) [default: 500].
    #[arg(long)]
    pub replica_fetch_wait_max_ms: Option<u64>,
    /// Whether a replica outside the ISR may become leader when no in-sync replica is left, losing what only the ISR had (unclean.leader.election.enable; a topic config overrides it) [default: false].
    #[arg(long)]
    pub unclean_leader_election_enable: Option<bool>,
    /// Default codec of topics' batches (compression.type): producer keeps each batch as sent;
    /// uncompressed, gzip, snappy, lz4 or zstd recompresses batches in another codec on the
    /// way in [default: producer].
    #[arg(long)]
    pub compression_type: Option<String>,
    /// Refuse (INVALID_TIMESTAMP) CreateTime records more than this many ms older than the
    /// broker's clock (log.message.timestamp.before.max.ms); -1: no bound [default: -1].
    #[arg(long, allow_negative_numbers = true)]
    pub log_message_timestamp_before_max_ms: Option<i64>,
    /// Refuse (INVALID_TIMESTAMP) CreateTime records more than this many ms ahead of the
    /// broker's clock (log.message.timestamp.after.max.ms, Kafka 4's default); -1: no bound
    /// [default: 3600000].
    #[arg(long, allow_negative_numbers = true)]
    pub log_message_timestamp_after_max_ms: Option<i64>,
    /// SCRAM users to create on the first start, one `name:password` per line (`#` lines and
    /// empty lines skipped): each gets SCRAM-SHA-256 and SCRAM-SHA-512 credentials with 4096
    /// iterations, as `kafka-storage format --add-scram`; once credentials exist the file is
    /// ignored (with a WARN) [default: none].
    #[arg(long, value_name = "FILE")]
    pub sasl_users_file: Option<PathBuf>,
    /// Bytes per second this broker's leaders serve to throttled replicas (topic config leader.replication.throttled.replicas), per shard; a dynamic broker config overrides it (leader.replication.throttled.rate) [default: unlimited].
    #[arg(long)]
    pub leader_replication_throttled_rate: Option<u64>,
    /// Bytes per second this broker's followers fetch for throttled replicas (topic config follower.replication.throttled.replicas), per shard; a dynamic broker config overrides it (follower.replication.throttled.rate) [default: unlimited].
    #[arg(long)]
    pub follower_replication_throttled_rate: Option<u64>,
    /// Whether the controller gives leadership back to each partition's preferred replica once it is in sync again (auto.leader.rebalance.enable) [default: true].
    #[arg(long)]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// How often the controller looks for partitions led by other than their preferred replica, in seconds (leader.imbalance.check.interval.seconds) [default: 300].
    #[arg(long)]
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// Replication factor of __consumer_offsets when it is created; 1 on a one-node broker without --voters (offsets.topic.replication.factor) [default: 3].
    #[arg(long)]
    pub offsets_topic_replication_factor: Option<i16>,
    /// Replication factor of __transaction_state when it is created; 1 on a one-node broker without --voters (transaction.state.log.replication.factor) [default: 3].
    #[arg(long)]
    pub transaction_state_log_replication_factor: Option<i16>,
    /// min.insync.replicas of __transaction_state (transaction.state.log.min.isr) [default: 2].
    #[arg(long)]
    pub transaction_state_log_min_isr: Option<i32>,
}

macro_rules! merge_fields {
    ($base:ident, $over:ident, $($f:ident),* $(,)?) => {
        Settings { $($f: $over.$f.or($base.$f)),* }
    };
}

impl Settings {
    /// Reads a TOML config file; unknown keys and wrong types are errors naming the key.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// `self` with every setting `over` gives replaced by it.
    pub fn merged(self, over: Settings) -> Settings {
        let base = self;
        merge_fields!(
            base,
            over,
            listen,
            advertised_listener,
            data_dir,
            shards,
            node_id,
            auto_create_topics,
            default_partitions,
            request_bytes_max,
            message_bytes_max,
            segment_bytes,
            segment_ms,
            retention_ms,
            retention_bytes,
            retention_check_ms,
            log_cleanup_policy,
            log_cleaner_backoff_ms,
            log_cleaner_io_bytes_per_sec_max,
            log_cleaner_dedupe_buffer_bytes,
            log_cleaner_delete_retention_ms,
            log_cleaner_min_cleanable_ratio,
            segment_fds_max,
            flush_messages,
            flush_ms,
            fetch_zero_copy,
            fetch_wait_ms_max,
            inflight_bytes_max,
            pipeline_requests_max,
            connections_max,
            connections_max_idle_ms,
            group_initial_rebalance_delay_ms,
            group_consumer_heartbeat_interval_ms,
            group_consumer_session_timeout_ms,
            group_consumer_min_session_timeout_ms,
            group_consumer_max_session_timeout_ms,
            group_consumer_min_heartbeat_interval_ms,
            group_consumer_max_heartbeat_interval_ms,
            group_consumer_max_size,
            group_remote_assignor,
            offsets_retention_ms,
            offsets_topic_num_partitions,
            transaction_state_log_num_partitions,
            transaction_max_timeout_ms,
            transactional_id_expiration_ms,
            producer_id_expiration_ms,
            metrics_listen,
            log_format,
            voters,
            controller_listen,
            controller_listener_names,
            cluster_id,
            controller_quorum_election_timeout_ms,
            controller_quorum_fetch_timeout_ms,
            broker_heartbeat_interval_ms,
            broker_session_timeout_ms,
            unclean_recovery_timeout_ms,
            default_replication_factor,
            rack,
            controller_log_compact_entries,
            min_insync_replicas,
            replica_lag_time_max_ms,
            replica_fetch_max_bytes,
            replica_fetch_response_max_bytes,
            replica_fetch_wait_max_ms,
            unclean_leader_election_enable,
            leader_replication_throttled_rate,
            follower_replication_throttled_rate,
            auto_leader_rebalance_enable,
            leader_imbalance_check_interval_seconds,
            offsets_topic_replication_factor,
            transaction_state_log_replication_factor,
            transaction_state_log_min_isr,
            compression_type,
            log_message_timestamp_before_max_ms,
            log_message_timestamp_after_max_ms,
            sasl_users_file,
            listeners,
            listener_security_protocol_map,
            advertised_listeners,
            inter_broker_listener_name,
            sasl_mechanism_inter_broker_protocol,
            inter_broker_sasl_username,
            inter_broker_sasl_password_file,
            sasl_enabled_mechanisms,
            sasl_oauthbearer_jwks_endpoint_url,
            sasl_oauthbearer_expected_audience,
            sasl_oauthbearer_expected_issuer,
            sasl_oauthbearer_sub_claim_name,
            sasl_oauthbearer_clock_skew_seconds,
            connections_max_reauth_ms,
            authorizer,
            super_users,
            allow_everyone_if_no_acl_found,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
            ssl_principal_mapping_rules,
        )
    }

    /// The effective log format.
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or_default()
    }

    /// Builds the broker configuration: defaults for what is unset, every value checked.
    /// `cpus` are the CPUs the shards may be pinned to, in order.
    pub fn into_config(self, cpus: &[usize]) -> Result<Config, String> {
        let listen = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./spate-data"));
        let shards = self.shards.unwrap_or(cpus.len().max(1));
        let mut c = Config::new(listen, data_dir, shards);
        let cpus = if cpus.is_empty() { &[0][..] } else { cpus };
        c.shard_cpus = (0..shards).map(|i| cpus[i % cpus.len()]).collect();
        if self.listen.is_some() && self.listeners.is_some() {
            return Err(
                "settings listen (--listen) and listeners (--listeners) are both given: \
                 --listen HOST:PORT is the shorthand for --listeners PLAINTEXT://HOST:PORT; \
                 give one"
                    .into(),
            );
        }
        if self.advertised_listener.is_some() && self.advertised_listeners.is_some() {
            return Err("settings advertised_listener (--advertised-listener) and \
                 advertised_listeners (--advertised-listeners) are both given: the first is \
                 the shorthand for the first listener; give one"
                .into());
        }
        match &self.listeners {
            Some(l) => {
                c.listeners = parse_listeners(
                    l,
                    self.listener_security_protocol_map.as_deref(),
                    self.advertised_listeners.as_deref(),
                )?;
                if let Some(a) = &self.advertised_listener {
                    c.listeners[0].advertised = parse_host_port(a)?;
                }
            }
            None => {
                if self.listener_security_protocol_map.is_some() {
                    return Err("setting listener_security_protocol_map \
                         (--listener-security-protocol-map) needs listeners (--listeners)"
                        .into());
                }
                if let Some(a) = &self.advertised_listener {
                    c.listeners[0].advertised = parse_host_port(a)?;
                }
                if let Some(a) = &self.advertised_listeners {
                    let one = parse_listeners(&format!("PLAINTEXT://{}", c.listen), None, Some(a))?;
                    c.listeners[0].advertised = one[0].advertised.clone();
                }
            }
        }
        // The controller listener (controller.listener.names) serves the quorum, not clients.
        let mut controller_listener: Option<(String, crate::config::SecurityProtocol, SocketAddr)> =
            None;
        if let Some(name) = &self.controller_listener_names {
            let upper = name.trim().to_ascii_uppercase();
            let what = "setting controller_listener_names (--controller-listener-names)";
            if upper.contains(',') {
                return Err(format!("{what}: one listener name, not a list"));
            }
            if self.controller_listen.is_some() {
                return Err(format!(
                    "{what} and controller_listen (--controller-listen) are both given: the \
                     second is the shorthand for a PLAINTEXT listener named CONTROLLER; give one"
                ));
            }
            let i = c
                .listeners
                .iter()
                .position(|l| l.name == upper)
                .ok_or_else(|| format!("{what}: '{name}' is not a listener of --listeners"))?;
            let l = c.listeners.remove(i);
            if !matches!(
                l.protocol,
                crate::config::SecurityProtocol::Plaintext | crate::config::SecurityProtocol::Ssl
            ) {
                return Err(format!(
                    "{what}: listener {} is {}; the quorum speaks PLAINTEXT or SSL (mutual TLS)",
                    l.name,
                    l.protocol.name()
                ));
            }
            if c.listeners.is_empty() {
                return Err(format!(
                    "{what}: {} was the only listener; --listeners needs one for clients too",
                    l.name
                ));
            }
            controller_listener = Some((l.name, l.protocol, l.addr));
        }
        c.listen = c.listeners[0].addr;
        c.advertised_listener = c.listeners[0].advertised.clone();
        if let Some(name) = &self.inter_broker_listener_name {
            let upper = name.trim().to_ascii_uppercase();
            c.inter_broker_listener = c
                .listeners
                .iter()
                .position(|l| l.name == upper)
                .ok_or_else(|| {
                    format!(
                        "setting inter_broker_listener_name (--inter-broker-listener-name) \
                         '{name}' is not a listener; the listeners are {}",
                        c.listeners
                            .iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
        }
        tls_into(
            (
                &self.tls_cert_file,
                &self.tls_key_file,
                &self.tls_client_ca_file,
            ),
            self.ssl_principal_mapping_rules.as_deref(),
            &mut c,
        )?;
        if let Some(m) = &self.sasl_enabled_mechanisms {
            let list: Vec<String> = m
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            if let Some(bad) = list.iter().find(|x| {
                !matches!(
                    x.as_str(),
                    "SCRAM-SHA-256" | "SCRAM-SHA-512" | "PLAIN" | "OAUTHBEARER"
                )
            }) {
                return Err(format!(
                    "setting sasl_enabled_mechanisms (--sasl-enabled-mechanisms): '{bad}' is not \
                     SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER"
                ));
            }
            if list.is_empty() {
                return Err(
                    "setting sasl_enabled_mechanisms (--sasl-enabled-mechanisms) is empty".into(),
                );
            }
            c.sasl_enabled_mechanisms = list;
        }
        c.connections_max_reauth_ms = self
            .connections_max_reauth_ms
            .unwrap_or(c.connections_max_reauth_ms);
        if let Some(url) = &self.sasl_oauthbearer_jwks_endpoint_url {
            let oauth = crate::config::OAuthBearer {
                jwks_url: url.clone(),
                audience: self
                    .sasl_oauthbearer_expected_audience
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect(),
                issuer: self.sasl_oauthbearer_expected_issuer.clone(),
                sub_claim: self
                    .sasl_oauthbearer_sub_claim_name
                    .clone()
                    .unwrap_or_else(|| "sub".into()),
                clock_skew_s: self.sasl_oauthbearer_clock_skew_seconds.unwrap_or(30),
            };
            oauth.validator().map_err(|e| {
                format!(
                    "setting sasl_oauthbearer_jwks_endpoint_url \
                     (--sasl-oauthbearer-jwks-endpoint-url) {url}: {e}"
                )
            })?;
            c.oauthbearer = Some(oauth);
        } else if self.sasl_oauthbearer_expected_audience.is_some()
            || self.sasl_oauthbearer_expected_issuer.is_some()
            || self.sasl_oauthbearer_sub_claim_name.is_some()
            || self.sasl_oauthbearer_clock_skew_seconds.is_some()
        {
            return Err("the sasl_oauthbearer_* settings need \
                 sasl_oauthbearer_jwks_endpoint_url (--sasl-oauthbearer-jwks-endpoint-url)"
                .into());
        }
        if c.sasl_enabled_mechanisms.iter().any(|m| m == "OAUTHBEARER") && c.oauthbearer.is_none() {
            return Err(
                "OAUTHBEARER in --sasl-enabled-mechanisms needs the JWKS its tokens are \
                 checked against: --sasl-oauthbearer-jwks-endpoint-url file:///path/jwks.json"
                    .into(),
            );
        }
        c.authorizer_acl = match self.authorizer.as_deref().map(str::trim) {
            None | Some("none") => false,
            Some("acl") => true,
            Some(other) => {
                return Err(format!(
                    "setting authorizer (--authorizer): '{other}' is not none or acl"
                ));
            }
        };
        if let Some(list) = &self.super_users {
            c.super_users = parse_super_users(list)?;
        }
        c.allow_everyone_if_no_acl_found = self
            .allow_everyone_if_no_acl_found
            .unwrap_or(c.allow_everyone_if_no_acl_found);
        let set = |v: Option<u64>, d: u64| v.unwrap_or(d);
        c.node_id = self.node_id.unwrap_or(c.node_id);
        c.auto_create_topics = self.auto_create_topics.unwrap_or(c.auto_create_topics);
        c.default_partitions = self.default_partitions.unwrap_or(c.default_partitions);
        c.request_bytes_max = self.request_bytes_max.unwrap_or(c.request_bytes_max);
        c.message_bytes_max = self.message_bytes_max.unwrap_or(c.message_bytes_max);
        c.segment_bytes = set(self.segment_bytes, c.segment_bytes);
        c.segment_ms = unlimited_or("segment_ms", self.segment_ms, c.segment_ms)?;
        c.retention_ms = unlimited_or("retention_ms", self.retention_ms, c.retention_ms)?;
        c.retention_bytes =
            unlimited_or("retention_bytes", self.retention_bytes, c.retention_bytes)?;
        c.retention_check_ms = set(self.retention_check_ms, c.retention_check_ms);
        if let Some(p) = &self.log_cleanup_policy {
            c.cleanup_policy = crate::storage::catalog::CleanupPolicy::parse(p)
                .map_err(|e| format!("setting log_cleanup_policy (--log-cleanup-policy): {e}"))?;
        }
        c.log_cleaner_backoff_ms = set(self.log_cleaner_backoff_ms, c.log_cleaner_backoff_ms);
        c.log_cleaner_io_bytes_per_sec_max = unlimited_or(
            "log_cleaner_io_bytes_per_sec_max",
            self.log_cleaner_io_bytes_per_sec_max,
            c.log_cleaner_io_bytes_per_sec_max,
        )?;
        c.log_cleaner_dedupe_buffer_bytes = set(
            self.log_cleaner_dedupe_buffer_bytes,
            c.log_cleaner_dedupe_buffer_bytes,
        );
        c.log_cleaner_delete_retention_ms = set(
            self.log_cleaner_delete_retention_ms,
            c.log_cleaner_delete_retention_ms,
        );
        if let Some(r) = self.log_cleaner_min_cleanable_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!(
                    "setting log_cleaner_min_cleanable_ratio (--log-cleaner-min-cleanable-ratio) \
                     must be between 0 and 1, got {r}"
                ));
            }
            c.log_cleaner_min_cleanable_ratio = r;
        }
        c.segment_fds_max = self.segment_fds_max.unwrap_or(c.segment_fds_max);
        c.flush_messages = self.flush_messages.or(c.flush_messages);
        c.flush_ms = self.flush_ms.or(c.flush_ms);
        c.fetch_zero_copy = self.fetch_zero_copy.unwrap_or(c.fetch_zero_copy);
        c.fetch_wait_ms_max = set(self.fetch_wait_ms_max, c.fetch_wait_ms_max);
        c.inflight_bytes_max = self.inflight_bytes_max.unwrap_or(c.inflight_bytes_max);
        c.pipeline_requests_max = self
            .pipeline_requests_max
            .unwrap_or(c.pipeline_requests_max);
        c.connections_max = self.connections_max.unwrap_or(c.connections_max);
        c.connections_max_idle_ms = set(self.connections_max_idle_ms, c.connections_max_idle_ms);
        c.group_initial_rebalance_delay_ms = set(
            self.group_initial_rebalance_delay_ms,
            c.group_initial_rebalance_delay_ms,
        );
        c.group_consumer_heartbeat_interval_ms = self
            .group_consumer_heartbeat_interval_ms
            .unwrap_or(c.group_consumer_heartbeat_interval_ms);
        c.group_consumer_session_timeout_ms = self
            .group_consumer_session_timeout_ms
            .unwrap_or(c.group_consumer_session_timeout_ms);
        c.group_consumer_min_session_timeout_ms = self
            .group_consumer_min_session_timeout_ms
            .unwrap_or(c.group_consumer_min_session_timeout_ms);
        c.group_consumer_max_session_timeout_ms = self
            .group_consumer_max_session_timeout_ms
            .unwrap_or(c.group_consumer_max_session_timeout_ms);
        c.group_consumer_min_heartbeat_interval_ms = self
            .group_consumer_min_heartbeat_interval_ms
            .unwrap_or(c.group_consumer_min_heartbeat_interval_ms);
        c.group_consumer_max_heartbeat_interval_ms = self
            .group_consumer_max_heartbeat_interval_ms
            .unwrap_or(c.group_consumer_max_heartbeat_interval_ms);
        c.group_consumer_max_size = self
            .group_consumer_max_size
            .unwrap_or(c.group_consumer_max_size);
        if let Some(a) = self.group_remote_assignor {
            c.group_remote_assignor = a;
        }
        c.offsets_retention_ms = set(self.offsets_retention_ms, c.offsets_retention_ms);
        c.producer_id_expiration_ms =
            set(self.producer_id_expiration_ms, c.producer_id_expiration_ms);
        c.offsets_topic_num_partitions = self
            .offsets_topic_num_partitions
            .unwrap_or(c.offsets_topic_num_partitions);
        c.transaction_state_log_num_partitions = self
            .transaction_state_log_num_partitions
            .unwrap_or(c.transaction_state_log_num_partitions);
        c.transaction_max_timeout_ms = self
            .transaction_max_timeout_ms
            .unwrap_or(c.transaction_max_timeout_ms);
        c.transactional_id_expiration_ms = set(
            self.transactional_id_expiration_ms,
            c.transactional_id_expiration_ms,
        );
        c.metrics_listen = self.metrics_listen;
        c.default_replication_factor = self
            .default_replication_factor
            .unwrap_or(c.default_replication_factor);
        c.rack = self.rack;
        c.min_insync_replicas = self.min_insync_replicas.unwrap_or(c.min_insync_replicas);
        if let Some(path) = &self.sasl_users_file {
            // Checked now, so a bad file stops the start; read again (and its passwords used)
            // only when the users are created.
            std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::auth::scram::parse_users_file(&t))
                .map_err(|e| {
                    format!(
                        "setting sasl_users_file (--sasl-users-file) {}: {e}",
                        path.display()
                    )
                })?;
        }
        c.sasl_users_file = self.sasl_users_file.clone();
        if let Some(m) = &self.sasl_mechanism_inter_broker_protocol {
            let m = m.trim().to_ascii_uppercase();
            if !matches!(m.as_str(), "SCRAM-SHA-256" | "SCRAM-SHA-512" | "PLAIN") {
                return Err(format!(
                    "setting sasl_mechanism_inter_broker_protocol \
                     (--sasl-mechanism-inter-broker-protocol): '{m}' is not SCRAM-SHA-256, \
                     SCRAM-SHA-512 or PLAIN"
                ));
            }
            c.inter_broker_sasl.mechanism = m;
        }
        c.inter_broker_sasl.username = self.inter_broker_sasl_username.clone();
        if let Some(path) = &self.inter_broker_sasl_password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "setting inter_broker_sasl_password_file \
                     (--inter-broker-sasl-password-file) {}: {e}",
                    path.display()
                )
            })?;
            c.inter_broker_sasl.password = text.lines().next().map(str::to_string);
            c.inter_broker_sasl.password_file = Some(path.clone());
        }
        if let Some(v) = &self.compression_type {
            c.compression_type =
                crate::storage::catalog::TopicCompression::parse(v).ok_or_else(|| {
                    format!(
                        "setting compression_type (--compression-type) must be one of \
                         uncompressed, zstd, lz4, snappy, gzip, producer, got '{v}'"
                    )
                })?;
        }
        c.message_timestamp_before_max_ms = no_bound_or(
            "log_message_timestamp_before_max_ms",
            self.log_message_timestamp_before_max_ms,
            c.message_timestamp_before_max_ms,
        )?;
        c.message_timestamp_after_max_ms = no_bound_or(
            "log_message_timestamp_after_max_ms",
            self.log_message_timestamp_after_max_ms,
            c.message_timestamp_after_max_ms,
        )?;
        c.replica_lag_time_max_ms = self
            .replica_lag_time_max_ms
            .unwrap_or(c.replica_lag_time_max_ms);
        c.replica_fetch_max_bytes = self
            .replica_fetch_max_bytes
            .unwrap_or(c.replica_fetch_max_bytes);
        c.replica_fetch_response_max_bytes = self
            .replica_fetch_response_max_bytes
            .unwrap_or(c.replica_fetch_response_max_bytes);
        c.replica_fetch_wait_max_ms = self
            .replica_fetch_wait_max_ms
            .unwrap_or(c.replica_fetch_wait_max_ms);
        c.unclean_leader_election_enable = self
            .unclean_leader_election_enable
            .unwrap_or(c.unclean_leader_election_enable);
        c.leader_replication_throttled_rate = self
            .leader_replication_throttled_rate
            .or(c.leader_replication_throttled_rate);
        c.follower_replication_throttled_rate = self
            .follower_replication_throttled_rate
            .or(c.follower_replication_throttled_rate);
        c.auto_leader_rebalance_enable = self
            .auto_leader_rebalance_enable
            .unwrap_or(c.auto_leader_rebalance_enable);
        c.leader_imbalance_check_interval_seconds = self
            .leader_imbalance_check_interval_seconds
            .unwrap_or(c.leader_imbalance_check_interval_seconds);
        c.offsets_topic_replication_factor = self
            .offsets_topic_replication_factor
            .unwrap_or(c.offsets_topic_replication_factor);
        c.transaction_state_log_replication_factor = self
            .transaction_state_log_replication_factor
            .unwrap_or(c.transaction_state_log_replication_factor);
        c.transaction_state_log_min_isr = self
            .transaction_state_log_min_isr
            .unwrap_or(c.transaction_state_log_min_isr);
        let controller_listen = self
            .controller_listen
            .or(controller_listener.as_ref().map(|l| l.2));
        c.cluster = match (self.voters, controller_listen) {
            (None, None) => {
                if self.cluster_id.is_some() {
                    return Err("--cluster-id needs --voters (a one-node broker keeps the id in meta.properties)".into());
                }
                None
            }
            (None, Some(_)) => {
                return Err(
                    "--controller-listen (or --controller-listener-names) needs --voters (the \
                     metadata quorum)"
                        .into(),
                );
            }
            (Some(voters), listen) => {
                let Some(node_id) = self.node_id else {
                    return Err("--voters needs --node-id (this node's id in the cluster)".into());
                };
                let voters = parse_voters(&voters)?;
                let is_voter = voters.iter().any(|(id, _)| *id == node_id);
                let controller_listen = match listen {
                    Some(l) => l,
                    None => {
                        return Err(
                            "--voters needs --controller-listen HOST:PORT (where this node serves the metadata quorum)".into(),
                        );
                    }
                };
                if let Some((_, addr)) = voters.iter().find(|(id, _)| *id == node_id)
                    && addr.port() != controller_listen.port()
                {
                    return Err(format!(
                        "--voters gives node {node_id} the quorum address {addr}, but its --controller-listen is {controller_listen}"
                    ));
                }
                Some(crate::config::ClusterConfig {
                    voters,
                    is_voter,
                    controller_listen,
                    cluster_id: self.cluster_id,
                    election_timeout_ms: set(self.controller_quorum_election_timeout_ms, 1000),
                    fetch_timeout_ms: set(self.controller_quorum_fetch_timeout_ms, 2000),
                    heartbeat_interval_ms: set(self.broker_heartbeat_interval_ms, 500),
                    session_timeout_ms: set(self.broker_session_timeout_ms, 3000),
                    unclean_recovery_timeout_ms: set(self.unclean_recovery_timeout_ms, 300_000),
                    log_compact_entries: set(self.controller_log_compact_entries, 10_000).max(1),
                    one_node_import: None,
                    controller_listener: controller_listener
                        .map(|(name, protocol, _)| (name, protocol)),
                })
            }
        };
        c.validate()?;
        Ok(c)
    }

    /// Every setting of `c`, for `--print-config` (reads back as a config file).
    pub fn of(c: &Config, log_format: LogFormat) -> Settings {
        let limit = |v: Option<u64>| Some(v.map_or(-1, |n| n as i64));
        let mut out = Settings {
            listen: Some(c.listen),
            advertised_listener: Some(format!(
                "{}:{}",
                c.advertised_listener.0, c.advertised_listener.1
            )),
            data_dir: Some(c.data_dir.clone()),
            shards: Some(c.shards),
            node_id: Some(c.node_id),
            auto_create_topics: Some(c.auto_create_topics),
            default_partitions: Some(c.default_partitions),
            request_bytes_max: Some(c.request_bytes_max),
            message_bytes_max: Some(c.message_bytes_max),
            segment_bytes: Some(c.segment_bytes),
            segment_ms: limit(c.segment_ms),
            retention_ms: limit(c.retention_ms),
            retention_bytes: limit(c.retention_bytes),
            retention_check_ms: Some(c.retention_check_ms),
            log_cleanup_policy: Some(c.cleanup_policy.name().to_string()),
            log_cleaner_backoff_ms: Some(c.log_cleaner_backoff_ms),
            log_cleaner_io_bytes_per_sec_max: limit(c.log_cleaner_io_bytes_per_sec_max),
            log_cleaner_dedupe_buffer_bytes: Some(c.log_cleaner_dedupe_buffer_bytes),
            log_cleaner_delete_retention_ms: Some(c.log_cleaner_delete_retention_ms),
            log_cleaner_min_cleanable_ratio: Some(c.log_cleaner_min_cleanable_ratio),
            segment_fds_max: Some(c.segment_fds_max),
            flush_messages: c.flush_messages,
            flush_ms: c.flush_ms,
            fetch_zero_copy: Some(c.fetch_zero_copy),
            fetch_wait_ms_max: Some(c.fetch_wait_ms_max),
            inflight_bytes_max: Some(c.inflight_bytes_max),
            pipeline_requests_max: Some(c.pipeline_requests_max),
            connections_max: Some(c.connections_max),
            connections_max_idle_ms: Some(c.connections_max_idle_ms),
            group_initial_rebalance_delay_ms: Some(c.group_initial_rebalance_delay_ms),
            group_consumer_heartbeat_interval_ms: Some(c.group_consumer_heartbeat_interval_ms),
            group_consumer_session_timeout_ms: Some(c.group_consumer_session_timeout_ms),
            group_consumer_min_session_timeout_ms: Some(c.group_consumer_min_session_timeout_ms),
            group_consumer_max_session_timeout_ms: Some(c.group_consumer_max_session_timeout_ms),
            group_consumer_min_heartbeat_interval_ms: Some(
                c.group_consumer_min_heartbeat_interval_ms,
            ),
            group_consumer_max_heartbeat_interval_ms: Some(
                c.group_consumer_max_heartbeat_interval_ms,
            ),
            group_consumer_max_size: Some(c.group_consumer_max_size),
            group_remote_assignor: Some(c.group_remote_assignor.clone()),
            offsets_retention_ms: Some(c.offsets_retention_ms),
            offsets_topic_num_partitions: Some(c.offsets_topic_num_partitions),
            transaction_state_log_num_partitions: Some(c.transaction_state_log_num_partitions),
            transaction_max_timeout_ms: Some(c.transaction_max_timeout_ms),
            transactional_id_expiration_ms: Some(c.transactional_id_expiration_ms),
            producer_id_expiration_ms: Some(c.producer_id_expiration_ms),
            metrics_listen: c.metrics_listen,
            log_format: Some(log_format),
            voters: c.cluster.as_ref().map(|k| {
                k.voters
                    .iter()
                    .map(|(id, a)| format!("{id}@{a}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            controller_listen: c
                .cluster
                .as_ref()
                .filter(|k| k.controller_listener.is_none())
                .map(|k| k.controller_listen),
            controller_listener_names: c
                .cluster
                .as_ref()
                .and_then(|k| k.controller_listener.as_ref().map(|l| l.0.clone())),
            cluster_id: c.cluster.as_ref().and_then(|k| k.cluster_id.clone()),
            controller_quorum_election_timeout_ms: c
                .cluster
                .as_ref()
                .map(|k| k.election_timeout_ms),
            controller_quorum_fetch_timeout_ms: c.cluster.as_ref().map(|k| k.fetch_timeout_ms),
            broker_heartbeat_interval_ms: c.cluster.as_ref().map(|k| k.heartbeat_interval_ms),
            broker_session_timeout_ms: c.cluster.as_ref().map(|k| k.session_timeout_ms),
            unclean_recovery_timeout_ms: c.cluster.as_ref().map(|k| k.unclean_recovery_timeout_ms),
            default_replication_factor: Some(c.default_replication_factor),
            rack: c.rack.clone(),
            controller_log_compact_entries: c.cluster.as_ref().map(|k| k.log_compact_entries),
            min_insync_replicas: Some(c.min_insync_replicas),
            replica_lag_time_max_ms: Some(c.replica_lag_time_max_ms),
            replica_fetch_max_bytes: Some(c.replica_fetch_max_bytes),
            replica_fetch_response_max_bytes: Some(c.replica_fetch_response_max_bytes),
            replica_fetch_wait_max_ms: Some(c.replica_fetch_wait_max_ms),
            unclean_leader_election_enable: Some(c.unclean_leader_election_enable),
            leader_replication_throttled_rate: c.leader_replication_throttled_rate,
            follower_replication_throttled_rate: c.follower_replication_throttled_rate,
            auto_leader_rebalance_enable: Some(c.auto_leader_rebalance_enable),
            leader_imbalance_check_interval_seconds: Some(
                c.leader_imbalance_check_interval_seconds,
            ),
            offsets_topic_replication_factor: Some(c.offsets_topic_replication_factor),
            transaction_state_log_replication_factor: Some(
                c.transaction_state_log_replication_factor,
            ),
            transaction_state_log_min_isr: Some(c.transaction_state_log_min_isr),
            compression_type: Some(c.compression_type.name().to_string()),
            log_message_timestamp_before_max_ms: limit(c.message_timestamp_before_max_ms),
            log_message_timestamp_after_max_ms: limit(c.message_timestamp_after_max_ms),
            sasl_users_file: c.sasl_users_file.clone(),
            listeners: None,
            listener_security_protocol_map: None,
            advertised_listeners: None,
            inter_broker_listener_name: None,
            sasl_mechanism_inter_broker_protocol: Some(c.inter_broker_sasl.mechanism.clone()),
            inter_broker_sasl_username: c.inter_broker_sasl.username.clone(),
            inter_broker_sasl_password_file: c.inter_broker_sasl.password_file.clone(),
            sasl_enabled_mechanisms: Some(c.sasl_enabled_mechanisms.join(",")),
            sasl_oauthbearer_jwks_endpoint_url: c.oauthbearer.as_ref().map(|o| o.jwks_url.clone()),
            sasl_oauthbearer_expected_audience: c
                .oauthbearer
                .as_ref()
                .filter(|o| !o.audience.is_empty())
                .map(|o| o.audience.join(",")),
            sasl_oauthbearer_expected_issuer: c.oauthbearer.as_ref().and_then(|o| o.issuer.clone()),
            sasl_oauthbearer_sub_claim_name: c.oauthbearer.as_ref().map(|o| o.sub_claim.clone()),
            sasl_oauthbearer_clock_skew_seconds: c.oauthbearer.as_ref().map(|o| o.clock_skew_s),
            connections_max_reauth_ms: Some(c.connections_max_reauth_ms),
            authorizer: Some(if c.authorizer_acl { "acl" } else { "none" }.to_string()),
            super_users: Some(c.super_users.join(";")),
            allow_everyone_if_no_acl_found: Some(c.allow_everyone_if_no_acl_found),
            tls_cert_file: c.tls_files.as_ref().map(|t| t.cert.clone()),
            tls_key_file: c.tls_files.as_ref().map(|t| t.key.clone()),
            tls_client_ca_file: c.tls_files.as_ref().and_then(|t| t.client_ca.clone()),
            ssl_principal_mapping_rules: Some(c.ssl_principal_mapping_rules.text.clone()),
        };
        // One PLAINTEXT listener: the shorthand; else the listeners in Kafka's syntax.
        let controller = c.cluster.as_ref().and_then(|k| {
            k.controller_listener
                .as_ref()
                .map(|l| (l, k.controller_listen))
        });
        let simple = c.listeners.len() == 1
            && c.listeners[0].protocol == crate::config::SecurityProtocol::Plaintext
            && c.listeners[0].name == "PLAINTEXT"
            && controller.is_none();
        if !simple {
            out.listen = None;
            out.advertised_listener = None;
            let join = |f: &dyn Fn(&crate::config::Listener) -> String| {
                c.listeners.iter().map(f).collect::<Vec<_>>().join(",")
            };
            out.listeners = Some(join(&|l| format!("{}://{}", l.name, l.addr)));
            out.listener_security_protocol_map =
                Some(join(&|l| format!("{}:{}", l.name, l.protocol.name())));
            out.advertised_listeners = Some(join(&|l| {
                format!("{}://{}:{}", l.name, l.advertised.0, l.advertised.1)
            }));
            out.inter_broker_listener_name = c
                .listeners
                .get(c.inter_broker_listener)
                .map(|l| l.name.clone());
            // The controller listener goes back into the listeners it was named among.
            if let Some(((name, protocol), addr)) = controller {
                let add = |v: &mut Option<String>, item: String| {
                    *v = Some(match v.take() {
                        Some(list) => format!("{list},{item}"),
                        None => item,
                    });
                };
                add(&mut out.listeners, format!("{name}://{addr}"));
                add(
                    &mut out.listener_security_protocol_map,
                    format!("{name}:{}", protocol.name()),
                );
            }
        }
        out
    }

    /// TOML text of these settings.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot print the configuration: {e}"))
    }
}

/// The TLS settings: the files go together, a TLS listener needs them, and they are
/// loaded once here so that a bad file stops the start (each shard loads them again).
fn tls_into(
    (cert_file, key_file, client_ca_file): (&Option<PathBuf>, &Option<PathBuf>, &Option<PathBuf>),
    rules: Option<&str>,
    c: &mut Config,
) -> Result<(), String> {
    if let Some(r) = rules {
        c.ssl_principal_mapping_rules = crate::tls::PrincipalRules::parse(r).map_err(|e| {
            format!("setting ssl_principal_mapping_rules (--ssl-principal-mapping-rules): {e}")
        })?;
    }
    let tls_listener = c.listeners.iter().find(|l| l.protocol.tls());
    c.tls_files = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca_file.clone(),
        }),
        (None, None) => {
            if let Some(l) = tls_listener {
                return Err(format!(
                    "listener {} is {}: it needs settings tls_cert_file (--tls-cert-file) \
                     and tls_key_file (--tls-key-file)",
                    l.name,
                    l.protocol.name()
                ));
            }
            if client_ca_file.is_some() {
                return Err("setting tls_client_ca_file (--tls-client-ca-file) needs \
                            tls_cert_file and tls_key_file"
                    .into());
            }
            None
        }
        _ => {
            return Err("settings tls_cert_file (--tls-cert-file) and tls_key_file \
                        (--tls-key-file) go together: give both or neither"
                .into());
        }
    };
    if let Some(files) = &c.tls_files {
        crate::tls::server_config(files).map_err(|e| format!("setting {e}"))?;
    }
    Ok(())
}

/// `ID@HOST:PORT,...` (controller.quorum.voters): ids unique and at least 0, addresses
/// resolved once, at start.
fn parse_voters(s: &str) -> Result<Vec<(i32, SocketAddr)>, String> {
    use std::net::ToSocketAddrs;
    let bad = |why: String| format!("setting voters (--voters) '{s}': {why}");
    let mut out: Vec<(i32, SocketAddr)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| bad(format!("'{part}' is not ID@HOST:PORT")))?;
        let id: i32 = id
            .parse()
            .map_err(|_| bad(format!("'{id}' is not a node id")))?;
        if id < 0 {
            return Err(bad(format!("node id {id} is negative")));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(bad(format!("node id {id} is listed twice")));
        }
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| bad(format!("cannot resolve '{addr}': {e}")))?
            .next()
            .ok_or_else(|| bad(format!("'{addr}' resolves to no address")))?;
        out.push((id, resolved));
    }
    if out.is_empty() {
        return Err(bad("no voters".into()));
    }
    Ok(out)
}

/// `User:a;User:b` (super.users): each principal `TYPE:NAME`, empty entries skipped.
fn parse_super_users(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match p.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => out.push(p.to_string()),
            _ => {
                return Err(format!(
                    "setting super_users (--super-users): '{p}' is not a principal TYPE:NAME \
                     (User:alice)"
                ));
            }
        }
    }
    Ok(out)
}

/// -1 means no limit; otherwise the value must be positive.
fn unlimited_or(name: &str, v: Option<i64>, default: Option<u64>) -> Result<Option<u64>, String> {
    match v {
        None => Ok(default),
        Some(-1) => Ok(None),
        Some(v) if v >= 1 => Ok(Some(v as u64)),
        Some(v) => Err(format!(
            "setting {name} (--{}) must be -1 (no limit) or positive, got {v}",
            name.replace('_', "-")
        )),
    }
}

/// One broker setting as DescribeConfigs shows it: its key (the config file's, the flag's
/// with `-`), the Kafka name its documentation gives (the first `(kafka.name` in it), its
/// documentation and its value under a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingDoc {
    pub key: String,
    pub kafka_name: Option<String>,
    pub doc: String,
    /// The value as text (None: unset); `is_bool`/`is_number` say how it is typed.
    pub value: Option<String>,
    pub is_bool: bool,
    pub is_number: bool,
}

/// Every setting of `c`, documented from the flags' help, in flag order.
pub fn documented(c: &Config) -> Vec<SettingDoc> {
    use clap::Args;
    let values: toml::Table =
        toml::Table::try_from(Settings::of(c, LogFormat::default())).unwrap_or_default();
    let kafka = regex::Regex::new(r"\(([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)[;),]").ok();
    Settings::augment_args(clap::Command::new("serve"))
        .get_arguments()
        .filter_map(|a| {
            let key = a.get_id().as_str().to_string();
            let doc = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            if key == "config" || key == "print_config" {
                return None;
            }
            let kafka_name = kafka
                .as_ref()
                .and_then(|r| r.captures(&doc))
                .map(|c| c[1].to_string());
            let v = values.get(&key);
            Some(SettingDoc {
                kafka_name,
                doc,
                value: v.map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                is_bool: matches!(v, Some(toml::Value::Boolean(_))),
                is_number: matches!(v, Some(toml::Value::Integer(_))),
                key,
            })
        })
        .collect()
}

/// Kafka's listener syntax: `NAME://HOST:PORT,...` with each NAME's protocol from `map`
/// (`NAME:PROTOCOL,...`) or the name itself, and each advertised address from `advertised`
/// (same syntax, by name) or the listener's own.
pub fn parse_listeners(
    listeners: &str,
    map: Option<&str>,
    advertised: Option<&str>,
) -> Result<Vec<crate::config::Listener>, String> {
    use crate::config::{Listener, SecurityProtocol};
    use std::net::ToSocketAddrs;
    let bad = |what: &str, why: String| format!("setting {what}: {why}");
    let entries = |text: &str, what: &str| -> Result<Vec<(String, String, u16)>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, rest) = part
                .split_once("://")
                .ok_or_else(|| bad(what, format!("'{part}' is not NAME://HOST:PORT")))?;
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad(what, format!("'{part}' is not NAME://HOST:PORT")))?;
            let port = port
                .parse::<u16>()
                .map_err(|_| bad(what, format!("'{port}' of '{part}' is not a port")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(what, format!("'{name}' is not a listener name")));
            }
            out.push((name.to_ascii_uppercase(), host.to_string(), port));
        }
        if out.is_empty() {
            return Err(bad(what, "no listener".into()));
        }
        Ok(out)
    };
    let what = "listeners (--listeners)";
    let mut protocols: Vec<(String, SecurityProtocol)> = Vec::new();
    if let Some(m) = map {
        for part in m.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, proto) = part.split_once(':').ok_or_else(|| {
                bad(
                    "listener_security_protocol_map (--listener-security-protocol-map)",
                    format!("'{part}' is not NAME:PROTOCOL"),
                )
            })?;
            let p = SecurityProtocol::parse(&proto.to_ascii_uppercase()).ok_or_else(|| {
                bad(
                    "listener_security_protocol_map (--listener-security-protocol-map)",
                    format!("'{proto}' is not PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL"),
                )
            })?;
            protocols.push((name.to_ascii_uppercase(), p));
        }
    }
    let mut out: Vec<Listener> = Vec::new();
    for (name, host, port) in entries(listeners, what)? {
        let protocol = protocols
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .or_else(|| SecurityProtocol::parse(&name))
            .ok_or_else(|| {
                bad(
                    what,
                    format!(
                        "listener {name} has no security protocol: name it PLAINTEXT or \
                         SASL_PLAINTEXT, or map it with --listener-security-protocol-map \
                         {name}:PROTOCOL"
                    ),
                )
            })?;
        let bind_host = if host.is_empty() {
            "0.0.0.0"
        } else {
            host.as_str()
        };
        let addr = (bind_host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                bad(
                    what,
                    format!("cannot resolve '{bind_host}' of listener {name}"),
                )
            })?;
        if out.iter().any(|l| l.name == name) {
            return Err(bad(what, format!("listener {name} is named twice")));
        }
        if out.iter().any(|l| l.addr.port() == port) {
            return Err(bad(what, format!("port {port} is used by two listeners")));
        }
        out.push(Listener {
            name,
            protocol,
            addr,
            advertised: (addr.ip().to_string(), port),
        });
    }
    if let Some(a) = advertised {
        let what = "advertised_listeners (--advertised-listeners)";
        for (name, host, port) in entries(a, what)? {
            let l = out
                .iter_mut()
                .find(|l| l.name == name)
                .ok_or_else(|| bad(what, format!("{name} is not a listener of --listeners")))?;
            if host.is_empty() {
                return Err(bad(what, format!("listener {name} advertises no host")));
            }
            l.advertised = (host, port);
        }
    }
    Ok(out)
}

/// -1: no bound; 0 and up: that bound.
fn no_bound_or(name: &str, v: Option<i64>, default: Option<u64>) -> Result<Option<u64>, String> {
    match v {
        None => Ok(default),
        Some(-1) => Ok(None),
        Some(v) if v >= 0 => Ok(Some(v as u64)),
        Some(v) => Err(format!(
            "setting {name} (--{}) must be -1 (no bound) or at least 0, got {v}",
            name.replace('_', "-")
        )),
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad =
        |why: &str| format!("setting advertised_listener (--advertised-listener) '{s}': {why}");
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(&format!("'{port}' is not a port")))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_merge_and_print_round_trips() {
        let file: Settings =
            toml::from_str("shards = 3\nretention_ms = -1\nlisten = \"127.0.0.1:1000\"").unwrap();
        let cli = Settings {
            shards: Some(2),
            ..Default::default()
        };
        let merged = file.merged(cli);
        assert_eq!(merged.shards, Some(2), "the command line wins");
        let c = merged.clone().into_config(&[0, 1]).unwrap();
        assert_eq!((c.shards, c.retention_ms, c.listen.port()), (2, None, 1000));
        let printed = Settings::of(&c, LogFormat::Json).to_toml().unwrap();
        let back: Settings = toml::from_str(&printed).unwrap();
        let again = back.into_config(&[0, 1]).unwrap();
        assert_eq!(again.retention_ms, None);
        assert_eq!(again.shards, 2);
        assert_eq!(again.segment_bytes, c.segment_bytes);
    }

    #[test]
    fn a_wildcard_listen_needs_an_advertised_listener() {
        let wildcard = Settings {
            listen: Some("0.0.0.0:9092".parse().expect("address")),
            ..Default::default()
        };
        let e = wildcard.clone().into_config(&[0]).unwrap_err();
        assert!(e.contains("--advertised-listener"), "{e}");
        let advertised = Settings {
            advertised_listener: Some("broker1.example:9092".into()),
            ..wildcard
        };
        let c = advertised.into_config(&[0]).unwrap();
        assert_eq!(c.advertised_listener, ("broker1.example".to_string(), 9092));
        let zero_ip = Settings {
            advertised_listener: Some("0.0.0.0:9092".into()),
            ..Default::default()
        };
        assert!(zero_ip.into_config(&[0]).is_err());
    }

    #[test]
    fn the_inter_broker_listener_is_named_and_brokers_log_in_on_a_sasl_one() {
        let two = Settings {
            listeners: Some("INTERNAL://127.0.0.1:9101,SASL_PLAINTEXT://127.0.0.1:9102".into()),
            listener_security_protocol_map: Some(
                "INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT".into(),
            ),
            ..Default::default()
        };
        let c = two.clone().into_config(&[0]).unwrap();
        assert_eq!(c.inter_broker_listener, 0, "the first listener by default");
        let named = Settings {
            inter_broker_listener_name: Some("sasl_plaintext".into()),
            ..two.clone()
        };
        let c = named.clone().into_config(&[0]).unwrap();
        assert_eq!(c.inter_broker_listener, 1);
        let printed = Settings::of(&c, LogFormat::Text).to_toml().unwrap();
        let back: Settings = toml::from_str(&printed).unwrap();
        assert_eq!(back.into_config(&[0]).unwrap().inter_broker_listener, 1);
        let unknown = Settings {
            inter_broker_listener_name: Some("EXTERNAL".into()),
            ..two.clone()
        };
        let e = unknown.into_config(&[0]).unwrap_err();
        assert!(e.contains("INTERNAL, SASL_PLAINTEXT"), "{e}");
        let cluster = |s: Settings| Settings {
            node_id: Some(1),
            voters: Some("1@127.0.0.1:9103".into()),
            controller_listen: Some("127.0.0.1:9103".parse().expect("address")),
            ..s
        };
        let e = cluster(named.clone()).into_config(&[0]).unwrap_err();
        assert!(e.contains("--inter-broker-sasl-username"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "s3cret\nignored\n").unwrap();
        let with_login = Settings {
            inter_broker_sasl_username: Some("broker".into()),
            inter_broker_sasl_password_file: Some(password),
            ..named
        };
        let c = cluster(with_login).into_config(&[0]).unwrap();
        assert_eq!(c.inter_broker_sasl.password.as_deref(), Some("s3cret"));
        assert_eq!(c.inter_broker_sasl.mechanism, "SCRAM-SHA-512");
        let printed = Settings::of(&c, LogFormat::Text).to_toml().unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(cluster(two).into_config(&[0]).is_ok());
    }

    #[test]
    fn the_controller_listener_is_one_of_the_listeners() {
        let s = Settings {
            node_id: Some(1),
            voters: Some("1@127.0.0.1:9203".into()),
            listeners: Some("SSL://127.0.0.1:9201,CONTROLLER://127.0.0.1:9203".into()),
            listener_security_protocol_map: Some("SSL:SSL,CONTROLLER:SSL".into()),
            controller_listener_names: Some("controller".into()),
            tls_cert_file: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/server.pem"),
            ),
            tls_key_file: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/server-pkcs8.key"),
            ),
            tls_client_ca_file: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem"),
            ),
            ..Default::default()
        };
        let c = s.clone().into_config(&[0]).unwrap();
        assert_eq!(
            c.listeners.len(),
            1,
            "the controller listener serves no client"
        );
        let k = c.cluster.as_ref().unwrap();
        assert_eq!(k.controller_listen.port(), 9203);
        assert!(k.controller_tls());
        let printed = Settings::of(&c, LogFormat::Text).to_toml().unwrap();
        let back: Settings = toml::from_str(&printed).unwrap();
        let again = back.into_config(&[0]).unwrap();
        assert_eq!(again.listeners, c.listeners);
        assert!(again.cluster.as_ref().unwrap().controller_tls());
        let both = Settings {
            controller_listen: Some("127.0.0.1:9203".parse().expect("address")),
            ..s.clone()
        };
        assert!(both.into_config(&[0]).is_err());
        let no_ca = Settings {
            tls_client_ca_file: None,
            ..s.clone()
        };
        let e = no_ca.into_config(&[0]).unwrap_err();
        assert!(e.contains("--tls-client-ca-file"), "{e}");
        let unknown = Settings {
            controller_listener_names: Some("QUORUM".into()),
            ..s
        };
        assert!(unknown.into_config(&[0]).is_err());
    }

    #[test]
    fn authorizer_settings_check_and_round_trip() {
        let file: Settings = toml::from_str(
            "authorizer = \"acl\"\nsuper_users = \"User:admin; User:broker\"\nallow_everyone_if_no_acl_found = true",
        )
        .unwrap();
        let c = file.into_config(&[0]).unwrap();
        assert!(c.authorizer_acl && c.allow_everyone_if_no_acl_found);
        assert_eq!(c.super_users, ["User:admin", "User:broker"]);
        let printed = Settings::of(&c, LogFormat::Text).to_toml().unwrap();
        let again: Settings = toml::from_str(&printed).unwrap();
        let again = again.into_config(&[0]).unwrap();
        assert_eq!(again.super_users, c.super_users);
        assert!(again.authorizer_acl);
        let default = Settings::default().into_config(&[0]).unwrap();
        assert!(!default.authorizer_acl && !default.allow_everyone_if_no_acl_found);
        for bad in ["authorizer = \"simple\"", "super_users = \"alice\""] {
            let s: Settings = toml::from_str(bad).unwrap();
            assert!(s.into_config(&[0]).is_err(), "{bad}");
        }
        let docs = documented(&c);
        for key in [
            "authorizer",
            "super_users",
            "allow_everyone_if_no_acl_found",
        ] {
            assert!(
                docs.iter().any(|d| d.key == key && d.value.is_some()),
                "{key}"
            );
        }
    }

    #[test]
    fn idle_timeout_is_a_setting_that_round_trips() {
        let file: Settings = toml::from_str("connections_max_idle_ms = 3000").unwrap();
        let c = file.into_config(&[0]).unwrap();
        assert_eq!(c.connections_max_idle_ms, 3000);
        let printed = Settings::of(&c, LogFormat::Text).to_toml().unwrap();
        assert!(
            printed.contains("connections_max_idle_ms = 3000"),
            "{printed}"
        );
        let default = Settings::default().into_config(&[0]).unwrap();
        assert_eq!(default.connections_max_idle_ms, 600_000);
    }

    #[test]
    fn consumer_group_timeouts_and_their_bounds() {
        // Below Kafka's minimums, within ours: accepted, and a config key each.
        let file: Settings = toml::from_str(
            "group_consumer_session_timeout_ms = 6000\ngroup_consumer_heartbeat_interval_ms = 500\ngroup_remote_assignor = \"range\"\ngroup_consumer_max_size = 3",
        )
        .unwrap();
        let c = file.clone().into_config(&[0]).unwrap();
        assert_eq!(
            (
                c.group_consumer_session_timeout_ms,
                c.group_consumer_heartbeat_interval_ms,
                c.group_remote_assignor.as_str()
            ),
            (6000, 500, "range")
        );
        assert_eq!(c.group_consumer_max_size, 3);
        let defaults = Settings::default().into_config(&[0]).unwrap();
        assert_eq!(
            (
                defaults.group_consumer_session_timeout_ms,
                defaults.group_consumer_heartbeat_interval_ms,
                defaults.group_consumer_min_session_timeout_ms,
                defaults.group_consumer_max_session_timeout_ms,
                defaults.group_consumer_min_heartbeat_interval_ms,
                defaults.group_consumer_max_heartbeat_interval_ms,
            ),
            (45_000, 5_000, 1_000, 60_000, 100, 15_000)
        );
        let refused = |s: Settings, what: &str| {
            let e = s.into_config(&[0]).unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        refused(
            Settings {
                group_consumer_heartbeat_interval_ms: Some(6000),
                ..file.clone()
            },
            "must be below --group-consumer-session-timeout-ms",
        );
        refused(
            Settings {
                group_consumer_session_timeout_ms: Some(500),
                ..file.clone()
            },
            "--group-consumer-session-timeout-ms 500 is outside its bounds [1000, 60000]",
        );
        refused(
            Settings {
                group_consumer_max_heartbeat_interval_ms: Some(400),
                ..file.clone()
            },
            "--group-consumer-heartbeat-interval-ms 500 is outside its bounds [100, 400]",
        );
        refused(
            Settings {
                group_consumer_max_size: Some(0),
                ..file.clone()
            },
            "--group-consumer-max-size",
        );
        refused(
            Settings {
                group_remote_assignor: Some("sticky".into()),
                ..file
            },
            "--group-remote-assignor",
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let unknown = toml::from_str::<Settings>("retention_hours = 5")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("retention_hours"), "{unknown}");
        let wrong_type = toml::from_str::<Settings>("shards = \"two\"")
            .unwrap_err()
            .to_string();
        assert!(wrong_type.contains("shards"), "{wrong_type}");
        let cases: [(Settings, &str); 5] = [
            (
                Settings {
                    listen: Some("127.0.0.1:0".parse().expect("address")),
                    ..Default::default()
                },
                "--listen",
            ),
            (
                Settings {
                    retention_ms: Some(-5),
                    ..Default::default()
                },
                "retention_ms",
            ),
            (
                Settings {
                    shards: Some(0),
                    ..Default::default()
                },
                "shards",
            ),
            (
                Settings {
                    default_partitions: Some(0),
                    ..Default::default()
                },
                "default-partitions",
            ),
            (
                Settings {
                    advertised_listener: Some("nohost".into()),
                    ..Default::default()
                },
                "advertised_listener",
            ),
        ];
        for (s, name) in cases {
            let e = s.into_config(&[0]).unwrap_err();
            assert!(e.contains(name), "{e} should name {name}");
        }
    }
}
