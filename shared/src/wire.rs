//! Conversions between domain types and the agent protocol's generated types.
//!
//! Incoming messages are checked here: a missing or unknown field becomes a [`WireError`] that
//! names it, so the rest of the code only sees well-formed values.

mod images;

use proto::v1 as pb;

pub use images::{image_report_from_wire, image_report_to_wire};

use std::time::Duration;

use crate::arch::{Arch, RuntimeKind};
use crate::command::{
    AgentCommand, CacheSettings, ImageFlavor, ImageLaunch, Registration, RunnerSpec,
};
use crate::ids::{InvalidId, RunnerId};
use crate::runner::{RunnerPhase, RunnerState};

/// A protocol message that cannot be turned into a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("field {field} is missing or unspecified")]
    Missing { field: &'static str },
    #[error("field {field} has an unknown value {value}")]
    Unknown { field: &'static str, value: i32 },
    #[error("field {field} is invalid")]
    Invalid {
        field: &'static str,
        #[source]
        source: InvalidId,
    },
}

pub fn arch_to_wire(arch: Arch) -> pb::Arch {
    match arch {
        Arch::Amd64 => pb::Arch::Amd64,
        Arch::Arm64 => pb::Arch::Arm64,
    }
}

pub fn arch_from_wire(value: i32, field: &'static str) -> Result<Arch, WireError> {
    match pb::Arch::try_from(value) {
        Ok(pb::Arch::Amd64) => Ok(Arch::Amd64),
        Ok(pb::Arch::Arm64) => Ok(Arch::Arm64),
        Ok(pb::Arch::Unspecified) => Err(WireError::Missing { field }),
        Err(_) => Err(WireError::Unknown { field, value }),
    }
}

pub fn runtime_to_wire(kind: RuntimeKind) -> pb::RuntimeKind {
    match kind {
        RuntimeKind::Docker => pb::RuntimeKind::Docker,
        RuntimeKind::Kubernetes => pb::RuntimeKind::Kubernetes,
        RuntimeKind::Memory => pb::RuntimeKind::Memory,
    }
}

pub fn runtime_from_wire(value: i32) -> Result<RuntimeKind, WireError> {
    const FIELD: &str = "register.runtime";
    match pb::RuntimeKind::try_from(value) {
        Ok(pb::RuntimeKind::Docker) => Ok(RuntimeKind::Docker),
        Ok(pb::RuntimeKind::Kubernetes) => Ok(RuntimeKind::Kubernetes),
        Ok(pb::RuntimeKind::Memory) => Ok(RuntimeKind::Memory),
        Ok(pb::RuntimeKind::Unspecified) => Err(WireError::Missing { field: FIELD }),
        Err(_) => Err(WireError::Unknown {
            field: FIELD,
            value,
        }),
    }
}

fn phase_to_wire(phase: RunnerPhase) -> pb::RunnerPhase {
    match phase {
        RunnerPhase::Starting => pb::RunnerPhase::Starting,
        RunnerPhase::Running => pb::RunnerPhase::Running,
        RunnerPhase::Exited => pb::RunnerPhase::Exited,
        RunnerPhase::Failed => pb::RunnerPhase::Failed,
    }
}

fn phase_from_wire(value: i32) -> Result<RunnerPhase, WireError> {
    const FIELD: &str = "runner_status.phase";
    match pb::RunnerPhase::try_from(value) {
        Ok(pb::RunnerPhase::Starting) => Ok(RunnerPhase::Starting),
        Ok(pb::RunnerPhase::Running) => Ok(RunnerPhase::Running),
        Ok(pb::RunnerPhase::Exited) => Ok(RunnerPhase::Exited),
        Ok(pb::RunnerPhase::Failed) => Ok(RunnerPhase::Failed),
        Ok(pb::RunnerPhase::Unspecified) => Err(WireError::Missing { field: FIELD }),
        Err(_) => Err(WireError::Unknown {
            field: FIELD,
            value,
        }),
    }
}

pub fn runner_state_to_wire(state: &RunnerState) -> pb::RunnerStatus {
    pb::RunnerStatus {
        runner_id: state.id.as_str().to_owned(),
        name: state.name.clone(),
        phase: phase_to_wire(state.phase) as i32,
        exit_code: state.exit_code,
        reason: state.reason.clone(),
        observed_at_ms: state.observed_at_ms,
    }
}

pub fn runner_state_from_wire(status: &pb::RunnerStatus) -> Result<RunnerState, WireError> {
    let id = RunnerId::parse(&status.runner_id).map_err(|source| WireError::Invalid {
        field: "runner_status.runner_id",
        source,
    })?;
    Ok(RunnerState {
        id,
        name: status.name.clone(),
        phase: phase_from_wire(status.phase)?,
        exit_code: status.exit_code,
        reason: status.reason.clone(),
        observed_at_ms: status.observed_at_ms,
    })
}

fn runner_id(value: &str, field: &'static str) -> Result<RunnerId, WireError> {
    RunnerId::parse(value).map_err(|source| WireError::Invalid { field, source })
}

pub fn command_to_wire(command: &AgentCommand) -> pb::ControllerMessage {
    use pb::controller_message::Msg;
    let msg = match command {
        AgentCommand::StartRunner(spec) => Msg::StartRunner(start_runner_to_wire(spec)),
        AgentCommand::StopRunner { id, reason } => Msg::StopRunner(pb::StopRunner {
            runner_id: id.as_str().to_owned(),
            reason: reason.clone(),
        }),
        AgentCommand::Drain => Msg::Drain(pb::Drain {}),
        AgentCommand::Undrain => Msg::Undrain(pb::Undrain {}),
        AgentCommand::PrepareImages(images) => Msg::PrepareImages(pb::PrepareImages {
            images: images.clone(),
        }),
    };
    pb::ControllerMessage {
        msg: Some(msg),
        leader_generation: 0,
    }
}

fn start_runner_to_wire(spec: &RunnerSpec) -> pb::StartRunner {
    use pb::registration_material::Kind;
    let kind = match &spec.registration {
        Registration::JitConfig(config) => Kind::JitConfig(config.clone()),
        Registration::Token {
            token,
            url,
            runner_group,
        } => Kind::RegistrationToken(pb::RegistrationToken {
            token: token.clone(),
            url: url.clone(),
            runner_group: runner_group.clone(),
        }),
    };
    pb::StartRunner {
        runner_id: spec.id.as_str().to_owned(),
        name: spec.name.clone(),
        image: spec.image.clone(),
        registration: Some(pb::RegistrationMaterial { kind: Some(kind) }),
        labels: spec.labels.clone(),
        env: spec.env.clone().into_iter().collect(),
        timeout_seconds: u32::try_from(spec.timeout.as_secs()).unwrap_or(u32::MAX),
        cache: Some(pb::CacheSettings {
            enabled: spec.cache.enabled,
            volumes: spec.cache.volumes.clone().into_iter().collect(),
            kubernetes_pvcs: spec.cache.kubernetes_pvcs,
        }),
        arch: arch_to_wire(spec.arch) as i32,
        owner: spec.owner.clone(),
        flavor: flavor_to_wire(spec.launch.flavor) as i32,
        command: spec.launch.command.clone(),
        repository: spec.repository.clone().unwrap_or_default(),
    }
}

fn flavor_to_wire(flavor: ImageFlavor) -> pb::ImageFlavor {
    match flavor {
        ImageFlavor::Auto => pb::ImageFlavor::Auto,
        ImageFlavor::Official => pb::ImageFlavor::Official,
        ImageFlavor::Myoung34 => pb::ImageFlavor::Myoung34,
        ImageFlavor::Custom => pb::ImageFlavor::Custom,
    }
}

fn flavor_from_wire(value: i32) -> Result<ImageFlavor, WireError> {
    match pb::ImageFlavor::try_from(value) {
        Ok(pb::ImageFlavor::Auto) => Ok(ImageFlavor::Auto),
        Ok(pb::ImageFlavor::Official) => Ok(ImageFlavor::Official),
        Ok(pb::ImageFlavor::Myoung34) => Ok(ImageFlavor::Myoung34),
        Ok(pb::ImageFlavor::Custom) => Ok(ImageFlavor::Custom),
        Err(_) => Err(WireError::Unknown {
            field: "start_runner.flavor",
            value,
        }),
    }
}

/// A controller message that is a command; `Ok(None)` for the `registered` acknowledgement.
pub fn command_from_wire(
    message: pb::ControllerMessage,
) -> Result<Option<AgentCommand>, WireError> {
    use pb::controller_message::Msg;
    match message.msg {
        None => Err(WireError::Missing {
            field: "controller_message.msg",
        }),
        Some(Msg::Registered(_)) => Ok(None),
        Some(Msg::Drain(_)) => Ok(Some(AgentCommand::Drain)),
        Some(Msg::Undrain(_)) => Ok(Some(AgentCommand::Undrain)),
        Some(Msg::PrepareImages(p)) => Ok(Some(AgentCommand::PrepareImages(p.images))),
        Some(Msg::StopRunner(stop)) => Ok(Some(AgentCommand::StopRunner {
            id: runner_id(&stop.runner_id, "stop_runner.runner_id")?,
            reason: stop.reason,
        })),
        Some(Msg::StartRunner(start)) => Ok(Some(AgentCommand::StartRunner(Box::new(
            start_runner_from_wire(start)?,
        )))),
    }
}

fn start_runner_from_wire(start: pb::StartRunner) -> Result<RunnerSpec, WireError> {
    use pb::registration_material::Kind;
    let registration = match start.registration.and_then(|r| r.kind) {
        Some(Kind::JitConfig(config)) if !config.is_empty() => Registration::JitConfig(config),
        Some(Kind::RegistrationToken(t)) if !t.token.is_empty() => Registration::Token {
            token: t.token,
            url: t.url,
            runner_group: t.runner_group,
        },
        _ => {
            return Err(WireError::Missing {
                field: "start_runner.registration",
            });
        }
    };
    if start.image.is_empty() {
        return Err(WireError::Missing {
            field: "start_runner.image",
        });
    }
    let cache = start.cache.unwrap_or_default();
    Ok(RunnerSpec {
        id: runner_id(&start.runner_id, "start_runner.runner_id")?,
        name: start.name,
        image: start.image,
        launch: ImageLaunch {
            flavor: flavor_from_wire(start.flavor)?,
            command: start.command,
        },
        registration,
        labels: start.labels,
        env: start.env.into_iter().collect(),
        timeout: Duration::from_secs(u64::from(start.timeout_seconds)),
        cache: CacheSettings {
            enabled: cache.enabled,
            volumes: cache.volumes.into_iter().collect(),
            kubernetes_pvcs: cache.kubernetes_pvcs,
        },
        arch: arch_from_wire(start.arch, "start_runner.arch")?,
        owner: start.owner,
        repository: (!start.repository.is_empty()).then_some(start.repository),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_state_round_trips() {
        let mut state = RunnerState::new(
            RunnerId::parse("r-1").unwrap(),
            "gha-r-1",
            RunnerPhase::Exited,
        );
        state.exit_code = Some(3);
        state.reason = "job failed".into();
        let back = runner_state_from_wire(&runner_state_to_wire(&state)).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn commands_round_trip() {
        let spec = RunnerSpec {
            id: RunnerId::parse("r-9").unwrap(),
            name: "gha-r-9".into(),
            image: "runner:latest".into(),
            launch: ImageLaunch {
                flavor: ImageFlavor::Custom,
                command: vec!["/opt/runner/start".into(), "--once".into()],
            },
            registration: Registration::Token {
                token: "AAAA".into(),
                url: "https://github.com/acme".into(),
                runner_group: "Default".into(),
            },
            labels: vec!["self-hosted".into(), "linux".into()],
            env: [("A".to_string(), "1".to_string())].into(),
            timeout: Duration::from_secs(3600),
            cache: CacheSettings {
                enabled: true,
                volumes: [(
                    "acme-amd64-tool".to_string(),
                    "/opt/hostedtoolcache".to_string(),
                )]
                .into(),
                kubernetes_pvcs: false,
            },
            arch: Arch::Arm64,
            owner: "acme".into(),
            repository: Some("app".into()),
        };
        for command in [
            AgentCommand::StartRunner(Box::new(spec)),
            AgentCommand::StopRunner {
                id: RunnerId::parse("r-9").unwrap(),
                reason: "timeout".into(),
            },
            AgentCommand::Drain,
            AgentCommand::Undrain,
            AgentCommand::PrepareImages(vec!["runner:1".into(), "runner:2".into()]),
        ] {
            assert_eq!(
                command_from_wire(command_to_wire(&command)).unwrap(),
                Some(command)
            );
        }
    }

    #[test]
    fn a_start_without_registration_is_refused() {
        let msg = pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::StartRunner(pb::StartRunner {
                runner_id: "r".into(),
                image: "i".into(),
                arch: pb::Arch::Amd64 as i32,
                ..Default::default()
            })),
            leader_generation: 0,
        };
        assert_eq!(
            command_from_wire(msg).unwrap_err(),
            WireError::Missing {
                field: "start_runner.registration"
            }
        );
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let status = pb::RunnerStatus {
            runner_id: "r-1".into(),
            ..Default::default()
        };
        assert_eq!(
            runner_state_from_wire(&status).unwrap_err(),
            WireError::Missing {
                field: "runner_status.phase"
            }
        );
        assert!(matches!(
            arch_from_wire(42, "register.capacity.arch"),
            Err(WireError::Unknown { value: 42, .. })
        ));
        let bad_id = pb::RunnerStatus {
            runner_id: "../x".into(),
            phase: pb::RunnerPhase::Running as i32,
            ..Default::default()
        };
        assert!(matches!(
            runner_state_from_wire(&bad_id),
            Err(WireError::Invalid {
                field: "runner_status.runner_id",
                ..
            })
        ));
    }
}

/// Property tests for the agent's decoding of controller commands: arbitrary bytes and
/// arbitrary (generated) messages never panic, and a start without the fields an agent needs
/// is a typed error naming the field.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn registration() -> impl Strategy<Value = Option<pb::RegistrationMaterial>> {
        use pb::registration_material::Kind;
        prop_oneof![
            Just(None),
            Just(Some(pb::RegistrationMaterial { kind: None })),
            ".{0,20}".prop_map(|j| Some(pb::RegistrationMaterial {
                kind: Some(Kind::JitConfig(j))
            })),
            (".{0,10}", ".{0,20}").prop_map(|(token, url)| Some(pb::RegistrationMaterial {
                kind: Some(Kind::RegistrationToken(pb::RegistrationToken {
                    token,
                    url,
                    runner_group: String::new(),
                }))
            })),
        ]
    }

    fn start() -> impl Strategy<Value = pb::StartRunner> {
        (
            ".{0,70}",
            ".{0,20}",
            registration(),
            any::<i32>(),
            any::<i32>(),
            any::<u32>(),
            proptest::collection::vec(".{0,10}", 0..3),
            proptest::option::of(proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..3)),
        )
            .prop_map(
                |(runner_id, image, registration, arch, flavor, timeout, labels, cache)| {
                    pb::StartRunner {
                        runner_id,
                        name: "n".into(),
                        image,
                        registration,
                        labels,
                        timeout_seconds: timeout,
                        cache: cache.map(|volumes| pb::CacheSettings {
                            enabled: true,
                            volumes: volumes.into_iter().collect(),
                            kubernetes_pvcs: false,
                        }),
                        arch: arch % 4,
                        flavor: flavor % 5,
                        ..Default::default()
                    }
                },
            )
    }

    fn message() -> impl Strategy<Value = pb::ControllerMessage> {
        use pb::controller_message::Msg;
        prop_oneof![
            Just(pb::ControllerMessage {
                msg: None,
                leader_generation: 0
            }),
            start().prop_map(|s| pb::ControllerMessage {
                msg: Some(Msg::StartRunner(s)),
                leader_generation: 0,
            }),
            (".{0,70}", ".{0,20}").prop_map(|(runner_id, reason)| pb::ControllerMessage {
                msg: Some(Msg::StopRunner(pb::StopRunner { runner_id, reason })),
                leader_generation: 0,
            }),
            Just(pb::ControllerMessage {
                msg: Some(Msg::Drain(pb::Drain {})),
                leader_generation: 0,
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(message) = pb::ControllerMessage::decode(bytes.as_slice()) {
                let _ = command_from_wire(message);
            }
        }

        #[test]
        fn arbitrary_messages_decode_or_name_what_is_wrong(message in message()) {
            use pb::controller_message::Msg;
            let expect_start = match &message.msg {
                Some(Msg::StartRunner(s)) => Some(s.clone()),
                _ => None,
            };
            match command_from_wire(message) {
                Ok(Some(AgentCommand::StartRunner(spec))) => {
                    // Accepted only with everything an agent needs.
                    let s = expect_start.expect("a start");
                    prop_assert!(!spec.image.is_empty());
                    prop_assert_eq!(spec.id.as_str(), s.runner_id.as_str());
                    let registered = match &spec.registration {
                        Registration::JitConfig(j) => !j.is_empty(),
                        Registration::Token { token, .. } => !token.is_empty(),
                    };
                    prop_assert!(registered, "registration material is never empty");
                }
                Ok(_) => {}
                Err(WireError::Missing { field } | WireError::Unknown { field, .. }
                    | WireError::Invalid { field, .. }) => {
                    prop_assert!(!field.is_empty());
                }
            }
        }

        #[test]
        fn a_start_missing_a_needed_field_names_it(s in start()) {
            let missing_registration = !matches!(
                s.registration.as_ref().and_then(|r| r.kind.as_ref()),
                Some(pb::registration_material::Kind::JitConfig(j)) if !j.is_empty()
            ) && !matches!(
                s.registration.as_ref().and_then(|r| r.kind.as_ref()),
                Some(pb::registration_material::Kind::RegistrationToken(t)) if !t.token.is_empty()
            );
            let no_image = s.image.is_empty();
            let result = command_from_wire(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::StartRunner(s)),
                leader_generation: 0,
            });
            if missing_registration {
                prop_assert_eq!(
                    result,
                    Err(WireError::Missing { field: "start_runner.registration" })
                );
            } else if no_image {
                prop_assert_eq!(result, Err(WireError::Missing { field: "start_runner.image" }));
            }
        }
    }
}
