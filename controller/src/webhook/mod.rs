//! `POST /webhook`: GitHub's deliveries, verified, persisted, then answered.
//!
//! The handler records intent durably and nudges the scheduler; it never talks to an agent or
//! to GitHub, so it answers in milliseconds. A delivery is answered 2xx only once its effect is
//! committed; a repeated `X-GitHub-Delivery` is answered 200 and changes nothing.

pub mod payload;
pub mod signature;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, warn};

use self::payload::{Envelope, Meaning};
use self::signature::SignatureError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{NewDelivery, Recorded, StateStore, StoreError, WebhookEffect};

/// GitHub caps payloads at 25 MB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// What the webhook handler needs.
pub struct Intake {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub metrics: Arc<Metrics>,
    /// Wakes the scheduler after a delivery changed demand.
    pub nudge: Arc<Notify>,
}

pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/webhook", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(intake)
}

/// A refused delivery: a status and a JSON reason, never the body or a secret.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("unsupported content type {0:?}: use application/json (or form)")]
    ContentType(String),
    #[error("the body is larger than GitHub's 25 MB cap")]
    TooLarge,
    #[error("cannot read the body")]
    Body,
    #[error("the payload is not valid JSON for this event: {0}")]
    Malformed(String),
    #[error("the payload names no repository owner or organization")]
    NoOwner,
    #[error("owner {0} is not configured on this controller")]
    UnknownOwner(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the delivery could not be recorded; it was not accepted (GitHub can redeliver it)")]
    Store(#[source] StoreError),
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::MissingHeader(_)
            | WebhookError::Malformed(_)
            | WebhookError::NoOwner
            | WebhookError::Body => StatusCode::BAD_REQUEST,
            WebhookError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::UnknownOwner(_) => StatusCode::NOT_FOUND,
            WebhookError::Signature(_) => StatusCode::UNAUTHORIZED,
            WebhookError::Store(StoreError::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            WebhookError::MissingHeader(_) => "missing_header",
            WebhookError::ContentType(_) => "unsupported_content_type",
            WebhookError::TooLarge => "payload_too_large",
            WebhookError::Body => "unreadable_body",
            WebhookError::Malformed(_) => "malformed_payload",
            WebhookError::NoOwner => "no_owner",
            WebhookError::UnknownOwner(_) => "unknown_owner",
            WebhookError::Signature(_) => "invalid_signature",
            WebhookError::Store(_) => "not_recorded",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(json!({ "error": self.code(), "message": self.to_string() })),
        )
            .into_response()
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON payload inside the body: the body itself, or the `payload` field of a form.
fn payload_of<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, WebhookError> {
    let content_type =
        header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("application/json");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(Cow::Borrowed(body)),
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
            .ok_or_else(|| WebhookError::Malformed("the form has no payload field".into())),
        other => Err(WebhookError::ContentType(other.to_owned())),
    }
}

async fn receive(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let event = header_str(&headers, "x-github-event")
        .unwrap_or("")
        .to_owned();
    let result = handle(&intake, &headers, body, &event).await;
    intake
        .metrics
        .webhook_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok((status, outcome)) => {
            intake.metrics.webhook(&event, outcome);
            (status, Json(json!({ "status": outcome }))).into_response()
        }
        Err(error) => {
            intake.metrics.webhook(&event, error.code());
            if error.status().is_server_error() {
                warn!(%event, error = %error, "webhook not recorded");
            } else {
                debug!(%event, error = %error, "webhook refused");
            }
            error.into_response()
        }
    }
}

async fn handle(
    intake: &Intake,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    event: &str,
) -> Result<(StatusCode, &'static str), WebhookError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebhookError::TooLarge
        } else {
            WebhookError::Body
        }
    })?;
    if event.is_empty() {
        return Err(WebhookError::MissingHeader("X-GitHub-Event"));
    }
    let delivery_id = header_str(headers, "x-github-delivery")
        .filter(|d| !d.is_empty())
        .ok_or(WebhookError::MissingHeader("X-GitHub-Delivery"))?
        .to_owned();
    let payload = payload_of(headers, &body)?;
    let envelope = Envelope::parse(&payload).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let owner_login = envelope.owner().ok_or(WebhookError::NoOwner)?;
    let owner = intake
        .config
        .owner(owner_login)
        .ok_or_else(|| WebhookError::UnknownOwner(owner_login.to_owned()))?;
    match &owner.webhook_secret {
        // The signature covers the raw body exactly as received (form or JSON).
        Some(secret) => signature::verify(
            secret.expose().as_bytes(),
            &body,
            header_str(headers, "x-hub-signature-256"),
        )?,
        None => {
            debug!(owner = %owner.name, "accepting an unsigned webhook (ALLOW_UNSIGNED_WEBHOOKS)")
        }
    }

    let now = shared::runner::now_ms();
    let meaning = payload::interpret(event, &payload, owner, now)
        .map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let (effect, outcome) = match meaning {
        Meaning::Ping => return Ok((StatusCode::OK, "pong")),
        Meaning::Ignored(why) => (WebhookEffect::Ignore, why.as_str()),
        Meaning::Effect(effect) => (effect, "accepted"),
    };
    let changes_demand = !matches!(effect, WebhookEffect::Ignore);
    let delivery = NewDelivery {
        id: delivery_id,
        event: event.to_owned(),
        owner: Some(owner.name.to_ascii_lowercase()),
        received_ms: now,
    };
    match intake
        .store
        .record_webhook(delivery, effect)
        .await
        .map_err(WebhookError::Store)?
    {
        Recorded::Duplicate => Ok((StatusCode::OK, "duplicate")),
        Recorded::New => {
            if changes_demand {
                intake.nudge.notify_one();
            }
            Ok((StatusCode::ACCEPTED, outcome))
        }
    }
}
