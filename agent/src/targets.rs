//! Which controller URL to dial next (`CONTROLLER_URL`, one URL or several comma-separated).
//!
//! Several controller replicas may share one database; only the leader serves sessions, and a
//! standby answers with the leader's address (issue 15 §2). The rules, pure and table-tested:
//! a hint is followed next; a failure, or a refusal without a hint, moves to the next URL of
//! the list (a failed hint too: the URL after the one that gave it, so a standby that keeps
//! naming a dead leader cannot hold the agent). The worker's backoff
//! paces the attempts, so a ring of replicas that all refuse is retried slowly, never spun.
//!
//! A hinted address is often a pod's IP, which the replicas' shared server certificate does
//! not name; the agent then checks the certificate for the host of the URL that gave the hint
//! ([`Targets::server_name`]): the same installation, the same CA, still verified.

/// How the last attempt on [`Targets::current`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A session was established (stay).
    Connected,
    /// The replica is not the leader; `hint` is the leader's address when it said one.
    NotLeader { hint: Option<String> },
    /// Unreachable, refused, or the session broke.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    urls: Vec<String>,
    current: usize,
    /// A leader's address a standby named, dialed instead of `urls[current]`.
    hinted: Option<String>,
}

impl Targets {
    /// `urls` must not be empty (the configuration guarantees one at least).
    pub fn new(urls: Vec<String>) -> Self {
        assert!(!urls.is_empty(), "CONTROLLER_URL names at least one URL");
        Self {
            urls,
            current: 0,
            hinted: None,
        }
    }

    /// The URL to dial now.
    pub fn current(&self) -> &str {
        self.hinted.as_deref().unwrap_or(&self.urls[self.current])
    }

    /// The name to verify the server certificate against when it is not the URL's own host:
    /// while following a hint, the host of the configured URL that gave it.
    pub fn server_name(&self) -> Option<String> {
        self.hinted.as_ref()?;
        host_of(&self.urls[self.current])
    }

    /// Chooses the next URL after `outcome`.
    pub fn after(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Connected => {}
            Outcome::NotLeader { hint: Some(hint) } if usable(hint) => {
                let hint = hint.trim_end_matches('/');
                match self.urls.iter().position(|u| u == hint) {
                    Some(index) => {
                        self.current = index;
                        self.hinted = None;
                    }
                    None => self.hinted = Some(hint.to_owned()),
                }
            }
            Outcome::NotLeader { .. } | Outcome::Failed => {
                self.hinted = None;
                self.current = (self.current + 1) % self.urls.len();
            }
        }
    }
}

/// The host of an `https://host:port/…` URL, without brackets around an IPv6 address.
fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// A hint the agent may dial: an `https://` URL (agents talk mutual TLS only).
fn usable(hint: &str) -> bool {
    hint.starts_with("https://") && hint.len() > "https://".len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(urls: &[&str]) -> Targets {
        Targets::new(urls.iter().map(|u| u.to_string()).collect())
    }

    fn hint(h: &str) -> Outcome {
        Outcome::NotLeader {
            hint: Some(h.into()),
        }
    }

    #[test]
    fn where_the_agent_dials_next() {
        let a = "https://a:9443";
        let b = "https://b:9443";
        let c = "https://c:9443";
        let cases: Vec<(&str, Vec<Outcome>, &str)> = vec![
            ("the first URL first", vec![], a),
            ("a connected session stays", vec![Outcome::Connected], a),
            ("a failure tries the next", vec![Outcome::Failed], b),
            ("the list wraps around", vec![Outcome::Failed; 3], a),
            (
                "a standby without a hint: the next",
                vec![Outcome::NotLeader { hint: None }],
                b,
            ),
            ("a hint in the list is followed", vec![hint(c)], c),
            (
                "a hint with a trailing slash",
                vec![hint("https://c:9443/")],
                c,
            ),
            (
                "a hint outside the list is dialed",
                vec![hint("https://d:9443")],
                "https://d:9443",
            ),
            (
                "a failed hint moves on past the URL that gave it",
                vec![hint("https://d:9443"), Outcome::Failed],
                b,
            ),
            (
                "a standby that keeps naming a dead leader cannot hold the agent",
                vec![hint("https://d:9443"), Outcome::Failed, Outcome::Failed],
                c,
            ),
            ("an unusable hint is ignored", vec![hint("d:9443")], b),
            (
                "after a hint, a failure moves on from it",
                vec![hint(c), Outcome::Failed],
                a,
            ),
        ];
        for (what, outcomes, expected) in cases {
            let mut t = targets(&[a, b, c]);
            for o in &outcomes {
                t.after(o);
            }
            assert_eq!(t.current(), expected, "{what}");
        }
    }

    #[test]
    fn a_hinted_address_is_verified_as_the_url_that_gave_the_hint() {
        let mut t = targets(&["https://gha.svc:9443", "https://other:9443"]);
        assert_eq!(
            t.server_name(),
            None,
            "a configured URL is verified as itself"
        );
        t.after(&hint("https://10.0.0.7:9443"));
        assert_eq!(t.current(), "https://10.0.0.7:9443");
        assert_eq!(t.server_name().as_deref(), Some("gha.svc"));
        t.after(&Outcome::Failed);
        assert_eq!(t.server_name(), None);
        assert_eq!(host_of("https://[::1]:9443"), Some("::1".into()));
        assert_eq!(host_of("https://ctl"), Some("ctl".into()));
    }

    #[test]
    fn one_url_is_always_dialed_again() {
        let mut t = targets(&["https://only:9443"]);
        t.after(&Outcome::Failed);
        t.after(&Outcome::NotLeader { hint: None });
        assert_eq!(t.current(), "https://only:9443");
    }
}
