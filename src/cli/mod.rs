//! The admin command line: `spate topic|group|produce|consume`, speaking the Kafka protocol to
//! any Kafka-compatible broker (`--bootstrap-server`, as Kafka's own tools take it).
//!
//! - `client`: the CLI's side of the shared blocking client (`crate::client`): one connection
//!   per broker address, retries, and hints when a connection fails; produce, fetch and group
//!   requests go to the leader or coordinator that Metadata/FindCoordinator name.
//! - `api`: each request the CLI makes, version differences handled, answers as plain structs.
//! - `time`: `--to-datetime` values (epoch ms or ISO 8601, calendar-checked by `jiff`).
//! - `output`: aligned tables, `--json`, and the progress line on long runs.
//! - `error`: Kafka error names (`TOPIC_ALREADY_EXISTS`) and a hint on what to do.

mod acl;
pub mod api;
pub mod client;
mod cluster;
mod consume;
pub mod error;
mod group;
pub mod output;
mod produce;
mod quota;
mod time;
mod topic;
mod txn;
mod user;

use clap::{ArgGroup, Args, Subcommand};

use self::client::Client;
use self::error::Error;

/// Options every admin command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: String,
    /// Kafka client properties for a secured listener, as Kafka's tools take them:
    /// `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
    /// `sasl.mechanism=SCRAM-SHA-512`, `sasl.username`/`sasl.password` (or the Java client's
    /// `sasl.jaas.config`), `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`
    /// and `ssl.endpoint.identification.algorithm` (https, or none to skip the host name).
    #[arg(long, global = true, value_name = "FILE")]
    pub command_config: Option<std::path::PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Common {
    fn client(&self) -> Result<Client, Error> {
        let security = match &self.command_config {
            Some(path) => client::read_command_config(path)?,
            None => Default::default(),
        };
        Client::connect_secure(&self.bootstrap_server, security)
    }
}

/// Admin subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, list, describe, alter and delete topics.
    Topic(TopicArgs),
    /// List, describe and delete consumer groups, and reset their offsets.
    Group(GroupArgs),
    /// Produce messages from stdin lines (or --value) to a topic.
    Produce(ProduceArgs),
    /// Consume messages from a topic to stdout.
    Consume(ConsumeArgs),
    /// The cluster: brokers, the active controller, the metadata quorum.
    Cluster(ClusterArgs),
    /// List and describe transactions, and abort one that hangs in a partition.
    Txn(TxnArgs),
    /// List, set and delete users' SCRAM credentials (SASL/SCRAM-SHA-256 and -512).
    User(UserArgs),
    /// Set, remove and list client quotas (byte rates, request percentage) per user and
    /// client id.
    Quota(QuotaArgs),
    /// Add, list and remove ACLs (the broker authorizes with them under --authorizer acl).
    Acl(AclArgs),
}

#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: AclCommand,
}

/// The resources an ACL command names, as `kafka-acls` takes them (each repeatable).
#[derive(Args, Debug, Clone, Default)]
pub struct AclResources {
    /// A topic (`*`: every topic).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// A consumer group (`*`: every group).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// A transactional id (`*`: every one).
    #[arg(long = "transactional-id", value_name = "ID")]
    pub transactional_ids: Vec<String>,
    /// The cluster.
    #[arg(long)]
    pub cluster: bool,
    /// How the names match: literal or prefixed (add); any, match, literal or prefixed
    /// (list, remove) [default: literal to add, any to list and remove].
    #[arg(long, value_name = "TYPE")]
    pub resource_pattern_type: Option<String>,
}

/// Who and what an ACL command names.
#[derive(Args, Debug, Clone, Default)]
pub struct AclEntries {
    /// Principals to allow (`User:alice`, `User:*`), repeatable.
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    pub allow: Vec<String>,
    /// Principals to deny, repeatable.
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    pub deny: Vec<String>,
    /// Operations: Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All (repeatable).
    #[arg(long = "operation", value_name = "OPERATION")]
    pub operations: Vec<String>,
    /// The client host (IP address) the ACL applies to [default: * (any)].
    #[arg(long = "host", value_name = "IP")]
    pub hosts: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACLs: each principal, operation and host on each resource.
    Add {
        #[command(flatten)]
        resources: AclResources,
        #[command(flatten)]
        entries: AclEntries,
    },
    /// List ACLs: all, or those on the named resources and/or of a principal.
    List {
        #[command(flatten)]
        resources: AclResources,
        /// Only the ACLs of this principal.
        #[arg(long, value_name = "PRINCIPAL")]
        principal: Option<String>,
    },
    /// Remove the ACLs that match (on the named resources; of the given principals,
    /// operations and hosts, or any).
    Remove {
        #[command(flatten)]
        resources: AclResources,
        #[command(flatten)]
        entries: AclEntries,
    },
}

#[derive(Args, Debug)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: QuotaCommand,
}

/// A client quota entity: a user, a client id, or both (`<default>`: the default one).
#[derive(Args, Debug, Clone)]
pub struct QuotaEntityArgs {
    /// The user (principal name; `ANONYMOUS` without authentication), or `<default>`.
    #[arg(long)]
    pub user: Option<String>,
    /// The client id, or `<default>`.
    #[arg(long)]
    pub client_id: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set quotas of an entity.
    Set {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Produced bytes per second.
        #[arg(long, value_name = "BYTES")]
        producer_byte_rate: Option<f64>,
        /// Fetched bytes per second.
        #[arg(long, value_name = "BYTES")]
        consumer_byte_rate: Option<f64>,
        /// Percent of one thread's time spent on the client's requests.
        #[arg(long, value_name = "PERCENT")]
        request_percentage: Option<f64>,
    },
    /// Remove quotas of an entity (the named ones, or all three).
    Remove {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        #[arg(long)]
        producer_byte_rate: bool,
        #[arg(long)]
        consumer_byte_rate: bool,
        #[arg(long)]
        request_percentage: bool,
    },
    /// List quotas: all, or those of entities that have the given user and/or client id.
    List {
        #[command(flatten)]
        entity: QuotaEntityArgs,
    },
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: TxnCommand,
}

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// Every transactional id the brokers coordinate, with its producer id and state.
    List,
    /// A transactional id's state, producer, timeout, start time and partitions.
    Describe {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Write an abort marker to a partition for each producer whose transaction is open
    /// there (or only for --producer-id), so its last stable offset can move on.
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: Option<i64>,
    },
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Every user with SCRAM credentials: mechanisms and iterations (never a key).
    List,
    /// Give a user credentials (salted and hashed here: the password never reaches the
    /// broker).
    Set {
        user: String,
        /// The password; `-` reads one line from stdin (keeps it out of `ps`).
        #[arg(long)]
        password: String,
        /// SCRAM-SHA-256, SCRAM-SHA-512 or both (repeatable) [default: both].
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations, 4096 to 16384.
        #[arg(long, default_value_t = 4096)]
        iterations: i32,
    },
    /// Remove a user's credentials (every mechanism unless --mechanism).
    Delete {
        user: String,
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers that serve, the active controller, each voter's Raft state and lag, and the
    /// partitions without a leader.
    Status,
    /// Show a broker's settings, or change the dynamic broker configs (the topic defaults
    /// and throttle rates that change at run time) of every broker or of one (--broker).
    Config {
        /// The broker whose own dynamic configs change (default: every broker's).
        #[arg(long)]
        broker: Option<i32>,
        /// Set a dynamic broker config, KEY=VALUE (repeatable), e.g.
        /// --config log.retention.ms=3600000.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Remove a dynamic broker config (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// A topic config, KEY=VALUE (repeatable), e.g. --config retention.ms=3600000.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed without change when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    List,
    /// Show partitions (leaders, replicas, offsets) and configs of topics (all without names).
    Describe { names: Vec<String> },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Set or remove topic configs.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["configs", "delete_configs"])))]
    Alter {
        name: String,
        /// Set a config, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Remove a config override, back to the broker default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Move a partition to other brokers (the new replicas catch up, then the old ones
    /// leave), or cancel its move.
    #[command(group(ArgGroup::new("target").required(true).args(["replicas", "cancel"])))]
    Reassign {
        name: String,
        #[arg(long)]
        partition: i32,
        /// The new replica list, broker ids in preference order, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',')]
        replicas: Vec<i32>,
        /// Cancel the reassignment in progress (back to the original replicas).
        #[arg(long)]
        cancel: bool,
    },
    /// List the partition reassignments in progress (of one topic, or of all).
    Reassignments { name: Option<String> },
    /// Elect the preferred leaders (the first replicas) of TOPIC or TOPIC:PARTITION (all
    /// partitions without one), or with --unclean a leader of leaderless partitions.
    ElectLeaders {
        #[arg(required = true, value_name = "TOPIC[:PARTITION]")]
        targets: Vec<String>,
        /// Elect any live replica where no in-sync one is left (may lose acknowledged records).
        #[arg(long)]
        unclean: bool,
    },
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members (with their assigned partitions) and committed offsets
    /// with lag.
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete groups (only groups without members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets (the group must have no members).
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_datetime", "to_offset"])))]
    #[command(group(ArgGroup::new("which").required(true).args(["topics", "all_topics"])))]
    ResetOffsets {
        group: String,
        /// TOPIC, or TOPIC:P,P,... for some partitions (repeatable).
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
        topics: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long)]
        all_topics: bool,
        /// To each partition's earliest offset.
        #[arg(long)]
        to_earliest: bool,
        /// To each partition's end (latest offset).
        #[arg(long)]
        to_latest: bool,
        /// To the first offset at or after this time: milliseconds since the epoch, or
        /// YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM] (UTC without a zone).
        #[arg(long, value_name = "TIME")]
        to_datetime: Option<String>,
        /// To this offset (clamped into each partition's range).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic to produce to.
    pub topic: String,
    /// Produce this value instead of reading stdin lines (repeatable).
    #[arg(long = "value", value_name = "VALUE")]
    pub values: Vec<String>,
    /// Key of the --value messages.
    #[arg(long)]
    pub key: Option<String>,
    /// Split each line into KEY<SEP>VALUE at the first SEP (a line without it has no key).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header on every message, KEY=VALUE (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Partition to produce to (default: murmur2 of the key, as Kafka's clients; round-robin
    /// batches without a key).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgement: all (-1), 1 or 0.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub acks: String,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "offset"])))]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic to consume.
    pub topic: String,
    /// Partitions to read (repeatable; default all).
    #[arg(long = "partition", value_name = "P")]
    pub partitions: Vec<i32>,
    /// Start at each partition's earliest offset (default: its end).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset; negative counts back from the end.
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<i64>,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Exit once every partition is read to its end.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Output per message, as kcat's -f: %s or %v value, %k key, %t topic, %p partition,
    /// %o offset, %T timestamp (ms), %h headers (k=v,...), %S/%K value/key length; \n \t \\
    /// escapes. Default: "%s\n".
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub format: Option<String>,
}

/// Runs an admin subcommand; the error is printed by `main`.
pub fn run(cmd: AdminCommand) -> Result<(), String> {
    let result = match cmd {
        AdminCommand::Topic(a) => topic::run(&a.common, a.command),
        AdminCommand::Group(a) => group::run(&a.common, a.command),
        AdminCommand::Produce(a) => produce::run(a),
        AdminCommand::Consume(a) => consume::run(a),
        AdminCommand::Cluster(a) => cluster::run(&a.common, a.command),
        AdminCommand::Txn(a) => txn::run(&a.common, a.command),
        AdminCommand::User(a) => user::run(&a.common, a.command),
        AdminCommand::Quota(a) => quota::run(&a.common, a.command),
        AdminCommand::Acl(a) => acl::run(&a.common, a.command),
    };
    result.map_err(|e| e.to_string())
}

/// Splits KEY=VALUE (`what` names the option in the error).
pub(crate) fn key_value(s: &str, what: &str) -> Result<(String, String), Error> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::other(format!("{what} '{s}' is not KEY=VALUE"))),
    }
}
