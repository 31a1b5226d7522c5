//! Lifeboat's library: everything but argument parsing.
//!
//! The modules follow the data as it flows (docs/ARCHITECTURE.md):
//! - [`config`]: file + env + flags -> validated [`config::Job`] values;
//! - [`engine_kind`]: the engine kinds (a leaf); [`engine`]: the one place that dispatches
//!   on them; [`text`]: durations, counts and sizes as text;
//! - [`source`]: `trait Source`, one module per engine (PostgreSQL via `pg_dump`, Redis via the
//!   replication stream, files as a PAX tar);
//! - [`client`]: connections shared by sources and sinks (PostgreSQL, Redis' RESP);
//!   [`child`]: child processes read or fed as streams; [`net`]: connect and idle timeouts;
//! - [`pipeline`]: the write path ([`pipeline::WritePipeline`]: hash, compress, hash) and the
//!   read path's stages; [`readback`]: a snapshot read back through them
//!   ([`readback::read_snapshot`]: the inverse, both digests checked against the manifest);
//! - [`store`]: where bytes live ([`store::Store`]: a directory, S3-compatible buckets);
//! - [`catalog`]: the repository layout (every key), snapshot ids, manifests, listing, selection;
//! - [`retention`]: policies, a pure function from snapshots to keep/forget with reasons;
//! - [`sink`]: `trait Sink`, one module per engine: plan, apply (undoable until the digests
//!   match), check, drill;
//! - [`verify`]: stored, content and drill checks, freshness; [`report`]: what runs report,
//!   rendered for people (`report::human`) or serialized for machines.
//!
//! A run of a backup job ([`job::run`]) takes the job's lock, backs up, prunes only after a
//! committed snapshot and releases the lock. The operations wire the stages together in order:
//! [`backup::backup`], [`prune::prune`], [`restore::plan`] then [`restore::apply`], and
//! [`verify::verify`]; none of them names an engine. Nothing here reads the environment on its
//! own (callers pass a variable lookup in), and the operations take the time from their
//! callers; the lock and the deployment files read the clock themselves (a lease is timed by
//! the store's clock, measured against this host's).

// Every public item says what it is: the library is the product the binaries only wrap.
#![deny(missing_docs)]

pub mod backup;
pub mod catalog;
pub mod child;
pub mod client;
pub mod config;
pub mod copy;
pub mod deploy;
pub mod engine;
pub mod engine_kind;
pub mod error;
pub mod job;
pub mod lock;
pub mod net;
pub mod pipeline;
pub mod prune;
pub mod readback;
pub mod report;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod sink;
pub mod source;
pub mod store;
pub mod text;
pub mod tree;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
