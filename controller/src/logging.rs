//! How the controller's log lines look: `LOG_FORMAT=json` (one JSON object per line, with the
//! structured fields such as job, runner, agent, owner and delivery ids) or `pretty` (text for
//! people). Default: `pretty` on a terminal, `json` otherwise (a journal, a file, `docker logs`).

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `LOG_FORMAT`'s value (unset or empty: the default for `terminal`).
pub fn parse(value: Option<&str>, terminal: bool) -> Result<LogFormat, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None if terminal => Ok(LogFormat::Pretty),
        None => Ok(LogFormat::Json),
        Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
        Some(v) if v.eq_ignore_ascii_case("pretty") || v.eq_ignore_ascii_case("text") => {
            Ok(LogFormat::Pretty)
        }
        Some(v) => Err(format!("LOG_FORMAT={v:?} is not json or pretty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_values_and_defaults() {
        for (value, terminal, want) in [
            (None, true, Ok(LogFormat::Pretty)),
            (None, false, Ok(LogFormat::Json)),
            (Some(""), false, Ok(LogFormat::Json)),
            (Some("json"), true, Ok(LogFormat::Json)),
            (Some("JSON"), true, Ok(LogFormat::Json)),
            (Some("pretty"), false, Ok(LogFormat::Pretty)),
            (
                Some("xml"),
                false,
                Err("LOG_FORMAT=\"xml\" is not json or pretty".to_owned()),
            ),
        ] {
            assert_eq!(parse(value, terminal), want, "{value:?} {terminal}");
        }
    }
}
