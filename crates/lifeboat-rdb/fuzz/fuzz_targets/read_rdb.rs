//! Arbitrary bytes, fed in arbitrary chunks, must be read or refused with an error: never a
//! panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_rdb::{Item, RdbReader};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    // Half the inputs get a valid header, so the fuzzer spends its time past it.
    let mut input = Vec::with_capacity(rest.len() + 9);
    if chunk % 2 == 0 {
        input.extend_from_slice(b"REDIS0011");
    }
    input.extend_from_slice(rest);
    for reader in [RdbReader::new(), RdbReader::counting()] {
        let mut reader = reader;
        let mut ok = true;
        for piece in input.chunks(chunk) {
            if reader
                .feed(piece, &mut |item| {
                    if let Item::Key(k) = item {
                        let _ = k.dump_payload(11);
                    }
                })
                .is_err()
            {
                ok = false;
                break;
            }
        }
        if ok {
            let _ = reader.finish(&mut |_| {});
        }
    }
});
