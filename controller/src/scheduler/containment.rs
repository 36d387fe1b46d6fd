//! The executor's side of failure containment: which planned starts a back-off or an open
//! circuit holds (and why, for the jobs API), how failures are worded and recorded, and the one
//! deliberate retry of `generate-jitconfig` (a 5xx may have created the runner: the retry with
//! the same name meets 409, which finds that runner by name and deletes it first).
//!
//! The rules themselves are the pure [`super::backoff`] type; this module feeds it.

use rand::Rng;
use shared::github::{GithubApi, GithubError, JitConfig, JitConfigRequest, Scope};
use tracing::{info, warn};

use super::backoff::{Backoffs, Blocked, Failure, Key, Policy, human_wait};
use super::executor::Scheduler;
use super::planner::{Start, WaitReason};
use crate::config::Config;
use crate::metrics::{CauseLabels, Metrics};

pub use super::naming::NAME_PREFIX;

/// The back-off policy of the configuration.
pub fn policy(config: &Config) -> Policy {
    Policy {
        initial: config.containment.backoff_initial,
        max: config.containment.backoff_max,
        probe: config.containment.circuit_probe,
        ..Policy::default()
    }
}

/// How a permission GitHub asked for is granted, in its UI's words: `administration=write` →
/// `Administration: write`.
fn grant_hint(permissions: &str) -> String {
    permissions
        .split([',', ';'])
        .filter_map(|p| {
            let (name, access) = p.trim().split_once('=')?;
            let words: Vec<String> = name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            Some(format!("{}: {access}", words.join(" ")))
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A GitHub refusal, worded for the operator: what failed, GitHub's words, what to do.
pub fn github_failure(owner: &str, what: &str, api_url: &str, err: &GithubError) -> Failure {
    // No answer at all is not a refusal: say so, with where we tried and why it failed.
    if let Some(cause) = unreachable(err) {
        return Failure {
            reason: format!(
                "owner {owner}: {what}: could not reach GitHub at {api_url} ({cause}) — retrying \
                 with back-off"
            ),
            permanent: false,
        };
    }
    if let GithubError::Server { status, .. } = err {
        return Failure {
            reason: format!(
                "owner {owner}: {what}: GitHub answered {status} (a server error) — retrying \
                 with back-off"
            ),
            permanent: false,
        };
    }
    let status = err.status().map(|s| format!(" {s}")).unwrap_or_default();
    let (said, hint) = match err {
        GithubError::Forbidden {
            message,
            accepted_permissions,
            accepted_scopes,
            ..
        } => {
            let hint = match (accepted_permissions.as_deref(), accepted_scopes.as_deref()) {
                (Some(p), _) if !p.is_empty() => format!("grant {}", grant_hint(p)),
                (_, Some(s)) if !s.is_empty() => format!("give the token scope {s}"),
                _ => "check the credentials' permissions".into(),
            };
            (format!(" '{message}'"), hint)
        }
        GithubError::NotFound { .. } => (
            " 'Not Found'".into(),
            "check the owner and repository names, and that the credentials can see them".into(),
        ),
        GithubError::Validation {
            message, details, ..
        } => {
            let mut said = message.clone();
            if !details.is_empty() {
                said = format!("{said}: {}", details.join("; "));
            }
            (
                format!(" '{said}'"),
                "check RUNNER_GROUP and LABELS of this owner".into(),
            )
        }
        GithubError::Unauthorized { message, .. } => (
            format!(" '{message}'"),
            "the credentials were refused: renew the token or the App key".into(),
        ),
        other => (format!(": {other}"), "retrying with back-off".into()),
    };
    Failure {
        reason: format!("owner {owner}: {what} refused{status}{said} — {hint}"),
        permanent: err.is_permanent(),
    }
}

/// Why GitHub gave no answer (connection refused, DNS, TLS, time-out), if that is what `err`
/// is, also under an App's authentication.
fn unreachable(err: &GithubError) -> Option<String> {
    match err {
        GithubError::Transport { source, .. } => {
            let mut text = String::new();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
            while let Some(c) = cause {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&c.to_string());
                cause = c.source();
            }
            Some(text)
        }
        GithubError::AppAuth { source, .. } => unreachable(source),
        _ => None,
    }
}

/// Jitter sample in `[0, 1)`.
fn sample() -> f64 {
    rand::rng().random::<f64>()
}

impl Scheduler {
    /// Records a failure of `key`, counted in `/metrics`.
    pub(super) fn record_failure(&self, key: Key, failure: Failure, now: i64) {
        let kind = if failure.permanent {
            "circuit"
        } else {
            "backoff"
        };
        self.metrics
            .containment
            .start_failures
            .get_or_create(&CauseLabels {
                cause: key.cause().into(),
                kind: kind.into(),
            })
            .inc();
        warn!(cause = key.cause(), key = ?key, reason = %failure.reason, permanent = failure.permanent, "start failed; backing off");
        self.backoffs(|b| b.failure(key, failure, now, sample()));
    }

    pub(super) fn record_success(&self, key: &Key) {
        self.backoffs(|b| b.success(key));
    }

    pub(super) fn backoffs<T>(&self, f: impl FnOnce(&mut Backoffs) -> T) -> T {
        self.state.backoffs(f)
    }

    /// What holds a planned start back, if anything: its owner's GitHub back-off or circuit, or
    /// its (owner, image) crash back-off.
    pub(super) fn held(&self, start: &Start, now: i64) -> Option<Blocked> {
        self.held_owner(&start.owner, now)
    }

    /// Whether the owner's starts (GitHub for it, its image) back off now.
    pub(super) fn held_owner(&self, owner_name: &str, now: i64) -> Option<Blocked> {
        let owner = Key::Owner {
            owner: owner_name.to_owned(),
        };
        let image = Key::Image {
            owner: owner_name.to_owned(),
            image: self.config.runners.image.clone(),
        };
        self.backoffs(|b| b.blocked(&owner, now).or_else(|| b.blocked(&image, now)))
    }

    /// Agents whose starts back off now.
    pub(super) fn held_agents(&self, now: i64) -> Vec<Blocked> {
        self.backoffs(|b| {
            b.all()
                .into_iter()
                .filter(|x| matches!(x.key, Key::Agent { .. }) && x.next_try_ms > now)
                .collect()
        })
    }
}

/// `generate-jitconfig`, with the one retry a 5xx calls for. After a 5xx GitHub may have
/// created the runner, so the retry uses the same name; a 409 "already exists" then means
/// that runner is ours (our name prefix): it is found by name, deleted, and the request
/// sent once more. Never more than three POSTs for one runner.
pub async fn jit_config(
    github: &dyn GithubApi,
    metrics: &Metrics,
    scope: &Scope,
    request: &JitConfigRequest,
) -> Result<JitConfig, GithubError> {
    let mut server_errors = 0;
    let mut conflicts = 0;
    loop {
        match github.generate_jit_config(scope, request).await {
            Err(GithubError::Server { .. }) if server_errors == 0 => {
                server_errors += 1;
                warn!(runner = %request.name, "GitHub failed generating a JIT config; retrying once with the same name");
            }
            Err(e @ GithubError::Conflict { .. })
                if conflicts == 0 && request.name.starts_with(NAME_PREFIX) =>
            {
                conflicts += 1;
                let runners = github.list_runners(scope).await?;
                let Some(stale) = runners
                    .iter()
                    .find(|r| r.name.eq_ignore_ascii_case(&request.name))
                else {
                    return Err(e);
                };
                info!(runner = %request.name, github_id = stale.id, "a registration with this name exists (a failed earlier attempt): deleting it");
                github.delete_runner(scope, stale.id).await?;
                metrics
                    .containment
                    .registrations_deleted
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: "conflict".into(),
                    })
                    .inc();
            }
            other => return other,
        }
    }
}

/// The wait reason of a job held by `blocked`.
pub fn wait_reason(blocked: &Blocked, now: i64) -> WaitReason {
    WaitReason::BackingOff {
        cause: blocked.key.cause().to_owned(),
        detail: blocked.reason.clone(),
        circuit_open: blocked.circuit_open,
        next_try_in: human_wait(blocked.next_try_ms - now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_says_what_to_grant() {
        let err = GithubError::Forbidden {
            request: "POST /orgs/acme/actions/runners/generate-jitconfig".into(),
            message: "Resource not accessible by integration".into(),
            accepted_permissions: Some("administration=write".into()),
            accepted_scopes: None,
        };
        let f = github_failure("acme", "JIT registration", "https://api.github.com", &err);
        assert_eq!(
            f.reason,
            "owner acme: JIT registration refused 403 'Resource not accessible by integration' — grant Administration: write"
        );
        assert!(f.permanent);
    }

    #[test]
    fn org_permissions_read_as_in_githubs_settings() {
        assert_eq!(
            grant_hint("organization_self_hosted_runners=write"),
            "Organization Self Hosted Runners: write"
        );
    }

    #[test]
    fn a_server_error_is_transient_and_a_422_is_not() {
        let server = GithubError::Server {
            request: "POST /x".into(),
            status: 502,
        };
        let f = github_failure(
            "acme",
            "JIT registration",
            "https://api.github.com",
            &server,
        );
        assert!(!f.permanent);
        assert!(f.reason.contains("GitHub answered 502"), "{}", f.reason);
        assert!(!f.reason.contains("refused"), "{}", f.reason);
        let invalid = GithubError::Validation {
            request: "POST /x".into(),
            message: "Validation Failed".into(),
            details: vec!["Runner group not found".into()],
        };
        let f = github_failure(
            "acme",
            "JIT registration",
            "https://api.github.com",
            &invalid,
        );
        assert!(f.permanent);
        assert!(
            f.reason
                .contains("422 'Validation Failed: Runner group not found'"),
            "{}",
            f.reason
        );
    }
}
