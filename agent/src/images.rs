//! The agent's view of the runner images the controller asked it to prepare.
//!
//! The worker owns the [`ImageBoard`]: on `PrepareImages` it replaces the set (which starts a
//! new *generation*) and hands the runtime an [`ImageReporter`] for it; the runtime records each
//! image's progress there, and the worker sends the board to the controller whenever it changes.
//! A reporter of an older generation writes nothing, so a pull still running for a replaced set
//! can never overwrite the new set's report.

use std::sync::Arc;

use shared::arch::Arch;
use shared::image::{ImageState, ImageStatus};
use tokio::sync::watch;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Board {
    generation: u64,
    images: Vec<ImageStatus>,
}

/// The current image set and its states. Clones share it.
#[derive(Clone)]
pub struct ImageBoard {
    // The worker holds a receiver (`ImageBoard::watch`); runtimes write through reporters.
    // Every write is one `send_*` call, atomic under the channel's own lock.
    tx: Arc<watch::Sender<Board>>,
}

impl Default for ImageBoard {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(Board::default()).0),
        }
    }
}

/// Follows the board's changes (the worker's end).
pub struct ImageWatch(watch::Receiver<Board>);

impl ImageWatch {
    /// Waits for the next change; `false` once the board is gone.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// Every image's state now (and marks it seen).
    pub fn current(&mut self) -> Vec<ImageStatus> {
        self.0.borrow_and_update().images.clone()
    }
}

/// Writes one generation's image states (see the module doc).
#[derive(Clone)]
pub struct ImageReporter {
    board: ImageBoard,
    generation: u64,
    images: Vec<String>,
    /// The architecture this agent runs runners of (`AGENT_ARCH`): the one images must fit.
    arch: Arch,
}

impl ImageBoard {
    fn sender(&self) -> &watch::Sender<Board> {
        &self.tx
    }

    /// Follows the board: changes whenever an image's state does.
    pub fn watch(&self) -> ImageWatch {
        ImageWatch(self.tx.subscribe())
    }

    /// The images of the current set, in the order the controller sent them.
    pub fn images(&self) -> Vec<String> {
        self.sender()
            .borrow()
            .images
            .iter()
            .map(|i| i.image.clone())
            .collect()
    }

    /// Every image's state now.
    pub fn current(&self) -> Vec<ImageStatus> {
        self.sender().borrow().images.clone()
    }

    /// Replaces the set with `images` (each once, in order), every one `Pulling` "queued"
    /// until the runtime says otherwise, and returns the reporter of the new generation.
    pub fn replace(&self, images: &[String], arch: Arch) -> ImageReporter {
        let mut unique: Vec<String> = Vec::new();
        for image in images {
            if !image.is_empty() && !unique.contains(image) {
                unique.push(image.clone());
            }
        }
        let mut generation = 0;
        self.sender().send_modify(|board| {
            board.generation += 1;
            generation = board.generation;
            board.images = unique
                .iter()
                .map(|i| ImageStatus::new(i, ImageState::Pulling, "queued"))
                .collect();
        });
        ImageReporter {
            board: self.clone(),
            generation,
            images: unique,
            arch,
        }
    }
}

impl ImageReporter {
    /// The images of this generation.
    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// The architecture images must fit (`AGENT_ARCH`).
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Whether this generation is still the board's (a replaced one should stop working).
    pub fn is_current(&self) -> bool {
        self.board.sender().borrow().generation == self.generation
    }

    /// Records `image`'s state; ignored for a replaced generation or an image not in the set.
    pub fn set(&self, image: &str, state: ImageState, detail: impl Into<String>) {
        let detail = detail.into();
        self.board.sender().send_if_modified(|board| {
            if board.generation != self.generation {
                return false;
            }
            match board.images.iter_mut().find(|i| i.image == image) {
                Some(entry) if entry.state != state || entry.detail != detail => {
                    entry.state = state;
                    entry.detail = detail;
                    true
                }
                _ => false,
            }
        });
    }

    /// The state `image` has on the board now, if it is in this generation.
    pub fn state(&self, image: &str) -> Option<ImageState> {
        let board = self.board.sender().borrow();
        (board.generation == self.generation)
            .then(|| {
                board
                    .images
                    .iter()
                    .find(|i| i.image == image)
                    .map(|i| i.state)
            })
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_generation_writes_nothing() {
        let board = ImageBoard::default();
        let first = board.replace(&["a:1".into(), "a:1".into(), "b:1".into()], Arch::Amd64);
        assert_eq!(first.images(), ["a:1".to_owned(), "b:1".to_owned()]);
        first.set("a:1", ImageState::Present, "");
        first.set("never-asked", ImageState::Present, "");
        assert_eq!(
            board.current(),
            vec![
                ImageStatus::new("a:1", ImageState::Present, ""),
                ImageStatus::new("b:1", ImageState::Pulling, "queued"),
            ]
        );
        let second = board.replace(&["c:1".into()], Arch::Amd64);
        assert!(!first.is_current() && second.is_current());
        first.set("a:1", ImageState::Failed, "late");
        second.set("c:1", ImageState::Failed, "gave up");
        assert_eq!(
            board.current(),
            vec![ImageStatus::new("c:1", ImageState::Failed, "gave up")]
        );
        assert_eq!(first.state("a:1"), None);
        assert_eq!(second.state("c:1"), Some(ImageState::Failed));
    }
}
