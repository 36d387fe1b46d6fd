//! GitHub settings as a pure function of the environment's string map.
//!
//! The variables are the seed's public contract: `GITHUB_API_URL` (default `https://api.github.com`,
//! `https://HOST/api/v3` for GitHub Enterprise Server), `GITHUB_TOKEN` as the default token, and per
//! owner `OWNER_<NAME>_GITHUB_TOKEN`, or `OWNER_<NAME>_APP_ID` + `OWNER_<NAME>_APP_PRIVATE_KEY_FILE`
//! (+ optional `OWNER_<NAME>_APP_INSTALLATION_ID`). `<NAME>` is the owner upper-cased with `-` and
//! `.` turned into `_`. Parsing reads no file; [`GithubSettings::load_credentials`] reads the keys
//! once, at start-up.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use url::Url;

use super::auth::{AppCredentials, AppKey, Credentials, KeyError};
use super::types::Secret;

/// The default REST endpoint.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// A variable with an unusable value. The value is named only when it is not a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not an http(s) URL")]
    InvalidUrl { var: String, value: String },
    #[error("{var}={value:?} is not a positive integer")]
    InvalidNumber { var: String, value: String },
    #[error("{var} is set but {missing} is not: a GitHub App needs both")]
    IncompleteApp { var: String, missing: String },
    #[error("owner {owner} has both a token and a GitHub App configured; choose one")]
    Ambiguous { owner: String },
}

/// How one owner authenticates, before key files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerAuth {
    Token(Secret),
    App {
        app_id: String,
        private_key_file: PathBuf,
        installation_id: Option<u64>,
    },
}

/// What the GitHub client is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubSettings {
    pub api_url: Url,
    pub default_token: Option<Secret>,
    /// Per owner (as configured, compared case-insensitively later).
    pub owners: BTreeMap<String, OwnerAuth>,
}

/// `my-org` → `MY_ORG`: the `<NAME>` part of an owner's variables.
pub fn owner_env_name(owner: &str) -> String {
    owner
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

impl GithubSettings {
    /// Parses the settings for `owners` from `vars`.
    pub fn from_env(
        vars: &HashMap<String, String>,
        owners: &[String],
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let api_url = match get("GITHUB_API_URL") {
            None => Url::parse(DEFAULT_API_URL).map_err(|_| ConfigError::InvalidUrl {
                var: "GITHUB_API_URL".into(),
                value: DEFAULT_API_URL.into(),
            })?,
            Some(raw) => parse_api_url(raw).ok_or_else(|| ConfigError::InvalidUrl {
                var: "GITHUB_API_URL".into(),
                value: raw.into(),
            })?,
        };
        let mut settings = Self {
            api_url,
            default_token: get("GITHUB_TOKEN").map(Secret::new),
            owners: BTreeMap::new(),
        };
        for owner in owners {
            let prefix = format!("OWNER_{}_", owner_env_name(owner));
            let token_var = format!("{prefix}GITHUB_TOKEN");
            let app_var = format!("{prefix}APP_ID");
            let key_var = format!("{prefix}APP_PRIVATE_KEY_FILE");
            let inst_var = format!("{prefix}APP_INSTALLATION_ID");
            let token = get(&token_var);
            let app = match (get(&app_var), get(&key_var)) {
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::IncompleteApp {
                        var: app_var,
                        missing: key_var,
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError::IncompleteApp {
                        var: key_var,
                        missing: app_var,
                    });
                }
                (Some(id), Some(key)) => {
                    let installation_id = match get(&inst_var) {
                        None => None,
                        Some(raw) => {
                            Some(raw.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                                ConfigError::InvalidNumber {
                                    var: inst_var.clone(),
                                    value: raw.into(),
                                }
                            })?)
                        }
                    };
                    Some(OwnerAuth::App {
                        app_id: id.to_owned(),
                        private_key_file: PathBuf::from(key),
                        installation_id,
                    })
                }
            };
            let auth = match (token, app) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Ambiguous {
                        owner: owner.clone(),
                    });
                }
                (Some(token), None) => OwnerAuth::Token(Secret::new(token)),
                (None, Some(app)) => app,
                (None, None) => continue,
            };
            settings.owners.insert(owner.clone(), auth);
        }
        Ok(settings)
    }

    /// Reads every App's private key: done once, so a bad key stops start-up, not a request.
    pub fn load_credentials(&self) -> Result<HashMap<String, Credentials>, KeyError> {
        let mut out = HashMap::new();
        for (owner, auth) in &self.owners {
            let creds = match auth {
                OwnerAuth::Token(token) => Credentials::Token(token.clone()),
                OwnerAuth::App {
                    app_id,
                    private_key_file,
                    installation_id,
                } => Credentials::App(AppCredentials {
                    app_id: app_id.clone(),
                    key: Arc::new(AppKey::from_pem_file(private_key_file)?),
                    installation_id: *installation_id,
                }),
            };
            out.insert(owner.clone(), creds);
        }
        Ok(out)
    }
}

/// Accepts `http(s)://host[:port][/prefix]`, and makes the path end with `/` so joins keep the prefix.
pub fn parse_api_url(raw: &str) -> Option<Url> {
    let mut url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return None;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_to_github_dot_com() {
        let s = GithubSettings::from_env(&vars(&[]), &[]).unwrap();
        assert_eq!(s.api_url.as_str(), "https://api.github.com/");
        assert_eq!(s.default_token, None);
    }

    #[test]
    fn ghes_keeps_its_path_prefix() {
        let s = GithubSettings::from_env(
            &vars(&[("GITHUB_API_URL", "https://ghe.example/api/v3")]),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.api_url.join("user").unwrap().as_str(),
            "https://ghe.example/api/v3/user"
        );
    }

    #[test]
    fn owners_take_token_or_app() {
        let owners = vec![
            "my-org".to_string(),
            "Personal".to_string(),
            "bare".to_string(),
        ];
        let s = GithubSettings::from_env(
            &vars(&[
                ("GITHUB_TOKEN", "ghp_default"),
                ("OWNER_MY_ORG_APP_ID", "42"),
                ("OWNER_MY_ORG_APP_PRIVATE_KEY_FILE", "/keys/app.pem"),
                ("OWNER_MY_ORG_APP_INSTALLATION_ID", "7"),
                ("OWNER_PERSONAL_GITHUB_TOKEN", "ghp_personal"),
            ]),
            &owners,
        )
        .unwrap();
        assert_eq!(
            s.owners["my-org"],
            OwnerAuth::App {
                app_id: "42".into(),
                private_key_file: "/keys/app.pem".into(),
                installation_id: Some(7)
            }
        );
        assert_eq!(
            s.owners["Personal"],
            OwnerAuth::Token(Secret::new("ghp_personal"))
        );
        assert!(!s.owners.contains_key("bare"));
        assert_eq!(s.default_token, Some(Secret::new("ghp_default")));
    }

    #[test]
    fn errors_name_the_variable_but_not_secrets() {
        let owners = vec!["acme".to_string()];
        let err =
            GithubSettings::from_env(&vars(&[("OWNER_ACME_APP_ID", "1")]), &owners).unwrap_err();
        assert!(
            err.to_string().contains("OWNER_ACME_APP_PRIVATE_KEY_FILE"),
            "{err}"
        );
        let err =
            GithubSettings::from_env(&vars(&[("GITHUB_API_URL", "ftp://x")]), &[]).unwrap_err();
        assert!(err.to_string().contains("GITHUB_API_URL"), "{err}");
        let err = GithubSettings::from_env(
            &vars(&[
                ("OWNER_ACME_GITHUB_TOKEN", "ghp_secret_value"),
                ("OWNER_ACME_APP_ID", "1"),
                ("OWNER_ACME_APP_PRIVATE_KEY_FILE", "/k"),
            ]),
            &owners,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("ghp_secret_value"));
    }
}
