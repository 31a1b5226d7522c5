//! Connections shared by sources and sinks, so that neither imports the other: PostgreSQL
//! ([`postgres`], with its TLS settings in [`pg_tls`]), Redis' protocol ([`resp`]) and
//! MongoDB's driver ([`mongo`]). The
//! source, the restore target and the drill's scratch server all connect the same way.

pub mod mongo;
pub mod pg_tls;
pub mod postgres;
pub mod resp;
