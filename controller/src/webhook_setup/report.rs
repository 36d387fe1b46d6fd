//! What a webhook setup run reports, per target and per owner: the JSON of
//! `POST …/webhooks/preview`, `POST …/webhooks/setup` and `GET …/webhooks/setup`.

use std::time::SystemTime;

use serde::Serialize;
use shared::github::{GithubError, Scope};

use super::Action;
use crate::http::error::{Grant, chain, github_error_parts, rfc3339};

/// How one target's action went (setup only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Failed,
}

/// A GitHub error as a report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// The HTTP status the management API answers with for this error.
    #[serde(skip)]
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

impl ErrorReport {
    pub fn from_github(err: &GithubError) -> Self {
        let (status, code, _) = github_error_parts(err);
        Self {
            status: status.as_u16(),
            code,
            message: chain(err),
            grant: Grant::from_error(err),
        }
    }
}

/// One target in a preview or setup report.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// `owner/repo`, or the organization's login.
    pub target: String,
    /// `repository` or `organization`.
    pub kind: &'static str,
    pub action: Action,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_id: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_hooks: Vec<u64>,
    /// Hooks with other URLs, left alone.
    pub foreign_hooks: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

impl TargetReport {
    pub(super) fn new(scope: &Scope, action: Action, reasons: Vec<String>) -> Self {
        let (target, kind) = match scope {
            Scope::Repo(r) => (r.to_string(), "repository"),
            Scope::Org(o) => (o.clone(), "organization"),
        };
        Self {
            target,
            kind,
            action,
            reasons,
            hook_id: None,
            removed_hooks: Vec::new(),
            foreign_hooks: 0,
            outcome: None,
            error: None,
        }
    }
}

/// Counts per action, plus failures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub nothing: usize,
    pub skip: usize,
    pub failed: usize,
}

/// One owner's preview or setup.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerReport {
    pub owner: String,
    pub webhook_url: String,
    pub mode: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub summary: Summary,
    pub targets: Vec<TargetReport>,
    /// Set when the run could not list its targets at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    /// Set when GitHub's rate limit (or the start-up task's budget) stopped the run early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<String>,
}

impl OwnerReport {
    pub(super) fn finish(mut self) -> Self {
        self.finished_at = rfc3339(SystemTime::now());
        let mut s = Summary::default();
        for t in &self.targets {
            match (t.outcome, t.action) {
                (Some(Outcome::Failed), _) => s.failed += 1,
                (_, Action::Create) => s.create += 1,
                (_, Action::Update) => s.update += 1,
                (_, Action::Nothing) => s.nothing += 1,
                (_, Action::Skip) => s.skip += 1,
            }
        }
        self.summary = s;
        self
    }

    /// What went wrong with the run as a whole, if anything did: its targets could not be
    /// listed (then `failed` counts nothing, since there were no targets to fail), or some
    /// targets failed.
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!(
                "could not list the repositories and hooks to set up: {}",
                e.message
            ));
        }
        (self.summary.failed > 0).then(|| {
            format!(
                "{} of {} target(s) failed",
                self.summary.failed,
                self.targets.len()
            )
        })
    }

    /// Whether the next run should come soon rather than at the resync interval.
    pub(super) fn needs_retry(&self) -> bool {
        self.error.is_some() || self.rate_limited_until.is_some() || self.summary.failed > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(error: Option<ErrorReport>) -> OwnerReport {
        OwnerReport {
            owner: "acme".into(),
            webhook_url: "https://ci.example.com/webhook".into(),
            mode: "apply",
            started_at: String::new(),
            finished_at: String::new(),
            summary: Summary::default(),
            targets: Vec::new(),
            error,
            rate_limited_until: None,
        }
        .finish()
    }

    #[test]
    fn a_run_that_could_not_list_its_targets_is_a_failure_not_zero_failures() {
        assert_eq!(report(None).failure(), None);
        let err = GithubError::Server {
            request: "GET /orgs/acme/repos".into(),
            status: 502,
        };
        let failed = report(Some(ErrorReport::from_github(&err)));
        assert_eq!(failed.summary.failed, 0);
        let said = failed.failure().expect("a failure");
        assert!(said.contains("could not list"), "{said}");
        assert!(said.contains("502"), "{said}");
        assert!(failed.needs_retry());
    }
}
