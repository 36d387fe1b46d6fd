//! What the controller tells people: `/status` (the seed's shape, extended with owners, agents
//! and the queue), `/ready`, `/metrics`, and `GET /api/v1/jobs/{id}` — where a job is and, if it
//! waits, why.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::{AppState, Bearer, HttpError};
use crate::scheduler::executor::Decisions;
use crate::scheduler::planner::WaitReason;
use crate::store::{JobState, Owner, RunnerLifecycle};

/// A sentence for a wait reason, for people reading `/status` or the jobs API.
pub fn explain(reason: &WaitReason) -> String {
    match reason {
        WaitReason::RunnerStarting { runner } => {
            format!(
                "runner {runner} is starting or idle and can take it; GitHub assigns jobs to matching runners"
            )
        }
        WaitReason::AwaitingJobReport { runner } => format!(
            "runner {runner} ended moments ago after a job GitHub has not reported yet, most likely \
             this one; a new runner starts if GitHub does not report it soon"
        ),
        WaitReason::RunnerPlanned { agent } => {
            format!("a runner is being started for it on agent {agent}")
        }
        WaitReason::OwnerAtLimit { owner, max_runners } => {
            format!(
                "owner {owner} is at its limit of {max_runners} runners; it will be served when one finishes"
            )
        }
        WaitReason::UnknownOwner { owner } => format!("owner {owner} is not configured"),
        WaitReason::NoAgentConnected => "no agent is connected".into(),
        WaitReason::NoAgentForOwner { owner } => format!(
            "no connected agent may serve owner {owner} (see `gha-controller agents policy`)"
        ),
        WaitReason::LabelsNotOffered { missing } => format!(
            "no agent offers the labels {} (a GitHub-hosted label, or an agent LABELS is missing)",
            missing.join(", ")
        ),
        WaitReason::NoAgentOfArch { arch } => {
            format!("no agent of architecture {arch} is connected")
        }
        WaitReason::AgentsUnavailable => "the agents that fit are draining or unhealthy".into(),
        WaitReason::AgentsFull => {
            "every agent that fits is at capacity; it will be served when one frees".into()
        }
        WaitReason::BackingOff {
            detail,
            next_try_in,
            ..
        } => format!("{detail}; next try in {next_try_in}"),
        WaitReason::Registration { problem } => {
            format!("no runner can be registered for it: {problem}")
        }
    }
}

/// How well the controller does its job, from the scheduler's latest decisions: `running`, or
/// `degraded` with a reason (free of names, so the open `/status` may show it) and the last
/// error in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub degraded: bool,
    pub reason: Option<String>,
    pub last_error: Option<String>,
    /// Every configured owner's starts are failing at GitHub: nothing can be served.
    pub github_down: bool,
}

/// A pure function of the decisions and the number of owners served.
pub fn health(decisions: &Decisions, owners: usize) -> Health {
    let mut github: Vec<_> = decisions
        .containment
        .iter()
        .filter(|b| b.cause == "github")
        .collect();
    github.sort_by_key(|b| std::cmp::Reverse(b.next_try_ms));
    if let Some(e) = &decisions.last_error {
        return Health {
            degraded: true,
            reason: Some("the scheduler's last activation failed".into()),
            last_error: Some(e.clone()),
            github_down: false,
        };
    }
    match github.first() {
        None => Health {
            degraded: false,
            reason: None,
            last_error: None,
            github_down: false,
        },
        Some(latest) => {
            let down = github.len();
            let unreachable = github
                .iter()
                .any(|b| b.reason.contains("could not reach GitHub"));
            Health {
                degraded: true,
                reason: Some(format!(
                    "runner registrations are failing at GitHub ({}) for {down} of {owners} \
                     owner(s); jobs of those owners wait",
                    if unreachable {
                        "unreachable"
                    } else {
                        "refusing"
                    }
                )),
                last_error: Some(latest.reason.clone()),
                github_down: owners > 0 && down >= owners,
            }
        }
    }
}

/// `GET /status`: the seed's shape. Details (names of repositories, jobs, runners, agents,
/// and the scheduler's last error) only with the API token or `STATUS_TOKEN`; without one the
/// same keys carry aggregates (counts) and no names; with a wrong one, 401.
pub async fn status(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let detailed = match state.tokens.status(&headers) {
        Bearer::Valid => true,
        Bearer::Absent => false,
        Bearer::Wrong => return Err(HttpError::Unauthorized),
    };
    let full = status_details(&state).await?;
    Ok(Json(if detailed { full } else { aggregates(&full) }))
}

/// The status without a name in it: the seed's keys, counts for lists.
fn aggregates(full: &Value) -> Value {
    let count = |v: &Value| v.as_array().map_or(0, Vec::len);
    json!({
        "status": full["status"],
        "reason": full["reason"],
        "config": {
            "repository": Value::Null,
            "all_repos": full["config"]["all_repos"],
            "architecture": full["config"]["architecture"],
            "max_runners": full["config"]["max_runners"],
        },
        "runners": {
            "current": full["runners"]["current"],
            "max": full["runners"]["max"],
            "list": [],
        },
        "owners": count(&full["owners"]),
        "agents": count(&full["agents"]),
        "queue": { "depth": full["queue"]["depth"] },
        "warm_pools": warm_counts(&full["warm_pools"]["owners"]),
        "scheduler": {
            "activations": full["scheduler"]["activations"],
            "last_activation_ms": full["scheduler"]["last_activation_ms"],
        },
        // Whether this replica leads, without replica names or addresses.
        "leader": {
            "this_replica": full["leader"]["this_replica"],
            "generation": full["leader"]["generation"],
        },
        "details": "send Authorization: Bearer <API_TOKEN or STATUS_TOKEN> for names and reasons",
    })
}

/// Warm runners wanted and kept, over every owner and pool (no names).
fn warm_counts(owners: &Value) -> Value {
    let pools = || {
        owners
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|o| o["pools"].as_array().into_iter().flatten())
    };
    let sum = |key: &str| -> u64 { pools().map(|p| p[key].as_u64().unwrap_or(0)).sum() };
    json!({
        "min_idle": sum("min_idle"),
        "ready": sum("ready"),
        "starting": sum("starting"),
    })
}

async fn status_details(state: &AppState) -> Result<Value, HttpError> {
    let runners = state.store.active_runners().await?;
    let queued = state.store.queued_jobs().await?;
    let decisions = state.decisions.get();
    let agents = state.registry.snapshot();
    let config = &state.config;
    let max_total: u32 = config.owners.iter().map(|o| o.max_runners).sum();
    let repository = match config.owners.as_slice() {
        [one] => match (&one.repo_name, one.all_repos) {
            (_, true) => format!("{}/*", one.name),
            (Some(repo), false) => format!("{}/{repo}", one.name),
            (None, false) => one.name.clone(),
        },
        many => many
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    };
    let mut architectures: Vec<String> = agents
        .iter()
        .filter(|a| a.connected)
        .flat_map(|a| a.architectures.iter().map(|x| x.to_string()))
        .collect();
    architectures.sort();
    architectures.dedup();
    let owners: Vec<Value> = config
        .owners
        .iter()
        .map(|o| {
            let owner = o.owner();
            json!({
                "name": o.name,
                "max_runners": o.max_runners,
                "active_runners": runners.iter().filter(|r| owner == r.owner).count(),
                "queued_jobs": queued.iter().filter(|j| j.owner == owner).count(),
                "repository": o.repo_name,
                "all_repos": o.all_repos,
                "min_idle_runners": o.warm.total(),
                "min_idle_schedule": o.warm.schedule.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    let waiting: Vec<Value> = queued
        .iter()
        .map(|j| {
            let reason = decisions.reason(j);
            json!({
                "job": j.id,
                "owner": j.owner,
                "repo": j.repo,
                "name": j.name,
                "labels": j.labels,
                "waiting": reason,
                "explanation": reason.map(explain),
            })
        })
        .collect();
    let health = health(&decisions, config.owners.len());
    Ok(json!({
        "status": if health.degraded { "degraded" } else { "running" },
        "reason": health.reason,
        "last_error": health.last_error,
        "config": {
            "repository": repository,
            "all_repos": config.owners.iter().any(|o| o.all_repos),
            "architecture": architectures.join(","),
            "max_runners": max_total,
            // Runner registrations of this installation are named gha-{owner}-{installation}-….
            "installation": decisions.installation,
        },
        "runners": {
            "current": runners.iter().filter(|r| r.lifecycle != RunnerLifecycle::Requested).count(),
            "max": max_total,
            "list": runners,
        },
        "owners": owners,
        "agents": agents,
        "queue": { "depth": queued.len(), "jobs": waiting },
        "containment": decisions.containment,
        "registration_sweeps": decisions.sweeps,
        "webhook_redelivery": decisions.redelivery,
        // MIN_IDLE_RUNNERS: per owner and pool, the idle runners kept ready and why one is short.
        "warm_pools": {
            "max_age_seconds": config.runners.warm_max_age.as_secs(),
            "owners": decisions.warm,
        },
        "scheduler": {
            "activations": decisions.activations,
            "last_activation_ms": decisions.last_activation_ms,
            "last_error": decisions.last_error,
        },
        "registration": decisions.registration,
        "github_budget": budget_status(&state.github.budget()),
        "leader": state.leadership.view(),
    }))
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The API budget: each owner's quota buckets, what background work may still spend, and the
/// requests made by kind and outcome.
fn budget_status(budget: &shared::github::Budget) -> Value {
    let calls: Vec<Value> = budget
        .counts()
        .into_iter()
        .map(|(owner, kind, outcome, n)| {
            json!({ "owner": owner, "kind": kind, "outcome": outcome.as_str(), "count": n })
        })
        .collect();
    json!({
        "background_share_pct": budget.policy().background_share_pct,
        "buckets": budget.buckets(epoch_now()),
        "calls": calls,
    })
}

/// The scheduler counts as stuck when it has not finished an activation for this long (it runs
/// at least every few seconds).
const SCHEDULER_STALE_MS: i64 = 60_000;

/// How long `/ready` waits for the store before it counts as not answering.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What `/ready` weighs.
#[derive(Debug, Clone, Default)]
pub struct ReadyInputs {
    pub store_ok: bool,
    /// This replica leads (always, with SQLite).
    pub leader: bool,
    /// The scheduler has finished an activation.
    pub scheduled: bool,
    /// ... within [`SCHEDULER_STALE_MS`].
    pub fresh: bool,
    /// GitHub refuses registrations for every owner (and why).
    pub github_down: Option<String>,
}

/// Whether the replica is ready, and if not why. A standby is ready when its store answers:
/// it accepts webhooks (verify, commit, 2xx) like the leader; it does not schedule, so the
/// scheduler and GitHub are the leader's to report. Agents' gRPC goes to the leader (a standby
/// turns them away with its address), so a Service must not use `/ready` to pick gRPC backends.
pub fn readiness(i: &ReadyInputs) -> (bool, Option<String>) {
    let reason = if !i.store_ok {
        Some("the store does not answer".to_owned())
    } else if !i.leader {
        None
    } else if !i.scheduled {
        Some("the scheduler has not run yet".to_owned())
    } else if !i.fresh {
        Some("the scheduler has not finished an activation for a minute".to_owned())
    } else {
        i.github_down.clone()
    };
    (reason.is_none(), reason)
}

/// `GET /ready`: 200 while the controller can do its job — the store answers, the scheduler
/// has run and keeps running, and GitHub accepts registrations for at least one owner;
/// otherwise 503 with what is wrong. Webhooks are still accepted and recorded while not
/// ready, and lost ones are recovered by `RECONCILE_INTERVAL`. On a standby replica only the
/// store counts ([`readiness`]); `leader` says who leads.
pub async fn ready(State(state): State<AppState>) -> Response {
    // Bounded: a replica cut from its database must still say so (and who leads) promptly.
    let store_ok = tokio::time::timeout(READY_STORE_TIMEOUT, state.store.job_states())
        .await
        .is_ok_and(|r| r.is_ok());
    let decisions = state.decisions.get();
    let scheduled = decisions.activations > 0;
    let fresh = shared::runner::now_ms() - decisions.last_activation_ms < SCHEDULER_STALE_MS;
    let health = health(&decisions, state.config.owners.len());
    let leader = state.leadership.view();
    let inputs = ReadyInputs {
        store_ok,
        leader: leader.this_replica,
        scheduled,
        fresh,
        github_down: health.github_down.then(|| {
            health
                .reason
                .clone()
                .unwrap_or_else(|| "GitHub is down".into())
        }),
    };
    let (ready, reason) = readiness(&inputs);
    let body = Json(json!({
        "ready": ready,
        "store": store_ok,
        "scheduler": scheduled && fresh,
        "github": !health.github_down,
        "reason": reason,
        "leader": leader,
    }));
    if ready {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /metrics`; behind `METRICS_TOKEN` when it is set.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if state.tokens.metrics(&headers) != Bearer::Valid {
        return HttpError::Unauthorized.into_response();
    }
    state.metrics.github_quotas(state.github.quotas());
    let decisions = state.decisions.get();
    let failing: Vec<(&'static str, bool)> = decisions
        .containment
        .iter()
        .map(|b| (b.cause, b.circuit_open))
        .collect();
    let now = shared::runner::now_ms();
    // The oldest job of each class (owner, repository, labels) is enough for each owner's
    // oldest: a scrape reads the class heads, not the whole queue.
    let heads = state
        .store
        .queue_heads(crate::store::queue::HeadLimits {
            per_owner: Default::default(),
            otherwise: 1,
        })
        .await
        .unwrap_or_default();
    let oldest: Vec<(String, i64)> = state
        .config
        .owners
        .iter()
        .map(|o| {
            let owner = o.owner();
            let age = heads
                .iter()
                .filter(|h| h.owner == owner)
                .flat_map(|h| h.oldest.iter())
                .map(|j| now - j.queued_ms.unwrap_or(j.first_seen_ms))
                .max()
                .unwrap_or(0);
            (o.name.clone(), (age / 1000).max(0))
        })
        .collect();
    let agents = state.registry.snapshot();
    state.metrics.operator.observe(&agents, &failing, &oldest);
    let owners: Vec<String> = state.config.owners.iter().map(|o| o.name.clone()).collect();
    state.metrics.fleet.observe(
        now,
        &owners,
        state.config.reconcile_interval.is_some(),
        agents.iter().filter(|a| a.connected).count(),
        state.registry.reconnects(),
    );
    state
        .metrics
        .github_budget(&state.github.budget(), epoch_now());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `?owner=&state=` on `GET /api/v1/jobs`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct JobsQuery {
    pub owner: Option<String>,
    pub state: Option<String>,
}

/// `GET /api/v1/jobs`: the jobs waiting (`queued`) and running on our runners (`in_progress`),
/// each with its explanation; `?owner=` and `?state=` filter. Completed jobs are not listed
/// (they are kept for `RETENTION` and shown by `GET /api/v1/jobs/{id}`).
pub async fn jobs(
    State(state): State<AppState>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Value>, HttpError> {
    let wanted = match query.state.as_deref() {
        None => None,
        Some(s) => match JobState::parse(s) {
            Some(st @ (JobState::Queued | JobState::InProgress)) => Some(st),
            _ => {
                return Err(HttpError::BadRequest(format!(
                    "state {s:?} is not listed: use queued or in_progress (a completed job is \
                     shown by GET /api/v1/jobs/{{id}})"
                )));
            }
        },
    };
    let owner = query.owner.as_deref().map(Owner::new);
    let decisions = state.decisions.get();
    let mut jobs = state.store.queued_jobs().await?;
    for r in state.store.active_runners().await? {
        if let Some(id) = r.job_id
            && let Some(j) = state.store.job(&r.owner, id).await?
            && j.state == JobState::InProgress
        {
            jobs.push(j);
        }
    }
    let list: Vec<Value> = jobs
        .iter()
        .filter(|j| owner.as_ref().is_none_or(|o| *o == j.owner))
        .filter(|j| wanted.is_none_or(|w| w == j.state))
        .map(|j| {
            let explanation = match j.state {
                JobState::Queued => decisions
                    .reason(j)
                    .map(explain)
                    .unwrap_or_else(|| "queued; the scheduler has not looked at it yet".into()),
                _ => format!(
                    "running on {}",
                    j.runner_name.as_deref().unwrap_or("a runner")
                ),
            };
            json!({
                "job": j.id,
                "owner": j.owner,
                "repo": j.repo,
                "name": j.name,
                "labels": j.labels,
                "state": j.state,
                "runner": j.runner_name,
                "queued_ms": j.queued_ms,
                "explanation": explanation,
            })
        })
        .collect();
    Ok(Json(json!({ "jobs": list })))
}

/// `?owner=` on `GET /api/v1/jobs/{id}`: which owner's job, when several owners have one of
/// that id (jobs are keyed by owner and id).
#[derive(Debug, Default, serde::Deserialize)]
pub struct JobQuery {
    pub owner: Option<String>,
}

pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
) -> Result<Json<Value>, HttpError> {
    let id: u64 = id
        .parse()
        .map_err(|_| HttpError::BadRequest(format!("{id:?} is not a job id")))?;
    let mut found = state.store.jobs_with_id(id).await?;
    if let Some(owner) = &query.owner {
        let owner = Owner::new(owner);
        found.retain(|j| j.owner == owner);
    }
    let job = match found.len() {
        0 => {
            return Err(HttpError::NotFound(format!(
                "job {id} is unknown here: no webhook for it reached this controller (check the \
                 hook's recent deliveries) or it belongs to an owner/repository not configured"
            )));
        }
        1 => found.remove(0),
        _ => {
            let owners: Vec<String> = found.iter().map(|j| j.owner.to_string()).collect();
            return Err(HttpError::Ambiguous(format!(
                "job id {id} is known for several owners ({}): add ?owner=<owner>",
                owners.join(", ")
            )));
        }
    };
    let runners = state.store.active_runners().await?;
    let runners: Vec<_> = runners
        .into_iter()
        .filter(|r| job.owner == r.owner)
        .collect();
    let runner = runners
        .iter()
        .find(|r| r.job_id == Some(id))
        .or_else(|| runners.iter().find(|r| r.for_job == Some(id)));
    let waiting = state.decisions.get().reason(&job).cloned();
    let explanation = match job.state {
        JobState::Waiting => {
            "waiting for approval (an environment protection rule): not demand yet".to_owned()
        }
        JobState::Queued if job.labels.is_empty() => "it names no labels: a job that targets a \
            runner group (`runs-on: { group: ... }`) without labels cannot be matched by labels, so \
            no runner is started for it; add labels to its `runs-on`"
            .to_owned(),
        JobState::Queued => {
            let mut text = waiting
                .as_ref()
                .map(explain)
                .unwrap_or_else(|| "queued; the scheduler has not looked at it yet".into());
            if let Some(r) = runner.filter(|r| !r.reason.is_empty()) {
                text.push_str(&format!("; runner {} on {}: {}", r.name, r.agent, r.reason));
            }
            text
        }
        JobState::InProgress => format!(
            "running on {}",
            job.runner_name.as_deref().unwrap_or("a runner")
        ),
        JobState::Completed => format!(
            "completed ({})",
            job.conclusion.as_deref().unwrap_or("unknown")
        ),
    };
    let mut body = BTreeMap::new();
    body.insert("job", serde_json::to_value(&job).unwrap_or(Value::Null));
    body.insert(
        "runner",
        serde_json::to_value(runner).unwrap_or(Value::Null),
    );
    body.insert(
        "waiting",
        serde_json::to_value(&waiting).unwrap_or(Value::Null),
    );
    body.insert("explanation", Value::String(explanation));
    let timeline: Vec<Value> =
        crate::store::timeline::merged(&job, state.store.job_timeline(&job.owner, id).await?)
            .into_iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
                if let Some(map) = v.as_object_mut() {
                    map.insert("at".into(), crate::http::ui::views::clock(e.at_ms).into());
                }
                v
            })
            .collect();
    body.insert("timeline", Value::Array(timeline));
    Ok(Json(serde_json::to_value(body).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::backoff::{Blocked, Key};

    fn blocked(owner: &str, reason: &str) -> Blocked {
        Blocked {
            key: Key::Owner {
                owner: owner.into(),
            },
            cause: "github",
            reason: reason.into(),
            failures: 1,
            circuit_open: false,
            next_try_ms: 0,
        }
    }

    #[test]
    fn a_standby_is_ready_when_its_store_answers_and_a_leader_needs_its_scheduler_too() {
        let leader_ok = ReadyInputs {
            store_ok: true,
            leader: true,
            scheduled: true,
            fresh: true,
            github_down: None,
        };
        let cases: Vec<(&str, ReadyInputs, bool)> = vec![
            ("a working leader", leader_ok.clone(), true),
            (
                "a leader whose scheduler has not run",
                ReadyInputs {
                    scheduled: false,
                    ..leader_ok.clone()
                },
                false,
            ),
            (
                "a leader whose scheduler is stuck",
                ReadyInputs {
                    fresh: false,
                    ..leader_ok.clone()
                },
                false,
            ),
            (
                "a leader GitHub refuses",
                ReadyInputs {
                    github_down: Some("down".into()),
                    ..leader_ok.clone()
                },
                false,
            ),
            (
                "a standby: it takes webhooks, the leader schedules",
                ReadyInputs {
                    leader: false,
                    scheduled: false,
                    fresh: false,
                    ..leader_ok.clone()
                },
                true,
            ),
            (
                "a standby whose store does not answer",
                ReadyInputs {
                    leader: false,
                    store_ok: false,
                    ..leader_ok.clone()
                },
                false,
            ),
        ];
        for (what, inputs, expected) in cases {
            let (ready, reason) = readiness(&inputs);
            assert_eq!(ready, expected, "{what}: {reason:?}");
            assert_eq!(reason.is_none(), expected, "{what}: a reason iff not ready");
        }
    }

    #[test]
    fn degraded_while_github_fails_and_not_ready_once_it_fails_for_every_owner() {
        let mut d = Decisions::default();
        assert!(!health(&d, 2).degraded);
        d.containment.push(blocked(
            "acme",
            "owner acme: JIT registration: could not reach GitHub at https://api.github.com (…)",
        ));
        let h = health(&d, 2);
        assert!(h.degraded && !h.github_down, "{h:?}");
        assert!(
            h.reason.as_deref().unwrap().contains("unreachable"),
            "{h:?}"
        );
        assert!(
            !h.reason.as_deref().unwrap().contains("acme"),
            "no names: {h:?}"
        );
        assert!(h.last_error.as_deref().unwrap().contains("could not reach"));
        d.containment.push(blocked(
            "bob",
            "owner bob: JIT registration refused 403 'x' — grant y",
        ));
        assert!(health(&d, 2).github_down);
        d.last_error = Some("store: disk full".into());
        let h = health(&d, 2);
        assert_eq!(h.last_error.as_deref(), Some("store: disk full"));
    }
}
