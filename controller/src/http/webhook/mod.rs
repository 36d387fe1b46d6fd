//! `POST /webhook`: GitHub's deliveries, verified, persisted, then answered.
//!
//! The handler records intent durably and nudges the scheduler; it never talks to an agent or
//! to GitHub, so it answers in milliseconds. A delivery is answered 2xx only once its effect is
//! committed; a repeated `X-GitHub-Delivery` is answered 200 and changes nothing. A new
//! delivery that puts a job in progress is read back from the store (the job and its runner)
//! for the queue-time metrics ([`timing`]); the job's timeline entry is written with it
//! ([`crate::store::timeline`]).
//!
//! Order of checks, cheapest and most hostile first: a concurrency permit (none left: 503
//! `overloaded`), the body within `HTTP_BODY_TIMEOUT` (408) and `WEBHOOK_MAX_BODY` (413), the
//! headers, the signature against every configured secret ([`secrets`]; 401), and only then the
//! JSON. A payload naming an owner other than the one(s) whose secret signed it is refused with
//! 403 `owner_mismatch`: the sender proved it holds *a* secret, not that owner's, and GitHub
//! shows the delivery as failed so the misconfigured hook is noticed. Deliveries that name no
//! owner (App `installation` events) or an owner not configured are answered 202 and ignored
//! (`ignored_no_owner`, `ignored_unknown_owner`, counted in `/metrics`), since GitHub shows any
//! 4xx as a failure the operator cannot fix.

#[cfg(test)]
mod fuzz;
pub mod payload;
pub mod secrets;
pub mod signature;
pub mod timing;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use shared::logsafe::Untrusted;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};

use self::payload::{Meaning, Read};
use self::secrets::{Refusal, SecretBook};
use crate::config::Config;
use crate::http::HttpError;
use crate::metrics::Metrics;
use crate::store::{NewDelivery, Recorded, StateStore, WebhookEffect};

/// What the webhook handler needs.
pub struct Intake {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub metrics: Arc<Metrics>,
    /// Wakes the scheduler after a delivery changed demand.
    pub nudge: Arc<Notify>,
    /// Every configured secret and whose it is.
    secrets: SecretBook,
    /// One permit per delivery being handled (`WEBHOOK_CONCURRENCY`); none left → 503.
    permits: Arc<Semaphore>,
}

impl Intake {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn StateStore>,
        metrics: Arc<Metrics>,
        nudge: Arc<Notify>,
    ) -> Self {
        Self {
            secrets: SecretBook::new(&config),
            permits: Arc::new(Semaphore::new(config.http.webhook_concurrency)),
            config,
            store,
            metrics,
            nudge,
        }
    }
}

pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/webhook", post(receive))
        .layer(DefaultBodyLimit::max(intake.config.http.webhook_max_body))
        .with_state(intake)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON payload inside the body: the body itself, or the `payload` field of a form.
fn payload_of<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, HttpError> {
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
            .ok_or_else(|| HttpError::Malformed("the form has no payload field".into())),
        other => Err(HttpError::ContentType(other.to_owned())),
    }
}

async fn receive(State(intake): State<Arc<Intake>>, request: Request) -> Response {
    let started = Instant::now();
    let event = header_str(request.headers(), "x-github-event")
        .unwrap_or("")
        .to_owned();
    let result = handle(&intake, request, &event, started).await;
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
                warn!(event = %crate::metrics::event_label(&event), error = %crate::http::error::chain(&error), "webhook not recorded");
            } else {
                debug!(event = %crate::metrics::event_label(&event), error = %error, "webhook refused");
            }
            error.into_response()
        }
    }
}

/// Reads the body within `HTTP_BODY_TIMEOUT` and `WEBHOOK_MAX_BODY`.
async fn read_body(intake: &Intake, request: Request) -> Result<(HeaderMap, Bytes), HttpError> {
    let limits = &intake.config.http;
    let declared = header_str(request.headers(), header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.webhook_max_body as u64) {
        return Err(HttpError::TooLarge(limits.webhook_max_body));
    }
    let headers = request.headers().clone();
    let body = tokio::time::timeout(limits.body_timeout, Bytes::from_request(request, &()))
        .await
        .map_err(|_| HttpError::BodyTimeout(limits.body_timeout))?
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HttpError::TooLarge(limits.webhook_max_body)
            } else {
                HttpError::Body
            }
        })?;
    Ok((headers, body))
}

/// How recent a `workflow_job` delivery of an owner must be for its `workflow_run` deliveries to
/// be redundant.
const JOB_EVENTS_WINDOW_MS: i64 = 60 * 60 * 1000;

async fn handle(
    intake: &Intake,
    request: Request,
    event: &str,
    received: Instant,
) -> Result<(StatusCode, &'static str), HttpError> {
    // Shed load before reading a byte of the body: a slow or flooding sender holds at most
    // `WEBHOOK_CONCURRENCY` permits, and only for `HTTP_BODY_TIMEOUT`.
    let _permit = intake
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| HttpError::Overloaded)?;
    let (headers, body) = read_body(intake, request).await?;
    if event.is_empty() {
        return Err(HttpError::MissingHeader("X-GitHub-Event"));
    }
    let delivery_id = header_str(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty())
        .ok_or(HttpError::MissingHeader("X-GitHub-Delivery"))?
        .to_owned();
    let payload = payload_of(&headers, &body)?;
    // The signature covers the raw body exactly as received (form or JSON), and is checked
    // before the JSON is parsed.
    let authority = intake
        .secrets
        .verify(&body, header_str(&headers, "x-hub-signature-256"))?;
    if event == "ping" {
        // Hook and App pings alike (an App's names no repository).
        return Ok((StatusCode::OK, "pong"));
    }
    let read = Read::parse(event, &payload).map_err(|e| HttpError::Malformed(e.to_string()))?;
    let envelope = read.envelope();
    // App events (`installation`, `installation_repositories`) name no repository or
    // organization: nothing for us, but not a failed delivery on GitHub's side either.
    let Some(owner_login) = envelope.owner() else {
        return Ok((StatusCode::ACCEPTED, "ignored_no_owner"));
    };
    // An owner we do not serve: 2xx (a 4xx would show as a failed delivery), counted.
    let Some(owner) = intake.config.owner(owner_login) else {
        debug!(owner = %Untrusted(owner_login), "delivery for an owner not configured");
        return Ok((StatusCode::ACCEPTED, "ignored_unknown_owner"));
    };
    authority
        .admits(&owner.owner(), owner.webhook_secret.is_some())
        .map_err(|refusal| match refusal {
            Refusal::Unsigned(e) => HttpError::Signature(e),
            Refusal::OtherOwner => HttpError::OwnerMismatch(owner.name.clone()),
        })?;
    if owner.webhook_secret.is_none() {
        debug!(owner = %owner.name, "accepting an unsigned webhook (ALLOW_UNSIGNED_WEBHOOKS)");
    }

    let now = shared::runner::now_ms();
    let meaning = read
        .interpret(event, owner, now)
        .map_err(|e| HttpError::Malformed(e.to_string()))?;
    let (effect, outcome) = match meaning {
        Meaning::Ping => return Ok((StatusCode::OK, "pong")),
        Meaning::Ignored(why) => (WebhookEffect::Ignore, why.as_str()),
        // Every hook we create subscribes to both events, so where `workflow_job` deliveries
        // arrive for this owner they already carry each job: fetching the run's jobs as well
        // would spend a REST call per run for nothing. `workflow_run` stays the signal only
        // where it is the only one (the Go tool's hooks); lost `workflow_job` deliveries are the
        // reconciler's to recover.
        Meaning::Effect(WebhookEffect::FetchRun(_))
            if intake
                .store
                .job_deliveries_since(&owner.owner(), now - JOB_EVENTS_WINDOW_MS)
                .await
                .map_err(HttpError::NotRecorded)? =>
        {
            (WebhookEffect::Ignore, "ignored_covered_by_workflow_job")
        }
        Meaning::Effect(effect) => (effect, "accepted"),
    };
    let changes_demand = !matches!(effect, WebhookEffect::Ignore);
    let in_progress = match &effect {
        WebhookEffect::Job(job) if job.state == crate::store::JobState::InProgress => {
            Some(job.clone())
        }
        _ => None,
    };
    let job_id = match &effect {
        WebhookEffect::Job(job) => Some(job.id),
        _ => None,
    };
    let delivery = NewDelivery {
        id: delivery_id,
        event: event.to_owned(),
        owner: Some(owner.owner()),
        received_ms: now,
    };
    match intake
        .store
        .record_webhook(delivery, effect)
        .await
        .map_err(HttpError::NotRecorded)?
    {
        Recorded::Duplicate => Ok((StatusCode::OK, "duplicate")),
        Recorded::New => {
            if changes_demand {
                intake.nudge.notify_one();
            }
            if let Some(job) = job_id {
                debug!(target: shared::stage::TARGET, stage = shared::stage::names::WEBHOOK_RECORDED,
                       job, handler_us = received.elapsed().as_micros() as u64, "stage");
            }
            if let Some(job) = in_progress
                && let Err(error) =
                    timing::job_in_progress(&*intake.store, &intake.metrics, &job, now).await
            {
                debug!(%error, "cannot read the job to measure its queue time");
            }
            Ok((StatusCode::ACCEPTED, outcome))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_store_that_cannot_be_reached_now_is_a_503_with_retry_after_not_a_500() {
        for (error, status) in [
            (StoreError::Busy, StatusCode::SERVICE_UNAVAILABLE),
            (
                StoreError::Unreachable("connection refused".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (StoreError::Unexpected, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let response = HttpError::NotRecorded(error).into_response();
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                status == StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }
}
