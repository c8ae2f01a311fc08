//! Broker configuration: every limit carries its unit in its name, and relations between
//! settings are checked once, at start-up, by [`Config::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a broker needs to start. Built from the command line in `main.rs`, shared
/// read-only by every shard (each shard holds its own `Rc` clone of the value).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT: the kernel spreads connections).
    pub listen: SocketAddr,
    /// What Metadata tells clients to connect to.
    pub advertised_listener: (String, u16),
    /// Root of all persistent state: topic catalog and one directory per partition.
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors).
    pub shards: usize,
    /// CPUs the shards are pinned to, one per shard, in shard order.
    pub shard_cpus: Vec<usize>,
    /// This broker's node id in Metadata.
    pub node_id: i32,
    /// Create a topic when Metadata (if the client allows it) or Produce names an unknown one.
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics with `num_partitions = -1`.
    pub default_partitions: i32,
    /// Largest request frame accepted; larger ones close the connection
    /// (Kafka's `socket.request.max.bytes`).
    pub request_bytes_max: usize,
    /// Largest record batch accepted by Produce (Kafka's `message.max.bytes`).
    pub message_bytes_max: usize,
    /// Segment size at which the active segment rolls (Kafka's `log.segment.bytes`).
    pub segment_bytes: u64,
    /// Roll a segment once its first batch is this old (Kafka's `log.roll.ms`; topic
    /// `segment.ms`).
    pub segment_ms: Option<u64>,
    /// Delete segments whose newest record is older than this (Kafka's `log.retention.ms`;
    /// topic `retention.ms`; None keeps everything).
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this (Kafka's
    /// `log.retention.bytes`; topic `retention.bytes`; None keeps everything).
    pub retention_bytes: Option<u64>,
    /// How often each shard applies retention (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_ms: u64,
    /// Broker default of topics' `cleanup.policy` (Kafka's `log.cleanup.policy`).
    pub cleanup_policy: crate::storage::catalog::CleanupPolicy,
    /// How often each shard's log cleaner looks for work (Kafka's `log.cleaner.backoff.ms`).
    pub log_cleaner_backoff_ms: u64,
    /// Bytes per second each shard's cleaner reads plus writes (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`; None: no limit).
    pub log_cleaner_io_bytes_per_sec_max: Option<u64>,
    /// Memory bound of each shard's cleaner key map (Kafka's `log.cleaner.dedupe.buffer.size`,
    /// there shared by all cleaner threads): see `storage::cleaner::KEY_ENTRY_BYTES`.
    pub log_cleaner_dedupe_buffer_bytes: u64,
    /// Broker default of `delete.retention.ms` (Kafka's `log.cleaner.delete.retention.ms`).
    pub log_cleaner_delete_retention_ms: u64,
    /// Broker default of `min.cleanable.dirty.ratio` (Kafka's
    /// `log.cleaner.min.cleanable.ratio`).
    pub log_cleaner_min_cleanable_ratio: f64,
    /// Descriptors of sealed segments a shard keeps open (see `storage::segment::sealed`).
    pub segment_fds_max: usize,
    /// Bytes of log between two entries of the sparse offset index
    /// (Kafka's `log.index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Broker default of `flush.messages`: with it (or `flush.ms`) set, acks=all is answered
    /// once the batch is in the page cache and partitions are fdatasync'd in the background
    /// after this many records. With neither, acks=all waits for fdatasync (group commit).
    pub flush_messages: Option<u64>,
    /// Broker default of `flush.ms`: background fdatasync after this many milliseconds.
    pub flush_ms: Option<u64>,
    /// Serve Fetch records with sendfile(2) (true) or through a user-space buffer (false; the
    /// path TLS will need).
    pub fetch_zero_copy: bool,
    /// Request bytes one shard holds at once (frames being read, handled or answered);
    /// connections wait for room before reading more (backpressure).
    pub inflight_bytes_max: usize,
    /// Requests of one connection handled at once (answers stay in order; a Produce's
    /// appends finish before the next request of the connection starts).
    pub pipeline_requests_max: usize,
    /// Client connections the whole broker holds at once; more are closed at accept.
    pub connections_max: usize,
    /// A connection that completes no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`): silent ones, and ones stuck inside a size prefix or a frame,
    /// which would otherwise hold their socket and read budget for ever.
    pub connections_max_idle_ms: u64,
    /// Where the Prometheus metrics endpoint listens (off when None).
    pub metrics_listen: Option<SocketAddr>,
    /// Upper bound on a Fetch's `max_wait_ms`, whatever the client asks.
    pub fetch_wait_ms_max: u64,
    /// Memory glommio reserves per executor for registered io_uring buffers.
    pub io_memory_bytes: usize,
    /// Set at start when the last stop was not clean: logs are recovered before serving.
    pub recover_on_start: bool,
    /// How long a new group's first rebalance waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Session timeouts a member may ask for (Kafka's `group.min/max.session.timeout.ms`).
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Consumer-protocol (KIP-848) groups: the heartbeat interval and session timeout the
    /// coordinator gives members (`group.consumer.heartbeat.interval.ms`,
    /// `group.consumer.session.timeout.ms`), and their accepted bounds.
    pub group_consumer_heartbeat_interval_ms: i32,
    pub group_consumer_session_timeout_ms: i32,
    pub group_consumer_min_session_timeout_ms: i32,
    pub group_consumer_max_session_timeout_ms: i32,
    pub group_consumer_min_heartbeat_interval_ms: i32,
    pub group_consumer_max_heartbeat_interval_ms: i32,
    /// The server-side assignor of consumer-protocol groups (`group.remote.assignor`).
    pub group_remote_assignor: String,
    /// Members a consumer-protocol group accepts (`group.consumer.max.size`).
    pub group_consumer_max_size: i32,
    /// Committed offsets of a group that stays empty this long are removed (Kafka's
    /// `offsets.retention.minutes`).
    pub offsets_retention_ms: u64,
    /// Partitions of `__consumer_offsets` (Kafka's `offsets.topic.num.partitions`). A group's
    /// coordinator is the owner of partition `abs(hashCode(group)) % this`. Once the log
    /// exists its count wins over this setting (start-up reads it back), because a different
    /// count would move groups away from their committed offsets.
    pub offsets_topic_num_partitions: i32,
    /// Partitions of `__transaction_state` (Kafka's `transaction.state.log.num.partitions`).
    /// A transactional id's coordinator is the owner of partition `abs(hashCode(id)) % this`;
    /// fixed once the log exists, as for `__consumer_offsets`.
    pub transaction_state_log_num_partitions: i32,
    /// The longest `transaction.timeout.ms` a producer may ask for
    /// (`transaction.max.timeout.ms`); more is INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout_ms: i32,
    /// A transactional id with no open transaction and no request for this long is forgotten
    /// (`transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: u64,
    /// A producer id that wrote nothing to a partition for this long is dropped from the
    /// partition's producer state by the housekeeping pass (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// Capacity of each cross-shard channel, in messages.
    pub router_channel_len: usize,
    /// Replication factor of auto-created topics and CreateTopics with -1.
    pub default_replication_factor: i16,
    /// This broker's rack (rack-aware placement), if any.
    pub rack: Option<String>,
    /// acks=all is refused with NOT_ENOUGH_REPLICAS when fewer in-sync replicas than this remain (min.insync.replicas; a topic config overrides it)
    pub min_insync_replicas: i32,
    /// A follower that has not caught up with its leader's log end for this long leaves the ISR, in ms (replica.lag.time.max.ms)
    pub replica_lag_time_max_ms: u64,
    /// Bytes a follower asks for per partition in one replica Fetch (replica.fetch.max.bytes)
    pub replica_fetch_max_bytes: i32,
    /// Bytes a follower asks for in one replica Fetch over all its partitions (replica.fetch.response.max.bytes)
    pub replica_fetch_response_max_bytes: i32,
    /// How long a follower's Fetch waits at the leader for new data, in ms (replica.fetch.wait.max.ms)
    pub replica_fetch_wait_max_ms: u64,
    /// Bytes per second this broker's leaders serve to the throttled replicas (topic config leader.replication.throttled.replicas), per shard; None: unlimited. A dynamic broker config of the same name overrides it (leader.replication.throttled.rate)
    pub leader_replication_throttled_rate: Option<u64>,
    /// Bytes per second this broker's followers fetch for the throttled replicas (topic config follower.replication.throttled.replicas), per shard; None: unlimited. A dynamic broker config of the same name overrides it (follower.replication.throttled.rate)
    pub follower_replication_throttled_rate: Option<u64>,
    /// Whether a replica outside the ISR may become leader when no in-sync replica is left, losing what only the ISR had (unclean.leader.election.enable; a topic config overrides it)
    pub unclean_leader_election_enable: bool,
    /// Whether the controller gives leadership back to each partition's preferred replica once it is in sync again (auto.leader.rebalance.enable)
    pub auto_leader_rebalance_enable: bool,
    /// How often the controller looks for partitions led by other than their preferred replica, in seconds (leader.imbalance.check.interval.seconds)
    pub leader_imbalance_check_interval_seconds: u64,
    /// Replication factor of __consumer_offsets when it is created; 1 on a one-node broker without --voters (offsets.topic.replication.factor)
    pub offsets_topic_replication_factor: i16,
    /// Replication factor of __transaction_state when it is created; 1 on a one-node broker without --voters (transaction.state.log.replication.factor)
    pub transaction_state_log_replication_factor: i16,
    /// min.insync.replicas of __transaction_state (transaction.state.log.min.isr)
    pub transaction_state_log_min_isr: i32,
    /// Default of topic compression.type (compression.type)
    pub compression_type: crate::storage::catalog::TopicCompression,
    /// Default of topic message.timestamp.before.max.ms; None: no bound (log.message.timestamp.before.max.ms)
    pub message_timestamp_before_max_ms: Option<u64>,
    /// Default of topic message.timestamp.after.max.ms; None: no bound (log.message.timestamp.after.max.ms)
    pub message_timestamp_after_max_ms: Option<u64>,
    /// SCRAM users to create on the first start, `name:password` per line (None: none)
    pub sasl_users_file: Option<PathBuf>,
    /// Every listener; the first is `listen` / `advertised_listener` (what the cluster
    /// registers and tools that need one address use).
    pub listeners: Vec<Listener>,
    /// The listener (index into `listeners`) other brokers reach this one on
    /// (inter.broker.listener.name): what a cluster broker registers as its address.
    pub inter_broker_listener: usize,
    /// How this broker logs in on the other brokers' inter-broker listener when it is a SASL
    /// one.
    pub inter_broker_sasl: InterBrokerSasl,
    /// SASL/OAUTHBEARER's token checks (None: OAUTHBEARER is not offered).
    pub oauthbearer: Option<OAuthBearer>,
    /// SASL mechanisms the SASL listeners offer (sasl.enabled.mechanisms)
    pub sasl_enabled_mechanisms: Vec<String>,
    /// A SASL session lasts this long before the client must authenticate again (KIP-368,
    /// connections.max.reauth.ms); 0: for the connection's life
    pub connections_max_reauth_ms: u64,
    /// Whether requests are authorized by the metadata's ACLs (authorizer.class.name set to
    /// StandardAuthorizer); false: everything is allowed
    pub authorizer_acl: bool,
    /// Principals the authorizer allows everything (super.users)
    pub super_users: Vec<String>,
    /// Whether a resource no ACL names is open to all (allow.everyone.if.no.acl.found)
    pub allow_everyone_if_no_acl_found: bool,
    /// The TLS listeners' certificate, key and client CA files (None: no TLS listener may be
    /// configured).
    pub tls_files: Option<crate::tls::TlsFiles>,
    /// How a client certificate's subject DN becomes a principal name
    /// (ssl.principal.mapping.rules)
    pub ssl_principal_mapping_rules: crate::tls::PrincipalRules,
    /// The cluster this node belongs to (None: a one-node cluster, with no quorum).
    pub cluster: Option<ClusterConfig>,
}

/// Kafka's security protocols of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    SaslPlaintext,
    Ssl,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the listener speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether a connection must authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// How OAUTHBEARER tokens are checked (`--sasl-oauthbearer-*`, Kafka's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthBearer {
    /// The JWKS file, as given (`file:///path` or a path).
    pub jwks_url: String,
    pub audience: Vec<String>,
    pub issuer: Option<String>,
    pub sub_claim: String,
    pub clock_skew_s: u64,
}

impl OAuthBearer {
    /// The JWKS file's path.
    pub fn jwks_path(&self) -> Result<PathBuf, String> {
        let url = self.jwks_url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(PathBuf::from(path));
        }
        if url.contains("://") {
            return Err(format!(
                "{url}: only a file is supported (file:///path or a path): the broker fetches \
                 no URL; fetch the JWKS to a file and send SIGHUP when it changes"
            ));
        }
        Ok(PathBuf::from(url))
    }

    /// Reads the JWKS file and builds the validator (at start, and on SIGHUP).
    pub fn validator(&self) -> Result<crate::auth::oauth::Validator, String> {
        let path = self.jwks_path()?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        crate::auth::oauth::Validator::new(
            &text,
            self.audience.clone(),
            self.issuer.clone(),
            self.sub_claim.clone(),
            self.clock_skew_s,
        )
    }
}

/// The login brokers use on a SASL inter-broker listener
/// (`--sasl-mechanism-inter-broker-protocol`, `--inter-broker-sasl-username`,
/// `--inter-broker-sasl-password-file`).
#[derive(Clone, PartialEq, Eq)]
pub struct InterBrokerSasl {
    pub mechanism: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where the password came from (what `--print-config` shows instead of it).
    pub password_file: Option<PathBuf>,
}

impl Default for InterBrokerSasl {
    fn default() -> InterBrokerSasl {
        InterBrokerSasl {
            mechanism: "SCRAM-SHA-512".into(),
            username: None,
            password: None,
            password_file: None,
        }
    }
}

impl std::fmt::Debug for InterBrokerSasl {
    // The password is a secret: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterBrokerSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

/// One listener (`--listeners NAME://HOST:PORT`): its name, protocol, the address every
/// shard accepts on, and the address Metadata gives clients that came in on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertised: (String, u16),
}

/// A node of a cluster: the metadata quorum and the timings of its brokers.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The voters of the metadata quorum, (node id, quorum address), as `--voters` lists them.
    pub voters: Vec<(i32, SocketAddr)>,
    /// Whether this node is one of them (else it only follows the quorum).
    pub is_voter: bool,
    /// Where this node serves quorum traffic.
    pub controller_listen: SocketAddr,
    /// The cluster id the operator pinned, if any.
    pub cluster_id: Option<String>,
    pub election_timeout_ms: u64,
    pub fetch_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    /// How long unclean-shutdown recovery waits for a partition's replicas that are down
    /// before it compares those that are up (`--unclean-recovery-timeout-ms`, KIP-966's
    /// unclean.recovery.timeout.ms).
    pub unclean_recovery_timeout_ms: u64,
    /// Applied Raft entries kept before compaction (`--controller-log-compact-entries`).
    pub log_compact_entries: u64,
    /// The topics of a one-node broker this node's data dir held, to import into the cluster
    /// once this broker is registered (set at start-up, see `storage::metadata::import`).
    pub one_node_import: Option<std::sync::Arc<crate::storage::metadata::import::OneNodeImport>>,
    /// The listener of `--listeners` named by `--controller-listener-names` (its name and
    /// protocol, PLAINTEXT or SSL); None: `--controller-listen`, PLAINTEXT.
    pub controller_listener: Option<(String, SecurityProtocol)>,
}

impl ClusterConfig {
    /// Whether the quorum's connections are mutual TLS.
    pub fn controller_tls(&self) -> bool {
        self.controller_listener
            .as_ref()
            .is_some_and(|(_, p)| *p == SecurityProtocol::Ssl)
    }
}

impl Config {
    /// Defaults for everything but the addresses, directory and shard count.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, shards: usize) -> Config {
        Config {
            listen,
            advertised_listener: (listen.ip().to_string(), listen.port()),
            data_dir,
            shards,
            shard_cpus: (0..shards).collect(),
            node_id: 0,
            auto_create_topics: true,
            default_partitions: 1,
            request_bytes_max: 100 * 1024 * 1024,
            message_bytes_max: 1024 * 1024 + 12,
            segment_bytes: 1024 * 1024 * 1024,
            index_interval_bytes: 4096,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            retention_check_ms: 60_000,
            cleanup_policy: crate::storage::catalog::CleanupPolicy::DELETE,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_io_bytes_per_sec_max: None,
            log_cleaner_dedupe_buffer_bytes: 32 * 1024 * 1024,
            log_cleaner_delete_retention_ms: 24 * 3600 * 1000,
            log_cleaner_min_cleanable_ratio: 0.5,
            segment_fds_max: crate::storage::segment::sealed::SEGMENT_FDS_MAX_DEFAULT,
            flush_messages: None,
            fetch_zero_copy: true,
            inflight_bytes_max: 256 * 1024 * 1024,
            pipeline_requests_max: 16,
            connections_max: 10_000,
            connections_max_idle_ms: 600_000,
            metrics_listen: None,
            flush_ms: None,
            fetch_wait_ms_max: 30_000,
            io_memory_bytes: 2 * 1024 * 1024,
            router_channel_len: 1024,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_min_session_timeout_ms: 1_000,
            group_consumer_max_session_timeout_ms: 60_000,
            group_consumer_min_heartbeat_interval_ms: 100,
            group_consumer_max_heartbeat_interval_ms: 15_000,
            group_remote_assignor: "uniform".into(),
            group_consumer_max_size: i32::MAX,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_topic_num_partitions: 50,
            transaction_state_log_num_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            producer_id_expiration_ms: 86_400_000,
            recover_on_start: true,
            default_replication_factor: 1,
            rack: None,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_response_max_bytes: 10_485_760,
            replica_fetch_wait_max_ms: 500,
            leader_replication_throttled_rate: None,
            follower_replication_throttled_rate: None,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            offsets_topic_replication_factor: 3,
            transaction_state_log_replication_factor: 3,
            transaction_state_log_min_isr: 2,
            compression_type: crate::storage::catalog::TopicCompression::Producer,
            message_timestamp_before_max_ms: None,
            message_timestamp_after_max_ms: Some(3_600_000),
            sasl_users_file: None,
            listeners: vec![Listener {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                addr: listen,
                advertised: (listen.ip().to_string(), listen.port()),
            }],
            inter_broker_listener: 0,
            inter_broker_sasl: InterBrokerSasl::default(),
            oauthbearer: None,
            sasl_enabled_mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
            connections_max_reauth_ms: 0,
            authorizer_acl: false,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            tls_files: None,
            ssl_principal_mapping_rules: crate::tls::PrincipalRules::default(),
            cluster: None,
        }
    }

    /// Checks relations between settings; the message names the offending setting.
    /// The consumer-protocol group settings: each within its bounds, the heartbeat interval
    /// below the session timeout, a known assignor.
    fn validate_consumer_groups(&self) -> Result<(), String> {
        let within = |name: &str, v: i32, min: i32, max: i32| {
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "--{name} {v} is outside its bounds [{min}, {max}] (--{name}'s -min-/-max- settings)"
                ))
            }
        };
        if self.group_consumer_min_session_timeout_ms < 1
            || self.group_consumer_min_heartbeat_interval_ms < 1
        {
            return Err("--group-consumer-min-session-timeout-ms and --group-consumer-min-heartbeat-interval-ms must be at least 1".into());
        }
        within(
            "group-consumer-session-timeout-ms",
            self.group_consumer_session_timeout_ms,
            self.group_consumer_min_session_timeout_ms,
            self.group_consumer_max_session_timeout_ms,
        )?;
        within(
            "group-consumer-heartbeat-interval-ms",
            self.group_consumer_heartbeat_interval_ms,
            self.group_consumer_min_heartbeat_interval_ms,
            self.group_consumer_max_heartbeat_interval_ms,
        )?;
        if self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms {
            return Err(format!(
                "--group-consumer-heartbeat-interval-ms {} must be below --group-consumer-session-timeout-ms {}",
                self.group_consumer_heartbeat_interval_ms, self.group_consumer_session_timeout_ms
            ));
        }
        if self.group_consumer_max_size < 1 {
            return Err(format!(
                "--group-consumer-max-size {} must be at least 1",
                self.group_consumer_max_size
            ));
        }
        if crate::group::consumer::Assignor::parse(&self.group_remote_assignor).is_none() {
            return Err(format!(
                "--group-remote-assignor {:?} is not an assignor: uniform or range",
                self.group_remote_assignor
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 {
            return Err("--shards must be at least 1".into());
        }
        if self.listen.port() == 0 {
            // Every shard binds the listen address (SO_REUSEPORT) and Metadata tells clients
            // its port: with port 0 each shard would get a different one, and clients port 0.
            return Err(format!(
                "--listen {} needs a port (every shard listens on the same one), e.g. {}:9092",
                self.listen,
                self.listen.ip()
            ));
        }
        for l in self.listeners.iter().skip(1) {
            if let Ok(ip) = l.advertised.0.parse::<std::net::IpAddr>()
                && ip.is_unspecified()
            {
                return Err(format!(
                    "listener {} accepts on every interface, but clients cannot connect to {}: \
                     name it in --advertised-listeners {}://HOST:{}",
                    l.name, l.advertised.0, l.name, l.advertised.1
                ));
            }
        }
        if let Ok(ip) = self.advertised_listener.0.parse::<std::net::IpAddr>()
            && ip.is_unspecified()
        {
            // A wildcard address means "every interface" to bind(2) but "this machine" to a
            // client: remote clients would bootstrap, then connect to themselves. Kafka
            // refuses it for the same reason.
            return Err(format!(
                "--listen {} accepts on every interface, but clients cannot connect to {}: \
                 set --advertised-listener HOST:{} (advertised_listener) to the name or \
                 address clients should use",
                self.listen, self.advertised_listener.0, self.advertised_listener.1
            ));
        }
        if self
            .cluster
            .as_ref()
            .is_some_and(ClusterConfig::controller_tls)
            && self
                .tls_files
                .as_ref()
                .is_none_or(|t| t.client_ca.is_none())
        {
            return Err(
                "the controller listener is SSL: the quorum's nodes connect to each \
                 other with mutual TLS, presenting --tls-cert-file and verifying the other \
                 against --tls-client-ca-file, so give both"
                    .into(),
            );
        }
        if self.cluster.is_some()
            && let Some(l) = self.listeners.get(self.inter_broker_listener)
        {
            let tls = matches!(
                l.protocol,
                SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
            );
            if tls
                && self
                    .tls_files
                    .as_ref()
                    .is_none_or(|t| t.client_ca.is_none())
            {
                // Brokers present their own certificate to each other and verify the
                // other's against the client CA: mutual TLS.
                return Err(format!(
                    "the inter-broker listener {} is {}: brokers connect to each other with \
                     TLS, verifying the other broker against --tls-client-ca-file and \
                     presenting --tls-cert-file, so give --tls-client-ca-file",
                    l.name,
                    l.protocol.name()
                ));
            }
            let s = &self.inter_broker_sasl;
            if l.protocol.sasl() && (s.username.is_none() || s.password.is_none()) {
                return Err(format!(
                    "the inter-broker listener {} is {}: brokers log in on it, so give \
                     --inter-broker-sasl-username and --inter-broker-sasl-password-file (a \
                     user of --sasl-users-file or `spate user set`, in --super-users when ACLs \
                     are on)",
                    l.name,
                    l.protocol.name()
                ));
            }
        }
        self.validate_consumer_groups()?;
        if self.connections_max_idle_ms == 0 {
            return Err("--connections-max-idle-ms must be at least 1".into());
        }
        if self.shard_cpus.len() != self.shards {
            return Err(format!(
                "--shards {} but {} CPUs to pin them to",
                self.shards,
                self.shard_cpus.len()
            ));
        }
        if self.default_partitions < 1 {
            return Err(format!(
                "--default-partitions must be at least 1, got {}",
                self.default_partitions
            ));
        }
        if self.request_bytes_max < 1024 || self.request_bytes_max > i32::MAX as usize {
            return Err(format!(
                "request_bytes_max must be between 1024 and {}, got {}",
                i32::MAX,
                self.request_bytes_max
            ));
        }
        if self.inflight_bytes_max < 1024 * 1024 {
            return Err(format!(
                "--inflight-bytes-max must be at least 1 MiB, got {}",
                self.inflight_bytes_max
            ));
        }
        if !(1..=1024).contains(&self.pipeline_requests_max) {
            return Err(format!(
                "--pipeline-requests-max must be between 1 and 1024, got {}",
                self.pipeline_requests_max
            ));
        }
        if !(1..=10_000).contains(&self.offsets_topic_num_partitions) {
            return Err(format!(
                "--offsets-topic-num-partitions must be between 1 and 10000, got {}",
                self.offsets_topic_num_partitions
            ));
        }
        if !(1..=10_000).contains(&self.transaction_state_log_num_partitions) {
            return Err(format!(
                "--transaction-state-log-num-partitions must be between 1 and 10000, got {}",
                self.transaction_state_log_num_partitions
            ));
        }
        if self.transaction_max_timeout_ms < 1 {
            return Err(format!(
                "--transaction-max-timeout-ms must be at least 1, got {}",
                self.transaction_max_timeout_ms
            ));
        }
        if self.min_insync_replicas < 1 {
            return Err(format!(
                "--min-insync-replicas must be at least 1, got {}",
                self.min_insync_replicas
            ));
        }
        if self.replica_fetch_max_bytes < 1 || self.replica_fetch_response_max_bytes < 1 {
            return Err("--replica-fetch-max-bytes and --replica-fetch-response-max-bytes must be at least 1".into());
        }
        if self.offsets_topic_replication_factor < 1
            || self.transaction_state_log_replication_factor < 1
            || self.transaction_state_log_min_isr < 1
        {
            return Err("--offsets-topic-replication-factor, --transaction-state-log-replication-factor and --transaction-state-log-min-isr must be at least 1".into());
        }
        if self.leader_imbalance_check_interval_seconds < 1 {
            return Err("--leader-imbalance-check-interval-seconds must be at least 1".into());
        }
        if self.default_replication_factor < 1 {
            return Err(format!(
                "--default-replication-factor must be at least 1, got {}",
                self.default_replication_factor
            ));
        }
        if let Some(k) = &self.cluster {
            if self.node_id < 0 {
                return Err(format!(
                    "--node-id must be at least 0, got {}",
                    self.node_id
                ));
            }
            if k.election_timeout_ms < 100 {
                return Err("--controller-quorum-election-timeout-ms must be at least 100".into());
            }
            if k.fetch_timeout_ms < k.election_timeout_ms {
                return Err(
                    "--controller-quorum-fetch-timeout-ms must be at least the election timeout"
                        .into(),
                );
            }
            if k.heartbeat_interval_ms == 0 || k.heartbeat_interval_ms >= k.session_timeout_ms {
                return Err(format!(
                    "--broker-heartbeat-interval-ms ({}) must be at least 1 and below --broker-session-timeout-ms ({})",
                    k.heartbeat_interval_ms, k.session_timeout_ms
                ));
            }
            if k.controller_listen.port() == 0 {
                return Err("--controller-listen needs a port".into());
            }
        }
        if self.segment_bytes < 1024 || self.segment_bytes > u32::MAX as u64 {
            return Err(format!(
                "segment_bytes must be between 1024 and {} (index positions are 32-bit), got {}",
                u32::MAX,
                self.segment_bytes
            ));
        }
        Ok(())
    }
}
