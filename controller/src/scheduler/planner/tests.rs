use super::*;
use proptest::prelude::*;

fn owner(name: &str, max: u32) -> OwnerLimits {
    OwnerLimits {
        name: name.into(),
        max_runners: max,
        labels: vec![],
        repo_level: false,
    }
}

fn agent(name: &str, arch: Arch, cap: u32) -> AgentSupply {
    AgentSupply {
        has_image: false,
        name: AgentName::parse(name).unwrap(),
        runtime: RuntimeKind::Docker,
        capacity: [(arch, cap)].into(),
        max_runners: cap,
        labels: vec![],
        available: true,
        owners: None,
    }
}

fn job(id: u64, owner: &str, labels: &[&str], at: i64) -> PendingJob {
    PendingJob {
        id,
        owner: owner.into(),
        repo: "app".into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        queued_ms: at,
    }
}

fn runner(id: &str, owner: &str, agent: &str, labels: &[&str], busy: bool) -> ActiveRunner {
    ActiveRunner {
        id: id.into(),
        owner: owner.into(),
        repo: None,
        agent: agent.into(),
        arch: Arch::Amd64,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        busy,
        running: true,
        created_ms: 0,
        settling: false,
    }
}

const LINUX: &[&str] = &["self-hosted", "linux", "x64", "docker"];

/// The wait reason of job `id` (ids are unique within these tests).
fn reason(p: &Plan, id: u64) -> WaitReason {
    let found: Vec<_> = p.waiting.iter().filter(|((_, j), _)| *j == id).collect();
    assert_eq!(found.len(), 1, "job {id}: {:?}", p.waiting);
    found[0].1.clone()
}

#[test]
fn two_owners_jobs_with_one_id_keep_their_own_reasons() {
    // Job ids are GitHub's, but a sender can claim any id for its own owner: one owner's
    // explanation must never be shown for another's job.
    let p = run(
        &[owner("acme", 0), owner("globex", 5)],
        &[agent("a1", Arch::Amd64, 4)],
        &[
            job(7, "acme", &["self-hosted"], 0),
            job(7, "globex", &["self-hosted"], 1),
        ],
        &[],
    );
    assert_eq!(
        p.waiting[&(shared::owner::Owner::new("acme"), 7)],
        WaitReason::OwnerAtLimit {
            owner: "acme".into(),
            max_runners: 0
        }
    );
    assert!(matches!(
        p.waiting[&(shared::owner::Owner::new("globex"), 7)],
        WaitReason::RunnerPlanned { .. }
    ));
}

fn run(
    owners: &[OwnerLimits],
    agents: &[AgentSupply],
    jobs: &[PendingJob],
    runners: &[ActiveRunner],
) -> Plan {
    plan(&PlanInput {
        owners,
        agents,
        jobs,
        runners,
        global_labels: &[],
        now_ms: 1_000,
        idle_grace_ms: 300_000,
        runner_timeout_ms: 3_600_000,
    })
}

#[test]
fn a_queued_job_gets_a_runner_with_githubs_labels() {
    let p = run(
        &[owner("acme", 5)],
        &[agent("a1", Arch::Amd64, 2)],
        &[job(1, "acme", &["self-hosted"], 0)],
        &[],
    );
    assert_eq!(p.starts.len(), 1);
    let s = &p.starts[0];
    assert_eq!(
        (s.for_job, s.agent.as_str(), s.arch),
        (1, "a1", Arch::Amd64)
    );
    assert_eq!(s.labels, vec!["self-hosted", "linux", "x64", "docker"]);
    assert_eq!(
        reason(&p, 1),
        WaitReason::RunnerPlanned { agent: "a1".into() }
    );
}

#[test]
fn labels_match_case_insensitively_and_include_owner_and_agent_labels() {
    let mut o = owner("acme", 5);
    o.labels = vec!["Company".into()];
    let mut a = agent("gpu-box", Arch::Amd64, 1);
    a.labels = vec!["gpu".into()];
    let p = run(
        &[o],
        &[a],
        &[job(1, "acme", &["Self-Hosted", "X64", "company", "GPU"], 0)],
        &[],
    );
    assert_eq!(p.starts.len(), 1, "{:?}", p.waiting);
    assert_eq!(
        p.starts[0].labels,
        vec!["self-hosted", "linux", "x64", "docker", "Company", "gpu"]
    );
}

#[test]
fn an_idle_runner_absorbs_one_job_and_no_more() {
    let runners = [runner("r1", "acme", "a1", LINUX, false)];
    let jobs = [
        job(1, "acme", &["self-hosted"], 0),
        job(2, "acme", &["self-hosted"], 1),
    ];
    let p = run(
        &[owner("acme", 5)],
        &[agent("a1", Arch::Amd64, 4)],
        &jobs,
        &runners,
    );
    assert_eq!(
        reason(&p, 1),
        WaitReason::RunnerStarting {
            runner: "r1".into()
        }
    );
    assert_eq!(p.starts.len(), 1);
    assert_eq!(p.starts[0].for_job, 2);
}

#[test]
fn a_stolen_runner_is_replaced() {
    // r1 was started for job 1, but GitHub gave it job 2 (now busy); job 1 still waits.
    let runners = [runner("r1", "acme", "a1", LINUX, true)];
    let p = run(
        &[owner("acme", 5)],
        &[agent("a1", Arch::Amd64, 4)],
        &[job(1, "acme", &["self-hosted"], 0)],
        &runners,
    );
    assert_eq!(p.starts.len(), 1);
    assert_eq!(p.starts[0].for_job, 1);
}

#[test]
fn a_runner_that_just_ended_absorbs_one_job_holds_no_slot_and_is_never_stopped() {
    // r1 exited 0 before GitHub's `in_progress` for its job arrived: job 1 is most likely the
    // one it served, so no replacement; job 2 still gets a runner, and the owner's limit of 1
    // is not held by the runner that is gone.
    let mut settling = runner("r1", "acme", "a1", LINUX, false);
    settling.running = false;
    settling.settling = true;
    settling.created_ms = -10_000_000;
    let p = run(
        &[owner("acme", 1)],
        &[agent("a1", Arch::Amd64, 1)],
        &[
            job(1, "acme", &["self-hosted"], 0),
            job(2, "acme", &["self-hosted"], 1),
        ],
        &[settling],
    );
    assert_eq!(
        p.starts.iter().map(|s| s.for_job).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        reason(&p, 1),
        WaitReason::AwaitingJobReport {
            runner: "r1".into()
        }
    );
    assert!(
        p.stops.is_empty(),
        "neither idle- nor timeout-stopped: {:?}",
        p.stops
    );
}

#[test]
fn the_owner_limit_counts_existing_runners_and_is_never_exceeded() {
    let runners = [runner("r1", "acme", "a1", LINUX, true)];
    let jobs: Vec<_> = (1..=4)
        .map(|i| job(i, "acme", &["self-hosted"], i as i64))
        .collect();
    let p = run(
        &[owner("acme", 3)],
        &[agent("a1", Arch::Amd64, 10)],
        &jobs,
        &runners,
    );
    assert_eq!(
        p.starts.iter().map(|s| s.for_job).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for id in [3, 4] {
        assert_eq!(
            reason(&p, id),
            WaitReason::OwnerAtLimit {
                owner: "acme".into(),
                max_runners: 3
            }
        );
    }
}

#[test]
fn architecture_labels_route_to_agents_of_that_architecture() {
    let agents = [agent("amd", Arch::Amd64, 4), agent("arm", Arch::Arm64, 4)];
    let jobs = [
        job(1, "acme", &["self-hosted", "arm64"], 0),
        job(2, "acme", &["self-hosted", "x64"], 1),
        job(3, "acme", &["self-hosted", "ARM64"], 2),
    ];
    let p = run(&[owner("acme", 10)], &agents, &jobs, &[]);
    let placed: BTreeMap<u64, (&str, Arch)> = p
        .starts
        .iter()
        .map(|s| (s.for_job, (s.agent.as_str(), s.arch)))
        .collect();
    assert_eq!(placed[&1], ("arm", Arch::Arm64));
    assert_eq!(placed[&2], ("amd", Arch::Amd64));
    assert_eq!(placed[&3], ("arm", Arch::Arm64));
    assert!(
        p.starts
            .iter()
            .find(|s| s.for_job == 1)
            .unwrap()
            .labels
            .contains(&"arm64".to_string())
    );
}

#[test]
fn no_agent_of_the_wanted_architecture_says_so() {
    let p = run(
        &[owner("acme", 5)],
        &[agent("amd", Arch::Amd64, 4)],
        &[job(1, "acme", &["self-hosted", "arm64"], 0)],
        &[],
    );
    assert!(p.starts.is_empty());
    assert_eq!(
        reason(&p, 1),
        WaitReason::NoAgentOfArch { arch: Arch::Arm64 }
    );
}

#[test]
fn github_hosted_labels_are_never_served() {
    let p = run(
        &[owner("acme", 5)],
        &[agent("a", Arch::Amd64, 4)],
        &[job(1, "acme", &["ubuntu-latest"], 0)],
        &[],
    );
    assert!(p.starts.is_empty());
    assert_eq!(
        reason(&p, 1),
        WaitReason::LabelsNotOffered {
            missing: vec!["ubuntu-latest".into()]
        }
    );
}

#[test]
fn jobs_without_an_arch_go_to_the_least_loaded_agent() {
    let agents = [
        agent("busy", Arch::Amd64, 4),
        agent("quiet", Arch::Arm64, 4),
    ];
    let runners = [
        runner("r1", "acme", "busy", LINUX, true),
        runner("r2", "acme", "busy", LINUX, true),
    ];
    let p = run(
        &[owner("acme", 10)],
        &agents,
        &[job(1, "acme", &["self-hosted"], 0)],
        &runners,
    );
    assert_eq!(p.starts[0].agent.as_str(), "quiet");
    assert_eq!(p.starts[0].arch, Arch::Arm64);
}

#[test]
fn full_and_unavailable_agents_are_told_apart() {
    let runners = [runner("r1", "acme", "a", LINUX, true)];
    let p = run(
        &[owner("acme", 10)],
        &[agent("a", Arch::Amd64, 1)],
        &[job(1, "acme", &["self-hosted"], 0)],
        &runners,
    );
    assert_eq!(reason(&p, 1), WaitReason::AgentsFull);
    let mut draining = agent("a", Arch::Amd64, 4);
    draining.available = false;
    let p = run(
        &[owner("acme", 10)],
        &[draining],
        &[job(1, "acme", &["self-hosted"], 0)],
        &[],
    );
    assert_eq!(reason(&p, 1), WaitReason::AgentsUnavailable);
    let p = run(
        &[owner("acme", 10)],
        &[],
        &[job(1, "acme", &["self-hosted"], 0)],
        &[],
    );
    assert_eq!(reason(&p, 1), WaitReason::NoAgentConnected);
}

#[test]
fn shared_capacity_is_served_fairly_across_owners() {
    // acme queued five jobs before beta's one; two slots: one each.
    let mut jobs: Vec<_> = (1..=5)
        .map(|i| job(i, "acme", &["self-hosted"], i as i64))
        .collect();
    jobs.push(job(9, "beta", &["self-hosted"], 100));
    let p = run(
        &[owner("acme", 10), owner("beta", 10)],
        &[agent("a", Arch::Amd64, 2)],
        &jobs,
        &[],
    );
    let mut served: Vec<u64> = p.starts.iter().map(|s| s.for_job).collect();
    served.sort();
    assert_eq!(served, vec![1, 9]);
}

#[test]
fn repositories_of_one_owner_take_turns() {
    let mut jobs = vec![];
    for i in 0..3 {
        let mut j = job(10 + i, "acme", &["self-hosted"], i as i64);
        j.repo = "busy-repo".into();
        jobs.push(j);
    }
    let mut late = job(20, "acme", &["self-hosted"], 50);
    late.repo = "quiet-repo".into();
    jobs.push(late);
    let p = run(
        &[owner("acme", 2)],
        &[agent("a", Arch::Amd64, 10)],
        &jobs,
        &[],
    );
    let mut served: Vec<u64> = p.starts.iter().map(|s| s.for_job).collect();
    served.sort();
    assert_eq!(served, vec![10, 20]);
}

#[test]
fn repository_level_runners_only_cover_their_repository() {
    let mut r = runner("r1", "acme", "a", LINUX, false);
    r.repo = Some("other".into());
    let mut o = owner("acme", 5);
    o.repo_level = true;
    let p = run(
        &[o],
        &[agent("a", Arch::Amd64, 4)],
        &[job(1, "acme", &["self-hosted"], 0)],
        &[r],
    );
    assert_eq!(p.starts.len(), 1);
    assert_eq!(p.starts[0].repo.as_deref(), Some("app"));
}

#[test]
fn idle_runners_past_the_grace_and_old_runners_are_stopped() {
    let mut idle_old = runner("idle", "acme", "a", LINUX, false);
    idle_old.created_ms = -400_000;
    let mut young = runner("young", "acme", "a", LINUX, false);
    young.created_ms = 0;
    let mut ancient = runner("ancient", "acme", "a", LINUX, true);
    ancient.created_ms = -4_000_000;
    let p = run(
        &[owner("acme", 5)],
        &[agent("a", Arch::Amd64, 4)],
        &[],
        &[idle_old, young, ancient],
    );
    let mut stops: Vec<(String, StopReason)> = p
        .stops
        .iter()
        .map(|s| (s.runner_id.clone(), s.reason))
        .collect();
    stops.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        stops,
        vec![
            ("ancient".into(), StopReason::Timeout),
            ("idle".into(), StopReason::Idle)
        ]
    );
}

#[test]
fn an_idle_runner_that_can_serve_a_queued_job_is_kept() {
    let mut r = runner("r1", "acme", "a", LINUX, false);
    r.created_ms = -400_000;
    let p = run(
        &[owner("acme", 5)],
        &[agent("a", Arch::Amd64, 4)],
        &[job(1, "acme", &["self-hosted"], 0)],
        &[r],
    );
    assert!(p.stops.is_empty());
    assert!(p.starts.is_empty());
}

fn arb_arch() -> impl Strategy<Value = Arch> {
    prop_oneof![Just(Arch::Amd64), Just(Arch::Arm64)]
}

proptest! {
    /// Whatever the input: owner limits and agent capacities hold, every start satisfies its
    /// job's labels on an agent of the right architecture, and every queued job has a reason.
    #[test]
    fn limits_and_matching_always_hold(
        caps in prop::collection::vec((arb_arch(), 0u32..4, any::<bool>()), 0..4),
        maxes in prop::collection::vec(1u32..5, 1..3),
        jobs in prop::collection::vec((0usize..3, prop::option::of(arb_arch()), any::<bool>(), 0i64..100), 0..30),
        busy in prop::collection::vec((0usize..3, 0usize..4, any::<bool>()), 0..8),
    ) {
        let owners: Vec<OwnerLimits> = maxes.iter().enumerate().map(|(i, m)| owner(&format!("o{i}"), *m)).collect();
        let mut agents: Vec<AgentSupply> = caps
            .iter()
            .enumerate()
            .map(|(i, (arch, cap, avail))| {
                let mut a = agent(&format!("a{i}"), *arch, *cap);
                a.available = *avail;
                if i % 2 == 1 { a.labels = vec!["gpu".into()]; }
                a
            })
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        let pending: Vec<PendingJob> = jobs
            .iter()
            .enumerate()
            .map(|(i, (o, arch, gpu, at))| {
                let mut labels = vec!["self-hosted"];
                match arch { Some(Arch::Amd64) => labels.push("x64"), Some(Arch::Arm64) => labels.push("arm64"), None => {} }
                if *gpu { labels.push("gpu"); }
                job(i as u64, &format!("o{}", o % owners.len()), &labels, *at)
            })
            .collect();
        let runners: Vec<ActiveRunner> = busy
            .iter()
            .enumerate()
            .filter(|(_, (_, a, _))| *a < agents.len())
            .map(|(i, (o, a, b))| {
                let mut r = runner(&format!("r{i}"), &format!("o{}", o % owners.len()), agents[*a].name.as_str(), LINUX, *b);
                r.arch = *agents[*a].capacity.keys().next().unwrap();
                r
            })
            .collect();
        let p = run(&owners, &agents, &pending, &runners);

        for o in &owners {
            let existing = runners.iter().filter(|r| r.owner == o.name).count() as u32;
            let planned = p.starts.iter().filter(|s| s.owner == o.name).count() as u32;
            prop_assert!(planned == 0 || existing + planned <= o.max_runners);
        }
        for a in &agents {
            let existing = runners.iter().filter(|r| r.agent == a.name.as_str()).count() as u32;
            let planned = p.starts.iter().filter(|s| s.agent == a.name).count() as u32;
            prop_assert!(planned == 0 || existing + planned <= a.max_runners);
            prop_assert!(planned == 0 || a.available);
        }
        for s in &p.starts {
            let job = pending.iter().find(|j| j.id == s.for_job).unwrap();
            prop_assert!(lower(&job.labels).is_subset(&lower(&s.labels)));
            let agent = agents.iter().find(|a| a.name == s.agent).unwrap();
            prop_assert!(agent.capacity.contains_key(&s.arch));
        }
        for j in &pending {
            prop_assert!(p.waiting.contains_key(&j.key()));
        }
    }
}

#[test]
fn an_owner_an_agent_may_not_serve_never_gets_a_placement_there() {
    let owners = [owner("acme", 5), owner("globex", 5)];
    let mut only_acme = agent("acme-only", Arch::Amd64, 100);
    only_acme.owners = Some([shared::owner::Owner::new("acme")].into());
    let agents = [only_acme, agent("shared", Arch::Amd64, 1)];
    let jobs = [
        job(1, "globex", &["self-hosted"], 1),
        job(2, "globex", &["self-hosted"], 2),
        job(3, "acme", &["self-hosted"], 3),
    ];
    let p = plan(&PlanInput {
        owners: &owners,
        agents: &agents,
        jobs: &jobs,
        runners: &[],
        global_labels: &[],
        now_ms: 10,
        idle_grace_ms: 1000,
        runner_timeout_ms: 100_000,
    });
    for start in &p.starts {
        assert!(
            start.owner == "acme" || start.agent.as_str() == "shared",
            "{start:?}"
        );
    }
    assert_eq!(p.starts.len(), 2, "{p:?}");
    assert_eq!(reason(&p, 2), WaitReason::AgentsFull);

    let agents = [agents[0].clone()];
    let p = plan(&PlanInput {
        owners: &owners,
        agents: &agents,
        jobs: &jobs[..1],
        runners: &[],
        global_labels: &[],
        now_ms: 10,
        idle_grace_ms: 1000,
        runner_timeout_ms: 100_000,
    });
    assert!(p.starts.is_empty());
    assert_eq!(
        reason(&p, 1),
        WaitReason::NoAgentForOwner {
            owner: "globex".into()
        }
    );
}
