//! Runner images: used as they are when present, pulled when missing, with progress in the
//! logs and a clear error when the pull fails. Concurrent starts of one image share one pull.
//! [`facts`] reads what an image says about itself (entry point, command, working directory,
//! user, labels), from which [`crate::runtime::launch`] decides how to start it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use tracing::{debug, info};

use super::engine::{DockerError, status_of};
use crate::runtime::launch::ImageFacts;

/// How often a long pull says how it is going.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// (repository, tag or digest) of an image reference; the tag defaults to `latest`.
pub fn split_reference(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

#[derive(Default)]
pub struct Puller {
    // One lock per image being pulled; short sections on the map itself.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Puller {
    /// Makes sure `image` is present, pulling it if not.
    pub async fn ensure(&self, docker: &Docker, image: &str) -> Result<(), DockerError> {
        if present(docker, image).await? {
            return Ok(());
        }
        let lock = self
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(image.to_owned())
            .or_default()
            .clone();
        let _pulling = lock.lock().await;
        if present(docker, image).await? {
            return Ok(());
        }
        let (repo, tag) = split_reference(image);
        info!(%image, "pulling runner image");
        let started = Instant::now();
        let mut last_note = Instant::now();
        let mut stream = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = stream.next().await {
            let progress = item.map_err(|source| DockerError::Pull {
                image: image.to_owned(),
                source,
            })?;
            let status = progress.status.unwrap_or_default();
            debug!(%image, layer = progress.id.as_deref().unwrap_or(""), %status, "pull progress");
            if last_note.elapsed() >= PROGRESS_EVERY {
                last_note = Instant::now();
                info!(%image, %status, elapsed = ?started.elapsed(), "still pulling");
            }
        }
        info!(%image, took = ?started.elapsed(), "pulled runner image");
        Ok(())
    }
}

/// The image's configuration, as the engine reports it.
pub async fn facts(docker: &Docker, image: &str) -> Result<ImageFacts, DockerError> {
    let inspected = docker
        .inspect_image(image)
        .await
        .map_err(DockerError::api(format!("inspect image {image}")))?;
    let config = inspected.config.unwrap_or_default();
    Ok(ImageFacts {
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
        working_dir: config.working_dir.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
    })
}

async fn present(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if status_of(&e) == Some(404) => Ok(false),
        Err(e) => Err(DockerError::api(format!("inspect image {image}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

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
    }
}
