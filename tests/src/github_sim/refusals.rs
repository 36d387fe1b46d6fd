//! Registration refusals the simulator can be told to give, as GitHub gives them, so the
//! controller's containment (back-off, circuits, 409 recovery) is tested against GitHub's answers.
//!
//! Rules and sources:
//! - **403** on `generate-jitconfig`: "Resource not accessible by integration" with
//!   `X-Accepted-GitHub-Permissions: administration=write` (repository) or
//!   `organization_self_hosted_runners=write` (organization) — the shape GitHub gives an App
//!   lacking the permission (GITHUB-API.md §8; the same words `access.rs` uses for a real lack).
//! - **404** on `generate-jitconfig`: `{"message": "Not Found"}` — the operation's `404` response
//!   (`components/responses/not_found`, a `basic-error`) in the OpenAPI description
//!   (`rest/openapi-subset.json`, op `actions/generate-runner-jitconfig-for-org|repo`).
//! - **422** on `generate-jitconfig`: `validation_failed_simple` (a `validation-error-simple`:
//!   `message` and `errors` as strings), as the operation's `422` response says. The text
//!   ("Validation Failed", "Runner group not found") is ours: GitHub documents only the shape.
//! - **5xx after creating**: the runner is created (and listed by `GET …/actions/runners`) but the
//!   answer is a 502, as when GitHub's front end times out after the backend acted. A retried POST
//!   with the same name then meets the operation's documented **409** (`jit` in `api_actions.rs`).
//!
//! Refusals last until cleared ([`super::GithubSim::clear_jit_refusal`]); "after create" faults are
//! counted down.

use axum::http::StatusCode;
use serde_json::json;

use super::access::ApiError;

/// How `generate-jitconfig` is refused for an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitRefusal {
    /// 403: the credentials lack the runner administration permission.
    Forbidden,
    /// 404: the endpoint or scope is not visible.
    NotFound,
    /// 422: the request is invalid (e.g. a runner group that does not exist).
    Invalid,
}

/// What the simulator refuses, per owner (lower-cased login).
#[derive(Debug, Default)]
pub struct Refusals {
    jit: std::collections::HashMap<String, JitRefusal>,
    /// The next this many JIT configs are created and then answered with this 5xx.
    fail_after_create: Option<(usize, u16)>,
    /// Every `generate-jitconfig` request received.
    pub jit_requests: u64,
}

impl Refusals {
    pub fn refuse_jit(&mut self, owner: &str, how: Option<JitRefusal>) {
        match how {
            Some(how) => self.jit.insert(owner.to_ascii_lowercase(), how),
            None => self.jit.remove(&owner.to_ascii_lowercase()),
        };
    }

    pub fn fail_after_create(&mut self, count: usize, status: u16) {
        self.fail_after_create = (count > 0).then_some((count, status));
    }

    /// Counts a JIT request and answers with the owner's refusal, if any.
    pub fn check_jit(&mut self, owner: &str, repo_level: bool) -> Result<(), ApiError> {
        self.jit_requests += 1;
        match self.jit.get(&owner.to_ascii_lowercase()) {
            None => Ok(()),
            Some(JitRefusal::Forbidden) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            )
            .header(
                "x-accepted-github-permissions",
                if repo_level {
                    "administration=write"
                } else {
                    "organization_self_hosted_runners=write"
                },
            )),
            Some(JitRefusal::NotFound) => Err(ApiError::not_found()),
            Some(JitRefusal::Invalid) => {
                let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
                e.errors = Some(json!(["Runner group not found"]));
                Err(e)
            }
        }
    }

    /// After a JIT config was created: the 5xx to answer instead, if one is due.
    pub fn take_after_create(&mut self) -> Option<ApiError> {
        let (count, status) = self.fail_after_create?;
        self.fail_after_create = (count > 1).then_some((count - 1, status));
        Some(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            "Server Error",
        ))
    }
}
