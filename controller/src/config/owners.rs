//! The GitHub owners (organisations and users) this controller serves: the seed's contract.
//!
//! Multi-owner: `OWNERS=a,b` with `OWNER_<NAME>_<KEY>` for each (name upper-cased, hyphens to
//! underscores: `my-org` → `OWNER_MY_ORG_GITHUB_TOKEN`). Legacy single owner: `REPO_OWNER` with
//! the unprefixed keys. A per-owner key falls back to the unprefixed one, then to the default.

use std::path::PathBuf;

use super::vars::Vars;

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

pub(crate) fn parse(vars: &mut Vars<'_>, allow_unsigned: bool) -> Vec<OwnerConfig> {
    let mut names = vars.list("OWNERS");
    let legacy = vars.get("REPO_OWNER").map(str::to_owned);
    if let Some(owner) = &legacy
        && !names.iter().any(|n| n.eq_ignore_ascii_case(owner))
    {
        names.push(owner.clone());
    }
    if names.is_empty() {
        vars.problem(
            "REPO_OWNER",
            "no owner configured: set REPO_OWNER (one owner) or OWNERS=a,b with OWNER_<NAME>_* variables",
        );
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    let mut owners = Vec::new();
    for name in names {
        if !seen.insert(name.to_ascii_lowercase()) {
            vars.problem("OWNERS", format!("owner {name:?} is listed twice"));
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            vars.problem("OWNERS", format!("{name:?} is not a GitHub login"));
            continue;
        }
        owners.push(parse_owner(vars, &name, allow_unsigned));
    }
    owners
}

fn parse_owner(vars: &mut Vars<'_>, name: &str, allow_unsigned: bool) -> OwnerConfig {
    let prefix = env_prefix(name);
    // The owner's own key, else the unprefixed one.
    let pick = |vars: &Vars<'_>, k: &str| -> (Option<String>, String) {
        let own = key(&prefix, k);
        match vars.get(&own) {
            Some(v) => (Some(v.to_owned()), own),
            None => (vars.get(k).map(str::to_owned), own),
        }
    };

    let (token, token_var) = pick(vars, "GITHUB_TOKEN");
    let (app_id, app_var) = pick(vars, "APP_ID");
    let (key_file, key_var) = pick(vars, "APP_PRIVATE_KEY_FILE");
    let (installation, installation_var) = pick(vars, "APP_INSTALLATION_ID");
    if app_id.is_some() && vars.get(&token_var).is_some() {
        vars.problem(
            &token_var,
            format!("owner {name} has both {token_var} and {app_var}; choose one"),
        );
    }
    let auth = match (app_id, token) {
        (Some(app_id), _) => {
            if app_id.parse::<u64>().is_err() {
                vars.problem(
                    &app_var,
                    format!("{app_id:?} is not a numeric GitHub App id"),
                );
            }
            let private_key_file = match key_file {
                Some(f) => PathBuf::from(f),
                None => {
                    vars.problem(
                        &key_var,
                        "is required with an App id (the App's PEM private key)",
                    );
                    PathBuf::new()
                }
            };
            let installation_id = installation.and_then(|i| match i.parse::<u64>() {
                Ok(id) => Some(id),
                Err(_) => {
                    vars.problem(
                        &installation_var,
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
                &token_var,
                format!("owner {name} has no credentials: set {token_var} (or GITHUB_TOKEN), or {app_var} with {key_var}"),
            );
            OwnerAuth::Token(Secret::new(""))
        }
    };

    let (repo_name, repo_var) = pick(vars, "REPO_NAME");
    let (all_repos, all_var) = pick(vars, "ALL_REPOS");
    let all_repos = match all_repos.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no" | "off") => false,
        Some("true" | "1" | "yes" | "on") => true,
        Some(other) => {
            vars.problem(
                &all_var,
                format!("{other:?} is not a boolean (true or false)"),
            );
            false
        }
    };
    if repo_name.is_none() && !all_repos {
        vars.problem(
            &repo_var,
            format!("owner {name}: set {repo_var} or {all_var}=true"),
        );
    }

    let (secret, secret_var) = pick(vars, "WEBHOOK_SECRET");
    if secret.is_none() && !allow_unsigned {
        vars.problem(
            &secret_var,
            format!(
                "owner {name} has no webhook secret: set {secret_var} (or WEBHOOK_SECRET); to accept \
                 unsigned webhooks anyway set ALLOW_UNSIGNED_WEBHOOKS=true (not recommended)"
            ),
        );
    }

    let (max, max_var) = pick(vars, "MAX_RUNNERS");
    let max_runners = match max {
        None => DEFAULT_MAX_RUNNERS,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                vars.problem(
                    &max_var,
                    format!("{v:?} is not a whole number of at least 1"),
                );
                DEFAULT_MAX_RUNNERS
            }
        },
    };
    let labels = vars.list(&key(&prefix, "LABELS"));
    let (runner_group, _) = pick(vars, "RUNNER_GROUP");

    OwnerConfig {
        name: name.to_owned(),
        auth,
        repo_name,
        all_repos,
        webhook_secret: secret.map(Secret::new),
        max_runners,
        labels,
        runner_group,
    }
}
