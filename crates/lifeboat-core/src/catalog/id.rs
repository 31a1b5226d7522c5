//! Snapshot ids: `YYYYMMDDTHHMMSSZ-xxxxxx`, the UTC start time and six random hex digits, so ids
//! sort by time and two runs started in the same second still differ.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// A snapshot's id: its start time (UTC, to the second) and a random suffix, e.g.
/// `20261203T020000Z-3fa9c1`; ids sort in time order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl SnapshotId {
    /// A new id for a snapshot started at `started_at`, with `random` as its unique suffix.
    pub fn new(started_at: DateTime<Utc>, random: [u8; 3]) -> Self {
        SnapshotId(format!(
            "{}-{}",
            started_at.format(TIME_FORMAT),
            hex::encode(random)
        ))
    }

    /// A new id with a random suffix from the operating system.
    pub fn generate(started_at: DateTime<Utc>) -> Self {
        let mut random = [0u8; 3];
        // The suffix only has to differ between runs started in the same second; should the OS
        // generator fail, the sub-second clock still gives that.
        if getrandom::fill(&mut random).is_err() {
            let nanos = started_at.timestamp_subsec_nanos().to_le_bytes();
            random.copy_from_slice(&nanos[..3]);
        }
        SnapshotId::new(started_at, random)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The start time encoded in the id.
    pub fn started_at(&self) -> DateTime<Utc> {
        // Validated on construction.
        NaiveDateTime::parse_from_str(&self.0[..16], TIME_FORMAT)
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }
}

impl FromStr for SnapshotId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{s:?} is not a snapshot id; ids look like 20261125T030000Z-a1b2c3 (see `lifeboat-restore list`)")
        };
        if s.len() != 23 || s.as_bytes()[16] != b'-' {
            return Err(bad());
        }
        NaiveDateTime::parse_from_str(&s[..16], TIME_FORMAT).map_err(|_| bad())?;
        if !s[17..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(SnapshotId(s.to_string()))
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let t1 = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let t2 = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap();
        let a = SnapshotId::new(t1, [0xff, 0xff, 0xff]);
        let b = SnapshotId::new(t2, [0, 0, 0]);
        assert_eq!(a.as_str(), "20260102T030405Z-ffffff");
        assert!(a < b);
        assert_eq!(a.as_str().parse::<SnapshotId>().unwrap(), a);
        assert_eq!(a.started_at(), t1);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "20260102T030405Z",
            "20260102T030405Z-ABCDEF",
            "2026010XT030405Z-abcdef",
            "../../etc/passwd",
        ] {
            assert!(bad.parse::<SnapshotId>().is_err(), "{bad}");
        }
    }
}
