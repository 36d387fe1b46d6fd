//! The check, before a runner container is started, that the program it runs first is in it
//! (with an init process the engine would start the container anyway and the init would exit
//! 127, which looks like a runner that ran and failed).
//!
//! The path is looked up in the created container with a stat (`HEAD …/archive`), which has
//! the engine mount the container's file system: several milliseconds of every cold start.
//! What is found is remembered per image id and path ([`ProgramsSeen`], bounded), so a later
//! container of the same image is not looked at again, on two conditions:
//! - the engine confirms the container is of that very image id (one container inspection,
//!   no mount; done for every start, so a tag moved between the image's inspection and the
//!   container's creation is refused rather than run unchecked);
//! - no mount of the container covers the path (a volume's content is not the image's).

use std::collections::HashSet;

use bollard::models::ContainerCreateBody;
use shared::command::RunnerSpec;

use super::Inner;
use super::engine::{DockerError, status_of};
use crate::runtime::launch::{ImageFacts, Plan};

/// How many (image id, path) pairs are remembered; past it the memory starts again empty.
const SEEN_CAPACITY: usize = 256;

/// Programs found in images, by image id and path (only the runtime's start tasks use it,
/// behind a short lock).
#[derive(Debug, Default)]
pub(super) struct ProgramsSeen {
    seen: HashSet<(String, String)>,
}

impl ProgramsSeen {
    pub(super) fn contains(&self, image_id: &str, path: &str) -> bool {
        self.seen.contains(&(image_id.to_owned(), path.to_owned()))
    }

    pub(super) fn remember(&mut self, image_id: &str, path: &str) {
        if self.seen.len() >= SEEN_CAPACITY {
            self.seen.clear();
        }
        self.seen.insert((image_id.to_owned(), path.to_owned()));
    }
}

/// The path of the program the container runs first, when it has to be looked for: absolute,
/// or relative to the image's working directory; `None` for a bare name (left to `PATH`) or
/// no program at all.
pub(super) fn path_to_check(plan: &Plan, facts: &ImageFacts) -> Option<String> {
    let program = plan.program(facts)?;
    if program.starts_with('/') {
        Some(program.to_owned())
    } else if program.contains('/') {
        let dir = if facts.working_dir.is_empty() {
            "/"
        } else {
            facts.working_dir.as_str()
        };
        Some(format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            program.trim_start_matches("./")
        ))
    } else {
        None
    }
}

/// Whether a mount, bind or tmpfs of `body` is at `path` or one of its parents.
pub(super) fn covered_by_mount(body: &ContainerCreateBody, path: &str) -> bool {
    let Some(hc) = &body.host_config else {
        return false;
    };
    let mounts = hc.mounts.iter().flatten().filter_map(|m| m.target.clone());
    let binds = hc
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_owned));
    let tmpfs = hc.tmpfs.iter().flat_map(|t| t.keys().cloned());
    let volumes = body.volumes.iter().flatten().cloned();
    mounts
        .chain(binds)
        .chain(tmpfs)
        .chain(volumes)
        .any(|target| covers(&target, path))
}

fn covers(target: &str, path: &str) -> bool {
    let target = target.trim_end_matches('/');
    target.is_empty()
        || path == target
        || path
            .strip_prefix(target)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What the created container must be checked for before it starts.
pub(super) struct Check<'a> {
    pub spec: &'a RunnerSpec,
    pub plan: &'a Plan,
    pub facts: &'a ImageFacts,
    /// The id of the image inspected for this start (its platform and facts).
    pub image_id: Option<&'a str>,
    /// Whether a mount covers the program's path (see [`covered_by_mount`]).
    pub covered: bool,
}

impl Inner {
    /// Fails when the created container is not of the image inspected for it, or when the
    /// program it would run first is not in it (see the module doc).
    pub(super) async fn check_container(
        &self,
        docker: &bollard::Docker,
        container: &str,
        check: &Check<'_>,
    ) -> Result<(), DockerError> {
        let spec = check.spec;
        if let Some(inspected) = check.image_id {
            let found = docker
                .inspect_container(container, None)
                .await
                .map_err(|e| self.engine.classify(format!("inspect {}", spec.name), e))?
                .image
                .unwrap_or_default();
            if found != inspected {
                return Err(DockerError::ImageChanged {
                    image: spec.image.clone(),
                    inspected: inspected.to_owned(),
                    found,
                });
            }
        }
        let Some(path) = path_to_check(check.plan, check.facts) else {
            return Ok(());
        };
        let cacheable = check.image_id.filter(|_| !check.covered);
        if let Some(id) = cacheable
            && self.programs().contains(id, &path)
        {
            return Ok(());
        }
        // A stat of the path (`HEAD …/archive`): no archive of the file is made.
        let stat = docker
            .get_container_archive_info(
                container,
                Some(bollard::query_parameters::ContainerArchiveInfoOptions { path: path.clone() }),
            )
            .await;
        match stat {
            Ok(_) => {
                if let Some(id) = cacheable {
                    self.programs().remember(id, &path);
                }
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => Err(DockerError::EntryPointMissing {
                image: spec.image.clone(),
                reason: missing_reason(docker, container, &path).await,
                path,
            }),
            Err(e) => Err(self
                .engine
                .classify(format!("look for {path} in container {}", spec.name), e)),
        }
    }

    fn programs(&self) -> std::sync::MutexGuard<'_, ProgramsSeen> {
        self.programs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's words for a path missing from `container`: a `HEAD` answer has no body, so
/// they are asked for again with a `GET` (only on this failure path).
async fn missing_reason(docker: &bollard::Docker, container: &str, path: &str) -> String {
    let mut archive = docker.download_from_container(
        container,
        Some(bollard::query_parameters::DownloadFromContainerOptions {
            path: path.to_owned(),
        }),
    );
    match futures::StreamExt::next(&mut archive).await {
        Some(Err(bollard::errors::Error::DockerResponseServerError { message, .. }))
            if !message.is_empty() =>
        {
            message
        }
        _ => "not found in the container".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{HostConfig, Mount};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::runtime::docker::DockerRuntime;
    use crate::runtime::docker::config::{DockerHost, DockerSettings};
    use crate::runtime::launch::{self, Layout};
    use shared::arch::Arch;
    use shared::command::{CacheSettings, Registration};
    use shared::ids::RunnerId;

    /// `X-Docker-Container-Path-Stat` of a found file (base64 of its JSON).
    const STAT: &str = "eyJuYW1lIjoicnVuLnNoIiwic2l6ZSI6MSwibW9kZSI6NDkzLCJtdGltZSI6IjIwMjAtMDEtMDFUMDA6MDA6MDBaIiwibGlua1RhcmdldCI6IiJ9";

    /// A fake engine on loopback that answers what a container check asks: the API version,
    /// `inspect container` (container `c-<x>` is of image `sha256:<x>`) and `HEAD …/archive`
    /// (found), counting the stats. Anything else is a 404.
    async fn fake_engine() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stats = Arc::new(AtomicUsize::new(0));
        let counted = stats.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let stats = counted.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let mut parts = line.split(' ');
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let path = path.split('?').next().unwrap_or("");
                    let (status, extra, body) = if path.ends_with("/version") {
                        (
                            "200 OK",
                            String::new(),
                            r#"{"ApiVersion":"1.47","Version":"28.2.0"}"#.to_owned(),
                        )
                    } else if method == "HEAD" && path.ends_with("/archive") {
                        stats.fetch_add(1, Ordering::SeqCst);
                        (
                            "200 OK",
                            format!("X-Docker-Container-Path-Stat: {STAT}\r\n"),
                            String::new(),
                        )
                    } else if let Some(name) = path
                        .strip_suffix("/json")
                        .and_then(|p| p.rsplit('/').next())
                        .and_then(|n| n.strip_prefix("c-"))
                    {
                        (
                            "200 OK",
                            String::new(),
                            format!(r#"{{"Id":"c-{name}","Image":"sha256:{name}"}}"#),
                        )
                    } else {
                        (
                            "404 Not Found",
                            String::new(),
                            r#"{"message":"no such thing"}"#.to_owned(),
                        )
                    };
                    let length = if method == "HEAD" { 0 } else { body.len() };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {length}\r\nConnection: close\r\n\r\n{}",
                        if method == "HEAD" { "" } else { body.as_str() }
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        (addr, stats)
    }

    fn spec() -> RunnerSpec {
        RunnerSpec {
            id: RunnerId::parse("r1").unwrap(),
            name: "r1".into(),
            image: "runner:1".into(),
            launch: Default::default(),
            registration: Registration::JitConfig("j".into()),
            labels: vec![],
            env: BTreeMap::new(),
            timeout: Duration::from_secs(60),
            cache: CacheSettings::default(),
            arch: Arch::Amd64,
            owner: "acme".into(),
            repository: Some("app".into()),
        }
    }

    #[tokio::test]
    async fn the_entry_point_is_looked_for_once_per_image_id_and_a_changed_image_is_refused() {
        let (addr, stats) = fake_engine().await;
        let settings = DockerSettings {
            host: DockerHost::Tcp(addr),
            ..Default::default()
        };
        let rt = DockerRuntime::new(settings, "host-1", crate::runtime::event_channel().0);
        let inner = &rt.inner;
        let docker = inner
            .engine
            .client()
            .await
            .expect("the fake engine answers");
        let spec = spec();
        let plan = launch::plan(Layout::Myoung34, &spec).unwrap();
        let facts = ImageFacts {
            entrypoint: vec!["/entrypoint.sh".into()],
            working_dir: "/actions-runner".into(),
            ..Default::default()
        };
        assert!(
            path_to_check(&plan, &facts).is_some(),
            "the plan runs a path"
        );
        let check = |image_id, covered| Check {
            spec: &spec,
            plan: &plan,
            facts: &facts,
            image_id,
            covered,
        };
        const T: Duration = Duration::from_secs(10);
        let (plain, covered) = (
            check(Some("sha256:a"), false),
            check(Some("sha256:a"), true),
        );

        let first = tokio::time::timeout(T, inner.check_container(&docker, "c-a", &plain));
        first.await.unwrap().expect("found");
        assert_eq!(stats.load(Ordering::SeqCst), 1);
        // A second container of the same image: not looked at again.
        let again = tokio::time::timeout(T, inner.check_container(&docker, "c-a", &plain));
        again.await.unwrap().expect("remembered");
        assert_eq!(stats.load(Ordering::SeqCst), 1, "no second stat");
        // Under a mount the image's content says nothing: looked at every time.
        let mounted = tokio::time::timeout(T, inner.check_container(&docker, "c-a", &covered));
        mounted.await.unwrap().expect("found");
        assert_eq!(stats.load(Ordering::SeqCst), 2);
        // The container is of another image than the one inspected (a tag moved): refused,
        // whatever was remembered.
        let other = tokio::time::timeout(T, inner.check_container(&docker, "c-b", &plain));
        let refused = other.await.unwrap().unwrap_err();
        assert!(
            matches!(&refused, DockerError::ImageChanged { inspected, found, .. }
                if inspected == "sha256:a" && found == "sha256:b"),
            "{refused:?}"
        );
    }

    fn body(mounts: &[&str], binds: &[&str]) -> ContainerCreateBody {
        ContainerCreateBody {
            host_config: Some(HostConfig {
                mounts: Some(
                    mounts
                        .iter()
                        .map(|t| Mount {
                            target: Some((*t).to_owned()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                binds: Some(binds.iter().map(|b| (*b).to_owned()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_program_under_a_mount_is_covered_and_a_sibling_is_not() {
        let b = body(
            &["/opt/hostedtoolcache"],
            &["/host/dir:/actions-runner/bin:ro"],
        );
        assert!(covered_by_mount(&b, "/opt/hostedtoolcache/node/bin/node"));
        assert!(covered_by_mount(&b, "/opt/hostedtoolcache"));
        assert!(covered_by_mount(&b, "/actions-runner/bin/Runner.Listener"));
        assert!(!covered_by_mount(&b, "/opt/hostedtoolcache2/x"));
        assert!(!covered_by_mount(&b, "/entrypoint.sh"));
        assert!(!covered_by_mount(
            &ContainerCreateBody::default(),
            "/entrypoint.sh"
        ));
        // A mount at the root covers everything.
        assert!(covered_by_mount(&body(&["/"], &[]), "/entrypoint.sh"));
    }

    #[test]
    fn programs_are_remembered_per_image_id_and_path_within_a_bound() {
        let mut seen = ProgramsSeen::default();
        seen.remember("sha256:a", "/entrypoint.sh");
        assert!(seen.contains("sha256:a", "/entrypoint.sh"));
        assert!(
            !seen.contains("sha256:b", "/entrypoint.sh"),
            "another image (a tag moved, a new pull) is looked at again"
        );
        assert!(!seen.contains("sha256:a", "/home/runner/run.sh"));
        for i in 0..SEEN_CAPACITY {
            seen.remember(&format!("sha256:{i}"), "/p");
        }
        assert!(seen.seen.len() <= SEEN_CAPACITY);
    }
}
