//! How a runner image is started: a pure decision from the image's flavor (`RUNNER_IMAGE_FLAVOR`,
//! carried in the spec), what the image says about itself and the registration material, to the
//! entry point, command, environment and user of the runner's container. Both runtimes use it;
//! table-tested here without an engine or a cluster.
//!
//! The layouts, as their Dockerfiles and entry scripts build them:
//!
//! - **official** (`ghcr.io/actions/actions-runner`, `actions/runner` `images/Dockerfile`): no
//!   ENTRYPOINT or CMD, `WORKDIR /home/runner`, `USER runner` (uid 1001), the runner's
//!   `run.sh`/`config.sh`/`bin/` in `/home/runner`. Started as `/home/runner/run.sh`, which
//!   hands `ACTIONS_RUNNER_INPUT_JITCONFIG` to `Runner.Listener run` as `--jitconfig`. It has no
//!   entry script that reads a registration token, so token mode is refused with a reason.
//! - **myoung34** (`myoung34/github-runner`, its Dockerfile and `entrypoint.sh`): runner in
//!   `/actions-runner` (its WORKDIR), `ENTRYPOINT ["/entrypoint.sh"]`,
//!   `CMD ["./bin/Runner.Listener", "run", "--startuptype", "service"]`, runs as root. Token
//!   mode keeps both: the entry script runs `config.sh` from `RUNNER_TOKEN`, `REPO_URL` or
//!   `ORG_NAME` + `RUNNER_SCOPE=org`, `LABELS`, `RUNNER_NAME`, `RUNNER_GROUP`, `EPHEMERAL`,
//!   `DISABLE_AUTO_UPDATE`, `GITHUB_HOST`, then the command. The script does nothing with
//!   `ACTIONS_RUNNER_INPUT_JITCONFIG` (it would run `config.sh` without a token, which fails,
//!   and then the command); so JIT mode starts `/actions-runner/run.sh` directly instead.
//! - **custom**: anything else, started with `RUNNER_COMMAND` as its entry point, given the
//!   same variables (the JIT config, or the token variables of the myoung34 convention).
//!
//! `auto` is decided from the image's configuration on Docker ([`detect`]), and from the image
//! reference on Kubernetes, which cannot inspect an image ([`detect_from_reference`]): a
//! reference that is neither `…/actions/actions-runner` nor `…myoung34/github-runner` needs an
//! explicit flavor there.

use std::collections::BTreeMap;

use shared::command::{ImageFlavor, Registration, RunnerSpec};

/// The official image's entry script, which reads `ACTIONS_RUNNER_INPUT_JITCONFIG`.
pub const OFFICIAL_RUN_SH: &str = "/home/runner/run.sh";
pub const OFFICIAL_WORKDIR: &str = "/home/runner";
/// The official image's `runner` user.
pub const OFFICIAL_UID: i64 = 1001;
pub const MYOUNG34_ENTRYPOINT: &str = "/entrypoint.sh";
pub const MYOUNG34_WORKDIR: &str = "/actions-runner";
/// The runner's own start script in the myoung34 image.
pub const MYOUNG34_RUN_SH: &str = "/actions-runner/run.sh";
/// The variable both runners read a JIT config from.
pub const JIT_ENV: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";
/// The variable myoung34's entry script reads a registration token from.
pub const TOKEN_ENV: &str = "RUNNER_TOKEN";

/// A decided layout (what `auto` resolves to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Official,
    Myoung34,
    Custom,
}

/// What an image's configuration says about it (`docker image inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
}

impl ImageFacts {
    fn describe(&self) -> String {
        format!(
            "entrypoint {:?}, cmd {:?}, working dir {:?}, user {:?}",
            self.entrypoint, self.cmd, self.working_dir, self.user
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "cannot tell how to start image {image} ({seen}); set RUNNER_IMAGE_FLAVOR=official, \
         myoung34, or custom with RUNNER_COMMAND"
    )]
    Undetected { image: String, seen: String },
    #[error(
        "cannot tell how to start image {image} from its name (Kubernetes cannot inspect an \
         image); set RUNNER_IMAGE_FLAVOR=official, myoung34, or custom with RUNNER_COMMAND"
    )]
    UndetectedReference { image: String },
    #[error("RUNNER_IMAGE_FLAVOR=custom needs RUNNER_COMMAND, the program that starts the runner")]
    NoCommand,
    #[error(
        "the official runner image registers only from a JIT config \
         (ACTIONS_RUNNER_INPUT_JITCONFIG), not a registration token; use RUNNER_REGISTRATION=jit"
    )]
    OfficialNeedsJit,
}

/// What the runner's container is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub layout: Layout,
    /// `None`: the image's own ENTRYPOINT and CMD. `Some`: this entry point, with `cmd`.
    pub entrypoint: Option<Vec<String>>,
    /// The command (arguments of the entry point); `Some(vec![])` with an entry point of ours.
    pub cmd: Option<Vec<String>>,
    /// Registration variables, in order.
    pub env: Vec<(String, String)>,
    /// The uid the layout needs (Kubernetes `runAsUser`: a name such as the official image's
    /// `runner` cannot be checked by `runAsNonRoot`); `None` when it does not matter.
    pub uid: Option<i64>,
}

impl Plan {
    /// The program the container runs first: the entry point's, else the command's.
    pub fn program<'a>(&'a self, facts: &'a ImageFacts) -> Option<&'a str> {
        let (entrypoint, cmd) = match &self.entrypoint {
            Some(e) => (e.as_slice(), self.cmd.as_deref().unwrap_or_default()),
            None => (facts.entrypoint.as_slice(), facts.cmd.as_slice()),
        };
        entrypoint
            .first()
            .or_else(|| cmd.first())
            .map(String::as_str)
    }
}

fn explicit(flavor: ImageFlavor, command: &[String]) -> Option<Layout> {
    match flavor {
        ImageFlavor::Official => Some(Layout::Official),
        ImageFlavor::Myoung34 => Some(Layout::Myoung34),
        ImageFlavor::Custom => Some(Layout::Custom),
        ImageFlavor::Auto if !command.is_empty() => Some(Layout::Custom),
        ImageFlavor::Auto => None,
    }
}

/// The layout of `spec.image` given what the engine says about it (Docker).
pub fn detect(spec: &RunnerSpec, facts: &ImageFacts) -> Result<Layout, LaunchError> {
    if let Some(layout) = explicit(spec.launch.flavor, &spec.launch.command) {
        return Ok(layout);
    }
    let workdir = facts.working_dir.trim_end_matches('/');
    let source = facts
        .labels
        .get("org.opencontainers.image.source")
        .map(String::as_str)
        .unwrap_or_default();
    if facts.entrypoint.last().map(String::as_str) == Some(MYOUNG34_ENTRYPOINT)
        && workdir == MYOUNG34_WORKDIR
    {
        Ok(Layout::Myoung34)
    } else if facts.entrypoint.is_empty()
        && (workdir == OFFICIAL_WORKDIR || source.contains("github.com/actions/runner"))
    {
        Ok(Layout::Official)
    } else {
        Err(LaunchError::Undetected {
            image: spec.image.clone(),
            seen: facts.describe(),
        })
    }
}

/// The layout of `spec.image` from its reference alone (Kubernetes).
pub fn detect_from_reference(spec: &RunnerSpec) -> Result<Layout, LaunchError> {
    if let Some(layout) = explicit(spec.launch.flavor, &spec.launch.command) {
        return Ok(layout);
    }
    let repository = super::docker::image::split_reference(&spec.image)
        .0
        .to_ascii_lowercase();
    if repository == "actions/actions-runner" || repository.ends_with("/actions/actions-runner") {
        Ok(Layout::Official)
    } else if repository == "myoung34/github-runner"
        || repository.ends_with("/myoung34/github-runner")
    {
        Ok(Layout::Myoung34)
    } else {
        Err(LaunchError::UndetectedReference {
            image: spec.image.clone(),
        })
    }
}

/// How a runner of `layout` is started with the spec's registration material.
pub fn plan(layout: Layout, spec: &RunnerSpec) -> Result<Plan, LaunchError> {
    let ours = |program: &str| (Some(vec![program.to_owned()]), Some(Vec::new()));
    let (entrypoint, cmd, uid) = match (layout, &spec.registration) {
        (Layout::Official, Registration::Token { .. }) => {
            return Err(LaunchError::OfficialNeedsJit);
        }
        (Layout::Official, Registration::JitConfig(_)) => {
            let (e, c) = ours(OFFICIAL_RUN_SH);
            (e, c, Some(OFFICIAL_UID))
        }
        // The entry script configures from the token variables, then runs the image's CMD;
        // it requires root (`RUN_AS_ROOT=true` by default).
        (Layout::Myoung34, Registration::Token { .. }) => (None, None, Some(0)),
        (Layout::Myoung34, Registration::JitConfig(_)) => {
            let (e, c) = ours(MYOUNG34_RUN_SH);
            (e, c, Some(0))
        }
        (Layout::Custom, _) => {
            if spec.launch.command.is_empty() {
                return Err(LaunchError::NoCommand);
            }
            (Some(spec.launch.command.clone()), Some(Vec::new()), None)
        }
    };
    Ok(Plan {
        layout,
        entrypoint,
        cmd,
        env: registration_env(spec),
        uid,
    })
}

/// The registration variables: the JIT config, or the myoung34 convention for a token.
pub fn registration_env(spec: &RunnerSpec) -> Vec<(String, String)> {
    match &spec.registration {
        Registration::JitConfig(jit) => vec![(JIT_ENV.to_owned(), jit.clone())],
        Registration::Token {
            token,
            url,
            runner_group,
        } => {
            let mut env = vec![
                (TOKEN_ENV.to_owned(), token.clone()),
                ("RUNNER_NAME".into(), spec.name.clone()),
                ("LABELS".into(), spec.labels.join(",")),
                ("EPHEMERAL".into(), "1".into()),
                ("DISABLE_AUTO_UPDATE".into(), "1".into()),
            ];
            let (host, path) = split_url(url);
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            match segments.as_slice() {
                [org] => {
                    env.push(("RUNNER_SCOPE".into(), "org".into()));
                    env.push(("ORG_NAME".into(), (*org).to_owned()));
                }
                _ => {
                    env.push(("RUNNER_SCOPE".into(), "repo".into()));
                    env.push(("REPO_URL".into(), url.clone()));
                }
            }
            if !runner_group.is_empty() {
                env.push(("RUNNER_GROUP".into(), runner_group.clone()));
            }
            if !host.is_empty() && host != "github.com" {
                env.push(("GITHUB_HOST".into(), host.to_owned()));
            }
            env
        }
    }
}

/// (`host[:port]`, path) of `https://host[:port]/path`.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::arch::Arch;
    use shared::command::{CacheSettings, ImageLaunch};
    use shared::ids::RunnerId;

    use super::*;

    fn spec(image: &str, flavor: ImageFlavor, command: &[&str], jit: bool) -> RunnerSpec {
        RunnerSpec {
            id: RunnerId::parse("r-1").unwrap(),
            name: "gha-r-1".into(),
            image: image.into(),
            launch: ImageLaunch {
                flavor,
                command: command.iter().map(|c| (*c).to_owned()).collect(),
            },
            registration: if jit {
                Registration::JitConfig("base64jit".into())
            } else {
                Registration::Token {
                    token: "AABB".into(),
                    url: "https://github.com/acme/app".into(),
                    runner_group: String::new(),
                }
            },
            labels: vec!["self-hosted".into(), "linux".into()],
            env: BTreeMap::new(),
            timeout: Duration::from_secs(60),
            cache: CacheSettings::default(),
            arch: Arch::Amd64,
            owner: "acme".into(),
            repository: Some("app".into()),
        }
    }

    fn myoung34() -> ImageFacts {
        ImageFacts {
            entrypoint: vec!["/entrypoint.sh".into()],
            cmd: vec![
                "./bin/Runner.Listener".into(),
                "run".into(),
                "--startuptype".into(),
                "service".into(),
            ],
            working_dir: "/actions-runner".into(),
            user: String::new(),
            labels: BTreeMap::new(),
        }
    }

    fn official() -> ImageFacts {
        ImageFacts {
            working_dir: "/home/runner".into(),
            user: "runner".into(),
            ..ImageFacts::default()
        }
    }

    fn custom() -> ImageFacts {
        ImageFacts {
            working_dir: "/opt/runner".into(),
            ..ImageFacts::default()
        }
    }

    const SEED: &str = "myoung34/github-runner:ubuntu-noble";

    /// (flavor, command, what the image says, the layout or what the error says).
    type DetectCase = (
        ImageFlavor,
        &'static [&'static str],
        ImageFacts,
        Result<Layout, &'static str>,
    );
    /// (layout, command, JIT?, the entry point, the uid).
    type PlanCase = (
        Layout,
        &'static [&'static str],
        bool,
        Option<&'static [&'static str]>,
        Option<i64>,
    );
    const GHCR: &str = "ghcr.io/actions/actions-runner:2.330.0";

    #[test]
    fn auto_reads_the_layout_from_the_image_and_an_explicit_flavor_wins() {
        use ImageFlavor::*;
        let table: &[DetectCase] = &[
            (Auto, &[], myoung34(), Ok(Layout::Myoung34)),
            (Auto, &[], official(), Ok(Layout::Official)),
            (Auto, &[], custom(), Err("set RUNNER_IMAGE_FLAVOR")),
            (Auto, &["/opt/runner/start"], custom(), Ok(Layout::Custom)),
            (Official, &[], myoung34(), Ok(Layout::Official)),
            (Myoung34, &[], official(), Ok(Layout::Myoung34)),
            (Custom, &["/x"], myoung34(), Ok(Layout::Custom)),
        ];
        for (flavor, command, facts, want) in table {
            let s = spec("any:1", *flavor, command, true);
            let got = detect(&s, facts).map_err(|e| e.to_string());
            match want {
                Ok(layout) => assert_eq!(got, Ok(*layout), "{flavor} {command:?}"),
                Err(says) => assert!(got.unwrap_err().contains(says), "{flavor}"),
            }
        }
        let labelled = ImageFacts {
            labels: BTreeMap::from([(
                "org.opencontainers.image.source".into(),
                "https://github.com/actions/runner".into(),
            )]),
            ..custom()
        };
        assert_eq!(
            detect(&spec("x", Auto, &[], true), &labelled),
            Ok(Layout::Official)
        );
    }

    #[test]
    fn on_kubernetes_auto_reads_the_reference_or_asks_for_a_flavor() {
        use ImageFlavor::*;
        for (image, flavor, want) in [
            (SEED, Auto, Some(Layout::Myoung34)),
            (
                "docker.io/myoung34/github-runner",
                Auto,
                Some(Layout::Myoung34),
            ),
            (GHCR, Auto, Some(Layout::Official)),
            (
                "ghcr.io/actions/actions-runner@sha256:ab",
                Auto,
                Some(Layout::Official),
            ),
            ("registry.local/ci/runner:1", Auto, None),
            (
                "registry.local/ci/runner:1",
                Official,
                Some(Layout::Official),
            ),
        ] {
            let got = detect_from_reference(&spec(image, flavor, &[], true));
            match want {
                Some(layout) => assert_eq!(got, Ok(layout), "{image}"),
                None => assert!(
                    matches!(got, Err(LaunchError::UndetectedReference { .. })),
                    "{image}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn each_layout_is_started_its_own_way() {
        let cases: &[PlanCase] = &[
            (
                Layout::Official,
                &[],
                true,
                Some(&[OFFICIAL_RUN_SH]),
                Some(1001),
            ),
            (
                Layout::Myoung34,
                &[],
                true,
                Some(&[MYOUNG34_RUN_SH]),
                Some(0),
            ),
            (Layout::Myoung34, &[], false, None, Some(0)),
            (
                Layout::Custom,
                &["/opt/runner/start", "--once"],
                true,
                Some(&["/opt/runner/start", "--once"]),
                None,
            ),
            (
                Layout::Custom,
                &["/opt/runner/start"],
                false,
                Some(&["/opt/runner/start"]),
                None,
            ),
        ];
        for (layout, command, jit, entrypoint, uid) in cases {
            let s = spec("i", ImageFlavor::Auto, command, *jit);
            let p = plan(*layout, &s).unwrap();
            let want: Option<Vec<String>> =
                entrypoint.map(|e| e.iter().map(|x| (*x).to_owned()).collect());
            assert_eq!(p.entrypoint, want, "{layout:?} jit={jit}");
            assert_eq!(p.uid, *uid, "{layout:?}");
            if p.entrypoint.is_some() {
                assert_eq!(p.cmd, Some(vec![]), "our entry point takes no image CMD");
            } else {
                assert_eq!(p.cmd, None, "the image's entry script and CMD are kept");
            }
            let keys: Vec<&str> = p.env.iter().map(|(k, _)| k.as_str()).collect();
            if *jit {
                assert_eq!(keys, vec![JIT_ENV]);
            } else {
                assert!(
                    keys.contains(&TOKEN_ENV) && keys.contains(&"REPO_URL"),
                    "{keys:?}"
                );
            }
        }
        let s = spec("i", ImageFlavor::Official, &[], false);
        assert_eq!(
            plan(Layout::Official, &s),
            Err(LaunchError::OfficialNeedsJit)
        );
        let s = spec("i", ImageFlavor::Custom, &[], true);
        assert_eq!(plan(Layout::Custom, &s), Err(LaunchError::NoCommand));
    }

    #[test]
    fn the_program_is_the_entry_point_else_the_command() {
        let s = spec(SEED, ImageFlavor::Auto, &[], false);
        let p = plan(Layout::Myoung34, &s).unwrap();
        assert_eq!(p.program(&myoung34()), Some("/entrypoint.sh"));
        let s = spec(SEED, ImageFlavor::Auto, &[], true);
        let p = plan(Layout::Myoung34, &s).unwrap();
        assert_eq!(p.program(&myoung34()), Some(MYOUNG34_RUN_SH));
        let no_entrypoint = ImageFacts {
            cmd: vec!["./start".into()],
            ..custom()
        };
        let keep = Plan {
            entrypoint: None,
            cmd: None,
            ..p
        };
        assert_eq!(keep.program(&no_entrypoint), Some("./start"));
    }

    #[test]
    fn a_token_follows_the_myoung34_convention() {
        let mut s = spec(SEED, ImageFlavor::Auto, &[], false);
        let env: BTreeMap<_, _> = registration_env(&s).into_iter().collect();
        assert_eq!(env["RUNNER_TOKEN"], "AABB");
        assert_eq!(env["REPO_URL"], "https://github.com/acme/app");
        assert_eq!(env["RUNNER_SCOPE"], "repo");
        assert_eq!(env["RUNNER_NAME"], "gha-r-1");
        assert_eq!(env["LABELS"], "self-hosted,linux");
        assert_eq!(env["EPHEMERAL"], "1");
        assert!(!env.contains_key("GITHUB_HOST"));
        s.registration = Registration::Token {
            token: "T".into(),
            url: "http://127.0.0.1:4000/acme".into(),
            runner_group: "builders".into(),
        };
        let env: BTreeMap<_, _> = registration_env(&s).into_iter().collect();
        assert_eq!(env["ORG_NAME"], "acme");
        assert_eq!(env["RUNNER_SCOPE"], "org");
        assert_eq!(env["RUNNER_GROUP"], "builders");
        assert_eq!(env["GITHUB_HOST"], "127.0.0.1:4000");
        assert!(!env.contains_key("REPO_URL"));
    }
}
