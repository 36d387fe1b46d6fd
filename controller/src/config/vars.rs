//! Typed reads of configuration variables, collecting every problem instead of stopping at
//! the first.

use std::collections::HashMap;
use std::time::Duration;

use super::{ConfigErrors, ConfigProblem};

/// Reads typed values out of the variable map, collecting problems.
pub(crate) struct Vars<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
}

impl<'a> Vars<'a> {
    pub(crate) fn new(vars: &'a HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The variable's value, with empty strings treated as unset.
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn problem(&mut self, variable: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable: variable.into(),
            message: message.into(),
        });
    }

    /// Something that does not stop the start but the user should hear about.
    pub(crate) fn warn(&mut self, variable: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigProblem {
            variable: variable.into(),
            message: message.into(),
        });
    }

    pub(crate) fn take_warnings(&mut self) -> Vec<ConfigProblem> {
        std::mem::take(&mut self.warnings)
    }

    pub(crate) fn port(&mut self, name: &'static str, default: u16) -> u16 {
        match self.get(name) {
            None => default,
            Some(v) => match v.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    self.problem(name, format!("{v:?} is not a port number (0-65535)"));
                    default
                }
            },
        }
    }

    pub(crate) fn bool(&mut self, name: &'static str, default: bool) -> bool {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(v) => {
                self.problem(name, format!("{v:?} is not a boolean (true or false)"));
                default
            }
        }
    }

    /// A duration: plain seconds (`30`) or with a unit (`500ms`, `1m`).
    pub(crate) fn duration(&mut self, name: &'static str, default: Duration) -> Duration {
        match self.get(name) {
            None => default,
            Some(v) => match parse_duration(v) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.problem(
                        name,
                        format!(
                            "{v:?} is not a positive duration (seconds, or e.g. 500ms, 10s, 1m)"
                        ),
                    );
                    default
                }
            },
        }
    }

    /// A count of at least 1.
    pub(crate) fn count(&mut self, name: &'static str, default: usize) -> usize {
        match self.get(name) {
            None => default,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    self.problem(name, format!("{v:?} is not a whole number of at least 1"));
                    default
                }
            },
        }
    }

    /// A size in bytes: `1048576`, `512KiB`, `1MiB` (also `KB`/`MB`/`k`/`m`, all powers of 1024).
    pub(crate) fn bytes(&mut self, name: &'static str, default: usize) -> usize {
        let Some(v) = self.get(name) else {
            return default;
        };
        let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = match v[digits.len()..].to_ascii_lowercase().as_str() {
            "" | "b" => Some(1),
            "k" | "kb" | "kib" => Some(1024),
            "m" | "mb" | "mib" => Some(1024 * 1024),
            _ => None,
        };
        match (digits.trim().parse::<usize>(), unit) {
            (Ok(n), Some(unit)) if n > 0 => n.saturating_mul(unit),
            _ => {
                self.problem(
                    name,
                    format!("{v:?} is not a size in bytes (e.g. 1048576, 512KiB, 1MiB)"),
                );
                default
            }
        }
    }

    /// A comma-separated list, trimmed, without empty items.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.problems))
        }
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}
