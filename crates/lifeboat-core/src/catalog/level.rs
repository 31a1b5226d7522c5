//! How deep a verification goes: part of a verification record, which the catalog keeps, and
//! of the `[verify]` settings.

use serde::{Deserialize, Serialize};

/// How deep a verification goes; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The stored object's size and SHA-256 match the manifest.
    Stored,
    /// The data decompresses to the raw digest and its structure checks against the fingerprint.
    Content,
    /// A restore into a scratch target whose fingerprint matches the manifest's.
    Drill,
}

impl Level {
    /// The name the flags use: `stored`, `content`, `drill`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Stored => "stored",
            Level::Content => "content",
            Level::Drill => "drill",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stored" => Ok(Level::Stored),
            "content" => Ok(Level::Content),
            "drill" => Ok(Level::Drill),
            _ => Err(format!(
                "unknown level {s:?}; expected stored, content or drill"
            )),
        }
    }
}
