//! Conversions between domain types and the agent protocol's generated types.
//!
//! Incoming messages are checked here: a missing or unknown field becomes a [`WireError`] that
//! names it, so the rest of the code only sees well-formed values.

use proto::v1 as pb;

use crate::arch::{Arch, RuntimeKind};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_state_round_trips() {
        let mut state = RunnerState::new(RunnerId::parse("r-1").unwrap(), "gha-r-1", RunnerPhase::Exited);
        state.exit_code = Some(3);
        state.reason = "job failed".into();
        let back = runner_state_from_wire(&runner_state_to_wire(&state)).unwrap();
        assert_eq!(back, state);
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
            Err(WireError::Invalid { field: "runner_status.runner_id", .. })
        ));
    }
}
