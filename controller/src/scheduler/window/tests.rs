use std::collections::BTreeMap;

use proptest::prelude::*;
use shared::arch::{Arch, RuntimeKind};
use shared::ids::AgentName;

use super::*;
use crate::scheduler::planner::{self, PendingJob, PlanInput};
use crate::store::queue::heads_of;
use crate::store::{JobRecord, JobState};

fn owner(name: &str, max: u32) -> OwnerLimits {
    OwnerLimits {
        name: name.into(),
        max_runners: max,
        labels: vec![],
        repo_level: false,
    }
}

fn agent(i: usize, arch: Arch, cap: u32, gpu: bool) -> AgentSupply {
    AgentSupply {
        has_image: false,
        name: AgentName::parse(&format!("agent-{i}")).unwrap(),
        runtime: RuntimeKind::Docker,
        capacity: BTreeMap::from([(arch, cap)]),
        max_runners: cap,
        labels: if gpu { vec!["gpu".into()] } else { vec![] },
        available: true,
        owners: None,
    }
}

fn record(id: u64, owner: &str, repo: &str, labels: &[&str], at: i64) -> JobRecord {
    JobRecord {
        id,
        run_id: id,
        owner: Owner::new(owner),
        repo: repo.into(),
        name: "build".into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        state: JobState::Queued,
        runner_name: None,
        conclusion: None,
        first_seen_ms: at,
        queued_ms: Some(at),
        updated_ms: at,
    }
}

fn pending(jobs: &[JobRecord]) -> Vec<PendingJob> {
    jobs.iter()
        .map(|j| PendingJob {
            id: j.id,
            owner: j.owner.to_string(),
            repo: j.repo.clone(),
            labels: j.labels.clone(),
            queued_ms: j.queued_ms.unwrap_or(j.first_seen_ms),
        })
        .collect()
}

fn plan(
    owners: &[OwnerLimits],
    agents: &[AgentSupply],
    jobs: &[PendingJob],
    runners: &[ActiveRunner],
) -> planner::Plan {
    planner::plan(&PlanInput {
        owners,
        agents,
        jobs,
        runners,
        global_labels: &[],
        now_ms: 1_000,
        idle_grace_ms: 1_000_000,
        runner_timeout_ms: 1_000_000,
    })
}

#[test]
fn a_class_is_read_one_job_past_what_its_owner_could_be_served_in_a_pass() {
    let owners = [owner("acme", 10), owner("globex", 10)];
    let agents = [
        agent(0, Arch::Amd64, 4, false),
        agent(1, Arch::Amd64, 4, false),
    ];
    let runner = |id: &str, owner: &str, busy: bool| ActiveRunner {
        id: id.into(),
        owner: owner.into(),
        repo: None,
        agent: "agent-0".into(),
        arch: Arch::Amd64,
        labels: vec!["self-hosted".into()],
        busy,
        running: true,
        created_ms: 0,
        settling: false,
    };
    // acme: 10 - 3 active = 7 free, but the agents have 8 - 4 = 4 free; 1 idle runner.
    // globex: 1 busy runner, 9 free, agents 4 free; none idle.
    let runners = [
        runner("r1", "acme", true),
        runner("r2", "acme", true),
        runner("r3", "acme", false),
        runner("r4", "globex", true),
    ];
    let limits = head_limits(&owners, &agents, &runners);
    assert_eq!(limits.of(&Owner::new("acme")), 4 + 1 + 1);
    assert_eq!(limits.of(&Owner::new("globex")), 4 + 1);
    assert_eq!(limits.of(&Owner::new("initech")), 1);

    // An owner at its limit with no idle runner reads one job per class: 100 000 queued jobs
    // cost a pass one row.
    let full = [owner("acme", 1)];
    let busy = [runner("r1", "acme", true)];
    assert_eq!(
        head_limits(&full, &agents, &busy).of(&Owner::new("acme")),
        1
    );
}

/// Owners are one account whatever their case: an owner configured as `Acme`, served by an
/// agent whose policy lists `acme`, with its runners recorded under `acme`, gets the agent's
/// capacity and its own runners counted (compared as strings, the agent looked unusable and the
/// window read one job per class).
#[test]
fn owner_case_does_not_hide_an_agent_or_runners_from_the_window() {
    let owners = [owner("Acme", 10)];
    let mut only_acme = agent(0, Arch::Amd64, 4, false);
    only_acme.owners = Some([Owner::new("acme")].into());
    let runners = [ActiveRunner {
        id: "r1".into(),
        owner: "acme".into(),
        repo: None,
        agent: "agent-0".into(),
        arch: Arch::Amd64,
        labels: vec!["self-hosted".into()],
        busy: true,
        running: true,
        created_ms: 0,
        settling: false,
    }];
    let limits = head_limits(&owners, &[only_acme], &runners);
    // 4 slots on the agent, minus the busy runner there, plus one.
    assert_eq!(limits.of(&Owner::new("ACME")), 3 + 1);
}

#[test]
fn jobs_behind_the_read_ones_are_told_why_the_last_one_read_waits() {
    let owners = [owner("acme", 1)];
    let jobs: Vec<JobRecord> = (0..50)
        .map(|i| record(i, "acme", "app", &["self-hosted"], i as i64))
        .chain((50..60).map(|i| record(i, "acme", "app", &["ubuntu-latest"], i as i64)))
        .collect();
    let agents = [agent(0, Arch::Amd64, 8, false)];
    let limits = head_limits(&owners, &agents, &[]);
    let heads = heads_of(jobs, &limits);
    let read: Vec<JobRecord> = heads.iter().flat_map(|h| h.oldest.clone()).collect();
    assert_eq!(read.len(), 4, "two per class: one to serve, one to explain");
    let p = plan(&owners, &agents, &pending(&read), &[]);
    assert_eq!(p.starts.len(), 1);
    let reasons = class_reasons(&heads, &p.waiting, &owners);
    assert_eq!(
        reasons[&(Owner::new("acme"), "app".into(), vec!["self-hosted".into()])],
        WaitReason::OwnerAtLimit {
            owner: "acme".into(),
            max_runners: 1
        }
    );
    assert!(matches!(
        reasons[&(
            Owner::new("acme"),
            "app".into(),
            vec!["ubuntu-latest".into()]
        )],
        WaitReason::LabelsNotOffered { .. }
    ));
}

proptest! {
    /// Reading only the heads never hides a job the whole queue's plan would serve, and every
    /// job not read gets its class's reason, which is the whole plan's reason for it.
    #[test]
    fn the_window_never_hides_a_job_the_whole_plan_would_serve(
        jobs in prop::collection::vec((0usize..3, 0usize..3, 0usize..4, 0i64..1_000), 0..120),
        agents in prop::collection::vec((prop::bool::ANY, 1u32..4, prop::bool::ANY), 0..5),
        runners in prop::collection::vec((0usize..3, 0usize..5, prop::bool::ANY), 0..12),
        maxes in prop::collection::vec(0u32..8, 3),
    ) {
        let owners: Vec<OwnerLimits> =
            (0..2).map(|i| owner(&format!("o{i}"), maxes[i])).collect();
        let agents: Vec<AgentSupply> = agents
            .iter()
            .enumerate()
            .map(|(i, (arm, cap, gpu))| {
                agent(i, if *arm { Arch::Arm64 } else { Arch::Amd64 }, *cap, *gpu)
            })
            .collect();
        let label_sets: [&[&str]; 4] = [
            &["self-hosted"],
            &["self-hosted", "x64"],
            &["self-hosted", "arm64", "gpu"],
            &["ubuntu-latest"],
        ];
        let records: Vec<JobRecord> = jobs
            .iter()
            .enumerate()
            .map(|(i, (o, repo, labels, at))| {
                // Owner o2 is not configured.
                record(i as u64, &format!("o{o}"), &format!("repo-{repo}"), label_sets[*labels], *at)
            })
            .collect();
        let runners: Vec<ActiveRunner> = runners
            .iter()
            .enumerate()
            .filter(|(_, (_, a, _))| *a < agents.len())
            .map(|(i, (o, a, busy))| ActiveRunner {
                id: format!("r{i}"),
                owner: format!("o{}", o % 2),
                repo: None,
                agent: agents[*a].name.to_string(),
                arch: *agents[*a].capacity.keys().next().unwrap(),
                labels: planner::runner_labels(&agents[*a], &owners[o % 2], *agents[*a].capacity.keys().next().unwrap(), &[]),
                busy: *busy,
                running: true,
                created_ms: 0,
                settling: false,
            })
            .collect();
        let whole = plan(&owners, &agents, &pending(&records), &runners);
        let heads = heads_of(records.clone(), &head_limits(&owners, &agents, &runners));
        let read: Vec<JobRecord> = heads.iter().flat_map(|h| h.oldest.clone()).collect();
        let window = plan(&owners, &agents, &pending(&read), &runners);
        let reasons = class_reasons(&heads, &window.waiting, &owners);
        for j in &records {
            if read.iter().any(|r| r.owner == j.owner && r.id == j.id) {
                continue;
            }
            let full_reason = &whole.waiting[&(j.owner.clone(), j.id)];
            prop_assert!(!served(full_reason), "job {} not read but served: {full_reason:?}", j.id);
            prop_assert!(!whole.starts.iter().any(|s| s.for_job == j.id && j.owner == s.owner.as_str()));
            let class = (j.owner.clone(), j.repo.clone(), j.labels.clone());
            prop_assert!(reasons.contains_key(&class), "no reason for job {}'s class", j.id);
        }
        // With one agent (one resource), as many runners are planned from the window.
        if agents.len() <= 1 {
            prop_assert_eq!(whole.starts.len(), window.starts.len());
        }
    }
}
