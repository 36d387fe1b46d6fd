//! The GitHub owners (organisations and users) this controller serves: the seed's contract.
//!
//! Multi-owner: `OWNERS=a,b` with `OWNER_<NAME>_<KEY>` for each (name upper-cased, hyphens to
//! underscores: `my-org` → `OWNER_MY_ORG_GITHUB_TOKEN`). Legacy single owner: `REPO_OWNER` with
//! the unprefixed keys. A per-owner key falls back to the unprefixed one, then to the default.

use std::path::PathBuf;

use super::schedule::Schedule;
use super::vars::Vars;
use super::warm::{OwnerWarm, parse_pools};

pub use shared::github::OwnerAuth;
pub use shared::github::Secret;

/// One owner's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerConfig {
    /// The GitHub login as configured; compared case-insensitively.
    pub name: String,
    pub auth: OwnerAuth,
    /// Serve only this repository...
    pub repo_name: Option<String>,
    /// ...or every repository of the owner.
    pub all_repos: bool,
    pub webhook_secret: Option<Secret>,
    /// Runners at once for this owner, counting starting ones.
    pub max_runners: u32,
    /// Labels every runner of this owner carries (on top of the global `LABELS`).
    pub labels: Vec<String>,
    /// Organisation runner group for JIT runners.
    pub runner_group: Option<String>,
    /// `MIN_IDLE_RUNNERS` and `MIN_IDLE_SCHEDULE`: idle runners kept ready.
    pub warm: OwnerWarm,
}

impl OwnerConfig {
    /// The owner as the store keys it.
    pub fn owner(&self) -> shared::owner::Owner {
        shared::owner::Owner::new(&self.name)
    }

    /// Whether `repo` (a repository name of this owner) is served.
    pub fn serves_repo(&self, repo: &str) -> bool {
        self.all_repos
            || self
                .repo_name
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(repo))
    }
}

/// `my-org` → `OWNER_MY_ORG_`.
pub fn env_prefix(owner: &str) -> String {
    format!(
        "OWNER_{}_",
        owner.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// A per-owner variable name.
fn key(prefix: &str, key: &str) -> String {
    format!("{prefix}{key}")
}

pub(crate) const DEFAULT_MAX_RUNNERS: u32 = 5;

/// A GitHub login as the seed's example `.env` spells its placeholders (`your_github_username`).
fn is_placeholder(value: &str) -> bool {
    value.to_ascii_lowercase().starts_with("your_")
}

pub(crate) fn parse(vars: &mut Vars<'_>, allow_unsigned: bool) -> Vec<OwnerConfig> {
    let mut names = vars.list("OWNERS");
    let legacy = vars.get("REPO_OWNER").map(str::to_owned);
    // A set-up is "legacy" (the seed's single owner) when only REPO_OWNER names the owner:
    // its problems are then reported with the unprefixed names the user wrote.
    let legacy_only = names.is_empty() && legacy.is_some();
    if let Some(owner) = &legacy
        && !names.is_empty()
    {
        vars.problem(
            "REPO_OWNER",
            format!(
                "{owner:?} is set together with OWNERS; REPO_OWNER is the one-owner form: list \
                 every owner in OWNERS (with OWNER_<NAME>_* variables) and remove REPO_OWNER"
            ),
        );
    }
    if let Some(owner) = legacy.filter(|_| legacy_only) {
        names.push(owner);
    }
    if names.is_empty() {
        vars.problem(
            "REPO_OWNER",
            "no owner configured: set REPO_OWNER (one owner) or OWNERS=a,b with OWNER_<NAME>_* variables",
        );
        return Vec::new();
    }
    let names_var = if legacy_only { "REPO_OWNER" } else { "OWNERS" };
    let mut seen = std::collections::HashSet::new();
    let mut owners = Vec::new();
    for name in names {
        if !seen.insert(name.to_ascii_lowercase()) {
            vars.problem(names_var, format!("owner {name:?} is listed twice"));
            continue;
        }
        if is_placeholder(&name) {
            vars.problem(
                names_var,
                format!(
                    "{name:?} is the placeholder of the example .env: put the GitHub login of \
                     the user or organisation whose runners this controller scales (e.g. octocat)"
                ),
            );
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            vars.problem(
                names_var,
                format!(
                    "{name:?} is not a GitHub login (letters, digits and hyphens; the user or \
                     organisation name as it appears in github.com/<login>)"
                ),
            );
            continue;
        }
        owners.push(parse_owner(vars, &name, allow_unsigned, legacy_only));
    }
    owners
}

/// One setting of an owner: its value and the variable it came from (or, when unset, the one
/// to name in a problem: the unprefixed one for a legacy single-owner set-up).
struct Picked {
    value: Option<String>,
    var: String,
    /// Read from the owner's own `OWNER_<NAME>_*` variable.
    own: bool,
}

fn parse_owner(vars: &mut Vars<'_>, name: &str, allow_unsigned: bool, legacy: bool) -> OwnerConfig {
    let prefix = env_prefix(name);
    // The owner's own key, else the unprefixed one.
    let pick = |vars: &Vars<'_>, k: &str| -> Picked {
        let own = key(&prefix, k);
        if let Some(v) = vars.get(&own) {
            return Picked {
                value: Some(v.to_owned()),
                var: own,
                own: true,
            };
        }
        match vars.get(k) {
            Some(v) => Picked {
                value: Some(v.to_owned()),
                var: k.to_owned(),
                own: false,
            },
            None => Picked {
                value: None,
                var: if legacy { k.to_owned() } else { own },
                own: false,
            },
        }
    };
    // "set X (or Y)" for a missing setting.
    let either = |k: &str| -> String {
        if legacy {
            k.to_owned()
        } else {
            format!("{} (or {k})", key(&prefix, k))
        }
    };

    let token = pick(vars, "GITHUB_TOKEN");
    let app = pick(vars, "APP_ID");
    let key_file = pick(vars, "APP_PRIVATE_KEY_FILE");
    let installation = pick(vars, "APP_INSTALLATION_ID");
    // A global GITHUB_TOKEN beside an owner's own App is not ambiguous: the App is that
    // owner's; two credentials at one level are.
    if let (Some(_), Some(_)) = (&app.value, &token.value)
        && (token.own || !app.own)
    {
        vars.problem(
            &token.var,
            format!(
                "owner {name} has both {} and {}; choose one",
                token.var, app.var
            ),
        );
    }
    if let Some(t) = &token.value
        && is_placeholder(t)
    {
        vars.problem(
            &token.var,
            "is the placeholder of the example .env: put a personal access token (ghp_… or \
             github_pat_…) or use a GitHub App (APP_ID, APP_PRIVATE_KEY_FILE)",
        );
    }
    let auth = match (app.value, token.value) {
        (Some(app_id), _) => {
            if app_id.parse::<u64>().is_err() {
                vars.problem(
                    &app.var,
                    format!("{app_id:?} is not a numeric GitHub App id"),
                );
            }
            let private_key_file = match key_file.value {
                Some(f) => PathBuf::from(f),
                None => {
                    vars.problem(
                        &key_file.var,
                        "is required with an App id (the App's PEM private key)",
                    );
                    PathBuf::new()
                }
            };
            let installation_id = installation.value.and_then(|i| match i.parse::<u64>() {
                Ok(id) => Some(id),
                Err(_) => {
                    vars.problem(
                        &installation.var,
                        format!("{i:?} is not a numeric installation id"),
                    );
                    None
                }
            });
            OwnerAuth::App {
                app_id,
                private_key_file,
                installation_id,
            }
        }
        (None, Some(token)) => OwnerAuth::Token(Secret::new(token)),
        (None, None) => {
            vars.problem(
                &token.var,
                format!(
                    "owner {name} has no credentials: set {}, or {} with {}",
                    either("GITHUB_TOKEN"),
                    either("APP_ID"),
                    either("APP_PRIVATE_KEY_FILE")
                ),
            );
            OwnerAuth::Token(Secret::new(""))
        }
    };

    let repo = pick(vars, "REPO_NAME");
    let all = pick(vars, "ALL_REPOS");
    let all_repos = match all.value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no" | "off") => false,
        Some("true" | "1" | "yes" | "on") => true,
        Some(other) => {
            vars.problem(
                &all.var,
                format!("{other:?} is not a boolean (true or false)"),
            );
            false
        }
    };
    if let Some(r) = &repo.value
        && is_placeholder(r)
    {
        vars.problem(
            &repo.var,
            "is the placeholder of the example .env: put the repository's name (without the \
             owner), or remove it and set ALL_REPOS=true",
        );
    }
    // REPO_NAME and ALL_REPOS=true at one level contradict each other; at different levels
    // the owner's own setting overrides the shared default.
    let mut repo_name = repo.value.clone();
    let mut all_repos = all_repos;
    if all_repos && repo_name.is_some() {
        if repo.own == all.own {
            vars.problem(
                &repo.var,
                format!(
                    "{}={:?} conflicts with {}=true: remove {} to serve every repository of \
                     {name}, or {} to serve only that one",
                    repo.var,
                    repo_name.as_deref().unwrap_or_default(),
                    all.var,
                    repo.var,
                    all.var
                ),
            );
        } else if repo.own {
            all_repos = false;
        } else {
            repo_name = None;
        }
    }
    if repo_name.is_none() && !all_repos {
        vars.problem(
            &repo.var,
            format!(
                "owner {name}: set {} to serve one repository, or {}=true for all of them",
                repo.var, all.var
            ),
        );
    }

    let secret = pick(vars, "WEBHOOK_SECRET");
    if secret.value.is_none() && !allow_unsigned {
        vars.problem(
            &secret.var,
            format!(
                "owner {name} has no webhook secret: set {}; to accept unsigned webhooks anyway \
                 set ALLOW_UNSIGNED_WEBHOOKS=true (not recommended)",
                either("WEBHOOK_SECRET")
            ),
        );
    }
    if let Some(s) = &secret.value
        && is_placeholder(s)
    {
        vars.problem(
            &secret.var,
            "is the placeholder of the example .env: use a long random value (e.g. `openssl \
             rand -hex 32`) and give GitHub the same one",
        );
    }

    let max = pick(vars, "MAX_RUNNERS");
    let max_runners = match max.value {
        None => DEFAULT_MAX_RUNNERS,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                vars.problem(
                    &max.var,
                    format!("{v:?} is not a whole number of at least 1"),
                );
                DEFAULT_MAX_RUNNERS
            }
        },
    };
    let labels = vars.list(&key(&prefix, "LABELS"));
    let runner_group = pick(vars, "RUNNER_GROUP").value;

    let min_idle = pick(vars, "MIN_IDLE_RUNNERS");
    let pools = match min_idle.value.as_deref().map(parse_pools) {
        None => Vec::new(),
        Some(Ok(pools)) => pools,
        Some(Err(e)) => {
            vars.problem(&min_idle.var, e);
            Vec::new()
        }
    };
    let schedule_var = pick(vars, "MIN_IDLE_SCHEDULE");
    let schedule = match schedule_var.value.as_deref().map(Schedule::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            vars.problem(&schedule_var.var, e);
            None
        }
    };
    let warm = OwnerWarm { pools, schedule };
    // Warm runners count within the limit: a pool the limit cannot hold would never fill.
    if warm.total() > max_runners {
        vars.problem(
            &min_idle.var,
            format!(
                "owner {name} keeps {} idle runner(s), more than its {} of {max_runners}: warm \
                 runners count within the limit",
                warm.total(),
                max.var
            ),
        );
    }

    OwnerConfig {
        name: name.to_owned(),
        auth,
        repo_name,
        all_repos,
        webhook_secret: secret.value.map(Secret::new),
        max_runners,
        labels,
        runner_group,
        warm,
    }
}
