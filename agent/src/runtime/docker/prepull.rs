//! Pre-pull: the runner images the controller names are made ready before a runner needs
//! them, and their states recorded on the agent's image board.
//!
//! - At most `IMAGE_PULL_CONCURRENCY` images are pulled at once; each attempt is bounded by
//!   `IMAGE_PULL_TIMEOUT` (an engine that never answers cannot hold a slot forever).
//! - A failed attempt is retried after `IMAGE_PULL_BACKOFF`, doubled each time, up to
//!   `IMAGE_PULL_ATTEMPTS`; then the image is reported `failed` with the last reason (the next
//!   session, or a runner's own start, tries again). An image of another platform is reported
//!   `failed` at once: retrying cannot fix it.
//! - Work for a replaced set stops at its next step, and so does all of it when the runtime is
//!   dropped.
//!
//! [`Inner::make_ready`] is the one path to a usable image, for pre-pulls and starts alike:
//! present or pulled, then checked against the runner's platform.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shared::arch::Arch;
use shared::image::ImageState;
use tracing::{info, warn};

use super::engine::DockerError;
use super::image::{self, LocalImage, Progress, PullRequest};
use super::{Inner, platform};
use crate::connection::error_chain;
use crate::images::ImageReporter;

impl Inner {
    /// `image` present (pulled if missing) and of the runner's platform; returns it as the
    /// engine described it, with the local reference to run (its mirror name when it was
    /// pulled through `REGISTRY_MIRROR`). One inspection serves the presence check, the
    /// platform check and the caller's launch decision, so all three are about the same image.
    pub(super) async fn make_ready(
        &self,
        docker: &bollard::Docker,
        image: &str,
        arch: Arch,
        progress: Progress<'_>,
    ) -> Result<LocalImage, DockerError> {
        let request = PullRequest {
            arch,
            mirror: self.settings.registry_mirror.as_ref(),
        };
        let local = self
            .puller
            .ensure(docker, image, &request, progress)
            .await?;
        if self.settings.platform_check {
            let (os, architecture) = image::platform_of(&local.inspected);
            platform::check(image, &os, &architecture, arch)
                .map_err(|reason| DockerError::WrongPlatform { reason })?;
        }
        Ok(local)
    }

    /// Records on the board that a runner's start found (or pulled) `image`.
    pub(super) fn image_ready(&self, image: &str) {
        let reporter = self.lock().images.clone();
        if let Some(reporter) = reporter {
            reporter.set(image, ImageState::Present, "");
        }
    }
}

/// Prepares every image of `reporter`'s set (see the module doc).
pub(super) async fn prepare(inner: Arc<Inner>, reporter: ImageReporter) {
    let policy = inner.settings.pull;
    let images = reporter.images().to_vec();
    futures::stream::iter(images)
        .for_each_concurrent(policy.concurrency.max(1), |image| {
            let (inner, reporter) = (inner.clone(), reporter.clone());
            async move { prepare_one(&inner, &reporter, &image).await }
        })
        .await;
}

async fn prepare_one(inner: &Inner, reporter: &ImageReporter, image: &str) {
    let policy = inner.settings.pull;
    let attempts = policy.attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        if !reporter.is_current() || inner.stop.is_cancelled() {
            return;
        }
        let what = if attempt == 1 {
            "pulling".to_owned()
        } else {
            format!("pulling (attempt {attempt} of {attempts}; last: {last})")
        };
        reporter.set(image, ImageState::Pulling, what.clone());
        let progress = |done: usize, layers: usize, took: Duration| {
            reporter.set(
                image,
                ImageState::Pulling,
                format!(
                    "{what}: {done} of {layers} layers after {}s",
                    took.as_secs()
                ),
            );
        };
        let outcome = tokio::time::timeout(policy.timeout, async {
            let docker = inner.engine.client().await?;
            inner
                .make_ready(&docker, image, reporter.arch(), &progress)
                .await
        })
        .await;
        match outcome {
            Ok(Ok(_)) => {
                info!(%image, "runner image ready");
                reporter.set(image, ImageState::Present, "");
                return;
            }
            Ok(Err(error @ DockerError::WrongPlatform { .. })) => {
                warn!(%image, %error, "runner image does not fit this agent");
                reporter.set(image, ImageState::Failed, error.to_string());
                return;
            }
            Ok(Err(error)) => last = error_chain(&error),
            Err(_) => {
                last = format!(
                    "the pull did not finish within IMAGE_PULL_TIMEOUT ({})",
                    humantime::format_duration(policy.timeout)
                )
            }
        }
        if attempt < attempts {
            let wait = policy.backoff.saturating_mul(1 << (attempt - 1).min(16));
            warn!(%image, attempt, attempts, error = %last, retry_in = ?wait, "cannot pull a runner image; retrying");
            reporter.set(
                image,
                ImageState::Pulling,
                format!(
                    "attempt {attempt} of {attempts} failed: {last}; retrying in {}",
                    humantime::format_duration(wait)
                ),
            );
            tokio::select! {
                _ = inner.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    warn!(%image, attempts, error = %last, "giving up pulling a runner image");
    reporter.set(
        image,
        ImageState::Failed,
        format!("gave up after {attempts} attempt(s): {last}"),
    );
}
