//! How tightly a runner is confined, the same for both runtimes: `RUNNER_SANDBOX`.
//!
//! A runner runs whatever a job says, so by default it gets what a CI job needs and no more:
//!
//! - `strict` (the default): no privilege gain through setuid binaries (`no-new-privileges` on
//!   Docker, `allowPrivilegeEscalation: false` on Kubernetes), every capability dropped except
//!   [`KEPT_CAPABILITIES`], the runtime's default seccomp profile, a PID limit (Docker:
//!   `RUNNER_PIDS_LIMIT`) and CPU and memory limits. `sudo` inside the job does not work.
//! - `none`: the engine's defaults (its default capabilities, setuid works, so `sudo` in the
//!   official image works); the PID, CPU and memory limits still apply.
//! - `privileged`: a privileged container, for jobs that run Docker-in-Docker inside the runner.
//!   It is root on the host for any job: use it only for trusted repositories (a `docker:dind`
//!   sidecar reached with `RUNNER_ENV=DOCKER_HOST=tcp://…` keeps the runner itself strict).
//!
//! Kept as one pure parse so the Docker and Kubernetes settings read the variable identically.

/// `RUNNER_SANDBOX`.
pub const VARIABLE: &str = "RUNNER_SANDBOX";

/// Capabilities a strict runner keeps (all others are dropped). What needs them:
/// - `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `FSETID`: entry scripts that start as root (myoung34)
///   prepare the work directory and hand it to the `runner` user; checkouts keep file modes.
/// - `SETUID`, `SETGID`: those scripts then switch to the `runner` user.
/// - `KILL`: the runner (and such a root entry script) ends the job's processes on cancel.
/// - `NET_BIND_SERVICE`: job services that listen on ports below 1024.
///
/// Dropped, among others: `NET_RAW` (raw sockets, ARP/ICMP spoofing on the bridge), `MKNOD`,
/// `SYS_CHROOT`, `SETPCAP`, `SETFCAP`, `AUDIT_WRITE`.
pub const KEPT_CAPABILITIES: [&str; 8] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sandbox {
    #[default]
    Strict,
    /// The engine's or cluster's defaults.
    None,
    /// A privileged container (Docker-in-Docker inside the runner).
    Privileged,
}

impl Sandbox {
    /// `strict`, `none` or `privileged`, case-insensitive; unset means `strict`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("strict") => Ok(Sandbox::Strict),
            Some("none") => Ok(Sandbox::None),
            Some("privileged") => Ok(Sandbox::Privileged),
            Some(other) => Err(format!(
                "{other:?} is not strict, none or privileged (Docker-in-Docker)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_unless_asked_otherwise() {
        assert_eq!(Sandbox::parse(None), Ok(Sandbox::Strict));
        assert_eq!(Sandbox::parse(Some(" ")), Ok(Sandbox::Strict));
        assert_eq!(Sandbox::parse(Some("None")), Ok(Sandbox::None));
        assert_eq!(Sandbox::parse(Some("PRIVILEGED")), Ok(Sandbox::Privileged));
        assert!(Sandbox::parse(Some("off")).is_err());
    }
}
