//! Untrusted text in logs: [`Untrusted`] writes a value from outside (an agent's version or a
//! runner name it reports, an owner or repository name from a webhook payload) as one bounded
//! line: control characters (newlines, ANSI escape sequences, …) and bidirectional overrides
//! are escaped, and the output stops after [`MAX_BYTES`], saying how much was left out.
//!
//! So a sender cannot forge log lines, recolour a terminal or fill the disk through our logs:
//! `warn!(runner = %Untrusted(&state.name), "…")`.

use std::fmt::{self, Write};

/// At most this many bytes of a value are written (escapes included), then a note of the rest.
pub const MAX_BYTES: usize = 200;

/// A string from outside, written escaped and bounded.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

/// Characters that could change how a line reads: controls (C0, DEL, C1), line and paragraph
/// separators, and the bidirectional embeddings, overrides and isolates.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        || c == '\\'
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = 0;
        for (i, c) in self.0.char_indices() {
            let escaped = needs_escape(c).then(|| c.escape_default().to_string());
            let len = escaped.as_ref().map_or(c.len_utf8(), String::len);
            if written + len > MAX_BYTES {
                return write!(f, "…[{} more bytes]", self.0.len() - i);
            }
            match &escaped {
                Some(e) => f.write_str(e)?,
                None => f.write_char(c)?,
            }
            written += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn plain_values_are_unchanged() {
        assert_eq!(
            Untrusted("gha-acme-r-1 2.330.0").to_string(),
            "gha-acme-r-1 2.330.0"
        );
        assert_eq!(Untrusted("café").to_string(), "café");
    }

    #[test]
    fn controls_are_escaped_and_length_is_bounded() {
        assert_eq!(
            Untrusted("v1\nERROR forged\r\x1b[31mred\u{202E}").to_string(),
            "v1\\nERROR forged\\r\\u{1b}[31mred\\u{202e}"
        );
        assert_eq!(
            Untrusted("a\\nb").to_string(),
            "a\\\\nb",
            "escapes stay unambiguous"
        );
        let huge = "x".repeat(1 << 20);
        let out = Untrusted(&huge).to_string();
        assert!(out.len() < MAX_BYTES + 32, "{}", out.len());
        assert!(out.ends_with(&format!("…[{} more bytes]", (1 << 20) - MAX_BYTES)));
        // Never cut inside an escape or a character.
        let out = Untrusted(&"é\n".repeat(500)).to_string();
        assert!(out.len() <= MAX_BYTES + 32 && !out.contains('\n'));
    }

    /// What tracing writes, for one event.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_hostile_value_logs_as_one_bounded_line() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let hostile = format!(
            "2.0\n2026-01-01 ERROR forged line\x1b[2J{}",
            "A".repeat(100_000)
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(version = %Untrusted(&hostile), "agent connected");
        });
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "one line: {out}");
        assert!(!out.contains('\x1b'), "{out}");
        assert!(out.len() < 512, "{} bytes", out.len());
        assert!(out.contains("more bytes]"), "{out}");
    }
}
