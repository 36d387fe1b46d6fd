//! `REGISTRY_MIRROR`: Docker Hub images pulled through a mirror, per pull.
//!
//! The engine's own `registry-mirrors` option (`/etc/docker/daemon.json`) does the same for
//! every pull on the host; this setting is for agents whose operator does not own the engine's
//! configuration, or wants the mirror for runner images only. A reference on Docker Hub
//! (`ubuntu`, `myoung34/github-runner:ubuntu-noble`, `docker.io/library/ubuntu@sha256:…`) is
//! pulled as `<mirror>/<repository>` (e.g. `mirror.example.com/library/ubuntu`); references to
//! other registries are pulled as they are. The pulled image keeps the mirror's name: the agent
//! finds it under either name, and starts runners from whichever is present.
//!
//! The mirror is `host[:port][/path]` (a path for registries that serve a proxy of Docker Hub
//! under a project, e.g. Harbor's `harbor.example.com/dockerhub`), optionally after `https://`.
//! Whether the engine speaks TLS to it is the engine's decision (its `insecure-registries`).

/// Where Docker Hub images are pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// `host[:port][/path]`, without a trailing slash.
    base: String,
}

/// Registry names that mean Docker Hub.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

impl RegistryMirror {
    /// Parses `REGISTRY_MIRROR`; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        let trimmed = value.trim();
        if let Some((scheme, _)) = trimmed.split_once("://")
            && scheme != "https"
        {
            return Err(format!(
                "{value:?}: only https:// or no scheme (host[:port][/path]) is accepted; the \
                 engine decides plain HTTP by its insecure-registries option"
            ));
        }
        let base = trimmed
            .strip_prefix("https://")
            .unwrap_or(trimmed)
            .trim_end_matches('/');
        let host = base.split('/').next().unwrap_or("");
        let valid = !host.is_empty()
            && base.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | '[' | ']')
            })
            && !base.contains("//")
            && host
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0));
        if !valid {
            return Err(format!(
                "{value:?} is not a registry host[:port][/path] (e.g. mirror.example.com:5000)"
            ));
        }
        Ok(Self {
            base: base.to_ascii_lowercase(),
        })
    }

    /// The reference to pull `image` through the mirror, or `None` for an image that is not on
    /// Docker Hub.
    pub fn rewrite(&self, image: &str) -> Option<String> {
        let path = docker_hub_path(image)?;
        Some(format!("{}/{path}", self.base))
    }
}

/// `image` without its registry, with Docker Hub's `library/` for official images, if it is a
/// Docker Hub image.
fn docker_hub_path(image: &str) -> Option<String> {
    let (first, rest) = match image.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (image, None),
    };
    // Docker's rule: a first component before a `/` names a registry if it has a dot or a
    // port, or is `localhost` (github.com/distribution/reference, normalize.go
    // `splitDockerDomain`).
    let names_registry =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    let path = match (names_registry, rest) {
        (true, Some(rest)) if DOCKER_HUB.contains(&first.to_ascii_lowercase().as_str()) => rest,
        (true, _) => return None,
        (false, _) => image,
    };
    Some(if path.contains('/') {
        path.to_owned()
    } else {
        format!("library/{path}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_images_are_pulled_through_the_mirror_others_as_they_are() {
        let mirror = RegistryMirror::parse("https://Mirror.example.com:5000/").unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        for (image, expected) in [
            (
                "ubuntu",
                Some("mirror.example.com:5000/library/ubuntu".to_owned()),
            ),
            (
                "ubuntu:24.04",
                Some("mirror.example.com:5000/library/ubuntu:24.04".into()),
            ),
            (
                "myoung34/github-runner:ubuntu-noble",
                Some("mirror.example.com:5000/myoung34/github-runner:ubuntu-noble".into()),
            ),
            (
                "docker.io/library/ubuntu:24.04",
                Some("mirror.example.com:5000/library/ubuntu:24.04".into()),
            ),
            (
                "index.docker.io/myoung34/github-runner",
                Some("mirror.example.com:5000/myoung34/github-runner".into()),
            ),
            (
                &*format!("docker.io/ubuntu@{digest}"),
                Some(format!("mirror.example.com:5000/library/ubuntu@{digest}")),
            ),
            ("ghcr.io/actions/actions-runner:2.330", None),
            ("registry:5000/runner", None),
            ("localhost/runner:1", None),
        ] {
            assert_eq!(mirror.rewrite(image), expected, "{image}");
        }
        let harbor = RegistryMirror::parse("harbor.example.com/dockerhub").unwrap();
        assert_eq!(
            harbor.rewrite("ubuntu").as_deref(),
            Some("harbor.example.com/dockerhub/library/ubuntu")
        );
    }

    #[test]
    fn a_mirror_that_is_no_registry_is_refused_with_the_reason() {
        for (value, says) in [
            ("http://mirror.example.com", "only https://"),
            ("ftp://mirror", "only https://"),
            ("", "not a registry"),
            ("mirror.example.com:0", "not a registry"),
            ("mirror.example.com:http", "not a registry"),
            ("mirror example", "not a registry"),
            ("mirror.example.com//x", "not a registry"),
        ] {
            let error = RegistryMirror::parse(value).expect_err(value);
            assert!(error.contains(says), "{value}: {error}");
        }
    }
}
