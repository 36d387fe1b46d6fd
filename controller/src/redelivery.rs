//! Recovering failed webhook deliveries: GitHub never retries a delivery on its own, but keeps
//! each for 3 days and resends it on request with the same GUID (which our intake deduplicates).
//!
//! Every `REDELIVERY_INTERVAL` a pass reads the recent deliveries of our hooks (the ones webhook
//! setup created or found, org or repository) and asks GitHub to redeliver each failed one once
//! ([`plan::to_redeliver`] decides). One list call per hook recovers every lost delivery of an
//! organization, whatever its repository count.
//!
//! Budget: at most [`HOOKS_PER_PASS`] hooks per pass, taken round-robin (so repository-level
//! hooks of a large user account are covered in turn, well within GitHub's 3 days), at most
//! [`PAGES_PER_HOOK`] pages each, at most [`REDELIVERIES_PER_PASS`] redeliveries; a pass stops at
//! the first rate-limit refusal or budget deferral (its calls are background work for the API
//! budget, `API_BACKGROUND_SHARE`). The GUIDs asked for are remembered (bounded, for the window),
//! since GitHub may list the new attempt only later.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use shared::github::{GithubApi, GithubError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::scheduler::DecisionsHandle;
use crate::webhook_setup::WebhookSetup;

pub const HOOKS_PER_PASS: usize = 5;
pub const PAGES_PER_HOOK: usize = 2;
pub const REDELIVERIES_PER_PASS: usize = 100;
/// GUIDs remembered at most (each for [`plan::WINDOW`]).
const ASKED_MAX: usize = 100_000;

/// What the latest pass did, for `/status`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PassReport {
    /// Epoch milliseconds.
    pub at_ms: i64,
    pub hooks_checked: usize,
    pub failed_found: usize,
    pub redelivered: usize,
    pub errors: Vec<String>,
}

pub struct Redelivery {
    github: Arc<dyn GithubApi>,
    webhooks: Arc<WebhookSetup>,
    metrics: Arc<Metrics>,
    /// Where the latest pass is published for `/status`.
    decisions: DecisionsHandle,
    /// GUID → when we asked (epoch ms). Short sections only, never across `.await`.
    asked: Mutex<HashMap<String, i64>>,
    /// Where the next pass starts in the list of our hooks.
    cursor: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Redelivery {
    pub fn new(
        github: Arc<dyn GithubApi>,
        webhooks: Arc<WebhookSetup>,
        metrics: Arc<Metrics>,
        decisions: DecisionsHandle,
    ) -> Self {
        Self {
            github,
            webhooks,
            metrics,
            decisions,
            asked: Mutex::default(),
            cursor: Mutex::new(0),
        }
    }

    /// Runs a pass every `interval` until `shutdown`.
    pub fn spawn(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                // Background work for the API budget: paused first when quota runs low.
                shared::github::CallKind::Background
                    .scope(self.pass())
                    .await;
            }
        });
    }

    /// One pass over the next few of our hooks.
    pub async fn pass(&self) -> PassReport {
        let now = SystemTime::now();
        let now_ms = shared::runner::now_ms();
        let mut report = PassReport {
            at_ms: now_ms,
            ..PassReport::default()
        };
        let hooks = self.webhooks.our_hooks();
        let start = {
            let mut cursor = lock(&self.cursor);
            let start = if hooks.is_empty() {
                0
            } else {
                *cursor % hooks.len()
            };
            *cursor = start + HOOKS_PER_PASS.min(hooks.len());
            start
        };
        let window_ms = plan::WINDOW.as_millis() as i64;
        'hooks: for (scope, hook_id) in hooks
            .iter()
            .cycle()
            .skip(start)
            .take(HOOKS_PER_PASS.min(hooks.len()))
        {
            report.hooks_checked += 1;
            let deliveries = match self
                .github
                .recent_hook_deliveries(scope, *hook_id, PAGES_PER_HOOK)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    warn!(target = %scope, hook = hook_id, error = %e, "cannot list a webhook's deliveries; the next pass retries");
                    let stop = matches!(
                        e,
                        GithubError::RateLimited { .. } | GithubError::Deferred { .. }
                    );
                    report.errors.push(format!("{scope} hook {hook_id}: {e}"));
                    if stop {
                        break;
                    }
                    continue;
                }
            };
            let asked: HashSet<String> = {
                let mut asked = lock(&self.asked);
                asked.retain(|_, at| now_ms - *at < window_ms);
                asked.keys().cloned().collect()
            };
            let todo = plan::to_redeliver(&deliveries, &asked, now);
            report.failed_found += todo.len();
            for r in todo {
                if report.redelivered >= REDELIVERIES_PER_PASS {
                    break 'hooks;
                }
                match self.github.redeliver(scope, *hook_id, r.delivery_id).await {
                    Ok(()) => {
                        let mut asked = lock(&self.asked);
                        if asked.len() < ASKED_MAX {
                            asked.insert(r.guid.clone(), now_ms);
                        }
                        drop(asked);
                        report.redelivered += 1;
                        self.metrics.redelivery("requested");
                        info!(target = %scope, hook = hook_id, guid = %r.guid, "asked GitHub to redeliver a failed webhook delivery");
                    }
                    Err(e) => {
                        self.metrics.redelivery("failed");
                        warn!(target = %scope, hook = hook_id, guid = %r.guid, error = %e, "cannot redeliver; the next pass retries");
                        let stop = matches!(
                            e,
                            GithubError::RateLimited { .. } | GithubError::Deferred { .. }
                        );
                        report
                            .errors
                            .push(format!("{scope} delivery {}: {e}", r.delivery_id));
                        if stop {
                            break 'hooks;
                        }
                    }
                }
            }
        }
        let published = report.clone();
        self.decisions.update(|d| d.redelivery = Some(published));
        report
    }
}
