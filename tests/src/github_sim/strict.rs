//! What GitHub refuses about runner targets, kept apart from the handlers that apply it: runner
//! groups (listing, JIT `runner_group_id`, which jobs a group's runners may take), the GitHub
//! Enterprise Server profile (`/rate_limit` off, no JIT before 3.10) and the job shapes of
//! approvals and group-targeted jobs. Each rule and its source is listed in the module doc of
//! [`super`]; the functions here are the rules, called from the handlers and the scenario.

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::Shared;
use super::access::{ApiError, Need, check_org, principal};
use super::api::{PageQuery, page, with_link};
use super::state::{
    Access, JobRec, Profile, RunnerGroupRec, RunnerRec, ScopeRec, State as SimState,
};

/// The first GHES release with `generate-jitconfig` (GHES 3.10 release notes: "just-in-time
/// runners").
pub const GHES_JIT_SINCE: (u32, u32) = (3, 10);

/// The `Default` group every organization has (id 1; not open to public repositories until an
/// owner allows it, GitHub docs "Managing access to self-hosted runners using groups").
pub fn default_group(org_id: u64) -> RunnerGroupRec {
    RunnerGroupRec {
        id: 1,
        org_id,
        name: "Default".into(),
        visibility: "all",
        allows_public_repositories: false,
        hosted: false,
    }
}

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/orgs/{o}/actions/runner-groups", get(list_groups))
}

fn group_json(st: &SimState, g: &RunnerGroupRec) -> Value {
    let base = format!(
        "{}/orgs/{}/actions/runner-groups/{}",
        st.api_url, g.org_id, g.id
    );
    let mut v = json!({
        "id": g.id, "name": g.name, "visibility": g.visibility, "default": g.id == 1,
        "inherited": false, "allows_public_repositories": g.allows_public_repositories,
        "restricted_to_workflows": false, "selected_workflows": [],
        "workflow_restrictions_read_only": false,
        "runners_url": format!("{base}/runners"),
    });
    if g.hosted
        && let Some(map) = v.as_object_mut()
    {
        map.insert(
            "hosted_runners_url".into(),
            json!(format!("{base}/hosted-runners")),
        );
    }
    v
}

/// `GET /orgs/{org}/actions/runner-groups`: paginated `{total_count, runner_groups}`; a user
/// account has no organization endpoints (404).
async fn list_groups(
    State(sh): State<Shared>,
    Path(o): Path<String>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let p = principal(&st, &h)?;
    let org = st
        .account(&o)
        .filter(|a| a.is_org)
        .ok_or_else(ApiError::not_found)?;
    check_org(&st, &p, org.id, Need::OrgRunners(Access::Read))?;
    let org_id = org.id;
    let items: Vec<Value> = st
        .runner_groups
        .iter()
        .filter(|g| g.org_id == org_id)
        .map(|g| group_json(&st, g))
        .collect();
    let total = items.len();
    let (items, link) = page(&st.web_url, &uri, &q, items);
    Ok(with_link(
        StatusCode::OK,
        json!({"total_count": total, "runner_groups": items}),
        link,
    ))
}

/// `generate-jitconfig` on GHES before 3.10 does not exist: 404 like any unknown route.
pub fn jit_available(st: &SimState) -> Result<(), ApiError> {
    match st.profile {
        Profile::Ghes { major, minor } if (major, minor) < GHES_JIT_SINCE => {
            Err(ApiError::not_found())
        }
        _ => Ok(()),
    }
}

/// The `runner_group_id` of a JIT request: an organization's unknown group is a 404, a
/// GitHub-hosted group a 403; a repository has only the default group (1).
pub fn jit_group(st: &SimState, scope: ScopeRec, group_id: u64) -> Result<(), ApiError> {
    match scope {
        ScopeRec::Repo(_) if group_id == 1 => Ok(()),
        ScopeRec::Repo(_) => Err(ApiError::not_found()),
        ScopeRec::Org(org_id) => {
            let group = st
                .runner_groups
                .iter()
                .find(|g| g.org_id == org_id && g.id == group_id)
                .ok_or_else(ApiError::not_found)?;
            if group.hosted {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Self-hosted runners cannot be added to a GitHub-hosted runner group",
                ));
            }
            Ok(())
        }
    }
}

/// Whether `runner` may take `job` as far as groups go: an organization runner serves a public
/// repository only when its group allows public repositories, and a group-targeted job
/// (`runs-on: {group: NAME}`) only goes to runners of that group.
pub fn group_admits(st: &SimState, runner: &RunnerRec, job: &JobRec) -> bool {
    let group = match runner.scope {
        ScopeRec::Org(org_id) => st
            .runner_groups
            .iter()
            .find(|g| g.org_id == org_id && g.id == runner.group_id),
        ScopeRec::Repo(_) => None,
    };
    if let Some(wanted) = &job.group
        && !group.is_some_and(|g| g.name.eq_ignore_ascii_case(wanted))
    {
        return false;
    }
    let public = st.repos.get(&job.repo_id).is_some_and(|r| !r.private);
    !(public && group.is_some_and(|g| !g.allows_public_repositories))
}

/// `GET /rate_limit` on GHES, where rate limiting is off by default: 404 "Rate limiting is not
/// enabled." (GitHub docs, "Rate limits for the REST API": GHES answers so when disabled).
pub fn rate_limit_refusal(st: &SimState) -> Option<ApiError> {
    matches!(st.profile, Profile::Ghes { .. })
        .then(|| ApiError::new(StatusCode::NOT_FOUND, "Rate limiting is not enabled."))
}

/// The `X-GitHub-Enterprise-Version` header GHES puts on every answer.
pub fn enterprise_version(st: &SimState) -> Option<String> {
    match st.profile {
        Profile::Ghes { major, minor } => Some(format!("{major}.{minor}.0")),
        Profile::Dotcom => None,
    }
}
