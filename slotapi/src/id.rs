//! Validated identifiers. A slot id ends up in a file name
//! (`<run>/slots/<id>.sock`), a tmux session name, a cgroup name and a URL
//! path segment, so the charset is deliberately small.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest slot id or user name. Keeps `<run>/slots/<id>.sock` well inside
/// the 108-byte limit of a unix socket path.
pub const MAX_ID_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {MAX_ID_LEN} characters")]
    TooLong { kind: &'static str, value: String },
    #[error("{kind} {value:?} must start with a lowercase letter or digit")]
    BadStart { kind: &'static str, value: String },
    #[error("{kind} {value:?} contains {ch:?}; allowed are a-z, 0-9, '-' and '_'")]
    BadChar {
        kind: &'static str,
        value: String,
        ch: char,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: value.chars().take(64).collect(),
        });
    }
    let first = value.chars().next().unwrap_or('-');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(IdError::BadStart {
            kind,
            value: value.to_string(),
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(IdError::BadChar {
            kind,
            value: value.to_string(),
            ch,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($name:ident, $kind:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(SlotId, "slot id");
id_type!(UserName, "user name");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for ok in ["alice", "a", "team-1", "x_y", "0abc", &"a".repeat(32)] {
            assert!(SlotId::new(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn refuses_path_tricks_and_odd_characters() {
        let cases = [
            ("", "empty"),
            ("..", "must start"),
            ("a/b", "contains '/'"),
            ("a.b", "contains '.'"),
            ("Alice", "must start"),
            ("aB", "contains 'B'"),
            ("-a", "must start"),
            ("a%2e", "contains '%'"),
            ("a\\b", "contains '\\\\'"),
            ("a b", "contains ' '"),
        ];
        for (bad, want) in cases {
            let err = SlotId::new(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err} should mention {want}");
        }
        let long = "a".repeat(33);
        assert!(matches!(SlotId::new(long), Err(IdError::TooLong { .. })));
    }

    #[test]
    fn deserialising_validates() {
        let r: Result<SlotId, _> = serde_json::from_str("\"../etc\"");
        assert!(r.is_err());
        let r: SlotId = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(r.as_str(), "bob");
    }
}
