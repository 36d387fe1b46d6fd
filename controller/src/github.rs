//! The controller's GitHub client, built once from the configuration's owners.

use std::sync::Arc;

use shared::github::{BuildError, GithubClient, GithubSettings, parse_api_url};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum GithubSetupError {
    #[error("GITHUB_API_URL {0:?} is not a usable API URL")]
    Url(String),
    #[error("cannot build the GitHub client")]
    Build(#[from] BuildError),
}

/// A client that authenticates as each configured owner.
pub fn client(config: &Config) -> Result<Arc<GithubClient>, GithubSetupError> {
    let api_url = parse_api_url(&config.github_api_url)
        .ok_or_else(|| GithubSetupError::Url(config.github_api_url.clone()))?;
    let settings = GithubSettings {
        api_url,
        default_token: None,
        owners: config
            .owners
            .iter()
            .map(|o| (o.name.clone(), o.auth.clone()))
            .collect(),
    };
    Ok(Arc::new(GithubClient::from_settings(&settings)?))
}
