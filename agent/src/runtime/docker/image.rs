//! Runner images: used as they are when present, pulled when missing (for the runner's
//! platform, through `REGISTRY_MIRROR` for a Docker Hub image), with progress in the logs and a
//! clear error when the pull fails. Concurrent pulls of one image share one pull.
//! The image is inspected once per use ([`LocalImage`]): [`platform_of`] and [`facts`] read
//! what it says about itself (platform; entry point, command, working directory, user,
//! labels, from which [`crate::runtime::launch`] decides how to start it) from that one answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ImageInspect;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use tracing::{debug, info};

use shared::arch::Arch;

use super::engine::{DockerError, status_of};
use super::mirror::RegistryMirror;
use crate::runtime::launch::ImageFacts;

/// How often a long pull says how it is going.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// (repository, tag or digest) of an image reference; the tag defaults to `latest`. A
/// reference with both (`name:tag@sha256:…`) is pulled by its digest.
pub fn split_reference(image: &str) -> (&str, &str) {
    if let Some((named, digest)) = image.split_once('@') {
        let last_slash = named.rfind('/').map_or(0, |i| i + 1);
        let repo = match named[last_slash..].rfind(':') {
            Some(i) => &named[..last_slash + i],
            None => named,
        };
        return (repo, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// How one image is made present: for which platform, through which mirror.
pub struct PullRequest<'a> {
    pub arch: Arch,
    pub mirror: Option<&'a RegistryMirror>,
}

/// How a pull is going, for the image board: `(layers done, layers seen, time so far)`.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, Duration) + Send + Sync);

#[derive(Default)]
pub struct Puller {
    // One lock per image being pulled; short sections on the map itself.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A local image as the engine described it when it was found (or pulled): one inspection,
/// from which both the platform check and the launch decision are read.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The reference to run: the one asked for, or its name at the mirror.
    pub reference: String,
    pub inspected: ImageInspect,
}

impl Puller {
    /// Makes sure `image` is present, pulling it if not, and returns it as the engine
    /// describes it, with the local reference to run: `image` itself, or its name at the
    /// mirror when it was pulled through one.
    pub async fn ensure(
        &self,
        docker: &Docker,
        image: &str,
        request: &PullRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<LocalImage, DockerError> {
        let mirrored = request.mirror.and_then(|m| m.rewrite(image));
        let candidates: Vec<&str> = std::iter::once(image).chain(mirrored.as_deref()).collect();
        if let Some(found) = first_present(docker, &candidates).await? {
            return Ok(found);
        }
        let lock = self
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(image.to_owned())
            .or_default()
            .clone();
        let _pulling = lock.lock().await;
        if let Some(found) = first_present(docker, &candidates).await? {
            return Ok(found);
        }
        let source = mirrored.as_deref().unwrap_or(image);
        pull(docker, image, source, request.arch, progress).await?;
        let inspected = docker
            .inspect_image(source)
            .await
            .map_err(DockerError::api(format!("inspect image {source}")))?;
        Ok(LocalImage {
            reference: source.to_owned(),
            inspected,
        })
    }
}

/// The first of `references` the engine has, as it describes it.
async fn first_present(
    docker: &Docker,
    references: &[&str],
) -> Result<Option<LocalImage>, DockerError> {
    for reference in references {
        if let Some(inspected) = inspect_if_present(docker, reference).await? {
            return Ok(Some(LocalImage {
                reference: (*reference).to_owned(),
                inspected,
            }));
        }
    }
    Ok(None)
}

/// Pulls `source` (`image`, or its name at a mirror) for `linux/<arch>`, logging progress.
async fn pull(
    docker: &Docker,
    image: &str,
    source: &str,
    arch: Arch,
    progress: Progress<'_>,
) -> Result<(), DockerError> {
    let (repo, tag) = split_reference(source);
    let platform = super::platform::platform(arch);
    info!(%image, from = %source, %platform, "pulling runner image");
    let started = Instant::now();
    let mut last_note = Instant::now();
    let mut layers: HashMap<String, bool> = HashMap::new();
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            platform: platform.clone(),
            ..Default::default()
        }),
        None,
        None,
    );
    let named = if source == image {
        image.to_owned()
    } else {
        format!("{image} (through the mirror, as {source})")
    };
    let failed = |source| DockerError::Pull {
        image: named.clone(),
        source,
    };
    while let Some(item) = stream.next().await {
        let step = item.map_err(failed)?;
        if let Some(error) = step.error_detail.and_then(|d| d.message) {
            return Err(failed(bollard::errors::Error::DockerStreamError { error }));
        }
        let status = step.status.unwrap_or_default();
        if let Some(layer) = step.id.as_deref().filter(|l| !l.is_empty() && *l != tag) {
            let done = matches!(status.as_str(), "Pull complete" | "Already exists");
            let entry = layers.entry(layer.to_owned()).or_default();
            *entry |= done;
        }
        debug!(%image, layer = step.id.as_deref().unwrap_or(""), %status, "pull progress");
        if last_note.elapsed() >= PROGRESS_EVERY {
            last_note = Instant::now();
            let done = layers.values().filter(|d| **d).count();
            progress(done, layers.len(), started.elapsed());
            info!(%image, %status, layers_done = done, layers = layers.len(), elapsed = ?started.elapsed(), "still pulling");
        }
    }
    info!(%image, from = %source, took = ?started.elapsed(), "pulled runner image");
    Ok(())
}

/// What the engine says of a local image's platform: `(os, architecture)`.
pub fn platform_of(inspected: &ImageInspect) -> (String, String) {
    (
        inspected.os.clone().unwrap_or_default(),
        inspected.architecture.clone().unwrap_or_default(),
    )
}

/// The image's configuration, as the engine reports it.
pub fn facts(inspected: &ImageInspect) -> ImageFacts {
    let config = inspected.config.clone().unwrap_or_default();
    ImageFacts {
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
        working_dir: config.working_dir.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
    }
}

async fn inspect_if_present(
    docker: &Docker,
    image: &str,
) -> Result<Option<ImageInspect>, DockerError> {
    match docker.inspect_image(image).await {
        Ok(inspected) => Ok(Some(inspected)),
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(DockerError::api(format!("inspect image {image}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{facts, platform_of, split_reference};
    use bollard::models::{ImageConfig, ImageInspect};

    #[test]
    fn one_inspection_gives_the_platform_and_the_launch_facts() {
        let inspected = ImageInspect {
            id: Some("sha256:abc".into()),
            os: Some("linux".into()),
            architecture: Some("arm64".into()),
            config: Some(ImageConfig {
                entrypoint: Some(vec!["/entrypoint.sh".into()]),
                cmd: Some(vec!["./bin/Runner.Listener".into(), "run".into()]),
                working_dir: Some("/actions-runner".into()),
                user: Some("runner".into()),
                labels: Some([("org.example".to_owned(), "x".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            platform_of(&inspected),
            ("linux".to_owned(), "arm64".to_owned())
        );
        let f = facts(&inspected);
        assert_eq!(f.entrypoint, vec!["/entrypoint.sh"]);
        assert_eq!(f.cmd, vec!["./bin/Runner.Listener", "run"]);
        assert_eq!(
            (f.working_dir.as_str(), f.user.as_str()),
            ("/actions-runner", "runner")
        );
        assert_eq!(f.labels.get("org.example").map(String::as_str), Some("x"));
        // An image that records neither (old images may not) reads as empty, which the
        // platform check lets through (see `platform::check`).
        assert_eq!(
            platform_of(&ImageInspect::default()),
            (String::new(), String::new())
        );
    }

    #[test]
    fn references() {
        assert_eq!(
            split_reference("myoung34/github-runner:ubuntu-noble"),
            ("myoung34/github-runner", "ubuntu-noble")
        );
        assert_eq!(
            split_reference("ghcr.io/actions/actions-runner"),
            ("ghcr.io/actions/actions-runner", "latest")
        );
        assert_eq!(
            split_reference("registry:5000/runner"),
            ("registry:5000/runner", "latest")
        );
        assert_eq!(
            split_reference("registry:5000/runner:2.3"),
            ("registry:5000/runner", "2.3")
        );
        assert_eq!(split_reference("r@sha256:abc"), ("r", "sha256:abc"));
        assert_eq!(
            split_reference("registry:5000/r:2.3@sha256:abc"),
            ("registry:5000/r", "sha256:abc")
        );
    }
}
