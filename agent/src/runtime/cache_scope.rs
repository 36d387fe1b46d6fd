//! Whose a cache is: `CACHE_VOLUME_SCOPE`, the same for both runtimes.
//!
//! A cache outlives its runner, so a job can leave tools in it that a later job runs. Kept per
//! repository (the default), a job can only plant something for later jobs of its own
//! repository; per owner (`CACHE_VOLUME_SCOPE=owner`, an explicit opt-in) every repository of
//! the owner shares the caches of its architecture.
//!
//! The repository is the one of the job the runner was started for. An organisation-level
//! runner can still be given another job of the same owner by GitHub (any queued job its
//! labels match); repository-level registration (`REPO_LEVEL`-style owner settings) closes
//! that too.

use shared::command::RunnerSpec;

/// `CACHE_VOLUME_SCOPE`.
pub const VARIABLE: &str = "CACHE_VOLUME_SCOPE";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheScope {
    /// One set of caches per owner, repository and architecture.
    #[default]
    Repository,
    /// One set of caches per owner and architecture, shared by its repositories.
    Owner,
}

impl CacheScope {
    /// `repository` or `owner`, case-insensitive; unset means `repository`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("repository") => Ok(CacheScope::Repository),
            Some("owner") => Ok(CacheScope::Owner),
            Some(other) => Err(format!("{other:?} is neither repository nor owner")),
        }
    }

    /// The part of a cache's name that says whose it is, lower-cased: `owner` or
    /// `owner.repository`. GitHub owner names never contain a `.`, so no owner and repository
    /// pair can be read as another. `None` (no caches for this runner) when the scope is the
    /// repository and the spec names none, or names one that is not a GitHub repository name.
    pub fn key(self, spec: &RunnerSpec) -> Option<String> {
        let owner = clean(&spec.owner);
        match self {
            CacheScope::Owner => Some(owner),
            CacheScope::Repository => {
                let repo = spec.repository.as_deref().filter(|r| is_repo_name(r))?;
                Some(format!("{owner}.{}", repo.to_ascii_lowercase()))
            }
        }
    }
}

/// `[A-Za-z0-9._-]`, not `.` or `..`: what GitHub allows in a repository name.
fn is_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Lower-cased, anything but `[a-z0-9-]` made a `-` (owner names are alphanumerics and
/// hyphens; this only guards the name against a bad spec).
fn clean(owner: &str) -> String {
    owner
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use shared::arch::Arch;
    use shared::command::Registration;
    use shared::ids::RunnerId;

    use super::*;

    fn spec(owner: &str, repository: Option<&str>) -> RunnerSpec {
        RunnerSpec {
            id: RunnerId::parse("r-1").unwrap(),
            name: "r-1".into(),
            image: "runner".into(),
            launch: Default::default(),
            registration: Registration::JitConfig("j".into()),
            labels: vec![],
            env: BTreeMap::new(),
            timeout: Duration::from_secs(60),
            cache: Default::default(),
            arch: Arch::Amd64,
            owner: owner.into(),
            repository: repository.map(str::to_owned),
        }
    }

    #[test]
    fn per_repository_unless_opted_out() {
        assert_eq!(CacheScope::parse(None), Ok(CacheScope::Repository));
        assert_eq!(CacheScope::parse(Some("Owner")), Ok(CacheScope::Owner));
        assert!(CacheScope::parse(Some("global")).is_err());
        let s = spec("Acme", Some("App"));
        assert_eq!(CacheScope::Repository.key(&s).as_deref(), Some("acme.app"));
        assert_eq!(CacheScope::Owner.key(&s).as_deref(), Some("acme"));
    }

    #[test]
    fn owner_and_repository_pairs_never_read_as_another() {
        let a = CacheScope::Repository.key(&spec("a-b", Some("c"))).unwrap();
        let b = CacheScope::Repository.key(&spec("a", Some("b-c"))).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn no_repository_no_cache() {
        assert_eq!(CacheScope::Repository.key(&spec("acme", None)), None);
        for bad in ["..", ".", "a/b", "a b", ""] {
            assert_eq!(
                CacheScope::Repository.key(&spec("acme", Some(bad))),
                None,
                "{bad:?}"
            );
        }
        assert!(CacheScope::Owner.key(&spec("acme", None)).is_some());
    }
}
