//! Dataset names: validated once, at the edge, so that no later stage can be handed a name
//! that escapes the data directory or collides with another by case.

use crate::EventError;

/// The longest dataset name accepted, in bytes.
pub const MAX_DATASET_NAME_LEN: usize = 128;

/// A validated, lowercased dataset name: 1–128 characters of `a-z 0-9 - _ .`, not starting
/// with `.` (so never `.` or `..`). Honeycomb treats dataset names case-insensitively; so do we.
/// Stored (in the catalog) as its text, and validated again when read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl TryFrom<String> for DatasetName {
    type Error = EventError;
    fn try_from(raw: String) -> Result<Self, EventError> {
        DatasetName::new(&raw)
    }
}

impl From<DatasetName> for String {
    fn from(name: DatasetName) -> String {
        name.0
    }
}

impl DatasetName {
    /// Validates and lowercases `raw`.
    pub fn new(raw: &str) -> Result<Self, EventError> {
        let bad = |reason| EventError::BadDataset {
            name: raw.chars().take(200).collect(),
            reason,
        };
        if raw.is_empty() {
            return Err(bad("must not be empty"));
        }
        if raw.len() > MAX_DATASET_NAME_LEN {
            return Err(bad("longer than 128 bytes (dataset names are 1 to 128 characters)"));
        }
        if raw.starts_with('.') {
            return Err(bad("must not start with '.'"));
        }
        if raw.contains('/') || raw.contains('\\') {
            return Err(bad("must not contain slashes"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad("may contain only letters, digits, '-', '_' and '.'"));
        }
        Ok(DatasetName(raw.to_ascii_lowercase()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases() {
        assert_eq!(
            DatasetName::new("My-Service.prod_1").unwrap().as_str(),
            "my-service.prod_1"
        );
    }

    #[test]
    fn refuses_escapes_and_junk() {
        for bad in ["", ".", "..", "../etc", "a/b", "a\\b", "a b", "ä", &"x".repeat(129)] {
            assert!(DatasetName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
