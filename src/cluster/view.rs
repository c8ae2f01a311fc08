//! What every shard knows of the cluster, replaced as a whole on each change (it is
//! immutable, so shards share one `Arc` of it without locks).

/// A broker that serves (registered and not fenced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// The epoch of the broker's current registration (a new one at each start): a follower
    /// sends its own with each replica Fetch (KIP-903), and the leader names it when it asks
    /// the controller to add the follower to an ISR, so an older incarnation is never added.
    pub epoch: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster id (empty until the quorum has one).
    pub cluster_id: String,
    /// The active controller's node id, -1 when there is none.
    pub controller_id: i32,
    /// Brokers that serve, by id.
    pub brokers: Vec<BrokerEndpoint>,
    /// Whether this broker, in its current registration, is among them (registered and
    /// unfenced: it caught up with the metadata since it started). Until it first is, its
    /// shards hold client requests (see `Shard::serving`).
    pub serves_here: bool,
}

impl ClusterView {
    pub fn broker(&self, id: i32) -> Option<&BrokerEndpoint> {
        self.brokers.iter().find(|b| b.id == id)
    }
}
