//! The typed records of `__transaction_state`: one per change of a transactional id's state.
//!
//! Key: version (i16, 0), transactional id (i16 length, UTF-8). Value: version (i16, 0),
//! producer id (i64), producer epoch (i16), last producer epoch (i16), timeout ms (i32), state
//! (i8, Kafka's ids), partitions (i32 count of: topic as i16 length and UTF-8, partition i32),
//! transaction start ms (i64), last update ms (i64); all big-endian. A null value is a
//! tombstone (the id is forgotten). The layout is close to Kafka's TransactionLogValue v0 but
//! is Spate's own (it keeps the last epoch, which Kafka adds as a tagged field): no Kafka tool
//! reads this log.

use std::collections::BTreeSet;
use std::io;

use super::state::{TxnMeta, TxnState};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    let len =
        i16::try_from(s.len()).map_err(|_| invalid(format!("string of {} bytes", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// One change of a transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    /// None: a tombstone.
    pub value: Option<TxnMeta>,
}

impl TxnRecord {
    pub fn key(&self) -> io::Result<Vec<u8>> {
        let mut k = KEY_VERSION.to_be_bytes().to_vec();
        put_str(&mut k, &self.transactional_id)?;
        Ok(k)
    }

    pub fn value(&self) -> io::Result<Option<Vec<u8>>> {
        let Some(m) = &self.value else {
            return Ok(None);
        };
        let mut v = VALUE_VERSION.to_be_bytes().to_vec();
        v.extend_from_slice(&m.producer_id.to_be_bytes());
        v.extend_from_slice(&m.producer_epoch.to_be_bytes());
        v.extend_from_slice(&m.last_producer_epoch.to_be_bytes());
        v.extend_from_slice(&m.timeout_ms.to_be_bytes());
        v.push(m.state as i8 as u8);
        v.extend_from_slice(&(m.partitions.len() as i32).to_be_bytes());
        for (t, p) in &m.partitions {
            put_str(&mut v, t)?;
            v.extend_from_slice(&p.to_be_bytes());
        }
        v.extend_from_slice(&m.start_ms.to_be_bytes());
        v.extend_from_slice(&m.update_ms.to_be_bytes());
        Ok(Some(v))
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> io::Result<TxnRecord> {
        let mut k = Reader(key);
        let version = k.i16()?;
        if version != KEY_VERSION {
            return Err(invalid(format!(
                "unknown transaction log key version {version}"
            )));
        }
        let transactional_id = k.str()?;
        let Some(value) = value else {
            return Ok(TxnRecord {
                transactional_id,
                value: None,
            });
        };
        let mut r = Reader(value);
        let version = r.i16()?;
        if version != VALUE_VERSION {
            return Err(invalid(format!(
                "unknown transaction log value version {version} ({transactional_id})"
            )));
        }
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let last_producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let state_id = r.take(1)?[0] as i8;
        let state = TxnState::from_id(state_id)
            .ok_or_else(|| invalid(format!("unknown transaction state {state_id}")))?;
        let n = r.i32()?;
        let mut partitions = BTreeSet::new();
        for _ in 0..n.max(0) {
            let t = r.str()?;
            partitions.insert((t, r.i32()?));
        }
        let start_ms = r.i64()?;
        let update_ms = r.i64()?;
        Ok(TxnRecord {
            transactional_id,
            value: Some(TxnMeta {
                producer_id,
                producer_epoch,
                last_producer_epoch,
                timeout_ms,
                state,
                partitions,
                start_ms,
                update_ms,
            }),
        })
    }
}

/// A cursor over a key or value; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(invalid(format!(
                "record field of {n} bytes but {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> io::Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> io::Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> io::Result<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(a))
    }

    fn str(&mut self) -> io::Result<String> {
        let len = self.i16()?;
        if len < 0 {
            return Err(invalid("null where a string is required".into()));
        }
        String::from_utf8(self.take(len as usize)?.to_vec())
            .map_err(|_| invalid("a string is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let rec = TxnRecord {
            transactional_id: "tx-1".into(),
            value: Some(TxnMeta {
                producer_id: 42,
                producer_epoch: 3,
                last_producer_epoch: 2,
                timeout_ms: 60_000,
                state: TxnState::PrepareCommit,
                partitions: [("a".to_string(), 0), ("b".to_string(), 7)].into(),
                start_ms: 5,
                update_ms: 9,
            }),
        };
        let k = rec.key().unwrap();
        let v = rec.value().unwrap().unwrap();
        assert_eq!(TxnRecord::decode(&k, Some(&v)).unwrap(), rec);
        assert!(TxnRecord::decode(&k, Some(&v[..v.len() - 1])).is_err());
        let tomb = TxnRecord::decode(&k, None).unwrap();
        assert_eq!(tomb.value, None);
        let mut bad = v.clone();
        bad[0..2].copy_from_slice(&9i16.to_be_bytes());
        assert!(TxnRecord::decode(&k, Some(&bad)).is_err());
    }
}
