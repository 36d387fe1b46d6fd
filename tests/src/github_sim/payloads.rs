//! JSON bodies built from GitHub's own payloads (`fixtures/`), so every field the client or the
//! controller reads is one GitHub sends.
//!
//! Each builder takes a fixture object, rewrites its URLs to the simulator and its names to the
//! simulated owner and repository, then sets the fields that carry state (ids, status, labels,
//! runner, timestamps). Fields we do not model keep the fixture's values.

use serde_json::{Value, json};

use super::state::{
    AccountRec, DeliveryRec, HookRec, JobRec, RepoRec, Role, RunRec, RunnerRec, ScopeRec, State,
};

pub const WF_JOB: &str = include_str!("fixtures/webhooks/workflow_job.in_progress.json");
pub const WF_RUN: &str = include_str!("fixtures/webhooks/workflow_run.requested.json");
pub const PING_REPO: &str = include_str!("fixtures/webhooks/ping.repo.json");
pub const PING_ORG: &str = include_str!("fixtures/webhooks/ping.org.json");
pub const PUSH: &str = include_str!("fixtures/webhooks/push.json");
const REST_REPO: &str = include_str!("fixtures/rest/repos__get__200__default-response.json");
const REST_RUN: &str = include_str!("fixtures/rest/actions__get-workflow-run__200__default.json");
const REST_JOB: &str =
    include_str!("fixtures/rest/actions__get-job-for-workflow-run__200__default.json");
const REST_HOOK: &str = include_str!("fixtures/rest/repos__get-webhook__200__default.json");

/// Repository full names that appear in the fixtures.
const FIXTURE_REPOS: [&str; 4] = [
    "octo-org/octo-repo",
    "Codertocat/Hello-World",
    "Octocoders/Hello-World",
    "octocat/Hello-World",
];

pub fn fixture(text: &str) -> Value {
    // The fixtures are compiled in and parsed by the simulator's own tests.
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Replaces every `from` with `to` in all strings of `value`.
fn rewrite(value: &mut Value, pairs: &[(&str, &str)]) {
    match value {
        Value::String(s) => {
            for (from, to) in pairs {
                if s.contains(from) {
                    *s = s.replace(from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, pairs)),
        Value::Object(map) => map.values_mut().for_each(|v| rewrite(v, pairs)),
        _ => {}
    }
}

fn set(value: &mut Value, key: &str, new: Value) {
    if let Some(map) = value.as_object_mut() {
        map.insert(key.to_owned(), new);
    }
}

/// Points fixture URLs and names at the simulator and `full_name`.
fn relocate(state: &State, value: &mut Value, full_name: &str) {
    let mut pairs: Vec<(&str, &str)> = FIXTURE_REPOS.iter().map(|f| (*f, full_name)).collect();
    pairs.push(("https://api.github.com", &state.api_url));
    pairs.push(("https://github.com", &state.web_url));
    rewrite(value, &pairs);
}

/// A `simple-user` for a user or organization.
pub fn account(state: &State, account: &AccountRec) -> Value {
    let mut v = fixture(WF_JOB)["sender"].clone();
    rewrite(
        &mut v,
        &[
            ("Codertocat", &account.login),
            ("https://api.github.com", &state.api_url),
            ("https://github.com", &state.web_url),
        ],
    );
    set(&mut v, "id", json!(account.id));
    set(
        &mut v,
        "node_id",
        json!(format!("MDQ6VXNlcj{}", account.id)),
    );
    set(
        &mut v,
        "type",
        json!(if account.is_org {
            "Organization"
        } else {
            "User"
        }),
    );
    v
}

/// An organization object as webhooks carry it.
pub fn organization(state: &State, org: &AccountRec) -> Value {
    let mut v = fixture(WF_RUN)["organization"].clone();
    rewrite(
        &mut v,
        &[
            ("octo-org", &org.login),
            ("https://api.github.com", &state.api_url),
        ],
    );
    set(&mut v, "id", json!(org.id));
    v
}

/// A repository; with `role`, REST's `permissions` for the caller.
pub fn repository(state: &State, repo: &RepoRec, role: Option<Role>, rest: bool) -> Value {
    let full = state.full_name(repo);
    let mut v = if rest {
        fixture(REST_REPO)
    } else {
        fixture(WF_JOB)["repository"].clone()
    };
    relocate(state, &mut v, &full);
    set(&mut v, "id", json!(repo.id));
    set(&mut v, "name", json!(repo.name));
    set(&mut v, "full_name", json!(full));
    set(&mut v, "private", json!(repo.private));
    if rest {
        set(&mut v, "pushed_at", json!(repo.pushed_at));
    }
    set(
        &mut v,
        "visibility",
        json!(if repo.private { "private" } else { "public" }),
    );
    if let Some(owner) = state.accounts.get(&repo.owner_id) {
        set(&mut v, "owner", account(state, owner));
    }
    if let Some(map) = v.as_object_mut() {
        for key in [
            "organization",
            "parent",
            "source",
            "template_repository",
            "temp_clone_token",
        ] {
            map.remove(key);
        }
        map.remove("permissions");
    }
    if let Some(role) = role {
        set(
            &mut v,
            "permissions",
            json!({"admin": role >= Role::Admin, "maintain": role >= Role::Admin, "push": role >= Role::Write,
                   "triage": role >= Role::Write, "pull": true}),
        );
    }
    v
}

/// A `runner`.
pub fn runner(r: &RunnerRec) -> Value {
    let labels: Vec<Value> = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| json!({"id": i + 1, "name": name, "type": kind}))
        .collect();
    json!({
        "id": r.id, "name": r.name, "os": if r.connected { "linux" } else { "unknown" },
        "status": if r.online { "online" } else { "offline" }, "busy": r.job.is_some(),
        "ephemeral": r.ephemeral, "runner_group_id": r.group_id,
        "version": if r.connected { Value::from("2.323.0") } else { Value::Null },
        "labels": labels,
    })
}

/// A `workflow_job` (webhook) or `job` (REST) object.
pub fn job(state: &State, job: &JobRec, rest: bool) -> Value {
    let repo = state.repos.get(&job.repo_id);
    let full = repo.map(|r| state.full_name(r)).unwrap_or_default();
    let mut v = if rest {
        fixture(REST_JOB)
    } else {
        fixture(WF_JOB)["workflow_job"].clone()
    };
    relocate(state, &mut v, &full);
    let api = format!("{}/repos/{full}", state.api_url);
    let run = state.runs.get(&job.run_id);
    set(&mut v, "id", json!(job.id));
    set(&mut v, "node_id", json!(format!("CR_kwDO{}", job.id)));
    set(&mut v, "run_id", json!(job.run_id));
    set(&mut v, "run_attempt", json!(1));
    set(
        &mut v,
        "run_url",
        json!(format!("{api}/actions/runs/{}", job.run_id)),
    );
    set(
        &mut v,
        "url",
        json!(format!("{api}/actions/jobs/{}", job.id)),
    );
    set(
        &mut v,
        "html_url",
        json!(format!(
            "{}/{full}/actions/runs/{}/job/{}",
            state.web_url, job.run_id, job.id
        )),
    );
    set(
        &mut v,
        "check_run_url",
        json!(format!("{api}/check-runs/{}", job.id)),
    );
    set(
        &mut v,
        "head_sha",
        json!(run.map(|r| r.head_sha.clone()).unwrap_or_default()),
    );
    set(&mut v, "head_branch", json!("main"));
    set(
        &mut v,
        "workflow_name",
        json!(run.map(|r| r.name.clone()).unwrap_or_default()),
    );
    set(&mut v, "name", json!(job.name));
    set(&mut v, "labels", json!(job.labels));
    set(&mut v, "status", json!(job.status));
    set(&mut v, "conclusion", json!(job.conclusion));
    set(&mut v, "created_at", json!(job.created_at));
    set(
        &mut v,
        "started_at",
        json!(
            job.started_at
                .clone()
                .unwrap_or_else(|| job.created_at.clone())
        ),
    );
    set(&mut v, "completed_at", json!(job.completed_at));
    // "This will be null as long as workflow_job[status] is queued."
    let (rid, rname, gid, gname) = match &job.runner {
        Some((id, name)) => (json!(id), json!(name), json!(1), json!("Default")),
        None => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    set(&mut v, "runner_id", rid);
    set(&mut v, "runner_name", rname);
    set(&mut v, "runner_group_id", gid);
    set(&mut v, "runner_group_name", gname);
    let steps = match job.status {
        "queued" => json!([]),
        "in_progress" => {
            json!([{"name": "Set up job", "status": "in_progress", "conclusion": null, "number": 1,
                                 "started_at": job.started_at, "completed_at": null}])
        }
        _ => {
            json!([{"name": "Set up job", "status": "completed", "conclusion": job.conclusion, "number": 1,
                     "started_at": job.started_at, "completed_at": job.completed_at}])
        }
    };
    set(&mut v, "steps", steps);
    v
}

/// A `workflow_run` object, webhook or REST shape.
pub fn run(state: &State, run: &RunRec, rest: bool) -> Value {
    let repo = state.repos.get(&run.repo_id);
    let full = repo.map(|r| state.full_name(r)).unwrap_or_default();
    let mut v = if rest {
        fixture(REST_RUN)
    } else {
        fixture(WF_RUN)["workflow_run"].clone()
    };
    relocate(state, &mut v, &full);
    let api = format!("{}/repos/{full}", state.api_url);
    for (key, suffix) in [
        ("url", ""),
        ("jobs_url", "/jobs"),
        ("logs_url", "/logs"),
        ("artifacts_url", "/artifacts"),
        ("cancel_url", "/cancel"),
        ("rerun_url", "/rerun"),
    ] {
        set(
            &mut v,
            key,
            json!(format!("{api}/actions/runs/{}{suffix}", run.id)),
        );
    }
    set(
        &mut v,
        "html_url",
        json!(format!("{}/{full}/actions/runs/{}", state.web_url, run.id)),
    );
    set(&mut v, "id", json!(run.id));
    set(&mut v, "name", json!(run.name));
    set(&mut v, "display_title", json!(run.name));
    set(&mut v, "run_number", json!(run.run_number));
    set(&mut v, "run_attempt", json!(1));
    set(&mut v, "event", json!("push"));
    set(&mut v, "head_branch", json!("main"));
    set(&mut v, "head_sha", json!(run.head_sha));
    set(&mut v, "status", json!(run.status));
    set(&mut v, "conclusion", json!(run.conclusion));
    set(&mut v, "workflow_id", json!(run.workflow_id));
    set(
        &mut v,
        "workflow_url",
        json!(format!("{api}/actions/workflows/{}", run.workflow_id)),
    );
    set(&mut v, "created_at", json!(run.created_at));
    set(&mut v, "updated_at", json!(run.updated_at));
    set(&mut v, "run_started_at", json!(run.created_at));
    set(&mut v, "pull_requests", json!([]));
    set(&mut v, "previous_attempt_url", Value::Null);
    set(&mut v, "referenced_workflows", json!([]));
    if let Some(repo) = repo {
        let r = repository(state, repo, None, false);
        set(&mut v, "repository", r.clone());
        set(&mut v, "head_repository", r);
    }
    v
}

/// The `workflow` object of `workflow_run` events.
pub fn workflow(state: &State, run: &RunRec) -> Value {
    let full = state
        .repos
        .get(&run.repo_id)
        .map(|r| state.full_name(r))
        .unwrap_or_default();
    let mut v = fixture(WF_RUN)["workflow"].clone();
    relocate(state, &mut v, &full);
    set(&mut v, "id", json!(run.workflow_id));
    set(&mut v, "name", json!(run.name));
    set(
        &mut v,
        "url",
        json!(format!(
            "{}/repos/{full}/actions/workflows/{}",
            state.api_url, run.workflow_id
        )),
    );
    v
}

/// The common envelope of a repository event: `action`, `repository`, `sender`, `organization`.
pub fn envelope(state: &State, action: &str, repo: &RepoRec) -> Value {
    let mut v = json!({"action": action});
    set(&mut v, "repository", repository(state, repo, None, false));
    if let Some(org) = state
        .repo_org(repo.id)
        .and_then(|id| state.accounts.get(&id))
    {
        set(&mut v, "organization", organization(state, org));
    }
    let sender = state
        .accounts
        .get(&repo.owner_id)
        .map(|a| account(state, a))
        .unwrap_or(Value::Null);
    set(&mut v, "sender", sender);
    v
}

/// A hook object (`hook` / `org-hook`), the secret masked as GitHub does.
pub fn hook(state: &State, h: &HookRec) -> Value {
    let mut v = fixture(REST_HOOK);
    let (kind, prefix) = match h.scope {
        ScopeRec::Repo(id) => (
            "Repository",
            state
                .repos
                .get(&id)
                .map(|r| format!("{}/repos/{}", state.api_url, state.full_name(r))),
        ),
        ScopeRec::Org(id) => (
            "Organization",
            state
                .accounts
                .get(&id)
                .map(|a| format!("{}/orgs/{}", state.api_url, a.login)),
        ),
    };
    let base = format!("{}/hooks/{}", prefix.unwrap_or_default(), h.id);
    let mut config =
        json!({"url": h.url, "content_type": h.content_type, "insecure_ssl": h.insecure_ssl});
    if h.secret.is_some() {
        set(&mut config, "secret", json!("********"));
    }
    set(&mut v, "type", json!(kind));
    set(&mut v, "id", json!(h.id));
    set(&mut v, "active", json!(h.active));
    set(&mut v, "events", json!(h.events));
    set(&mut v, "config", config);
    set(&mut v, "created_at", json!(h.created_at));
    set(&mut v, "updated_at", json!(h.updated_at));
    set(&mut v, "url", json!(base));
    set(&mut v, "ping_url", json!(format!("{base}/pings")));
    set(
        &mut v,
        "deliveries_url",
        json!(format!("{base}/deliveries")),
    );
    if matches!(h.scope, ScopeRec::Repo(_)) {
        set(&mut v, "test_url", json!(format!("{base}/test")));
    } else if let Some(map) = v.as_object_mut() {
        map.remove("test_url");
    }
    let last = match &h.last_response {
        Some((code, status)) => json!({"code": code, "status": status, "message": null}),
        None => json!({"code": null, "status": "unused", "message": null}),
    };
    set(&mut v, "last_response", last);
    v
}

/// A delivery as listed (`hook-delivery-item`) or, with `full`, with its request and response.
pub fn delivery(d: &DeliveryRec, full: bool) -> Value {
    let mut v = json!({
        "id": d.id, "guid": d.guid, "delivered_at": d.delivered_at, "redelivery": d.redelivery,
        "duration": d.duration, "status": d.status, "status_code": d.status_code, "event": d.event,
        "action": d.action, "installation_id": d.installation_id, "repository_id": d.repository_id,
        "throttled_at": null,
    });
    if full {
        let headers = |pairs: &[(String, String)]| {
            Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect(),
            )
        };
        set(&mut v, "url", json!(d.url));
        set(
            &mut v,
            "request",
            json!({"headers": headers(&d.request_headers), "payload": d.payload}),
        );
        set(
            &mut v,
            "response",
            json!({"headers": headers(&d.response_headers), "payload": d.response_body}),
        );
    }
    v
}

/// The `ping` body for a hook.
pub fn ping(state: &State, h: &HookRec) -> Value {
    let mut v = match h.scope {
        ScopeRec::Repo(_) => fixture(PING_REPO),
        ScopeRec::Org(_) => fixture(PING_ORG),
    };
    set(&mut v, "hook_id", json!(h.id));
    set(&mut v, "hook", hook(state, h));
    match h.scope {
        ScopeRec::Repo(id) => {
            if let Some(repo) = state.repos.get(&id) {
                set(&mut v, "repository", repository(state, repo, None, false));
                if let Some(owner) = state.accounts.get(&repo.owner_id) {
                    set(&mut v, "sender", account(state, owner));
                }
            }
        }
        ScopeRec::Org(id) => {
            if let Some(org) = state.accounts.get(&id) {
                set(&mut v, "organization", organization(state, org));
                set(&mut v, "sender", account(state, org));
            }
        }
    }
    v
}
