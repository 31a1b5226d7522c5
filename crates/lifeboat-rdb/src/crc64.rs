//! CRC-64/Jones as Redis uses it (reflected, polynomial 0xad93d23594c935a9, init 0): the
//! checksum of RDB files and of DUMP payloads. The `crc` crate's CRC_64_REDIS is that algorithm.

use crc::{Crc, Digest, Table, CRC_64_REDIS};

/// Slice-by-16 tables: the checksum runs over every byte of every snapshot, and the
/// byte-at-a-time table was the most expensive step of a capture.
type Fast = Table<16>;

static REDIS: Crc<u64, Fast> = Crc::<u64, Fast>::new(&CRC_64_REDIS);

/// The CRC64 of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    REDIS.checksum(bytes)
}

/// An incremental CRC64, for a stream that arrives in pieces.
#[derive(Clone)]
pub struct Crc64(Digest<'static, u64, Fast>);

impl Default for Crc64 {
    fn default() -> Self {
        Crc64(REDIS.digest())
    }
}

impl Crc64 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn value(&self) -> u64 {
        self.0.clone().finalize()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc64({:016x})", self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_check_value() {
        // The check value from Redis' crc64.c test.
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut c = Crc64::default();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xe9c6_d914_c4b8_d9ca);
    }
}
