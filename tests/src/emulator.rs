//! Runner emulation for system tests with the in-memory runtime: what a real runner container
//! would do, done against the GitHub simulator.
//!
//! For every runner the agent starts, the emulator registers it with the simulator using the
//! JIT config or registration token it was given, lets it claim whatever job GitHub hands it (any matching job, as
//! GitHub does), "runs" it for a while, completes it, and ends the runner with exit code 0.
//! It records the most runners that were alive at once, for limit assertions.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::runtime::memory::MemoryRuntime;
use shared::command::Registration;
use shared::runner::RunnerPhase;
use tokio_util::sync::CancellationToken;

use crate::github_sim::GithubSim;

/// What the emulator saw.
#[derive(Default)]
pub struct EmulatorStats {
    /// The most runners alive (starting or running) at any moment.
    pub max_alive: AtomicUsize,
    /// Jobs completed by emulated runners.
    pub completed: Mutex<Vec<u64>>,
}

/// Emulates the runners of one or more agents' memory runtimes until dropped.
pub struct RunnerEmulator {
    pub stats: Arc<EmulatorStats>,
    stop: CancellationToken,
}

impl RunnerEmulator {
    /// Starts emulating; each job takes `job_time`.
    pub fn start(sim: Arc<GithubSim>, runtimes: Vec<MemoryRuntime>, job_time: Duration) -> Self {
        let stats = Arc::new(EmulatorStats::default());
        let stop = CancellationToken::new();
        let (task_stats, task_stop) = (stats.clone(), stop.clone());
        tokio::spawn(async move {
            let mut handled = BTreeSet::new();
            while !task_stop.is_cancelled() {
                let mut alive = 0;
                for runtime in &runtimes {
                    for runner in runtime.runners() {
                        if runner.phase.is_terminal() {
                            continue;
                        }
                        alive += 1;
                        if runner.phase == RunnerPhase::Running && handled.insert(runner.id.clone())
                        {
                            let (sim, runtime, stats) =
                                (sim.clone(), runtime.clone(), task_stats.clone());
                            tokio::spawn(run_one(sim, runtime, runner.id, job_time, stats));
                        }
                    }
                }
                task_stats.max_alive.fetch_max(alive, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { stats, stop }
    }

    pub fn completed(&self) -> Vec<u64> {
        self.stats.completed.lock().unwrap().clone()
    }

    pub fn max_alive(&self) -> usize {
        self.stats.max_alive.load(Ordering::SeqCst)
    }
}

impl Drop for RunnerEmulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One ephemeral runner's life: register, take a job (or give up after a while, as an idle
/// runner would be stopped), run it, complete it, exit.
async fn run_one(
    sim: Arc<GithubSim>,
    runtime: MemoryRuntime,
    id: shared::ids::RunnerId,
    job_time: Duration,
    stats: Arc<EmulatorStats>,
) {
    let Some(spec) = runtime.spec(&id) else {
        return;
    };
    // JIT as `run.sh --jitconfig`; a registration token as `config.sh --token … --ephemeral`
    // (which adds the default labels, as config.sh does).
    let registered = match &spec.registration {
        Registration::JitConfig(jit) => sim.register_jit_runner(jit),
        Registration::Token {
            token,
            runner_group,
            ..
        } => {
            let labels: Vec<&str> = spec.labels.iter().map(String::as_str).collect();
            sim.register_runner_in_group(token, &spec.name, &labels, true, Some(runner_group))
        }
    };
    let Ok(sim_runner) = registered else {
        runtime.finish(&id, 1).await;
        return;
    };
    // Wait for GitHub to hand this runner a job; a stop from the controller ends the wait.
    let job = loop {
        match sim.claim_job(sim_runner.id) {
            Ok(Some(job)) => break Some(job),
            Ok(None) => {}
            Err(_) => break None,
        }
        if runtime
            .runners()
            .iter()
            .any(|r| r.id == id && r.phase.is_terminal())
        {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let Some(job) = job else { return };
    tokio::time::sleep(job_time).await;
    if sim.complete_job(sim_runner.id, "success").is_ok() {
        stats.completed.lock().unwrap().push(job);
    }
    runtime.finish(&id, 0).await;
}
