//! Arbitrary bytes, fed in arbitrary chunks, must be read or refused with an error: never a
//! panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_mongo_archive::{ArchiveReader, Item};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    // Half the inputs get the magic number, so the fuzzer spends its time past it.
    let mut input = Vec::with_capacity(rest.len() + 4);
    if chunk % 2 == 0 {
        input.extend_from_slice(&lifeboat_mongo_archive::MAGIC.to_le_bytes());
    }
    input.extend_from_slice(rest);
    let mut reader = ArchiveReader::new();
    let mut documents = 0u64;
    for piece in input.chunks(chunk) {
        let fed = reader.feed(piece, &mut |item| {
            if let Item::Document { bytes, .. } = item {
                documents += bytes.len() as u64;
            }
        });
        if fed.is_err() {
            return;
        }
    }
    let _ = reader.finish();
});
