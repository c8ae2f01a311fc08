//! Errors of the admin CLI: Kafka error codes by their protocol names, with a hint on what to do.

use std::fmt;

use crate::error::ErrorCode;

/// The protocol name of an error code, as Kafka's documentation and tools print it
/// (`TOPIC_ALREADY_EXISTS`): the broker's one vocabulary names it.
pub fn error_name(code: i16) -> String {
    ErrorCode::from_code(code).name()
}

/// What to do about the common errors.
pub fn hint(code: i16) -> Option<&'static str> {
    Some(match code {
        1 => {
            "the offset is outside what the partition holds; `spate topic describe TOPIC` shows its offsets"
        }
        3 => "check the name with `spate topic list`",
        5 | 6 | 15 | 16 | 14 => "the cluster is moving leadership; try again in a moment",
        7 => "the broker did not finish in time; try again, or check the broker's log",
        10 => {
            "the message is larger than the topic's max.message.bytes (see `spate topic describe TOPIC`)"
        }
        17 => "topic names use letters, digits, '.', '_' and '-', at most 249 characters",
        22 | 25 | 27 => "the group has active members: stop the group's consumers first",
        24 => "the group id must not be empty",
        29..=31 => "the broker refused this principal: check its ACLs",
        35 => "the broker does not support a version of this request that spate speaks",
        36 => "pick another name, or change the existing topic with `spate topic alter`",
        37 => "the partition count must be at least 1",
        38 => "the replication factor must be at least 1 and at most the number of brokers",
        40 => {
            "check the config name and value; `spate topic describe TOPIC` lists the topic's configs"
        }
        41 => "the request needs the cluster's controller; try again in a moment",
        44 => "the broker's policy refused the request; check its topic policy",
        68 => "stop the group's consumers first",
        69 => "check the id with `spate group list`",
        _ => return None,
    })
}

/// An admin CLI failure: a Kafka error code with its context, or anything else.
#[derive(Debug, Clone)]
pub struct Error {
    /// The Kafka error code, when the broker answered one.
    pub code: Option<i16>,
    text: String,
    hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A Kafka error code from the broker, while doing `context` ("creating topic 'x'"), with
    /// the broker's own message when it sent one.
    pub fn kafka(context: impl fmt::Display, code: i16, message: Option<&str>) -> Error {
        let mut text = format!("{context}: {}", error_name(code));
        if let Some(m) = message.filter(|m| !m.is_empty()) {
            text.push_str(&format!(" ({m})"));
        }
        Error {
            code: Some(code),
            text,
            hint: hint(code).map(str::to_string),
        }
    }

    /// Any other failure.
    pub fn other(text: impl Into<String>) -> Error {
        Error {
            code: None,
            text: text.into(),
            hint: None,
        }
    }

    /// Replaces the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Whether a retry may succeed (leadership or coordinator moving, loading).
    pub fn is_retriable(&self) -> bool {
        self.code.map(ErrorCode::from_code).is_some_and(|c| {
            matches!(
                c,
                ErrorCode::LEADER_NOT_AVAILABLE
                    | ErrorCode::NOT_LEADER_OR_FOLLOWER
                    | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
                    | ErrorCode::COORDINATOR_NOT_AVAILABLE
                    | ErrorCode::NOT_COORDINATOR
            )
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Checks a Kafka error code: Ok for 0, else the error with its context.
pub fn check(code: i16, context: impl fmt::Display, message: Option<&str>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::kafka(context, code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kafkas() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(68), "NON_EMPTY_GROUP");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(12345), "UNKNOWN_ERROR_CODE_12345");
    }

    #[test]
    fn display_has_name_message_and_hint() {
        let e = Error::kafka("creating topic 'a'", 36, Some("Topic 'a' already exists."));
        let s = e.to_string();
        assert!(
            s.starts_with("creating topic 'a': TOPIC_ALREADY_EXISTS (Topic 'a' already exists.)")
        );
        assert!(s.contains("hint: pick another name"));
    }
}
