//! Errors as text for people: an error and its causes.

/// The full message of an error and its sources, `a: b: c`; a cause whose text the message
/// already holds (a wrapper that prints its source) is not repeated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_message_once() {
        let io = || std::io::Error::other("disk full");
        assert_eq!(super::chain(&Outer(io())), "outer: disk full");
        assert_eq!(super::chain(&Repeats(io())), "wrapped: disk full");
    }
}
