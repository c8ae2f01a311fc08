//! Log levels changed at run time, as Kafka's BROKER_LOGGER resource changes them
//! (IncrementalAlterConfigs and DescribeConfigs with resource type 8, name = the broker id):
//! `root` is the level of everything, and each other logger is a module path of the broker
//! (`spate::shard`, `spate::storage::log`, ...) with a level of its own. Like Kafka's, these
//! levels live in the process only: a restart goes back to `RUST_LOG` (or `info`).
//!
//! The binary installs the two functions that read and replace the process's log filter
//! ([`install`]); they are the filter's own reload handle (`tracing-subscriber`), which every
//! shard may call: changing a level is an admin request, not the data path.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Replaces the filter with these directives (`EnvFilter` syntax).
type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
/// The filter's directives now.
type Current = Box<dyn Fn() -> Option<String> + Send + Sync>;

static FILTER: OnceLock<(Reload, Current)> = OnceLock::new();

/// Installs the process's filter handle (once, at start-up).
pub fn install(reload: Reload, current: Current) {
    let _ = FILTER.set((reload, current));
}

/// The loggers a broker names even when they have no level of their own.
pub const MODULES: &[&str] = &[
    "spate::cluster",
    "spate::group",
    "spate::server",
    "spate::shard",
    "spate::storage",
    "spate::txn",
];

/// A Kafka (log4j) level as a filter level; None when it is not one.
pub fn level_of(kafka: &str) -> Option<&'static str> {
    Some(match kafka.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        "OFF" => "off",
        _ => return None,
    })
}

/// Whether `name` can be a logger: `root`, or a module path.
pub fn valid_logger(name: &str) -> bool {
    name == "root"
        || (!name.is_empty()
            && name.split("::").all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !p.starts_with(|c: char| c.is_ascii_digit())
            }))
}

/// Directives (`EnvFilter` text) as (root level, logger -> level); a directive that is not
/// `target=level` or a bare level (span and field filters) is kept whole under its text.
pub fn parse(directives: &str) -> (String, BTreeMap<String, String>) {
    let mut root = "info".to_string();
    let mut loggers = BTreeMap::new();
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        match d.split_once('=') {
            Some((target, level)) if valid_logger(target) => {
                loggers.insert(target.to_string(), level.to_ascii_lowercase());
            }
            None if level_of(d).is_some() => root = d.to_ascii_lowercase(),
            _ => {
                loggers.insert(d.to_string(), String::new());
            }
        }
    }
    (root, loggers)
}

/// The inverse of [`parse`].
pub fn render(root: &str, loggers: &BTreeMap<String, String>) -> String {
    let mut out = vec![root.to_string()];
    for (t, l) in loggers {
        out.push(if l.is_empty() {
            t.clone()
        } else {
            format!("{t}={l}")
        });
    }
    out.join(",")
}

/// Every logger and its level (upper case, as Kafka shows them): `root`, the broker's modules
/// and every logger with a level of its own.
pub fn list() -> Vec<(String, String)> {
    let directives = FILTER.get().and_then(|(_, current)| current());
    let (root, loggers) = parse(directives.as_deref().unwrap_or("info"));
    let mut out: BTreeMap<String, String> = MODULES
        .iter()
        .map(|m| (m.to_string(), root.to_ascii_uppercase()))
        .collect();
    for (t, l) in &loggers {
        if !l.is_empty() {
            out.insert(t.clone(), l.to_ascii_uppercase());
        }
    }
    out.insert("root".into(), root.to_ascii_uppercase());
    out.into_iter().collect()
}

/// Applies changes: (logger, Some(Kafka level)) sets a level, (logger, None) removes the
/// logger's own level (it follows `root` again). All or nothing: the first invalid change is
/// the error and nothing changes.
pub fn change(changes: &[(String, Option<String>)]) -> Result<(), String> {
    let (reload, current) = FILTER
        .get()
        .ok_or_else(|| "log levels cannot be changed in this process".to_string())?;
    let (mut root, mut loggers) = parse(current().as_deref().unwrap_or("info"));
    for (logger, level) in changes {
        if !valid_logger(logger) {
            return Err(format!(
                "'{logger}' is not a logger: root or a module path such as spate::shard"
            ));
        }
        match level {
            Some(l) => {
                let level = level_of(l).ok_or_else(|| {
                    format!(
                        "'{l}' is not a log level of logger {logger}: TRACE, DEBUG, INFO, WARN, \
                         ERROR, FATAL or OFF"
                    )
                })?;
                if logger == "root" {
                    root = level.to_string();
                } else {
                    loggers.insert(logger.clone(), level.to_string());
                }
            }
            None if logger == "root" => {
                return Err("the root logger's level cannot be removed, only set".into());
            }
            None => {
                loggers.remove(logger);
            }
        }
    }
    let directives = render(&root, &loggers);
    reload(&directives)?;
    tracing::info!(levels = %directives, "log levels changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_round_trip() {
        let (root, l) = parse("warn,spate::shard=debug,h2[span]=trace");
        assert_eq!(root, "warn");
        assert_eq!(l.get("spate::shard").map(String::as_str), Some("debug"));
        assert!(l.contains_key("h2[span]=trace"));
        assert_eq!(parse(&render(&root, &l)), (root, l));
        assert_eq!(level_of("fatal"), Some("error"));
        assert_eq!(level_of("LOUD"), None);
        assert!(valid_logger("spate::storage::log") && valid_logger("root"));
        assert!(!valid_logger("a b") && !valid_logger("x::") && !valid_logger(""));
    }
}
