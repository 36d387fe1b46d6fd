//! The TOML alternative to environment variables (`CONFIG_FILE=gha-scaler.toml`).
//!
//! The file uses the same names as the environment, so there is one set of rules:
//!
//! ```toml
//! PORT = 8080
//! WEBHOOK_SECRET = "..."
//! [owners.my-org]          # becomes OWNERS=my-org and OWNER_MY_ORG_*
//! GITHUB_TOKEN = "ghp_..."
//! ALL_REPOS = true
//! ```
//!
//! It is flattened into the variable map; variables set in the environment win.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::owners::env_prefix;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the configuration file {path}: {key} must be a string, number or boolean")]
    NotScalar { path: PathBuf, key: String },
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

/// Reads `path` into variables.
pub fn load(path: &Path) -> Result<HashMap<String, String>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<HashMap<String, String>, FileError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| FileError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    let not_scalar = |key: &str| FileError::NotScalar {
        path: path.to_owned(),
        key: key.to_owned(),
    };
    let mut vars = HashMap::new();
    let mut owners = Vec::new();
    for (key, value) in &table {
        if key == "owners" {
            let toml::Value::Table(by_owner) = value else {
                return Err(not_scalar(key));
            };
            for (owner, settings) in by_owner {
                let toml::Value::Table(settings) = settings else {
                    return Err(not_scalar(&format!("owners.{owner}")));
                };
                owners.push(owner.clone());
                for (k, v) in settings {
                    let v = scalar(v).ok_or_else(|| not_scalar(&format!("owners.{owner}.{k}")))?;
                    vars.insert(
                        format!("{}{}", env_prefix(owner), k.to_ascii_uppercase()),
                        v,
                    );
                }
            }
        } else {
            vars.insert(
                key.to_ascii_uppercase(),
                scalar(value).ok_or_else(|| not_scalar(key))?,
            );
        }
    }
    if !owners.is_empty() {
        let listed = vars
            .remove("OWNERS")
            .map(|o| format!("{o},"))
            .unwrap_or_default();
        vars.insert("OWNERS".into(), format!("{listed}{}", owners.join(",")));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_tables_become_prefixed_variables() {
        let vars = parse(
            "PORT = 9000\nLABELS = [\"a\", \"b\"]\n[owners.my-org]\nGITHUB_TOKEN = \"t\"\nALL_REPOS = true\nmax_runners = 7\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(vars["PORT"], "9000");
        assert_eq!(vars["LABELS"], "a,b");
        assert_eq!(vars["OWNERS"], "my-org");
        assert_eq!(vars["OWNER_MY_ORG_GITHUB_TOKEN"], "t");
        assert_eq!(vars["OWNER_MY_ORG_ALL_REPOS"], "true");
        assert_eq!(vars["OWNER_MY_ORG_MAX_RUNNERS"], "7");
    }

    #[test]
    fn bad_files_are_reported_with_their_path() {
        let err = parse("PORT = [", Path::new("bad.toml")).unwrap_err();
        assert!(err.to_string().contains("bad.toml"));
        let err = parse("[thing]\nx = 1", Path::new("t.toml")).unwrap_err();
        assert!(matches!(err, FileError::NotScalar { .. }));
    }
}
