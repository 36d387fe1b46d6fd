//! The controller's GitHub client, built once from the configuration's owners.
//!
//! Rate-limit waits are kept short (`MAX_RATE_LIMIT_WAIT`): the scheduler and the API must not
//! sit for minutes on one request. A longer limit surfaces as `GithubError::RateLimited`, which
//! the scheduler retries at a later activation and the API reports with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use shared::github::{BuildError, GithubClient, GithubSettings, RetryPolicy, parse_api_url};

use crate::config::Config;

/// The longest rate-limit wait one request sits out.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

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
        api_url: api_url.clone(),
        default_token: None,
        owners: config
            .owners
            .iter()
            .map(|o| (o.name.clone(), o.auth.clone()))
            .collect(),
    };
    let mut builder = GithubClient::builder(&api_url).retry_policy(RetryPolicy {
        max_rate_limit_wait: MAX_RATE_LIMIT_WAIT,
        ..RetryPolicy::default()
    });
    for (owner, credentials) in settings.load_credentials().map_err(BuildError::Key)? {
        builder = builder.owner(&owner, credentials);
    }
    Ok(Arc::new(builder.build()?))
}
