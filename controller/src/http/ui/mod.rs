//! The operator's dashboard at `/ui/` (and `/` redirects there): server-rendered HTML with
//! every asset embedded, live through server-sent events, usable without JavaScript.
//!
//! - [`events`]: the bounded event log (recent decisions and errors); job timelines are stored.
//! - [`observer`]: the one task writing it, from the store, the scheduler and the registry.
//! - [`views`]: pure view models, table-tested; [`pages`]: their HTML.
//! - [`auth`]: the login form, sessions in `HttpOnly; SameSite=Strict` cookies, CSRF;
//!   [`login_limit`]: how fast the form may be tried (per client address and global).
//!
//! Handlers read state once per request ([`gather`]), build view models, render them.

pub mod auth;
pub mod events;
pub mod login_limit;
pub mod observer;
pub mod pages;
pub mod views;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures::{Stream, StreamExt};
use maud::Markup;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::auth::{Access, Sessions};
use self::events::EventLog;
use self::login_limit::{Limited, LoginLimiter};
use self::pages::Page;
use crate::http::{AppState, TokenKind};
use crate::store::{JobState, Owner};

/// Live streams open at once; past it `/ui/stream` answers 503 (the pages still work and
/// reload without it).
pub const MAX_STREAMS: usize = 64;
/// Events kept in memory.
pub const EVENT_CAPACITY: usize = 5_000;
/// Served jobs kept for "served in the last hour" and queue-time percentiles.
pub const SERVED_CAPACITY: usize = 20_000;

#[derive(Clone)]
pub struct UiState {
    pub app: AppState,
    pub log: EventLog,
    pub sessions: Sessions,
    pub login_limit: LoginLimiter,
    /// One permit per open live stream.
    pub streams: Arc<Semaphore>,
    /// Ends the live streams at shutdown, so graceful shutdown does not wait for them.
    pub shutdown: CancellationToken,
}

impl UiState {
    pub fn new(app: AppState, log: EventLog, shutdown: CancellationToken) -> Self {
        Self {
            app,
            log,
            sessions: Sessions::default(),
            login_limit: LoginLimiter::default(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            shutdown,
        }
    }
}

pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/queue", get(queue))
        .route("/ui/runners", get(runners))
        .route("/ui/agents", get(agents))
        .route("/ui/events", get(event_list))
        .route("/ui/jobs/{owner}/{id}", get(job))
        .route("/ui/agents/{name}/drain", post(drain))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/stream", get(stream))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", pages::APP_JS) }),
        )
        .route(
            "/ui/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", pages::APP_CSS) }),
        )
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// An HTML response: no caching, no framing, scripts and styles from this origin only.
fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// Who is looking: from `Authorization: Bearer` (scripts) or the session cookie.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub access: Access,
    /// The session's CSRF token (none for bearer requests, which browsers never send by
    /// themselves and so need none).
    pub csrf: Option<String>,
    /// Only `#content` is wanted (the live refresh).
    pub fragment: bool,
}

/// Why a request was refused: pages send browsers to the login form, the stream says 401.
pub enum Refused {
    Login,
    Unauthorized,
    Disabled,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Login => Redirect::to("/ui/login").into_response(),
            Refused::Unauthorized => crate::http::HttpError::Unauthorized.into_response(),
            Refused::Disabled => html(
                StatusCode::FORBIDDEN,
                pages::login(Some(
                    "The dashboard is closed: set API_TOKEN (and optionally a read-only \
                     STATUS_TOKEN) and log in with it.",
                )),
            ),
        }
    }
}

impl FromRequestParts<UiState> for Viewer {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, Refused> {
        if !state.app.tokens.dashboard_enabled() {
            return Err(Refused::Disabled);
        }
        let fragment = parts.headers.contains_key("x-fragment");
        if let Some(token) = crate::http::auth::bearer_token(&parts.headers) {
            return match state.app.tokens.classify(token) {
                TokenKind::Api => Ok(Viewer {
                    access: Access::Write,
                    csrf: None,
                    fragment,
                }),
                TokenKind::Status => Ok(Viewer {
                    access: Access::Read,
                    csrf: None,
                    fragment,
                }),
                TokenKind::None => Err(Refused::Unauthorized),
            };
        }
        let session = auth::session_cookie(&parts.headers)
            .and_then(|id| state.sessions.get(&id, shared::runner::now_ms()));
        match session {
            Some(s) => Ok(Viewer {
                access: s.access,
                csrf: Some(s.csrf),
                fragment,
            }),
            None if fragment || parts.uri.path() == "/ui/stream" => Err(Refused::Unauthorized),
            None => Err(Refused::Login),
        }
    }
}

impl Viewer {
    fn csrf_for_writes(&self) -> Option<&str> {
        (self.access == Access::Write)
            .then_some(self.csrf.as_deref())
            .flatten()
    }

    fn render(&self, page: Page, title: &str, content: Markup) -> Response {
        if self.fragment {
            html(StatusCode::OK, content)
        } else {
            html(
                StatusCode::OK,
                pages::layout(page, title, content, self.csrf.as_deref()),
            )
        }
    }
}

/// Reads what the pages show, once.
async fn gather(state: &UiState) -> Result<views::Inputs, crate::store::StoreError> {
    let app = &state.app;
    let now_ms = shared::runner::now_ms();
    let decisions = app.decisions.get();
    let health = crate::http::status::health(&decisions, app.config.owners.len());
    Ok(views::Inputs {
        now_ms,
        owners: app
            .config
            .owners
            .iter()
            .map(|o| views::OwnerLimit {
                name: o.name.clone(),
                max_runners: o.max_runners,
            })
            .collect(),
        queued: app.store.queued_jobs().await?,
        runners: app.store.active_runners().await?,
        agents: app.registry.snapshot(),
        failing: decisions
            .containment
            .iter()
            .map(|b| {
                let what = match &b.key {
                    crate::scheduler::backoff::Key::Owner { owner } => format!("owner {owner}"),
                    crate::scheduler::backoff::Key::Agent { agent } => format!("agent {agent}"),
                    crate::scheduler::backoff::Key::Image { owner, image } => {
                        format!("owner {owner} image {image}")
                    }
                };
                (what, b.reason.clone(), b.circuit_open)
            })
            .collect(),
        waiting: decisions.waiting,
        class_waiting: decisions.class_waiting,
        served: state.log.served_since(now_ms - 3_600_000),
        quotas: app.github.quotas(),
        degraded: health.reason,
        last_error: health.last_error,
        github_web: views::github_web(&app.config.github_api_url),
        runner_image: app.config.runners.image.clone(),
    })
}

fn unavailable(error: &crate::store::StoreError) -> Response {
    tracing::warn!(error = %error, "dashboard: the store does not answer");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::error("The state store does not answer; try again in a moment."),
    )
}

async fn overview(viewer: Viewer, State(state): State<UiState>) -> Response {
    match gather(&state).await {
        Ok(i) => viewer.render(
            Page::Overview,
            "Overview",
            pages::overview(&views::overview(&i)),
        ),
        Err(e) => unavailable(&e),
    }
}

async fn queue(viewer: Viewer, State(state): State<UiState>) -> Response {
    match gather(&state).await {
        Ok(i) => viewer.render(Page::Queue, "Queue", pages::queue(&views::queue(&i))),
        Err(e) => unavailable(&e),
    }
}

async fn runners(viewer: Viewer, State(state): State<UiState>) -> Response {
    match gather(&state).await {
        Ok(i) => viewer.render(
            Page::Runners,
            "Runners",
            pages::runners(&views::runners(&i)),
        ),
        Err(e) => unavailable(&e),
    }
}

async fn agents(viewer: Viewer, State(state): State<UiState>) -> Response {
    let rows = views::agents(&views::Inputs {
        agents: state.app.registry.snapshot(),
        ..Default::default()
    });
    let content = pages::agents(&rows, viewer.csrf_for_writes());
    viewer.render(Page::Agents, "Agents", content)
}

async fn event_list(viewer: Viewer, State(state): State<UiState>) -> Response {
    viewer.render(
        Page::Events,
        "Events",
        pages::events(&state.log.recent(500)),
    )
}

async fn job(
    viewer: Viewer,
    State(state): State<UiState>,
    Path((owner, id)): Path<(String, u64)>,
) -> Response {
    let owner = Owner::new(&owner);
    let record = match state.app.store.job(&owner, id).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                pages::layout(
                    Page::Job,
                    "Unknown job",
                    pages::error(&format!("job {id} of {owner} is unknown here")),
                    viewer.csrf.as_deref(),
                ),
            );
        }
        Err(e) => return unavailable(&e),
    };
    let decisions = state.app.decisions.get();
    let explanation = match record.state {
        JobState::Queued => match decisions.reason(&record) {
            Some(w) => crate::http::status::explain(w),
            None if record.labels.is_empty() => {
                "it names no labels, so no runner can be matched to it".into()
            }
            None => "queued; the scheduler has not looked at it yet".into(),
        },
        JobState::Waiting => "waiting for approval (an environment protection rule)".into(),
        JobState::InProgress => format!(
            "running on {}",
            record.runner_name.as_deref().unwrap_or("a runner")
        ),
        JobState::Completed => format!(
            "completed ({})",
            record.conclusion.as_deref().unwrap_or("unknown")
        ),
    };
    let entries = match state.app.store.job_timeline(&owner, id).await {
        Ok(entries) => entries,
        Err(e) => return unavailable(&e),
    };
    let steps = views::timeline(&record, entries);
    viewer.render(
        Page::Job,
        &format!("Job {id}"),
        pages::job(&record, &explanation, &steps),
    )
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Refuses a form `POST` that is not from our own page of this session, saying why.
fn check_write(viewer: &Viewer, headers: &HeaderMap, given: &str) -> Result<(), &'static str> {
    if viewer.access != Access::Write {
        return Err("read-only: log in with API_TOKEN to change anything");
    }
    if !auth::same_origin(headers) {
        return Err("the request came from another site");
    }
    match &viewer.csrf {
        // Bearer requests carry no cookie: no cross-site request can make them.
        None => Ok(()),
        Some(expected) if auth::csrf_matches(expected, given) => Ok(()),
        Some(_) => Err("the form is stale or forged (CSRF token mismatch): reload the page"),
    }
}

async fn drain(
    viewer: Viewer,
    State(state): State<UiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(why) = check_write(&viewer, &headers, &form.csrf) {
        return html(StatusCode::FORBIDDEN, pages::error(why));
    }
    let parsed = match shared::ids::AgentName::parse(&name) {
        Ok(n) => n,
        Err(e) => return html(StatusCode::BAD_REQUEST, pages::error(&e.to_string())),
    };
    // The same drain as the API's: kept across restarts until undrained.
    match state.app.drains.drain(&parsed).await {
        Ok(_) => {
            tracing::info!(agent = %parsed, "agent drained from the dashboard");
            Redirect::to("/ui/agents").into_response()
        }
        Err(e @ crate::drain::DrainError::UnknownAgent(_)) => {
            html(StatusCode::NOT_FOUND, pages::error(&e.to_string()))
        }
        Err(e) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error(&format!("agent {parsed}: {e}")),
        ),
    }
}

async fn login_form(State(state): State<UiState>) -> Response {
    if !state.app.tokens.dashboard_enabled() {
        return Refused::Disabled.into_response();
    }
    html(StatusCode::OK, pages::login(None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// The 429 of a login attempt past [`login_limit`]'s limits: the login page with the reason,
/// or JSON for a client that asks for it, with `Retry-After`.
fn too_many_logins(headers: &HeaderMap, limited: Limited) -> Response {
    let who = if limited.global {
        "from everyone"
    } else {
        "from your address"
    };
    let message = format!(
        "Too many login attempts {who}; try again in {} s.",
        limited.retry_after_secs
    );
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let mut response = if wants_json {
        (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({
                "error": "login_rate_limited",
                "message": message,
                "scope": if limited.global { "global" } else { "client" },
                "retry_after_secs": limited.retry_after_secs,
            })),
        )
            .into_response()
    } else {
        html(StatusCode::TOO_MANY_REQUESTS, pages::login(Some(&message)))
    };
    if let Ok(value) = limited.retry_after_secs.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn login(
    State(state): State<UiState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !state.app.tokens.dashboard_enabled() {
        return Refused::Disabled.into_response();
    }
    let client = peer.map(|p| p.0.0.ip());
    if let Err(limited) = state.login_limit.attempt(client, shared::runner::now_ms()) {
        tracing::debug!(client = ?client, global = limited.global, "dashboard login attempt refused by the rate limit");
        return too_many_logins(&headers, limited);
    }
    if !auth::same_origin(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            pages::login(Some("the form came from another site")),
        );
    }
    let access = match state.app.tokens.classify(form.token.trim()) {
        TokenKind::Api => Access::Write,
        TokenKind::Status => Access::Read,
        TokenKind::None => {
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That token is not accepted.")),
            );
        }
    };
    let id = state.sessions.create(access, shared::runner::now_ms());
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::set_cookie(&id)),
            (header::LOCATION, "/ui/".to_owned()),
        ],
    )
        .into_response()
}

async fn logout(
    viewer: Viewer,
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let same = auth::same_origin(&headers)
        && viewer
            .csrf
            .as_deref()
            .is_some_and(|c| auth::csrf_matches(c, &form.csrf));
    if !same {
        return html(
            StatusCode::FORBIDDEN,
            pages::error("the form is stale or forged"),
        );
    }
    if let Some(id) = auth::session_cookie(&headers) {
        state.sessions.remove(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::set_cookie("")),
            (header::LOCATION, "/ui/login".to_owned()),
        ],
    )
        .into_response()
}

/// `GET /ui/stream`: one `change` event whenever the event log grows (coalesced), and
/// keep-alive comments; at most [`MAX_STREAMS`] at once.
async fn stream(_viewer: Viewer, State(state): State<UiState>) -> Response {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "error": "too_many_streams",
                "message": format!("{MAX_STREAMS} live streams are open; reload the page instead"),
            })),
        )
            .into_response();
    };
    let changes = tokio_stream::wrappers::WatchStream::new(state.log.subscribe());
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(
            changes
                .map(move |seq| {
                    let _held = &permit;
                    Ok(SseEvent::default().event("change").data(seq.to_string()))
                })
                .take_until(state.shutdown.clone().cancelled_owned()),
        );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
