//! What the controller keeps of an agent's image report: an agent is trusted with its report
//! only for the images this controller asked it to prepare, each once, with a bounded detail,
//! so a misbehaving agent cannot grow the registry or name images nobody uses.

use shared::image::ImageStatus;

/// Longest `detail` kept (characters); longer ones are cut and marked.
pub const DETAIL_LIMIT: usize = 512;

/// The entries of `reported` for images in `asked`, in the order of `asked`, the first report
/// of each image only, details cut to [`DETAIL_LIMIT`].
pub fn accept(asked: &[String], reported: Vec<ImageStatus>) -> Vec<ImageStatus> {
    let mut kept: Vec<ImageStatus> = Vec::new();
    for image in asked {
        if kept.iter().any(|k| &k.image == image) {
            continue;
        }
        if let Some(mut status) = reported.iter().find(|r| &r.image == image).cloned() {
            if status.detail.chars().count() > DETAIL_LIMIT {
                status.detail = status.detail.chars().take(DETAIL_LIMIT).collect();
                status.detail.push('…');
            }
            kept.push(status);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::image::ImageState;

    #[test]
    fn only_asked_images_once_in_order_with_bounded_details() {
        let asked = vec!["runner:2".to_owned(), "runner:1".to_owned()];
        let reported = vec![
            ImageStatus::new("runner:1", ImageState::Present, ""),
            ImageStatus::new("never-asked:1", ImageState::Present, ""),
            ImageStatus::new("runner:2", ImageState::Failed, "x".repeat(10_000)),
            ImageStatus::new("runner:2", ImageState::Present, "a second claim"),
        ];
        let kept = accept(&asked, reported);
        assert_eq!(
            kept.iter()
                .map(|k| (k.image.as_str(), k.state))
                .collect::<Vec<_>>(),
            vec![
                ("runner:2", ImageState::Failed),
                ("runner:1", ImageState::Present)
            ]
        );
        assert_eq!(kept[0].detail.chars().count(), DETAIL_LIMIT + 1);
        assert!(accept(&asked, vec![]).is_empty());
    }
}
