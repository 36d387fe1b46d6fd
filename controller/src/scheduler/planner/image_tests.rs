//! Table tests of the image preference: an agent with the runner image present wins over any
//! without it, whatever their loads; without one that has it (or with it full, unavailable or
//! not serving the owner), the job still gets a runner elsewhere.

use super::*;

struct Agent {
    name: &'static str,
    has_image: bool,
    /// Runners it runs already (of capacity 4).
    load: u32,
    available: bool,
    /// `Some`: it serves only these owners.
    owners: Option<&'static [&'static str]>,
}

const fn a(name: &'static str, has_image: bool, load: u32) -> Agent {
    Agent {
        name,
        has_image,
        load,
        available: true,
        owners: None,
    }
}

fn supply(agents: &[Agent]) -> (Vec<AgentSupply>, Vec<ActiveRunner>) {
    let supply = agents
        .iter()
        .map(|x| AgentSupply {
            name: AgentName::parse(x.name).unwrap(),
            runtime: RuntimeKind::Docker,
            capacity: [(Arch::Amd64, 4)].into(),
            max_runners: 4,
            labels: vec![],
            available: x.available,
            owners: x
                .owners
                .map(|o| o.iter().map(|s| shared::owner::Owner::new(s)).collect()),
            has_image: x.has_image,
        })
        .collect();
    let runners = agents
        .iter()
        .flat_map(|x| {
            (0..x.load).map(move |i| ActiveRunner {
                id: format!("{}-{i}", x.name),
                owner: "acme".into(),
                repo: None,
                agent: x.name.into(),
                arch: Arch::Amd64,
                labels: vec!["self-hosted".into(), "busy-elsewhere".into()],
                busy: true,
                running: true,
                created_ms: 0,
                settling: false,
            })
        })
        .collect();
    (supply, runners)
}

/// The agents the plan starts runners on for `jobs` queued jobs of owner acme.
fn placed(agents: &[Agent], jobs: u64) -> Vec<String> {
    let (agents, runners) = supply(agents);
    let owners = [OwnerLimits {
        name: "acme".into(),
        max_runners: 100,
        labels: vec![],
        repo_level: false,
    }];
    let jobs: Vec<PendingJob> = (1..=jobs)
        .map(|id| PendingJob {
            id,
            owner: "acme".into(),
            repo: "app".into(),
            labels: vec!["self-hosted".into()],
            queued_ms: id as i64,
        })
        .collect();
    plan(&PlanInput {
        owners: &owners,
        agents: &agents,
        jobs: &jobs,
        runners: &runners,
        global_labels: &[],
        now_ms: 1_000,
        idle_grace_ms: 300_000,
        runner_timeout_ms: 3_600_000,
    })
    .starts
    .into_iter()
    .map(|s| s.agent.to_string())
    .collect()
}

#[test]
fn the_agent_with_the_image_is_preferred_and_the_job_is_placed_without_one() {
    let unavailable = Agent {
        available: false,
        ..a("has-it-down", true, 0)
    };
    let other_owners = Agent {
        owners: Some(&["globex"]),
        ..a("has-it-globex", true, 0)
    };
    let cases: Vec<(&str, Vec<Agent>, u64, Vec<&str>)> = vec![
        (
            "with the image beats idle without it",
            vec![a("cold", false, 0), a("warm", true, 3)],
            1,
            vec!["warm"],
        ),
        (
            "name order does not matter",
            vec![a("a-warm", true, 2), a("b-cold", false, 0)],
            1,
            vec!["a-warm"],
        ),
        (
            "none has it: the least loaded takes it",
            vec![a("cold-1", false, 2), a("cold-2", false, 1)],
            1,
            vec!["cold-2"],
        ),
        (
            "both have it: the least loaded takes it",
            vec![a("warm-1", true, 2), a("warm-2", true, 1)],
            1,
            vec!["warm-2"],
        ),
        (
            "the one with it fills up, then the others",
            vec![a("cold", false, 0), a("warm", true, 2)],
            3,
            vec!["warm", "warm", "cold"],
        ),
        (
            "the one with it is full: placed without it",
            vec![a("cold", false, 3), a("warm", true, 4)],
            1,
            vec!["cold"],
        ),
        (
            "the one with it is unavailable: placed without it",
            vec![a("cold", false, 0), unavailable],
            1,
            vec!["cold"],
        ),
        (
            "the one with it may not serve the owner: placed without it",
            vec![a("cold", false, 0), other_owners],
            1,
            vec!["cold"],
        ),
    ];
    for (case, agents, jobs, expected) in cases {
        let mut got = placed(&agents, jobs);
        got.sort();
        let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        expected.sort();
        assert_eq!(got, expected, "{case}");
    }
}
