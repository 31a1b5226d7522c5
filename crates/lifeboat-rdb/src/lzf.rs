//! LZF decompression (liblzf's format), for RDB strings Redis stored compressed. Only keys,
//! aux fields and function code are decompressed; values pass through as stored.

/// Decompresses `input` into exactly `expected` bytes; `None` if the data is malformed.
pub fn decompress(input: &[u8], expected: usize) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(expected);
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            // A literal run of ctrl + 1 bytes.
            let run = ctrl + 1;
            let lit = input.get(i..i + run)?;
            if out.len() + run > expected {
                return None;
            }
            out.extend_from_slice(lit);
            i += run;
        } else {
            // A back reference: length in the top 3 bits (7 = one more length byte).
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i)? as usize;
                i += 1;
            }
            len += 2;
            let low = *input.get(i)? as usize;
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            if back > out.len() || out.len() + len > expected {
                return None;
            }
            let start = out.len() - back;
            // Byte by byte: the reference may overlap what it produces.
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    (out.len() == expected).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_references() {
        // "abcabcabcabc": literal "abc", then a reference 3 back of length 9.
        let data = [2, b'a', b'b', b'c', (7 << 5), 0, 2];
        // len field 7 + extra 0 + 2 = 9, back = 2 + 1 = 3
        assert_eq!(decompress(&data, 12).unwrap(), b"abcabcabcabc");
        assert_eq!(decompress(&data, 11), None);
        assert_eq!(decompress(&[5, b'a'], 6), None);
        assert_eq!(decompress(&[0x20, 9], 2), None);
    }
}
