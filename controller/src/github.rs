//! The controller's GitHub client, built once from the configuration's owners. App keys are
//! read here, at start-up, so a bad key stops the start, not a request.
//!
//! Rate-limit waits are kept short (`MAX_RATE_LIMIT_WAIT`): the scheduler and the API must not
//! sit for minutes on one request. A longer limit surfaces as `GithubError::RateLimited`, which
//! the scheduler retries at a later activation and the API reports with `Retry-After`.
//!
//! The client's API budget shares each quota window per `API_BACKGROUND_SHARE` (see
//! `shared::github::Budget`); callers classify their calls with `CallKind::scope`.

use std::sync::Arc;
use std::time::Duration;

use shared::github::{
    AppCredentials, AppKey, BudgetPolicy, BuildError, Credentials, GithubClient, OwnerAuth,
    RetryPolicy, parse_api_url,
};

use crate::config::Config;

/// The longest rate-limit wait one request sits out.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GithubSetupError {
    #[error("GITHUB_API_URL {0:?} is not a usable API URL")]
    Url(String),
    #[error("cannot read the GitHub App key of owner {owner}")]
    Key {
        owner: String,
        #[source]
        source: shared::github::KeyError,
    },
    #[error("cannot build the GitHub client")]
    Build(#[from] BuildError),
}

/// A client that authenticates as each configured owner.
pub fn client(config: &Config) -> Result<Arc<GithubClient>, GithubSetupError> {
    let api_url = parse_api_url(&config.github_api_url)
        .ok_or_else(|| GithubSetupError::Url(config.github_api_url.clone()))?;
    let mut builder = GithubClient::builder(&api_url)
        .retry_policy(RetryPolicy {
            max_rate_limit_wait: MAX_RATE_LIMIT_WAIT,
            ..RetryPolicy::default()
        })
        .budget_policy(BudgetPolicy {
            background_share_pct: config.api_background_share,
            ..BudgetPolicy::default()
        });
    for owner in &config.owners {
        let credentials = match &owner.auth {
            OwnerAuth::Token(token) => Credentials::Token(token.clone()),
            OwnerAuth::App {
                app_id,
                private_key_file,
                installation_id,
            } => Credentials::App(AppCredentials {
                app_id: app_id.clone(),
                key: Arc::new(AppKey::from_pem_file(private_key_file).map_err(|source| {
                    GithubSetupError::Key {
                        owner: owner.name.clone(),
                        source,
                    }
                })?),
                installation_id: *installation_id,
            }),
        };
        builder = builder.owner(&owner.name, credentials);
    }
    Ok(Arc::new(builder.build()?))
}
