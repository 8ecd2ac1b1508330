//! Streaming UTF-8 decoding: asciicast events are JSON strings, but ttyd
//! output frames cut the byte stream anywhere, including inside a
//! multi-byte character. Up to three trailing bytes of an incomplete
//! character are carried to the next chunk; invalid bytes become U+FFFD,
//! as a terminal would show them.

#[derive(Debug, Default)]
pub struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// Decode `bytes` (after what was carried); an incomplete character at
    /// the end waits for the next call.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let owned;
        let mut input: &[u8] = if self.carry.is_empty() {
            bytes
        } else {
            self.carry.extend_from_slice(bytes);
            owned = std::mem::take(&mut self.carry);
            &owned
        };
        let mut out = String::with_capacity(input.len());
        loop {
            match std::str::from_utf8(input) {
                Ok(s) => {
                    out.push_str(s);
                    return out;
                }
                Err(e) => {
                    let (good, rest) = input.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).expect("validated"));
                    match e.error_len() {
                        // Incomplete character at the end: keep it.
                        None => {
                            self.carry = rest.to_vec();
                            return out;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            input = &rest[n..];
                        }
                    }
                }
            }
        }
    }

    /// The stream ended: an incomplete character is shown as U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.carry.is_empty() {
            String::new()
        } else {
            self.carry.clear();
            "\u{FFFD}".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_at_every_byte_survive() {
        let text = "héllo → 世界 🎉 done";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut d = Utf8Stream::default();
            let mut got = d.decode(&bytes[..cut]);
            got.push_str(&d.decode(&bytes[cut..]));
            got.push_str(&d.finish());
            assert_eq!(got, text, "cut at {cut}");
        }
        // One byte at a time.
        let mut d = Utf8Stream::default();
        let got: String = bytes.iter().map(|b| d.decode(&[*b])).collect();
        assert_eq!(got, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.decode(b"a\xffb\xc3"), "a\u{FFFD}b");
        assert_eq!(d.decode(b"("), "\u{FFFD}(");
        assert_eq!(d.decode(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
