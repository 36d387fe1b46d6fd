//! What a runner pod's status means for the controller: a pure mapping from a [`Pod`] to the
//! runner's [`RunnerState`], with the reason a pod is stuck Pending (unschedulable, image pull
//! back-off, ...) carried in the state's `reason`.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};

use super::objects::{RUNNER_ID_ANNOTATION, RUNNER_NAME_ANNOTATION};

/// Container waiting reasons that mean the pod will not start without help.
const STUCK_WAITING: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

/// The runner a pod belongs to, from its annotations; `None` for a pod that is not a runner's.
pub fn runner_of(pod: &Pod) -> Option<(RunnerId, String)> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let id = RunnerId::parse(annotations.get(RUNNER_ID_ANNOTATION)?).ok()?;
    let name = annotations
        .get(RUNNER_NAME_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    Some((id, name))
}

/// The pod's phase as Kubernetes reports it (`Pending` when it has no status yet).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The runner state a pod shows; `None` if the pod is not a runner's.
pub fn runner_state(pod: &Pod) -> Option<RunnerState> {
    let (id, name) = runner_of(pod)?;
    let status = pod.status.as_ref();
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let exit_code = terminated.map(|t| t.exit_code);
    let (phase, reason) = match pod_phase(pod) {
        "Running" => (RunnerPhase::Running, String::new()),
        "Succeeded" => (RunnerPhase::Exited, String::new()),
        "Failed" => {
            let pod_reason = status.and_then(|s| s.reason.clone()).unwrap_or_default();
            let message = status.and_then(|s| s.message.clone()).unwrap_or_default();
            let reason = match (pod_reason.as_str(), exit_code) {
                ("", Some(code)) => format!("the runner container exited with code {code}"),
                ("", None) => "the pod failed".to_owned(),
                (r, _) if message.is_empty() => format!("pod failed: {r}"),
                (r, _) => format!("pod failed: {r}: {message}"),
            };
            (RunnerPhase::Failed, reason)
        }
        "Unknown" => (
            RunnerPhase::Starting,
            "the pod's node stopped reporting (phase Unknown)".to_owned(),
        ),
        _ => (
            RunnerPhase::Starting,
            pending_reason(pod).unwrap_or_default(),
        ),
    };
    let mut state = RunnerState::new(id, name, phase);
    state.reason = reason;
    state.exit_code = if phase.is_terminal() {
        exit_code.or((phase == RunnerPhase::Exited).then_some(0))
    } else {
        None
    };
    Some(state)
}

/// Why a Pending pod is not running yet, when Kubernetes says so: the scheduler's verdict, or
/// the runner container's waiting reason.
pub fn pending_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(cond) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return Some(match cond.message.as_deref() {
            Some(m) if !m.is_empty() => format!("unschedulable: {m}"),
            _ => "unschedulable".to_owned(),
        });
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .find_map(stuck_waiting)
}

fn stuck_waiting(c: &ContainerStatus) -> Option<String> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK_WAITING.contains(&reason) {
        return None;
    }
    Some(match waiting.message.as_deref() {
        Some(m) if !m.is_empty() => format!("{reason}: {m}"),
        _ => reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "gha-r1",
                "annotations": {RUNNER_ID_ANNOTATION: "r1", RUNNER_NAME_ANNOTATION: "gha-r1"}
            },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        }]}));
        let s = runner_state(&p).unwrap();
        assert_eq!(s.phase, RunnerPhase::Starting);
        assert_eq!(
            s.reason,
            "unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn image_pull_back_off_is_a_pending_reason() {
        let p = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}
        }]}));
        assert_eq!(
            runner_state(&p).unwrap().reason,
            "ImagePullBackOff: Back-off pulling image \"x\""
        );
        let creating = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        assert_eq!(runner_state(&creating).unwrap().reason, "");
    }

    #[test]
    fn finished_pods_carry_exit_codes() {
        let done = pod(json!({"phase": "Succeeded"}));
        let s = runner_state(&done).unwrap();
        assert_eq!((s.phase, s.exit_code), (RunnerPhase::Exited, Some(0)));
        let failed = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3}}
        }]}));
        let s = runner_state(&failed).unwrap();
        assert_eq!((s.phase, s.exit_code), (RunnerPhase::Failed, Some(3)));
        assert_eq!(s.reason, "the runner container exited with code 3");
        let deadline = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline"}));
        assert_eq!(
            runner_state(&deadline).unwrap().reason,
            "pod failed: DeadlineExceeded: Pod was active on the node longer than the specified deadline"
        );
    }

    #[test]
    fn pods_without_our_annotations_are_not_runners() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(runner_state(&p).is_none());
    }
}
