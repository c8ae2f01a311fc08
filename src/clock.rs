//! The wall clock, in the unit Kafka speaks (milliseconds since the Unix epoch). Its own small
//! module so that pure state machines (`group/`) and the data layer (`shard/`) can share it
//! without either reaching into the other; state machines take the time as an argument and
//! only their async shells read it.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
