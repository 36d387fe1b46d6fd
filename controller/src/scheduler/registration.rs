//! Where and how a runner registers: the pure rules, apart from the GitHub calls that feed them
//! (those are in [`super::registrar`]).
//!
//! - **Level.** An organization serving all its repositories registers organization runners;
//!   a user account never can (users have no `/orgs/{user}/actions/…` endpoints, GitHub answers
//!   404), so a user — and any single-repository owner — registers repository runners. Until
//!   the owner's kind is known, repository level is chosen: it works for both.
//! - **Group.** `RUNNER_GROUP` is a group id or a name; a name is looked up in the organization's
//!   groups, and an unknown one is an error, never group 1. Repository runners have only the
//!   default group, so the setting is ignored there. A group that does not allow public
//!   repositories (GitHub's default for organization groups) cannot serve a public repository.
//! - **JIT limits**, checked before asking: GitHub takes 1–100 labels (OpenAPI
//!   `generate-jitconfig`: `labels` `minItems: 1`, `maxItems: 100`) and runner names of at most
//!   64 characters (GitHub's limit as reported by myoung34/docker-github-actions-runner#465 and
//!   CloudSnorkel/cdk-github-runners `MAX_RUNNER_NAME_LENGTH = 64`). GitHub documents no label
//!   length; we refuse labels over [`MAX_LABEL_LEN`] characters, empty ones, and (for
//!   registration tokens, where `config.sh --labels` splits on commas) labels with a comma.
//! - **GHES.** JIT exists from GHES 3.10; a 404 from `generate-jitconfig` on a non-github.com
//!   API URL means an older server: the controller switches to registration tokens.

use shared::github::RunnerGroup;

/// GitHub's longest runner name.
pub const MAX_RUNNER_NAME_LEN: usize = 64;
/// GitHub's most labels in one JIT request.
pub const MAX_JIT_LABELS: usize = 100;
/// Our bound on one label (GitHub documents none).
pub const MAX_LABEL_LEN: usize = 256;

/// What `GET /users/{owner}` says the owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerKind {
    User,
    Organization,
}

impl OwnerKind {
    /// From the account's `type` (`User`, `Organization`, `Bot`).
    pub fn from_type(kind: &str) -> Self {
        if kind == "Organization" {
            OwnerKind::Organization
        } else {
            OwnerKind::User
        }
    }
}

/// `RUNNER_GROUP`: an id or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSetting {
    Id(u64),
    Name(String),
}

impl GroupSetting {
    /// All digits is an id, anything else a name; empty is no setting.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if value.is_empty() {
            None
        } else if let Ok(id) = value.parse() {
            Some(GroupSetting::Id(id))
        } else {
            Some(GroupSetting::Name(value.to_owned()))
        }
    }
}

impl std::fmt::Display for GroupSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupSetting::Id(id) => write!(f, "id {id}"),
            GroupSetting::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// The group a runner joins: its id for JIT, its name for `config.sh --runnergroup`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChosenGroup {
    pub id: u64,
    pub name: String,
    pub allows_public_repositories: bool,
}

/// Why a runner cannot be registered (shown on the waiting job).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "runner group {setting} ({variable}) does not exist in organization {org}; its groups: {known}"
    )]
    UnknownGroup {
        org: String,
        setting: String,
        variable: String,
        known: String,
    },
    #[error(
        "runner group {name:?} of {org} is a GitHub-hosted group; self-hosted runners cannot join it"
    )]
    HostedGroup { org: String, name: String },
    #[error(
        "{repo} is public and runner group {group:?} of {org} does not allow public repositories \
         (allows_public_repositories: false); allow it in the organization's Actions settings, or set \
         RUNNER_GROUP to a group that does"
    )]
    PublicRepoNotAllowed {
        org: String,
        repo: String,
        group: String,
    },
    #[error(
        "the runner name {name:?} is {len} characters; GitHub allows at most {MAX_RUNNER_NAME_LEN}"
    )]
    NameTooLong { name: String, len: usize },
    #[error("{count} labels; GitHub takes 1 to {MAX_JIT_LABELS} labels per runner")]
    LabelCount { count: usize },
    #[error("label {label:?} is {why}")]
    BadLabel { label: String, why: String },
    #[error("{0}")]
    Github(String),
}

/// Whether `owner`'s runners register per repository.
pub fn repo_level(single_repo: bool, all_repos: bool, kind: Option<OwnerKind>) -> bool {
    single_repo || !all_repos || kind != Some(OwnerKind::Organization)
}

/// The group for organization runners: `setting` looked up in `groups`; without a setting,
/// the default group (id 1, or the one marked `default`).
pub fn choose_group(
    org: &str,
    variable: &str,
    setting: Option<&GroupSetting>,
    groups: &[RunnerGroup],
) -> Result<ChosenGroup, Problem> {
    let found = match setting {
        None => groups.iter().find(|g| g.default || g.id == 1),
        Some(GroupSetting::Id(id)) => groups.iter().find(|g| g.id == *id),
        Some(GroupSetting::Name(name)) => groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)),
    };
    let Some(group) = found else {
        return match setting {
            // No groups listed and no setting: GitHub's default group.
            None => Ok(ChosenGroup {
                id: 1,
                name: "Default".into(),
                allows_public_repositories: false,
            }),
            Some(setting) => Err(Problem::UnknownGroup {
                org: org.to_owned(),
                setting: setting.to_string(),
                variable: variable.to_owned(),
                known: groups
                    .iter()
                    .map(|g| format!("{:?} (id {})", g.name, g.id))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    };
    if group.is_hosted() {
        return Err(Problem::HostedGroup {
            org: org.to_owned(),
            name: group.name.clone(),
        });
    }
    Ok(ChosenGroup {
        id: group.id,
        name: group.name.clone(),
        allows_public_repositories: group.allows_public_repositories,
    })
}

/// A public repository's job cannot go to a group that does not allow public repositories.
pub fn check_public(
    org: &str,
    repo: &str,
    public: bool,
    group: &ChosenGroup,
) -> Result<(), Problem> {
    if public && !group.allows_public_repositories {
        return Err(Problem::PublicRepoNotAllowed {
            org: org.to_owned(),
            repo: format!("{org}/{repo}"),
            group: group.name.clone(),
        });
    }
    Ok(())
}

/// GitHub's limits on a runner's name and labels, before asking. `token` adds the
/// registration-token rule (no commas: `config.sh --labels` splits on them).
pub fn check_runner(name: &str, labels: &[String], token: bool) -> Result<(), Problem> {
    let len = name.chars().count();
    if len > MAX_RUNNER_NAME_LEN {
        return Err(Problem::NameTooLong {
            name: name.to_owned(),
            len,
        });
    }
    if labels.is_empty() || labels.len() > MAX_JIT_LABELS {
        return Err(Problem::LabelCount {
            count: labels.len(),
        });
    }
    for label in labels {
        let why = if label.trim().is_empty() {
            Some("empty".to_owned())
        } else if label.chars().count() > MAX_LABEL_LEN {
            Some(format!(
                "{} characters long (at most {MAX_LABEL_LEN})",
                label.chars().count()
            ))
        } else if token && label.contains(',') {
            Some("not usable with a registration token: config.sh --labels splits on commas".into())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Problem::BadLabel {
                label: label.clone(),
                why,
            });
        }
    }
    Ok(())
}

/// Whether the API URL is github.com's (JIT always exists there).
pub fn is_github_com(api_url: &str) -> bool {
    url::Url::parse(api_url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.eq_ignore_ascii_case("api.github.com"))
        })
        .unwrap_or(false)
}

/// The variable that sets an owner's group, as the operator would write it.
pub fn group_variable(owner: &str) -> String {
    format!("{}RUNNER_GROUP", crate::config::owners::env_prefix(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u64, name: &str, public: bool, hosted: bool) -> RunnerGroup {
        RunnerGroup {
            id,
            name: name.into(),
            visibility: Some("all".into()),
            default: id == 1,
            allows_public_repositories: public,
            hosted_runners_url: hosted.then(|| "https://x/hosted-runners".into()),
        }
    }

    #[test]
    fn a_user_or_a_single_repository_registers_per_repository() {
        assert!(repo_level(false, true, Some(OwnerKind::User)));
        assert!(
            repo_level(false, true, None),
            "unknown kind: the level that always works"
        );
        assert!(repo_level(true, false, Some(OwnerKind::Organization)));
        assert!(!repo_level(false, true, Some(OwnerKind::Organization)));
    }

    #[test]
    fn a_group_setting_is_an_id_or_a_name() {
        assert_eq!(GroupSetting::parse("7"), Some(GroupSetting::Id(7)));
        assert_eq!(
            GroupSetting::parse("linux-pool"),
            Some(GroupSetting::Name("linux-pool".into()))
        );
        assert_eq!(GroupSetting::parse("  "), None);
    }

    #[test]
    fn groups_are_found_by_name_or_id_and_an_unknown_one_is_an_error() {
        let groups = [
            group(1, "Default", false, false),
            group(4, "Builders", true, false),
        ];
        let by_name = GroupSetting::Name("builders".into());
        assert_eq!(
            choose_group("acme", "V", Some(&by_name), &groups)
                .unwrap()
                .id,
            4
        );
        assert_eq!(
            choose_group("acme", "V", Some(&GroupSetting::Id(4)), &groups)
                .unwrap()
                .name,
            "Builders"
        );
        assert_eq!(choose_group("acme", "V", None, &groups).unwrap().id, 1);
        let unknown = GroupSetting::Name("nope".into());
        let err = choose_group("acme", "OWNER_ACME_RUNNER_GROUP", Some(&unknown), &groups)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OWNER_ACME_RUNNER_GROUP") && err.contains("\"Builders\" (id 4)"),
            "{err}"
        );
        let hosted = [group(9, "Larger", false, true)];
        assert!(matches!(
            choose_group("acme", "V", Some(&GroupSetting::Id(9)), &hosted),
            Err(Problem::HostedGroup { .. })
        ));
    }

    #[test]
    fn a_public_repository_needs_a_group_that_allows_it() {
        let closed = ChosenGroup {
            id: 1,
            name: "Default".into(),
            allows_public_repositories: false,
        };
        assert!(check_public("acme", "site", false, &closed).is_ok());
        let err = check_public("acme", "site", true, &closed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("acme/site is public") && err.contains("allows_public_repositories"));
    }

    #[test]
    fn runner_limits_are_githubs() {
        let labels = vec!["self-hosted".to_owned()];
        assert!(check_runner(&"r".repeat(64), &labels, false).is_ok());
        assert!(matches!(
            check_runner(&"r".repeat(65), &labels, false),
            Err(Problem::NameTooLong { len: 65, .. })
        ));
        let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
        assert!(matches!(
            check_runner("r", &many, false),
            Err(Problem::LabelCount { count: 101 })
        ));
        assert!(check_runner("r", &[], false).is_err());
        assert!(check_runner("r", &["x".repeat(257)], false).is_err());
        let comma = vec!["a,b".to_owned()];
        assert!(check_runner("r", &comma, false).is_ok());
        assert!(check_runner("r", &comma, true).is_err());
    }

    #[test]
    fn only_api_github_com_is_github_com() {
        assert!(is_github_com("https://api.github.com"));
        assert!(!is_github_com("https://ghe.example.com/api/v3"));
        assert!(!is_github_com("http://127.0.0.1:4000"));
    }
}
