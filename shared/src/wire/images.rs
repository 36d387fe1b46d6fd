//! Image readiness on the wire (protocol 1.3): the controller's `PrepareImages` and the
//! agent's `ImageReport`.

use proto::v1 as pb;

use super::WireError;
use crate::image::{ImageState, ImageStatus};

fn state_to_wire(state: ImageState) -> pb::ImageState {
    match state {
        ImageState::Present => pb::ImageState::Present,
        ImageState::Pulling => pb::ImageState::Pulling,
        ImageState::Failed => pb::ImageState::Failed,
        ImageState::Unknown => pb::ImageState::Unknown,
    }
}

fn state_from_wire(value: i32) -> Result<ImageState, WireError> {
    const FIELD: &str = "image_status.state";
    match pb::ImageState::try_from(value) {
        Ok(pb::ImageState::Present) => Ok(ImageState::Present),
        Ok(pb::ImageState::Pulling) => Ok(ImageState::Pulling),
        Ok(pb::ImageState::Failed) => Ok(ImageState::Failed),
        Ok(pb::ImageState::Unknown) => Ok(ImageState::Unknown),
        Ok(pb::ImageState::Unspecified) => Err(WireError::Missing { field: FIELD }),
        Err(_) => Err(WireError::Unknown {
            field: FIELD,
            value,
        }),
    }
}

pub fn image_report_to_wire(images: &[ImageStatus]) -> pb::ImageReport {
    pb::ImageReport {
        images: images
            .iter()
            .map(|i| pb::ImageStatus {
                image: i.image.clone(),
                state: state_to_wire(i.state) as i32,
                detail: i.detail.clone(),
            })
            .collect(),
    }
}

/// An agent's image report; an entry without an image or state is refused.
pub fn image_report_from_wire(report: pb::ImageReport) -> Result<Vec<ImageStatus>, WireError> {
    report
        .images
        .into_iter()
        .map(|i| {
            if i.image.is_empty() {
                return Err(WireError::Missing {
                    field: "image_status.image",
                });
            }
            Ok(ImageStatus {
                state: state_from_wire(i.state)?,
                image: i.image,
                detail: i.detail,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_wire_and_a_state_is_required() {
        let report = vec![
            ImageStatus::new("a:1", ImageState::Present, ""),
            ImageStatus::new("b:1", ImageState::Pulling, "3 of 7 layers"),
            ImageStatus::new("c:1", ImageState::Failed, "manifest unknown"),
            ImageStatus::new("d:1", ImageState::Unknown, "kubelet pulls"),
        ];
        assert_eq!(
            image_report_from_wire(image_report_to_wire(&report)),
            Ok(report)
        );
        let unspecified = pb::ImageReport {
            images: vec![pb::ImageStatus {
                image: "a:1".into(),
                state: 0,
                detail: String::new(),
            }],
        };
        assert_eq!(
            image_report_from_wire(unspecified),
            Err(WireError::Missing {
                field: "image_status.state"
            })
        );
    }
}
