//! Connections shared by sources and sinks, so that neither imports the other: PostgreSQL
//! ([`postgres`], with its TLS settings in [`pg_tls`]) and Redis' protocol ([`resp`]). The
//! source, the restore target and the drill's scratch server all connect the same way.

pub mod pg_tls;
pub mod postgres;
pub mod resp;
