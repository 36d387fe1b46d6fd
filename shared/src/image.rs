//! Runner images as agents see them: whether each image the controller will use is ready
//! (issue 16 §2), and what an image reference pins.
//!
//! The controller sends the set of images it will use; each agent answers with one
//! [`ImageStatus`] per image. The planner prefers an agent whose status for the runner image is
//! [`ImageState::Present`].

use std::fmt;

use serde::Serialize;

/// How ready one image is on one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    /// In the runtime's image store: a runner of it starts without a pull.
    Present,
    /// Being pulled, or waiting to retry its pull.
    Pulling,
    /// Not usable here: the pull gave up, or the image does not fit the agent's architecture.
    Failed,
    /// The runtime cannot tell (a Kubernetes agent: the kubelet of the pod's node pulls).
    Unknown,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Present => "present",
            ImageState::Pulling => "pulling",
            ImageState::Failed => "failed",
            ImageState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image's state on one agent, as `GET /api/v1/agents` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageStatus {
    /// The reference exactly as the controller sent it.
    pub image: String,
    pub state: ImageState,
    /// How far a pull is, or why the image is not usable; empty when there is nothing to say.
    pub detail: String,
}

impl ImageStatus {
    pub fn new(image: impl Into<String>, state: ImageState, detail: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            state,
            detail: detail.into(),
        }
    }
}

/// A reference that pins a digest (`name@sha256:<64 hex>`), or why it is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{image:?} pins a malformed digest: expected name@sha256:<64 lower-case hex digits> \
     (e.g. ghcr.io/actions/actions-runner@sha256:…)"
)]
pub struct BadDigest {
    pub image: String,
}

/// The digest `image` pins, if it pins one: `Ok(None)` for a tag reference, an error for a
/// reference with an `@` whose digest is not `sha256:` and 64 lower-case hex digits.
pub fn pinned_digest(image: &str) -> Result<Option<&str>, BadDigest> {
    let Some((name, digest)) = image.split_once('@') else {
        return Ok(None);
    };
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    let well_formed = !name.is_empty()
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        Ok(Some(digest))
    } else {
        Err(BadDigest {
            image: image.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests() {
        assert_eq!(
            pinned_digest("ghcr.io/actions/actions-runner:2.330"),
            Ok(None)
        );
        assert_eq!(pinned_digest("registry:5000/runner"), Ok(None));
        let pinned = format!("ghcr.io/actions/actions-runner@sha256:{HEX}");
        assert_eq!(
            pinned_digest(&pinned),
            Ok(Some(format!("sha256:{HEX}").as_str()))
        );
        let tagged_and_pinned = format!("runner:2.3@sha256:{HEX}");
        assert!(pinned_digest(&tagged_and_pinned).unwrap().is_some());
        for bad in [
            "runner@sha256:abc".to_owned(),
            format!("runner@sha512:{HEX}"),
            format!("runner@sha256:{}", HEX.to_uppercase()),
            format!("@sha256:{HEX}"),
            "runner@".to_owned(),
        ] {
            let error = pinned_digest(&bad).expect_err(&bad);
            assert!(error.to_string().contains("malformed digest"), "{error}");
        }
    }
}
