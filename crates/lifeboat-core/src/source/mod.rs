//! Engines that produce a dump stream. Each starts a dump and hands back its raw byte stream,
//! plus what the manifest needs (versions, consistency instant, fingerprint).

pub mod child;
pub mod postgres;
pub mod redis;

pub use child::ChildProcess;
