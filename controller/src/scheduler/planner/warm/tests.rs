use super::super::{AgentSupply, PendingJob, plan};
use super::*;
use shared::arch::RuntimeKind;

/// "Now" in these tests: past the idle grace (5 min) of runners created at 0, within the
/// warm max age (1 h).
const NOW: i64 = 600_000;
const MAX_AGE: i64 = 3_600_000;
const LINUX: &[&str] = &["self-hosted", "linux", "x64", "docker"];

fn owner(name: &str, max: u32) -> OwnerLimits {
    OwnerLimits {
        name: name.into(),
        max_runners: max,
        labels: vec![],
        repo_level: false,
    }
}

fn agent(name: &str, arch: Arch, cap: u32, labels: &[&str]) -> AgentSupply {
    AgentSupply {
        has_image: false,
        name: AgentName::parse(name).unwrap(),
        runtime: RuntimeKind::Docker,
        capacity: [(arch, cap)].into(),
        max_runners: cap,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        available: true,
        owners: None,
    }
}

fn job(id: u64, labels: &[&str]) -> PendingJob {
    PendingJob {
        id,
        owner: "acme".into(),
        repo: "app".into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        queued_ms: 0,
    }
}

/// An idle, running runner of acme created at `created_ms`.
fn idle(id: &str, created_ms: i64) -> ActiveRunner {
    ActiveRunner {
        id: id.into(),
        owner: "acme".into(),
        repo: None,
        agent: "a1".into(),
        arch: Arch::Amd64,
        labels: LINUX.iter().map(|s| s.to_string()).collect(),
        busy: false,
        running: true,
        created_ms,
        settling: false,
    }
}

fn busy(id: &str) -> ActiveRunner {
    ActiveRunner {
        busy: true,
        ..idle(id, 0)
    }
}

fn pools(counts: &[(&[&str], u32)]) -> Vec<OwnerPools> {
    vec![OwnerPools {
        owner: "acme".into(),
        pools: counts
            .iter()
            .map(|(labels, n)| Pool {
                labels: labels.iter().map(|s| s.to_string()).collect(),
                min_idle: *n,
            })
            .collect(),
        mode: Mode::Active { repo: None },
    }]
}

struct Case<'a> {
    max: u32,
    agents: Vec<AgentSupply>,
    jobs: Vec<PendingJob>,
    runners: Vec<ActiveRunner>,
    warm: Vec<OwnerPools>,
    owners: Option<&'a [OwnerLimits]>,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Self {
            max: 5,
            agents: vec![agent("a1", Arch::Amd64, 10, &[])],
            jobs: vec![],
            runners: vec![],
            warm: pools(&[(&[], 2)]),
            owners: None,
        }
    }
}

fn run(case: Case<'_>) -> (Plan, WarmPlan) {
    let default_owners = [owner("acme", case.max)];
    let input = PlanInput {
        owners: case.owners.unwrap_or(&default_owners),
        agents: &case.agents,
        jobs: &case.jobs,
        runners: &case.runners,
        global_labels: &[],
        now_ms: NOW,
        idle_grace_ms: 300_000,
        runner_timeout_ms: 7_200_000,
    };
    let mut p = plan(&input);
    let w = apply(
        &mut p,
        &input,
        &WarmInput {
            owners: &case.warm,
            max_age_ms: MAX_AGE,
        },
    );
    (p, w)
}

fn stops(p: &Plan) -> Vec<(String, StopReason)> {
    let mut s: Vec<_> = p
        .stops
        .iter()
        .map(|s| (s.runner_id.clone(), s.reason))
        .collect();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

#[test]
fn an_empty_pool_is_filled_to_its_minimum_with_the_owners_labels() {
    let (p, w) = run(Case::default());
    assert!(p.starts.is_empty());
    assert_eq!(w.starts.len(), 2);
    assert!(w.starts.iter().all(|s| s.owner == "acme"
        && s.repo.is_none()
        && s.agent.as_str() == "a1"
        && s.labels == LINUX));
    assert_eq!(w.status[0].state, "active");
    assert_eq!(w.status[0].pools[0].planned, 2);
}

#[test]
fn a_full_pool_is_kept_past_the_idle_grace_and_nothing_more_starts() {
    let (p, w) = run(Case {
        runners: vec![idle("r1", 0), idle("r2", 0)],
        ..Case::default()
    });
    assert!(w.starts.is_empty());
    assert!(p.stops.is_empty(), "{:?}", p.stops);
    assert_eq!(w.status[0].pools[0].ready, 2);
    assert_eq!(w.status[0].pools[0].runners, vec!["r2", "r1"]);
}

#[test]
fn a_warm_runner_a_job_takes_is_replaced_at_once() {
    let (p, w) = run(Case {
        runners: vec![idle("r1", 0), idle("r2", 10)],
        jobs: vec![job(1, &["self-hosted"])],
        ..Case::default()
    });
    // The job takes the oldest idle runner; no runner is started for it...
    assert!(p.starts.is_empty());
    assert_eq!(
        p.waiting.values().next(),
        Some(&WaitReason::RunnerStarting {
            runner: "r1".into()
        })
    );
    // ...and the pool, one short now, gets a replacement.
    assert_eq!(w.starts.len(), 1);
    assert_eq!(w.status[0].pools[0].runners, vec!["r2"]);
    // A busy one does not count either.
    let (_, w) = run(Case {
        runners: vec![busy("r1"), idle("r2", 10)],
        ..Case::default()
    });
    assert_eq!(w.starts.len(), 1);
}

#[test]
fn warm_runners_never_take_the_owner_above_its_limit_and_jobs_come_first() {
    // Two of three slots busy: one warm runner, not two.
    let (_, w) = run(Case {
        max: 3,
        runners: vec![busy("b1"), busy("b2")],
        ..Case::default()
    });
    assert_eq!(w.starts.len(), 1);
    assert_eq!(
        w.status[0].pools[0].short.as_deref(),
        Some("owner acme is at its limit (3 runners, MAX_RUNNERS)")
    );
    // Jobs take the slots first.
    let (p, w) = run(Case {
        max: 2,
        jobs: vec![job(1, &["self-hosted"]), job(2, &["self-hosted"])],
        ..Case::default()
    });
    assert_eq!(p.starts.len(), 2);
    assert!(w.starts.is_empty());
    // And agent capacity: one slot left after the job's start.
    let (p, w) = run(Case {
        agents: vec![agent("a1", Arch::Amd64, 2, &[])],
        jobs: vec![job(1, &["self-hosted"])],
        ..Case::default()
    });
    assert_eq!((p.starts.len(), w.starts.len()), (1, 1));
    assert_eq!(
        w.status[0].pools[0].short.as_deref(),
        Some("the agents that fit are at capacity")
    );
}

#[test]
fn when_demand_falls_the_surplus_is_stopped_and_the_warm_ones_last() {
    let (p, w) = run(Case {
        warm: pools(&[(&[], 1)]),
        runners: vec![idle("old", 0), idle("young", 50), {
            // Still starting: not ready, so the running ones are kept first.
            let mut r = idle("starting", 90);
            r.running = false;
            r
        }],
        ..Case::default()
    });
    assert!(w.starts.is_empty());
    assert_eq!(w.status[0].pools[0].runners, vec!["young"]);
    assert_eq!(stops(&p), vec![("old".into(), StopReason::Idle)]);
    // Outside the schedule, the pool is 0: every idle runner past the grace is stopped.
    let (p, w) = run(Case {
        warm: vec![OwnerPools {
            mode: Mode::OutsideSchedule {
                schedule: "* 8-17 * * 1-5".into(),
            },
            ..pools(&[(&[], 1)]).remove(0)
        }],
        runners: vec![idle("old", 0), idle("young", 50)],
        ..Case::default()
    });
    assert!(w.starts.is_empty());
    assert_eq!(stops(&p).len(), 2);
    assert_eq!(w.status[0].state, "outside_schedule");
}

#[test]
fn a_warm_runner_past_the_max_age_is_stopped_and_replaced() {
    let (p, w) = run(Case {
        warm: pools(&[(&[], 1)]),
        runners: vec![idle("stale", NOW - MAX_AGE - 1)],
        ..Case::default()
    });
    assert_eq!(stops(&p), vec![("stale".into(), StopReason::WarmExpired)]);
    assert_eq!(w.starts.len(), 1);
    assert!(w.status[0].pools[0].runners.is_empty());
}

#[test]
fn an_owner_with_jobs_at_its_limit_keeps_no_pool_and_makes_room() {
    // Two idle x64 runners fill acme's limit; an arm64 job cannot use them.
    let case = |runners| Case {
        max: 2,
        agents: vec![
            agent("a1", Arch::Amd64, 4, &[]),
            agent("a2", Arch::Arm64, 4, &[]),
        ],
        runners,
        jobs: vec![job(1, &["self-hosted", "arm64"])],
        ..Case::default()
    };
    let (p, w) = run(case(vec![idle("r1", NOW - 2000), idle("r2", NOW - 1000)]));
    assert_eq!(
        p.waiting.values().next(),
        Some(&WaitReason::OwnerAtLimit {
            owner: "acme".into(),
            max_runners: 2
        })
    );
    assert!(w.starts.is_empty());
    // The oldest makes room for the one job.
    assert_eq!(stops(&p), vec![("r1".into(), StopReason::MakeRoom)]);
    assert_eq!(w.status[0].state, "suspended");
    // One past the idle grace is stopped anyway: that is the room.
    let (p, _) = run(case(vec![idle("r1", 0), idle("r2", NOW - 1000)]));
    assert_eq!(stops(&p), vec![("r1".into(), StopReason::Idle)]);
}

#[test]
fn pools_by_label_set_go_to_agents_that_offer_the_labels() {
    let (_, w) = run(Case {
        agents: vec![
            agent("plain", Arch::Amd64, 4, &[]),
            agent("gpu-host", Arch::Amd64, 4, &["gpu"]),
        ],
        warm: pools(&[(&["gpu"], 1), (&["arm64"], 1)]),
        ..Case::default()
    });
    assert_eq!(w.starts.len(), 1);
    assert_eq!(w.starts[0].agent.as_str(), "gpu-host");
    assert!(w.starts[0].labels.contains(&"gpu".to_owned()));
    assert_eq!(
        w.status[0].pools[1].short.as_deref(),
        Some("no agent of architecture arm64")
    );
    // An idle runner without the label does not count for the pool.
    let (_, w) = run(Case {
        agents: vec![agent("gpu-host", Arch::Amd64, 4, &["gpu"])],
        warm: pools(&[(&["gpu"], 1)]),
        runners: vec![idle("plain", 0)],
        ..Case::default()
    });
    assert_eq!(w.starts.len(), 1);
}

#[test]
fn a_repository_level_pool_lives_in_its_repository_and_an_impossible_one_says_why() {
    let mut warm = pools(&[(&[], 1)]);
    warm[0].mode = Mode::Active {
        repo: Some("app".into()),
    };
    let other_repo = ActiveRunner {
        repo: Some("other".into()),
        ..idle("r1", 0)
    };
    let (p, w) = run(Case {
        warm,
        runners: vec![other_repo],
        ..Case::default()
    });
    assert_eq!(w.starts.len(), 1);
    assert_eq!(w.starts[0].repo.as_deref(), Some("app"));
    assert_eq!(stops(&p), vec![("r1".into(), StopReason::Idle)]);

    let mut warm = pools(&[(&[], 1)]);
    warm[0].mode = Mode::Impossible {
        reason: "runners register per repository".into(),
    };
    let (_, w) = run(Case {
        warm,
        ..Case::default()
    });
    assert!(w.starts.is_empty());
    assert_eq!(w.status[0].state, "impossible");
}

#[test]
fn settling_runners_and_owners_without_pools_are_left_alone() {
    let settling = ActiveRunner {
        settling: true,
        running: false,
        ..idle("s1", 0)
    };
    let (_, w) = run(Case {
        runners: vec![settling],
        ..Case::default()
    });
    assert_eq!(w.starts.len(), 2, "a settling runner is not warm");
    let (p, w) = run(Case {
        warm: vec![],
        runners: vec![idle("r1", 0)],
        ..Case::default()
    });
    assert!(w.starts.is_empty() && w.status.is_empty());
    assert_eq!(stops(&p), vec![("r1".into(), StopReason::Idle)]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the pools, jobs and runners: the owner never exceeds `MAX_RUNNERS`, an agent
        /// never its capacity, and a runner is never both kept and stopped.
        #[test]
        fn warm_starts_stay_within_every_limit(
            max in 1u32..8,
            cap in 1u32..8,
            min_idle in 0u32..8,
            jobs in 0usize..6,
            idle_runners in proptest::collection::vec((0i64..NOW, any::<bool>()), 0..6),
            busy_runners in 0usize..4,
        ) {
            let mut runners: Vec<ActiveRunner> = idle_runners
                .iter()
                .enumerate()
                .map(|(i, (created, running))| ActiveRunner {
                    running: *running,
                    ..idle(&format!("i{i}"), *created)
                })
                .collect();
            runners.extend((0..busy_runners).map(|i| busy(&format!("b{i}"))));
            let (p, w) = run(Case {
                max,
                agents: vec![agent("a1", Arch::Amd64, cap, &[])],
                jobs: (0..jobs as u64).map(|j| job(j, &["self-hosted"])).collect(),
                runners: runners.clone(),
                warm: pools(&[(&[], min_idle)]),
                owners: None,
            });
            let existing = runners.len() as u32;
            let new = (p.starts.len() + w.starts.len()) as u32;
            // Existing runners may exceed the limits already (a limit lowered at a restart);
            // nothing new starts then.
            if existing >= max || existing >= cap {
                prop_assert_eq!(w.starts.len(), 0);
            } else {
                prop_assert!(existing + new <= max, "{} + {} > MAX_RUNNERS {}", existing, new, max);
                prop_assert!(existing + new <= cap, "{} + {} > capacity {}", existing, new, cap);
            }
            let kept: BTreeSet<&String> =
                w.status.iter().flat_map(|o| &o.pools).flat_map(|p| &p.runners).collect();
            prop_assert!(kept.len() as u32 <= min_idle);
            for s in &p.stops {
                prop_assert!(!kept.contains(&s.runner_id), "{} kept and stopped", s.runner_id);
            }
        }
    }
}
