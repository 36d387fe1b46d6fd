//! [`GithubClient`]: credentials per owner, App installation tokens, pagination, and error mapping
//! on top of the retrying [`Transport`].
//!
//! Owners are looked up case-insensitively (GitHub treats `Octo-Org` and `octo-org` as one). A
//! request for an owner without its own credentials uses the default token (`GITHUB_TOKEN`).
//! Pagination asks for `per_page=100` and follows `rel="next"` links verbatim, but only to the
//! configured API origin, so a forged link can never carry the token elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::auth::{AppCredentials, CachedToken, Credentials, TokenCache, parse_timestamp};
use super::budget::{Budget, BudgetPolicy};
use super::error::GithubError;
use super::etag::EtagCache;
use super::http::{ApiRequest, ApiResponse, RetryPolicy, Transport, into_error, next_link};
use super::ratelimit::Quota;
use super::types::Secret;

/// Refuse to walk more pages than this (100 000 items at `per_page=100`).
const MAX_PAGES: usize = 1000;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// Builds a [`GithubClient`].
#[derive(Debug)]
pub struct ClientBuilder {
    api_url: Url,
    owners: HashMap<String, Credentials>,
    default: Option<Credentials>,
    policy: RetryPolicy,
    refresh_before: Duration,
    budget: BudgetPolicy,
    conditional_requests: bool,
}

impl ClientBuilder {
    /// How the quota is shared between kinds of calls (default: 30 % background).
    pub fn budget_policy(mut self, policy: BudgetPolicy) -> Self {
        self.budget = policy;
        self
    }

    /// Whether repeated `GET`s are sent with `If-None-Match` (default: on).
    pub fn conditional_requests(mut self, on: bool) -> Self {
        self.conditional_requests = on;
        self
    }

    /// Credentials for one owner (name compared case-insensitively).
    pub fn owner(mut self, owner: &str, credentials: Credentials) -> Self {
        self.owners.insert(owner.to_ascii_lowercase(), credentials);
        self
    }

    /// Credentials for owners without their own.
    pub fn default_credentials(mut self, credentials: Credentials) -> Self {
        self.default = Some(credentials);
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long before expiry an installation token is replaced (default 5 minutes).
    pub fn refresh_before(mut self, margin: Duration) -> Self {
        self.refresh_before = margin;
        self
    }

    /// Builds the client, installing ring as the rustls provider if none is (reqwest panics without one).
    pub fn build(self) -> Result<GithubClient, BuildError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(BuildError::Http)?;
        Ok(GithubClient {
            inner: Arc::new(Inner {
                transport: Transport {
                    http,
                    policy: self.policy,
                    budget: Arc::new(Budget::new(self.budget)),
                    etags: self.conditional_requests.then(EtagCache::default),
                },
                base: self.api_url,
                owners: self.owners,
                default: self.default,
                tokens: TokenCache::default(),
                refresh_before: self.refresh_before,
            }),
        })
    }
}

/// The GitHub REST client. Cheap to clone; clones share the token cache and quota book.
#[derive(Debug, Clone)]
pub struct GithubClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    /// Always ends with `/`, so a GHES `/api/v3/` prefix is kept.
    base: Url,
    owners: HashMap<String, Credentials>,
    default: Option<Credentials>,
    tokens: TokenCache,
    refresh_before: Duration,
}

impl GithubClient {
    /// A builder for the API at `api_url` (`https://api.github.com`, or `https://HOST/api/v3`).
    pub fn builder(api_url: &Url) -> ClientBuilder {
        let mut api_url = api_url.clone();
        if !api_url.path().ends_with('/') {
            let path = format!("{}/", api_url.path());
            api_url.set_path(&path);
        }
        ClientBuilder {
            api_url,
            owners: HashMap::new(),
            default: None,
            policy: RetryPolicy::default(),
            refresh_before: Duration::from_secs(300),
            budget: BudgetPolicy::default(),
            conditional_requests: true,
        }
    }

    /// The latest `x-ratelimit-*` per owner and resource, for metrics.
    pub fn quotas(&self) -> Vec<(String, Quota)> {
        self.inner.transport.budget.quotas()
    }

    /// The API budget every request asks and reports to.
    pub fn budget(&self) -> Arc<Budget> {
        self.inner.transport.budget.clone()
    }

    /// The API URL with `segments` appended, each percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn credentials(&self, owner: &str) -> Result<&Credentials, GithubError> {
        self.inner
            .owners
            .get(&owner.to_ascii_lowercase())
            .or(self.inner.default.as_ref())
            .ok_or_else(|| GithubError::NoCredentials {
                owner: owner.to_owned(),
            })
    }

    async fn bearer(&self, owner: &str) -> Result<Secret, GithubError> {
        match self.credentials(owner)? {
            Credentials::Token(token) => Ok(token.clone()),
            Credentials::App(app) => {
                self.installation_token(owner, app)
                    .await
                    .map_err(|source| GithubError::AppAuth {
                        owner: owner.to_owned(),
                        source: Box::new(source),
                    })
            }
        }
    }

    /// The owner's installation token, minted (and the installation looked up) when missing or
    /// within `refresh_before` of expiry.
    async fn installation_token(
        &self,
        owner: &str,
        app: &AppCredentials,
    ) -> Result<Secret, GithubError> {
        let slot = self.inner.tokens.slot(owner);
        let mut slot = slot.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = slot
            .token
            .as_ref()
            .filter(|t| t.fresh(now, self.inner.refresh_before))
        {
            return Ok(cached.token.clone());
        }
        let jwt = app.key.jwt(&app.app_id, now)?;
        let installation_id = match slot.installation_id.or(app.installation_id) {
            Some(id) => id,
            None => self.find_installation(owner, &jwt).await?,
        };
        slot.installation_id = Some(installation_id);
        #[derive(serde::Deserialize)]
        struct AccessToken {
            token: Secret,
            expires_at: String,
        }
        let id = installation_id.to_string();
        let req = ApiRequest {
            method: Method::POST,
            url: self.url(&["app", "installations", &id, "access_tokens"]),
            body: None,
        };
        let resp = self.execute_checked(owner, &req, &jwt).await?;
        let minted: AccessToken = decode(&req, &resp)?;
        // An unparsable expiry is treated as GitHub's documented one hour.
        let expires_at =
            parse_timestamp(&minted.expires_at).unwrap_or(now + Duration::from_secs(3600));
        tracing::debug!(
            owner,
            installation_id,
            "minted a GitHub App installation token"
        );
        slot.token = Some(CachedToken {
            token: minted.token.clone(),
            expires_at,
        });
        Ok(minted.token)
    }

    /// The App's installation on `owner`: an organization's, else a user's.
    async fn find_installation(&self, owner: &str, jwt: &Secret) -> Result<u64, GithubError> {
        #[derive(serde::Deserialize)]
        struct Installation {
            id: u64,
        }
        let mut last = None;
        for kind in ["orgs", "users"] {
            let req = ApiRequest {
                method: Method::GET,
                url: self.url(&[kind, owner, "installation"]),
                body: None,
            };
            match self.execute_checked(owner, &req, jwt).await {
                Ok(resp) => return Ok(decode::<Installation>(&req, &resp)?.id),
                Err(err) if err.is_not_found() => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or(GithubError::NotFound {
            request: format!("GET /users/{owner}/installation"),
        }))
    }

    async fn execute_checked(
        &self,
        owner: &str,
        req: &ApiRequest,
        bearer: &Secret,
    ) -> Result<ApiResponse, GithubError> {
        let resp = self.inner.transport.execute(owner, req, bearer).await?;
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Err(into_error(req.label(), &resp))
        }
    }

    /// Sends a request as `owner`; a 401 with an App token drops the cached token and retries once
    /// with a fresh one (GitHub may revoke a token before its `expires_at`).
    pub(crate) async fn send(
        &self,
        owner: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, GithubError> {
        let bearer = self.bearer(owner).await?;
        let mut resp = self.inner.transport.execute(owner, req, &bearer).await?;
        if resp.status == StatusCode::UNAUTHORIZED
            && matches!(self.credentials(owner), Ok(Credentials::App(_)))
        {
            self.inner.tokens.slot(owner).lock().await.token = None;
            let bearer = self.bearer(owner).await?;
            resp = self.inner.transport.execute(owner, req, &bearer).await?;
        }
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Err(into_error(req.label(), &resp))
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        owner: &str,
        segments: &[&str],
    ) -> Result<T, GithubError> {
        let req = ApiRequest {
            method: Method::GET,
            url: self.url(segments),
            body: None,
        };
        let resp = self.send(owner, &req).await?;
        decode(&req, &resp)
    }

    /// A request whose answer (if any) is decoded as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        owner: &str,
        method: Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<T, GithubError> {
        let req = ApiRequest {
            method,
            url: self.url(segments),
            body,
        };
        let resp = self.send(owner, &req).await?;
        decode(&req, &resp)
    }

    /// A request answered with no body (204/202).
    pub(crate) async fn call_empty(
        &self,
        owner: &str,
        method: Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<ApiResponse, GithubError> {
        let req = ApiRequest {
            method,
            url: self.url(segments),
            body,
        };
        self.send(owner, &req).await
    }

    /// Every item of a paginated list. `key` names the array in wrapped lists
    /// (`{"total_count": n, "runners": [...]}`); `None` for plain arrays.
    pub(crate) async fn paginate<T: DeserializeOwned>(
        &self,
        owner: &str,
        segments: &[&str],
        query: &[(&str, &str)],
        key: Option<&str>,
    ) -> Result<Vec<T>, GithubError> {
        self.paginate_up_to(owner, segments, query, key, MAX_PAGES)
            .await
    }

    /// [`Self::paginate`], but at most `max_pages` pages (the first ones).
    pub(crate) async fn paginate_up_to<T: DeserializeOwned>(
        &self,
        owner: &str,
        segments: &[&str],
        query: &[(&str, &str)],
        key: Option<&str>,
        max_pages: usize,
    ) -> Result<Vec<T>, GithubError> {
        let mut url = self.url(segments);
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("per_page", "100");
        }
        let mut items = Vec::new();
        for _ in 0..max_pages {
            let req = ApiRequest {
                method: Method::GET,
                url,
                body: None,
            };
            let resp = self.send(owner, &req).await?;
            let mut page: serde_json::Value = decode(&req, &resp)?;
            let list = match key {
                Some(key) => page.get_mut(key).map(serde_json::Value::take),
                None => Some(page),
            };
            let list: Vec<T> = serde_json::from_value(list.unwrap_or(serde_json::Value::Null))
                .map_err(|source| GithubError::Decode {
                    request: req.label(),
                    source,
                })?;
            items.extend(list);
            let Some(next) = next_link(&resp.headers) else {
                return Ok(items);
            };
            url = match Url::parse(&next) {
                Ok(next) if next.origin() == self.inner.base.origin() => next,
                _ => {
                    return Err(GithubError::ForeignLink {
                        request: req.label(),
                    });
                }
            };
        }
        Ok(items)
    }
}

fn decode<T: DeserializeOwned>(req: &ApiRequest, resp: &ApiResponse) -> Result<T, GithubError> {
    // A 204 decodes as `null`, which `()` and `Option` accept.
    let body: &[u8] = if resp.body.is_empty() {
        b"null"
    } else {
        &resp.body
    };
    serde_json::from_slice(body).map_err(|source| GithubError::Decode {
        request: req.label(),
        source,
    })
}
