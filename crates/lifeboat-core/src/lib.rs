//! Lifeboat's library: everything but argument parsing.
//!
//! The modules follow the data as it flows (DESIGN.md):
//! - [`config`]: file + env + flags -> validated [`config::Job`] values;
//! - [`net`]: connect and idle-read timeouts of every connection;
//! - [`source`]: engines that produce a dump stream (PostgreSQL via `pg_dump`);
//! - [`pipeline`]: hash, compress and their inverses over byte streams, and the read path;
//! - [`store`]: where bytes live ([`store::Store`]; a local directory);
//! - [`catalog`]: snapshot ids, manifests, listing and selection;
//! - [`sink`]: engines that consume a dump stream on restore;
//! - [`verify`]: stored, content and drill checks, freshness.
//!
//! A run of a backup job ([`job::run`]) takes the job's lock, backs up, prunes only after a
//! committed snapshot and releases the lock. The operations wire the stages together in order:
//! [`backup::backup`],
//! [`restore::plan`] then [`restore::apply`], and [`verify::verify`]. Nothing here reads the
//! clock or the environment: callers pass the time and a variable lookup in.

pub mod backup;
pub mod catalog;
pub mod child;
pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod job;
pub mod lock;
pub mod net;
pub mod pipeline;
pub mod prune;
pub mod report;
pub mod restore;
pub mod retention;
pub mod secret;
pub mod sink;
pub mod source;
pub mod store;
pub mod tree;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
