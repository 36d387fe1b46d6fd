//! `docker-bench`: how much the agent adds to starting a runner container, on the real engine.
//!
//! Two measurements in one run, against the same locally built runner image, each one
//! container at a time, each ending at the container's `start` event as a separate event
//! subscription sees it:
//! - **raw**: bollard `create_container` + `start_container` of the same container body the
//!   agent builds (host network, init, labels, JIT environment), straight to the engine;
//! - **agent**: a `StartRunner` command queued in a real controller → gRPC over mutual TLS → a
//!   real agent with the Docker runtime (image check, labels, create, start).
//!
//! Each agent runner gets a zero-length job from the GitHub simulator, so it registers, claims,
//! completes and exits on its own; raw containers are removed by the bench. Prints a Markdown
//! table (p50, p99, mean, and the agent's overhead as a ratio) and the image build time.
//! (The webhook → runner path needs the scheduler of issue 4; this measures the agent's part.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agent::runtime::docker::config::DockerSettings;
use agent::runtime::docker::spec::{Placement, container_body};
use bollard::query_parameters::{CreateContainerOptions, EventsOptions, RemoveContainerOptions};
use clap::Parser;
use futures::StreamExt;
use tests::docker::{DockerSetup, TEST_RUN_LABEL, docker};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(about = "Raw bollard create+start vs the agent's command → container running")]
struct Args {
    /// Containers per measurement.
    #[arg(long, default_value_t = 50)]
    count: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    (percentile(samples, 50.0), percentile(samples, 99.0), mean)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Names of containers of the run as their `start` events arrive.
async fn start_events(run: &str) -> mpsc::UnboundedReceiver<String> {
    let docker = docker().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let filters = HashMap::from([
        ("label".to_owned(), vec![format!("{TEST_RUN_LABEL}={run}")]),
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["start".to_owned()]),
    ]);
    let mut events = docker.events(Some(EventsOptions {
        since: None,
        until: None,
        filters: Some(filters),
    }));
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            let name = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("name").cloned())
                .unwrap_or_default();
            if tx.send(name).is_err() {
                return;
            }
        }
    });
    // Let the subscription reach the engine before anything starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx
}

async fn wait_for(events: &mut mpsc::UnboundedReceiver<String>, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, events.recv()).await;
        match next {
            Ok(Some(seen)) if seen == name => return Ok(()),
            Ok(Some(_)) => {}
            _ => anyhow::bail!("no start event for {name}"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Warnings only, on stderr (the test harness would log every runner at info on stdout).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let image_started = Instant::now();
    let s = DockerSetup::start().await;
    let setup_time = image_started.elapsed();
    // The import alone, under a run (and tag) of its own that cleans up after itself.
    let second = tests::docker::TestRun::new();
    let import_started = Instant::now();
    second.runner_image().await;
    let import_time = import_started.elapsed();
    drop(second);
    let mut events = start_events(&s.run.id).await;
    let docker = docker().await;

    let max = args.count.to_string();
    let agent = s.agent("bench-host", &[("MAX_RUNNERS", max.as_str())]);
    agent
        .wait_status(Duration::from_secs(30), "connected", |st| st.connected)
        .await;
    // Raw bollard creates the very container the agent would (same body, built by the
    // runtime's own mapping). The two paths alternate, and each measurement starts from an
    // engine with no container of the run, so load from elsewhere hits both alike.
    let settings = DockerSettings {
        network: Some("host".into()),
        extra_labels: [(TEST_RUN_LABEL.to_owned(), s.run.id.clone())].into(),
        ..Default::default()
    };
    let mut raw = Vec::with_capacity(args.count);
    let mut ours = Vec::with_capacity(args.count);
    for i in 0..args.count {
        s.sim.queue(&["self-hosted"], Duration::ZERO);
        let spec = s
            .sim
            .jit_spec(&format!("raw{i}"), &s.image, &["self-hosted"])
            .await;
        let placement = Placement {
            agent: "bench-raw".into(),
            controller: "bench".into(),
            deadline_ms: i64::MAX / 2,
            caches: Vec::new(),
            engine_nano_cpus: None,
        };
        // The bench image has the myoung34 layout; a JIT runner starts its `run.sh`.
        let plan = agent::runtime::launch::plan(agent::runtime::launch::Layout::Myoung34, &spec)
            .expect("a JIT runner of the myoung34 layout");
        let (body, _) = container_body(&spec, &settings, &placement, &plan);
        let name = spec.name.clone();
        let started = Instant::now();
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await?;
        docker.start_container(&name, None).await?;
        wait_for(&mut events, &name).await?;
        raw.push(started.elapsed());
        // It completes its zero-length job and exits; then it goes.
        let mut exit = docker.wait_container(&name, None);
        while exit.next().await.is_some() {}
        docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await?;
        s.wait_no_containers(Duration::from_secs(30)).await;

        // The agent: StartRunner command → container running.
        s.sim.queue(&["self-hosted"], Duration::ZERO);
        let spec = s
            .sim
            .jit_spec(&format!("b{i}"), &s.image, &["self-hosted"])
            .await;
        let name = spec.name.clone();
        let started = Instant::now();
        s.start_runner("bench-host", spec);
        wait_for(&mut events, &name).await?;
        ours.push(started.elapsed());
        s.wait_no_containers(Duration::from_secs(30)).await;
    }

    drop(agent);
    drop(s);

    // The whole path: a job queued at the simulator → signed webhook → controller (persist,
    // schedule, JIT config from the simulator) → agent → container running. Same engine, same
    // image, same run; a controller wired to the simulator of its own.
    let wired = DockerSetup::start_e2e(args.count as u32, &[]).await;
    let mut wired_events = start_events(&wired.run.id).await;
    let wired_agent = wired.agent("bench-wired", &[("MAX_RUNNERS", max.as_str())]);
    wired_agent
        .wait_status(Duration::from_secs(30), "connected", |st| st.connected)
        .await;
    let mut whole = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let started = Instant::now();
        wired.sim.queue(&["self-hosted"], Duration::ZERO);
        // One job at a time: the next start event of this run is its runner's.
        tokio::time::timeout(Duration::from_secs(30), wired_events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no runner container started for a queued job"))?;
        whole.push(started.elapsed());
        wired.wait_no_containers(Duration::from_secs(30)).await;
    }
    drop(wired_agent);

    let (raw_p50, raw_p99, raw_mean) = summary(&mut raw);
    let (whole_p50, whole_p99, whole_mean) = summary(&mut whole);
    let (our_p50, our_p99, our_mean) = summary(&mut ours);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "set-up (controller, runner image, simulator): {}; runner image import alone: {}",
        ms(setup_time),
        ms(import_time)
    );
    println!();
    println!(
        "| path ({} containers, one at a time) | p50 | p99 | mean |",
        args.count
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| raw bollard create + start | {} | {} | {} |",
        ms(raw_p50),
        ms(raw_p99),
        ms(raw_mean)
    );
    println!(
        "| agent: StartRunner command → running | {} | {} | {} |",
        ms(our_p50),
        ms(our_p99),
        ms(our_mean)
    );
    println!(
        "| ratio (agent / raw) | {:.2} | {:.2} | {:.2} |",
        ratio(our_p50, raw_p50),
        ratio(our_p99, raw_p99),
        ratio(our_mean, raw_mean)
    );
    println!(
        "| whole path: job queued → webhook → controller → agent → running | {} | {} | {} |",
        ms(whole_p50),
        ms(whole_p99),
        ms(whole_mean)
    );
    println!(
        "| ratio (whole path / raw) | {:.2} | {:.2} | {:.2} |",
        ratio(whole_p50, raw_p50),
        ratio(whole_p99, raw_p99),
        ratio(whole_mean, raw_mean)
    );
    Ok(())
}
