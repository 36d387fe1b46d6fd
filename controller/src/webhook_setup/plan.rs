//! The pure half of webhook setup: from a target's hooks and what we want, decide what to do.
//!
//! A hook is *ours* when its `config.url` is our `WEBHOOK_URL` (compared as URLs: scheme and
//! host case-insensitively, a trailing `/` ignored); every other hook is foreign and is never
//! touched. We want exactly one hook of ours: `web`, events `workflow_job` + `workflow_run`,
//! content type `json`, TLS verified, active, and signed with the owner's current secret.
//!
//! GitHub never shows a hook's secret back (`"********"`), so the only way to know a hook carries
//! the current secret is to have set it ourselves and to see that nobody edited the hook since
//! (its `updated_at` unchanged). The caller answers that through `ensured`; any other hook of
//! ours gets the secret set again, which is what makes a rotated `WEBHOOK_SECRET` take effect.

use serde::Serialize;
use shared::github::{Hook, Repository};

/// The events our hook subscribes to.
pub const EVENTS: [&str; 2] = ["workflow_job", "workflow_run"];

/// What setup does (or would do) to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Nothing,
    Skip,
}

/// The decision for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    /// The hook of ours that is kept (for `Update` and `Nothing`).
    pub hook_id: Option<u64>,
    /// Duplicate hooks of ours to delete before updating the kept one.
    pub remove: Vec<u64>,
    /// Why, in words an operator can act on.
    pub reasons: Vec<String>,
    /// Hooks with other URLs, left alone.
    pub foreign_hooks: usize,
}

/// Whether two webhook URLs name the same endpoint.
pub fn same_url(a: &str, b: &str) -> bool {
    fn canonical(raw: &str) -> String {
        match url::Url::parse(raw.trim()) {
            Ok(u) => {
                let mut s = u.to_string();
                while s.ends_with('/') {
                    s.pop();
                }
                s
            }
            Err(_) => raw.trim().trim_end_matches('/').to_ascii_lowercase(),
        }
    }
    canonical(a) == canonical(b)
}

/// Whether `hook` points at `url`.
pub fn is_ours(hook: &Hook, url: &str) -> bool {
    hook.config.url.as_deref().is_some_and(|u| same_url(u, url))
}

/// Why a repository is left out of setup before its hooks are even read, if it is.
pub fn repo_skip_reason(repo: &Repository) -> Option<String> {
    if repo.archived == Some(true) {
        return Some("archived: read-only, and no workflows run in it".into());
    }
    if repo.disabled == Some(true) {
        return Some("disabled on GitHub".into());
    }
    match repo.permissions {
        Some(p) if !p.admin => Some(
            "the token's user is not an admin of this repository (GitHub requires admin to \
             manage its webhooks); make the user an admin or set this repository's hook up by hand"
                .into(),
        ),
        _ => None,
    }
}

fn differences(hook: &Hook, url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut have: Vec<&str> = hook.events.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    if have != EVENTS {
        out.push(format!(
            "events are [{}], want [{}]",
            have.join(", "),
            EVENTS.join(", ")
        ));
    }
    let content_type = hook.config.content_type.as_deref().unwrap_or("form");
    if content_type != "json" {
        out.push(format!("content type is {content_type}, want json"));
    }
    if !hook.active {
        out.push("inactive".into());
    }
    let insecure = match &hook.config.insecure_ssl {
        Some(serde_json::Value::String(s)) => s != "0",
        Some(serde_json::Value::Number(n)) => n.as_u64() != Some(0),
        _ => false,
    };
    if insecure {
        out.push("TLS verification is off (insecure_ssl)".into());
    }
    if hook.config.url.as_deref() != Some(url) {
        out.push(format!("URL is written differently, want {url}"));
    }
    out
}

/// Decides for one target. `has_secret`: a webhook secret is configured for the owner;
/// `ensured(hook)`: we set the current secret on that hook and it has not been edited since.
pub fn plan(hooks: &[Hook], url: &str, has_secret: bool, ensured: impl Fn(&Hook) -> bool) -> Plan {
    let (mut ours, foreign): (Vec<&Hook>, Vec<&Hook>) = hooks.iter().partition(|h| is_ours(h, url));
    let foreign_hooks = foreign.len();
    if ours.is_empty() {
        return Plan {
            action: Action::Create,
            hook_id: None,
            remove: Vec::new(),
            reasons: vec!["no hook points at WEBHOOK_URL".into()],
            foreign_hooks,
        };
    }
    // Keep the best one: already ensured, then the fewest differences, then the oldest.
    ours.sort_by_key(|h| (!ensured(h), differences(h, url).len(), h.id));
    let keep = ours[0];
    let remove: Vec<u64> = ours[1..].iter().map(|h| h.id).collect();
    let mut reasons = differences(keep, url);
    if !remove.is_empty() {
        let ids: Vec<String> = remove.iter().map(u64::to_string).collect();
        reasons.push(format!(
            "removing duplicate hooks of ours: {}",
            ids.join(", ")
        ));
    }
    if has_secret {
        if keep.config.secret.is_none() {
            reasons.push("has no secret: deliveries would be unsigned".into());
        } else if !ensured(keep) {
            reasons.push(
                "GitHub never shows a hook's secret: setting the current WEBHOOK_SECRET".into(),
            );
        }
    }
    let action = if reasons.is_empty() {
        Action::Nothing
    } else {
        Action::Update
    };
    Plan {
        action,
        hook_id: Some(keep.id),
        remove,
        reasons,
        foreign_hooks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "https://scaler.example.com/webhook";

    fn hook(id: u64, url: &str, events: &[&str], secret: bool) -> Hook {
        serde_json::from_value(json!({
            "id": id, "name": "web", "active": true, "events": events,
            "config": {"url": url, "content_type": "json", "insecure_ssl": "0",
                       "secret": if secret { Some("********") } else { None }},
        }))
        .unwrap()
    }

    #[test]
    fn no_hook_of_ours_means_create_and_foreign_hooks_are_counted_not_touched() {
        let hooks = [hook(1, "https://ci.example.com/hook", &EVENTS, true)];
        let p = plan(&hooks, URL, true, |_| false);
        assert_eq!(p.action, Action::Create);
        assert_eq!(p.foreign_hooks, 1);
        assert!(p.remove.is_empty());
    }

    #[test]
    fn a_hook_we_ensured_with_the_current_secret_needs_nothing() {
        let hooks = [hook(7, URL, &["workflow_run", "workflow_job"], true)];
        let p = plan(&hooks, URL, true, |h| h.id == 7);
        assert_eq!(p.action, Action::Nothing, "{:?}", p.reasons);
        assert_eq!(p.hook_id, Some(7));
    }

    #[test]
    fn a_matching_hook_we_did_not_ensure_gets_the_secret_again() {
        let hooks = [hook(7, URL, &EVENTS, true)];
        let p = plan(&hooks, URL, true, |_| false);
        assert_eq!(p.action, Action::Update);
        assert!(p.reasons[0].contains("secret"), "{:?}", p.reasons);
        // Without a configured secret there is nothing to rotate.
        assert_eq!(plan(&hooks, URL, false, |_| false).action, Action::Nothing);
    }

    #[test]
    fn differences_are_named() {
        let mut h: Hook = hook(3, "HTTPS://Scaler.Example.com/webhook/", &["push"], false);
        h.active = false;
        h.config.content_type = Some("form".into());
        h.config.insecure_ssl = Some(json!("1"));
        let p = plan(&[h], URL, true, |_| true);
        assert_eq!(p.action, Action::Update);
        let all = p.reasons.join("; ");
        for needle in [
            "events are [push]",
            "content type is form",
            "inactive",
            "TLS",
            "written differently",
            "no secret",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn duplicates_of_ours_are_removed_keeping_the_best() {
        let hooks = [
            hook(10, URL, &["workflow_job"], true),
            hook(11, URL, &["workflow_run"], true),
            hook(12, "https://other.example/webhook", &EVENTS, true),
        ];
        let p = plan(&hooks, URL, true, |h| h.id == 11);
        assert_eq!(p.action, Action::Update);
        assert_eq!(p.hook_id, Some(11));
        assert_eq!(p.remove, vec![10]);
        assert_eq!(p.foreign_hooks, 1);
    }

    #[test]
    fn urls_compare_as_urls() {
        assert!(same_url(URL, "https://SCALER.example.com/webhook/"));
        assert!(same_url(URL, "https://scaler.example.com:443/webhook"));
        assert!(!same_url(URL, "https://scaler.example.com/Webhook"));
        assert!(!same_url(URL, "http://scaler.example.com/webhook"));
    }

    #[test]
    fn repositories_without_admin_or_archived_are_skipped() {
        let repo = |admin: bool, archived: bool| -> Repository {
            serde_json::from_value(json!({
                "id": 1, "name": "r", "full_name": "o/r", "private": false, "archived": archived,
                "owner": {"login": "o", "id": 2, "type": "User"},
                "permissions": {"admin": admin, "push": true, "pull": true},
            }))
            .unwrap()
        };
        assert_eq!(repo_skip_reason(&repo(true, false)), None);
        assert!(
            repo_skip_reason(&repo(false, false))
                .unwrap()
                .contains("admin")
        );
        assert!(
            repo_skip_reason(&repo(true, true))
                .unwrap()
                .contains("archived")
        );
    }
}
