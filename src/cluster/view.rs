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
    /// Every listener it registered: (name, advertised host, port). Empty for a broker of an
    /// older version, which has one listener, at `host`/`port`.
    pub listeners: Vec<(String, String, u16)>,
}

impl BrokerEndpoint {
    /// Where a client that came in on a listener named `listener` reaches this broker: its
    /// listener of that name, None when it has none (Kafka leaves such a broker out of the
    /// client's Metadata). `host`/`port` (the inter-broker listener) is what other brokers use.
    pub fn on_listener(&self, listener: &str) -> Option<(String, u16)> {
        if self.listeners.is_empty() {
            return Some((self.host.clone(), self.port));
        }
        self.listeners
            .iter()
            .find(|(name, _, _)| name == listener)
            .map(|(_, host, port)| (host.clone(), *port))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_told_the_listener_of_its_own_name() {
        let mut b = BrokerEndpoint {
            id: 2,
            host: "10.0.0.2".into(),
            port: 9093,
            rack: None,
            epoch: 1,
            listeners: vec![
                ("INTERNAL".into(), "10.0.0.2".into(), 9093),
                ("SASL_SSL".into(), "b2.example".into(), 9094),
            ],
        };
        assert_eq!(b.on_listener("SASL_SSL"), Some(("b2.example".into(), 9094)));
        assert_eq!(b.on_listener("INTERNAL"), Some(("10.0.0.2".into(), 9093)));
        assert_eq!(b.on_listener("EXTERNAL"), None, "no listener of that name");
        b.listeners.clear();
        assert_eq!(
            b.on_listener("EXTERNAL"),
            Some(("10.0.0.2".into(), 9093)),
            "an older broker's one listener serves every name"
        );
    }
}
