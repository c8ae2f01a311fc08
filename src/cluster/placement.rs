//! Where a new topic's partitions go: Kafka's round-robin assignment over the brokers that
//! serve, starting at a given broker so leaders spread across topics, with the replicas of a
//! partition on distinct brokers and, when brokers have racks, on distinct racks first. Pure.

use crate::error::KafkaError;

/// A broker that may take replicas: its id and rack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// Replica lists for `partitions` partitions with `replication_factor` replicas each, the
/// leader first. `start` picks the first partition's leader (the caller randomises it).
pub fn assign(
    partitions: i32,
    replication_factor: i16,
    brokers: &[Candidate],
    start: usize,
) -> Result<Vec<Vec<i32>>, KafkaError> {
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf == 0 {
        return Err(KafkaError::InvalidReplicationFactor(format!(
            "replication factor must be at least 1, got {replication_factor}"
        )));
    }
    if rf > brokers.len() {
        return Err(KafkaError::InvalidReplicationFactor(format!(
            "Replication factor: {rf} larger than available brokers: {}.",
            brokers.len()
        )));
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    // With racks, interleave the brokers rack by rack so that consecutive brokers (a
    // partition's replicas) sit on different racks (Kafka's rack-alternated list).
    let ordered = if sorted.iter().any(|b| b.rack.is_some()) {
        rack_alternated(&sorted)
    } else {
        sorted
    };
    let n = ordered.len();
    let mut out = Vec::with_capacity(usize::try_from(partitions).unwrap_or(0));
    for p in 0..usize::try_from(partitions).unwrap_or(0) {
        let first = (start + p) % n;
        // Followers step by a shift that changes every n partitions, as Kafka does, so the
        // followers of one broker's leaders are spread too.
        let shift = 1 + (p / n) % n.max(2).saturating_sub(1);
        let mut chosen = vec![first];
        let mut k = first;
        while chosen.len() < rf {
            k = (k + shift) % n;
            // From k on, the first broker not chosen yet, on a rack not used yet while
            // there is one.
            let racks_left = ordered.iter().enumerate().any(|(i, b)| {
                !chosen.contains(&i) && !chosen.iter().any(|&c| ordered[c].rack == b.rack)
            });
            let pick = (0..n).map(|d| (k + d) % n).find(|&i| {
                !chosen.contains(&i)
                    && (!racks_left || !chosen.iter().any(|&c| ordered[c].rack == ordered[i].rack))
            });
            match pick {
                Some(i) => {
                    chosen.push(i);
                    k = i;
                }
                None => break,
            }
        }
        out.push(chosen.into_iter().map(|i| ordered[i].id).collect());
    }
    Ok(out)
}

fn rack_alternated(brokers: &[Candidate]) -> Vec<Candidate> {
    let mut racks: std::collections::BTreeMap<String, Vec<Candidate>> = Default::default();
    for b in brokers {
        racks
            .entry(b.rack.clone().unwrap_or_default())
            .or_default()
            .push(b.clone());
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut i = 0;
    while out.len() < brokers.len() {
        for list in racks.values() {
            if let Some(b) = list.get(i) {
                out.push(b.clone());
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(n: i32) -> Vec<Candidate> {
        (1..=n).map(|id| Candidate { id, rack: None }).collect()
    }

    #[test]
    fn leaders_spread_and_replicas_distinct() {
        let a = assign(12, 1, &brokers(3), 0).unwrap();
        let mut per = [0; 4];
        for r in &a {
            per[r[0] as usize] += 1;
        }
        assert_eq!(&per[1..], &[4, 4, 4]);
        for r in assign(30, 3, &brokers(5), 2).unwrap() {
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "{r:?}");
        }
    }

    #[test]
    fn too_few_brokers_is_an_error() {
        let e = assign(1, 4, &brokers(3), 0).unwrap_err();
        assert_eq!(e.code(), 38);
        assert_eq!(assign(1, 0, &brokers(3), 0).unwrap_err().code(), 38);
    }

    #[test]
    fn racks_alternate() {
        let b = vec![
            Candidate {
                id: 1,
                rack: Some("a".into()),
            },
            Candidate {
                id: 2,
                rack: Some("a".into()),
            },
            Candidate {
                id: 3,
                rack: Some("b".into()),
            },
            Candidate {
                id: 4,
                rack: Some("b".into()),
            },
        ];
        for r in assign(8, 2, &b, 0).unwrap() {
            let racks: Vec<_> = r
                .iter()
                .map(|id| if *id <= 2 { "a" } else { "b" })
                .collect();
            assert_ne!(racks[0], racks[1], "{r:?}");
        }
    }
}
