//! Connections shared by sources and sinks. For now: the TLS settings of PostgreSQL
//! connections ([`pg_tls`]), which the source, the restore target and the drill's scratch
//! server all use the same way.

pub mod pg_tls;
