//! Secret redaction over a stream of timed text pieces, before anything is
//! written. Patterns are regular expressions (one combined regex, one pass);
//! each match is replaced by [`MARKER`]. A secret may arrive split across
//! frames, so the last [`WINDOW`] bytes are held back until more text comes
//! (or the stream ends), and a match that reaches the end of the held text
//! is held whole, because it may still grow. Held text keeps the time it
//! arrived at: redaction delays writing, never the recorded timing.
//!
//! A scan costs the length of the held text, so text is scanned and
//! released once another [`WINDOW`] bytes have come (or the oldest held
//! text is [`HOLD_TIME`] old), not on every frame: a keystroke's echo is
//! one byte, and scanning the whole window for each cost ~10 000
//! instructions per echoed keystroke.

use regex::Regex;

/// What a secret is replaced with.
pub const MARKER: &str = "[REDACTED]";

/// Bytes held back at the end of the text seen so far: longer than any
/// prefix of a secret that does not match yet (e.g. `sk-ant-api03-` plus
/// fewer characters than the key pattern needs).
pub const WINDOW: usize = 256;

/// A match still open at the end of the text is held up to this many bytes
/// (a private-key block streams in several KB before its END line); beyond
/// it the text is written with the open match redacted to its end.
pub const MAX_HOLD: usize = 64 * 1024;

/// Held text older than this (recording time, relative to the newest
/// event of the session) is released even without more text: a secret is
/// expected to arrive within a second (a paste, an echo, a burst of output).
pub const HOLD_TIME: f64 = 1.0;

/// The default patterns (`[slotgate.recording] redact_defaults = true`).
pub const DEFAULT_PATTERNS: &[&str] = &[
    // Anthropic API and admin keys: sk-ant-api03-…, sk-ant-admin01-…
    r"sk-ant-[A-Za-z0-9_\-]{8,}",
    // Other sk- keys (OpenAI-style, sk-proj-…).
    r"\bsk-[A-Za-z0-9_\-]{20,}",
    // Bearer tokens (HTTP headers, curl command lines).
    r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
    // AWS access key ids.
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    // AWS secret access keys, recognised by their name (40 characters of
    // base64 alone would also match commit hashes).
    r#"(?i)(?:aws_?secret_?access_?key|secret_?access_?key|aws_?secret)["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}"#,
    // PEM private keys; an unfinished block is redacted to the end of the
    // text seen (and held while it grows).
    r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z ]*PRIVATE KEY-----|[\s\S]*\z)",
];

/// The compiled pattern set; shared by every session.
#[derive(Debug, Clone)]
pub struct Patterns {
    re: Option<Regex>,
}

impl Patterns {
    /// Compile `defaults` (when asked) plus `extra` into one regex. The
    /// error names the pattern that does not compile.
    pub fn new(defaults: bool, extra: &[String]) -> Result<Patterns, String> {
        let mut all: Vec<&str> = Vec::new();
        if defaults {
            all.extend(DEFAULT_PATTERNS);
        }
        for (i, p) in extra.iter().enumerate() {
            Regex::new(p).map_err(|e| format!("redact[{i}] {p:?} is not a valid regex: {e}"))?;
            all.push(p);
        }
        if all.is_empty() {
            return Ok(Patterns { re: None });
        }
        let combined = all
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        let re = regex::RegexBuilder::new(&combined)
            .size_limit(32 << 20)
            .build()
            .map_err(|e| format!("the redact patterns do not combine: {e}"))?;
        Ok(Patterns { re: Some(re) })
    }

    /// Redact a whole string at once (no streaming).
    #[cfg(test)]
    pub fn redact_all(&self, text: &str) -> String {
        match &self.re {
            None => text.to_string(),
            Some(re) => re.replace_all(text, MARKER).into_owned(),
        }
    }
}

/// One direction of one session: pieces of text with their times, redacted
/// as they leave.
#[derive(Debug)]
pub struct Redactor {
    patterns: Patterns,
    /// Text not yet released, and where each piece starts and its time.
    text: String,
    pieces: Vec<(usize, f64)>,
    /// Secrets replaced so far.
    pub redactions: u64,
}

impl Redactor {
    pub fn new(patterns: Patterns) -> Redactor {
        Redactor {
            patterns,
            text: String::new(),
            pieces: Vec::new(),
            redactions: 0,
        }
    }

    /// Add text that arrived at `t`; append what may be written now (time,
    /// text) to `out`.
    pub fn push(&mut self, t: f64, s: &str, out: &mut Vec<(f64, String)>) {
        if !s.is_empty() {
            self.pieces.push((self.text.len(), t));
            self.text.push_str(s);
        }
        if self.text.len() >= 2 * WINDOW || self.held_too_long(t) {
            self.release(false, t, out);
        }
    }

    /// Time moved on to `now` (another event of the session): release text
    /// held longer than [`HOLD_TIME`].
    pub fn tick(&mut self, now: f64, out: &mut Vec<(f64, String)>) {
        if self.held_too_long(now) {
            self.release(false, now, out);
        }
    }

    /// Some text has been held longer than [`HOLD_TIME`] at `now`.
    fn held_too_long(&self, now: f64) -> bool {
        self.held_since().is_some_and(|t| t < now - HOLD_TIME)
    }

    /// Time of the oldest text still held.
    pub fn held_since(&self) -> Option<f64> {
        self.pieces.first().map(|p| p.1)
    }

    /// The stream ended: release everything.
    pub fn finish(&mut self, out: &mut Vec<(f64, String)>) {
        self.release(true, f64::INFINITY, out);
    }

    fn release(&mut self, all: bool, now: f64, out: &mut Vec<(f64, String)>) {
        let len = self.text.len();
        let matches: Vec<(usize, usize)> = match &self.patterns.re {
            None => Vec::new(),
            Some(re) => re
                .find_iter(&self.text)
                .map(|m| (m.start(), m.end()))
                .collect(),
        };
        let mut cut = if all {
            len
        } else {
            floor_char(&self.text, len.saturating_sub(WINDOW))
        };
        if !all {
            // A match that reaches past the cut, or touches the end, may
            // still change: hold it whole (up to MAX_HOLD).
            for &(s, e) in &matches {
                if (e > cut || e == len) && s < cut {
                    cut = s;
                }
            }
            if len - cut > MAX_HOLD {
                cut = len;
            }
            // Text older than HOLD_TIME goes, a match it ends inside with it.
            let old = self
                .pieces
                .iter()
                .find(|p| p.1 >= now - HOLD_TIME)
                .map_or(len, |p| p.0);
            if old > cut {
                cut = old;
                for &(s, e) in &matches {
                    if s < cut && e > cut {
                        cut = e;
                    }
                }
            }
        }
        if cut == 0 {
            return;
        }
        let mut emitted: Vec<(f64, String)> = Vec::new();
        let mut put = |t: f64, s: &str| {
            if s.is_empty() {
                return;
            }
            match emitted.last_mut() {
                Some((lt, ls)) if *lt == t => ls.push_str(s),
                _ => emitted.push((t, s.to_string())),
            }
        };
        let time_at = |pos: usize| -> f64 {
            let i = self.pieces.partition_point(|(start, _)| *start <= pos);
            self.pieces[i.saturating_sub(1)].1
        };
        let mut pos = 0;
        for &(s, e) in matches.iter().filter(|(s, _)| *s < cut) {
            // Plain text before the match, split at piece boundaries.
            self.plain(pos, s, &mut put);
            put(time_at(s), MARKER);
            self.redactions += 1;
            pos = e.max(pos);
        }
        let end = cut.max(pos);
        self.plain(pos, end.min(cut), &mut put);
        out.extend(emitted);
        // Drop the released text; keep the pieces that hold the rest.
        let keep_from = end.min(len);
        let t_rest = if keep_from < len {
            Some(time_at(keep_from))
        } else {
            None
        };
        self.text.drain(..keep_from);
        let mut pieces: Vec<(usize, f64)> = Vec::new();
        if let Some(t) = t_rest {
            pieces.push((0, t));
            for &(start, t) in &self.pieces {
                if start > keep_from {
                    pieces.push((start - keep_from, t));
                }
            }
        }
        self.pieces = pieces;
    }

    /// Text in `[from, to)` as pieces with their own times.
    fn plain(&self, from: usize, to: usize, put: &mut impl FnMut(f64, &str)) {
        if from >= to {
            return;
        }
        for (i, &(start, t)) in self.pieces.iter().enumerate() {
            let end = self.pieces.get(i + 1).map_or(self.text.len(), |p| p.0);
            let (a, b) = (start.max(from), end.min(to));
            if a < b {
                put(t, &self.text[a..b]);
            }
        }
    }
}

/// The largest char boundary at or below `i`.
fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Patterns {
        Patterns::new(true, &[]).unwrap()
    }

    /// Stream `parts` (one per time step) and join what comes out.
    fn stream(p: &Patterns, parts: &[&str]) -> (String, Vec<(f64, String)>) {
        let mut r = Redactor::new(p.clone());
        let mut out = vec![];
        for (i, s) in parts.iter().enumerate() {
            r.push(i as f64 * 0.001, s, &mut out);
        }
        r.finish(&mut out);
        (out.iter().map(|(_, s)| s.as_str()).collect(), out)
    }

    const KEY: &str =
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQrStUv-AAAAAA";

    #[test]
    fn default_patterns_catch_each_kind() {
        let p = defaults();
        let cases = [
            (format!("export ANTHROPIC_API_KEY={KEY}\n"), "export ANTHROPIC_API_KEY=[REDACTED]\n"),
            ("key sk-proj-abcdefghijklmnopqrstuvwxyz012345 ok".into(), "key [REDACTED] ok"),
            ("Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abc_def\r\n".into(), "Authorization: [REDACTED]\r\n"),
            ("AKIAIOSFODNN7EXAMPLE is the id".into(), "[REDACTED] is the id"),
            ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n".into(), "[REDACTED]\n"),
            (
                "a\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\nz".into(),
                "a\n[REDACTED]\nz",
            ),
            // Not secrets: a commit hash, a short sk- word, a task name.
            ("commit 3f786850e387550fdab836ed7e6dc881de23001b\n".into(), "commit 3f786850e387550fdab836ed7e6dc881de23001b\n"),
            ("sk-learn is a library; task-123".into(), "sk-learn is a library; task-123"),
        ];
        for (input, want) in cases {
            assert_eq!(p.redact_all(&input), want, "{input}");
            assert_eq!(stream(&p, &[&input]).0, want, "{input}");
        }
    }

    #[test]
    fn a_secret_split_across_pieces_is_redacted_at_every_split_point() {
        let p = defaults();
        let text = format!("$ echo {KEY}\r\n{KEY}\r\n$ ");
        let want = "$ echo [REDACTED]\r\n[REDACTED]\r\n$ ";
        for cut in 1..text.len() {
            let (got, _) = stream(&p, &[&text[..cut], &text[cut..]]);
            assert_eq!(got, want, "split at {cut}");
        }
        // Byte by byte (keystroke echo).
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(stream(&p, &parts).0, want);
    }

    #[test]
    fn a_private_key_block_longer_than_the_window_is_redacted_whole() {
        let p = defaults();
        let body: String = (0..40).map(|i| format!("{:064}\n", i)).collect();
        let text =
            format!("x\n-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\ny");
        let parts: Vec<&str> = text
            .as_bytes()
            .chunks(100)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(stream(&p, &parts).0, "x\n[REDACTED]\ny");
    }

    #[test]
    fn times_are_kept_and_text_is_released_in_order() {
        let p = defaults();
        let filler = "z".repeat(WINDOW + 10);
        let (got, out) = stream(&p, &["hello ", &filler, "bye"]);
        assert_eq!(got, format!("hello {filler}bye"));
        assert_eq!(out[0], (0.0, "hello ".to_string()));
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "{out:?}");
        // Nothing is held back beyond the window.
        let mut r = Redactor::new(p);
        let mut o = vec![];
        r.push(0.0, &"a".repeat(1000), &mut o);
        assert_eq!(o.iter().map(|x| x.1.len()).sum::<usize>(), 1000 - WINDOW);
    }

    #[test]
    fn extra_patterns_and_replacing_the_defaults() {
        let p = Patterns::new(false, &["hunter[0-9]".into()]).unwrap();
        assert_eq!(
            p.redact_all(&format!("hunter2 {KEY}")),
            format!("[REDACTED] {KEY}")
        );
        let err = Patterns::new(true, &["(".into()]).unwrap_err();
        assert!(err.contains("redact[0]"), "{err}");
    }

    #[test]
    fn small_pieces_are_scanned_in_steps_of_a_window_and_old_text_still_goes() {
        let p = defaults();
        let mut r = Redactor::new(p.clone());
        let mut out = vec![];
        // Keystroke echo: one byte at a time, well within a second.
        for i in 0..2 * WINDOW - 1 {
            r.push(i as f64 * 1e-4, "x", &mut out);
        }
        assert!(out.is_empty(), "released before a window's worth came");
        r.push(0.06, "x", &mut out);
        assert_eq!(out.iter().map(|x| x.1.len()).sum::<usize>(), WINDOW);
        assert_eq!(out[0].0, 0.0, "released text keeps its own time");

        // Held past HOLD_TIME: the next piece releases the old text.
        let mut r = Redactor::new(p);
        let mut out = vec![];
        r.push(0.0, "old ", &mut out);
        r.push(0.5, "newer ", &mut out);
        assert!(out.is_empty());
        r.push(1.2, "newest", &mut out);
        assert_eq!(out, vec![(0.0, "old ".to_string())]);
    }
}
