//! The engine kinds: a leaf that configuration, manifests and detection all name, importing
//! nothing of Lifeboat's. What each engine does is dispatched in `engine.rs`, above the sources
//! and sinks.

use serde::{Deserialize, Serialize};

/// An engine: what a job backs up, and what a snapshot's `engine` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The default of a job spec built in code (a configuration always names its engine).
    #[default]
    Postgres,
    /// Redis, as an RDB file: taken over the replication stream, or built from SCAN.
    Redis,
    /// Directory trees, as a POSIX (PAX) tar.
    Files,
    /// MongoDB, as a mongodump archive with the oplog of the dump's duration.
    #[serde(rename = "mongodb")]
    Mongo,
}

impl Engine {
    /// Every engine, in the order help text lists them.
    pub const ALL: [Engine; 4] = [
        Engine::Postgres,
        Engine::Mongo,
        Engine::Redis,
        Engine::Files,
    ];

    /// The name in configurations, manifests and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Redis => "redis",
            Engine::Files => "files",
            Engine::Mongo => "mongodb",
        }
    }

    /// Where a whole-system restore puts this engine's jobs: databases first, then files, so
    /// that the rows which name uploads are back before the uploads are.
    pub fn restore_order(self) -> u8 {
        match self {
            Engine::Postgres | Engine::Mongo => 0,
            Engine::Redis => 1,
            Engine::Files => 2,
        }
    }

    /// The engine whose dump starts with these (decompressed) bytes: an RDB file, a pg_dump
    /// custom archive or plain SQL dump (its header comment), a mongodump archive (its magic
    /// number), or a tar archive. Other SQL has
    /// no signature (`--engine postgres`, or a postgres:// target, see [`Engine::for_target`]).
    pub fn detect(head: &[u8]) -> Option<Engine> {
        if head.starts_with(b"REDIS") {
            Some(Engine::Redis)
        } else if head.starts_with(b"PGDMP") || head.starts_with(b"--\n-- PostgreSQL database dump")
        {
            Some(Engine::Postgres)
        } else if head.starts_with(&lifeboat_mongo_archive::MAGIC.to_le_bytes()) {
            Some(Engine::Mongo)
        } else if head.len() >= 263 && &head[257..262] == b"ustar" {
            Some(Engine::Files)
        } else {
            None
        }
    }
}

impl Engine {
    /// The engine whose servers a restore target's URL names (`postgres://`, `redis://`...):
    /// what a dump made elsewhere without a signature must be when restored there.
    pub fn for_target(to: &str) -> Option<Engine> {
        let scheme = to.split_once("://")?.0;
        match scheme {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "redis" | "rediss" => Some(Engine::Redis),
            "mongodb" | "mongodb+srv" => Some(Engine::Mongo),
            _ => None,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown engine {s:?}; expected postgres, mongodb, redis or files")
            })
    }
}
