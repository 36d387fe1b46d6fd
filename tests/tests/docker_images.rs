//! Runner images by layout on the real Docker engine (issue 10 §1): the seed's default image
//! with the seed's `.env` registers and takes its job (JIT, through the image's own `run.sh`),
//! token mode goes through myoung34's entry script, the official image refuses a token with a
//! reason, a custom image starts only through `RUNNER_COMMAND`, an image without the entry
//! point it would run fails to start with the engine's reason, and the test images themselves
//! refuse what the real ones refuse.

use std::collections::HashMap;
use std::time::Duration;

use agent::runtime::docker::labels;
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use shared::command::{ImageFlavor, ImageLaunch};
use tests::docker::{
    CUSTOM_COMMAND, Census, DockerSetup, RunnerLayout, SEED_DEFAULT_IMAGE, TEST_RUN_LABEL, docker,
};

const WAIT: Duration = Duration::from_secs(30);

/// The phases the controller saw runner `id` go through, polled until it is terminal.
async fn phases_until_terminal(s: &DockerSetup, agent: &str, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = s.runner(agent, id).await
            && matches!(r["phase"].as_str(), Some("failed" | "exited"))
        {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runner {id} never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_seed_env_with_its_default_image_registers_a_jit_runner_that_takes_the_job() {
    // No RUNNER_IMAGE, no RUNNER_REGISTRATION, no RUNNER_IMAGE_FLAVOR: the seed's `.env`.
    let s = DockerSetup::start_e2e_default_image(2, &[("RUNNER_IDLE_GRACE", "2s")]).await;
    assert_eq!(s.controller.config.runners.image, SEED_DEFAULT_IMAGE);
    let census = Census::start(&s.run).await;
    let agent = s.agent("seed-host", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s
        .sim
        .queue(&["self-hosted", "linux"], Duration::from_millis(300));
    s.wait_jobs_completed(&[job], Duration::from_secs(60)).await;
    let done = s.sim.sim.job(job).expect("job");
    assert_eq!(done.conclusion, Some("success"));
    let runner = done.runner.expect("the job had a runner").1;
    let started = census.started();
    let c = started
        .iter()
        .find(|c| c.labels.get(labels::RUNNER_NAME) == Some(&runner))
        .expect("the runner's container");
    assert_eq!(
        c.cmd,
        vec!["/actions-runner/run.sh".to_owned()],
        "a JIT runner of the myoung34 image starts its run.sh, not /home/runner/run.sh"
    );
    assert!(
        c.env
            .iter()
            .any(|e| e.starts_with("ACTIONS_RUNNER_INPUT_JITCONFIG=")),
        "{:?}",
        c.env
    );
    census.assert_never_given(&s.sim.pat);
    s.wait_no_containers(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn token_mode_registers_through_the_myoung34_entry_script() {
    let s = DockerSetup::start_e2e(
        2,
        &[
            ("RUNNER_REGISTRATION", "token"),
            ("RUNNER_IDLE_GRACE", "2s"),
        ],
    )
    .await;
    let census = Census::start(&s.run).await;
    let agent = s.agent("token-host", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s
        .sim
        .queue(&["self-hosted", "linux"], Duration::from_millis(300));
    s.wait_jobs_completed(&[job], Duration::from_secs(60)).await;
    let started = census.started();
    assert!(!started.is_empty());
    for c in &started {
        // (The census lists entry point, command and the engine's `Args`.)
        assert!(
            c.cmd.starts_with(&[
                "/entrypoint.sh".to_owned(),
                "./bin/Runner.Listener".to_owned(),
                "run".to_owned(),
                "--startuptype".to_owned(),
                "service".to_owned(),
            ]),
            "the image's own ENTRYPOINT and CMD: {:?}",
            c.cmd
        );
        assert!(c.env.iter().any(|e| e.starts_with("RUNNER_TOKEN=")));
    }
    census.assert_never_given(&s.sim.pat);
    s.wait_no_containers(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn the_official_image_refuses_a_token_with_a_reason() {
    let s = DockerSetup::start().await;
    let official = s.run.runner_image_of(RunnerLayout::Official).await;
    let agent = s.agent("official-host", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let spec = s
        .sim
        .token_spec("r-off-tok", &official, &["self-hosted"])
        .await;
    s.start_runner("official-host", spec);
    let failed = s
        .wait_runner("official-host", "r-off-tok", "failed", WAIT)
        .await;
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("registers only from a JIT config")
            && reason.contains("RUNNER_REGISTRATION=jit"),
        "{reason}"
    );
    assert!(s.run.containers().await.is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_custom_image_starts_only_through_runner_command() {
    let s = DockerSetup::start().await;
    let custom = s.run.runner_image_of(RunnerLayout::Custom).await;
    let agent = s.agent("custom-host", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;

    // Auto cannot tell how to start it: a failed start that says what to set.
    let spec = s
        .sim
        .jit_spec("r-cust-auto", &custom, &["self-hosted"])
        .await;
    s.start_runner("custom-host", spec);
    let failed = s
        .wait_runner("custom-host", "r-cust-auto", "failed", WAIT)
        .await;
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("RUNNER_IMAGE_FLAVOR") && reason.contains("RUNNER_COMMAND"),
        "{reason}"
    );

    // With RUNNER_COMMAND it registers and takes its job.
    let job = s.sim.queue(&["self-hosted"], Duration::from_millis(200));
    let mut spec = s.sim.jit_spec("r-cust", &custom, &["self-hosted"]).await;
    spec.launch = ImageLaunch {
        flavor: ImageFlavor::Custom,
        command: vec![CUSTOM_COMMAND.to_owned()],
    };
    s.start_runner("custom-host", spec);
    let exited = s.wait_runner("custom-host", "r-cust", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0, "{exited}");
    assert_eq!(
        s.sim.sim.job(job).expect("job").status,
        "completed",
        "the custom runner took the job"
    );
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn an_image_without_its_entry_point_fails_to_start_with_the_engines_reason() {
    let s = DockerSetup::start().await;
    // The seed default's layout (myoung34) forced to start as the official image: there is no
    // /home/runner/run.sh. With the agent's default init process the engine would start the
    // container and the init would exit 127.
    let agent = s.agent("missing-host", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let mut spec = s
        .sim
        .jit_spec("r-missing", &s.image, &["self-hosted"])
        .await;
    spec.launch.flavor = ImageFlavor::Official;
    s.start_runner("missing-host", spec);
    let end = phases_until_terminal(&s, "missing-host", "r-missing").await;
    assert_eq!(end["phase"], "failed", "a failed start, not an exit: {end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("has no entry point /home/runner/run.sh")
            && reason.contains("Could not find the file"),
        "the engine's own words: {reason}"
    );
    s.wait_no_containers(WAIT).await;
}

/// Runs `image` with `env` (and `user`) until it exits; (exit code, output).
async fn run_to_exit(
    run_id: &str,
    image: &str,
    env: &[&str],
    user: Option<&str>,
    cmd: &[&str],
) -> (i64, String) {
    let docker = docker().await;
    let name = format!("gha-probe-{run_id}-{}", rand::random::<u32>());
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            bollard::models::ContainerCreateBody {
                image: Some(image.to_owned()),
                env: Some(env.iter().map(|e| (*e).to_owned()).collect()),
                user: user.map(str::to_owned),
                cmd: (!cmd.is_empty()).then(|| cmd.iter().map(|c| (*c).to_owned()).collect()),
                labels: Some(HashMap::from([(
                    TEST_RUN_LABEL.to_owned(),
                    run_id.to_owned(),
                )])),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("probe container created");
    docker
        .start_container(&name, None)
        .await
        .expect("probe started");
    let mut wait = docker.wait_container(&name, None::<WaitContainerOptions>);
    let code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("wait: {other:?}"),
    };
    let mut logs = docker.logs(
        &name,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let mut output = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        output.push_str(&chunk.to_string());
    }
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            }),
        )
        .await;
    (code, output)
}

#[tokio::test]
async fn the_test_images_refuse_what_the_real_ones_refuse() {
    let s = DockerSetup::start().await;
    let official = s.run.runner_image_of(RunnerLayout::Official).await;
    let id = s.run.id.as_str();

    // myoung34 without registration material: config.sh fails, the command then finds no
    // configuration.
    let (code, out) = run_to_exit(id, &s.image, &[], None, &[]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("REPO_URL required for repo runners"), "{out}");
    assert!(out.contains("Not configured"), "{out}");

    // A PAT in the environment is refused by the entry script.
    let (code, out) = run_to_exit(id, &s.image, &["ACCESS_TOKEN=ghp_secret"], None, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("personal access token"), "{out}");

    // The entry script needs root (RUN_AS_ROOT defaults to true).
    let jit = s.sim.jit_config("gha-probe", &["self-hosted"]).await;
    let jit_env = format!("ACTIONS_RUNNER_INPUT_JITCONFIG={jit}");
    let (code, out) = run_to_exit(id, &s.image, &[&jit_env], Some("1001"), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("RUN_AS_ROOT"), "{out}");

    // The official image has no entry script: without a command there is nothing to run.
    let docker = docker().await;
    let no_command = docker
        .create_container(
            None::<CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(official.clone()),
                labels: Some(HashMap::from([(TEST_RUN_LABEL.to_owned(), id.to_owned())])),
                ..Default::default()
            },
        )
        .await;
    let err = no_command.expect_err("an image without ENTRYPOINT and CMD needs a command");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("no command specified"),
        "{err}"
    );

    // Its runner refuses a garbled JIT config, and config.sh wants a URL and a token, and
    // refuses root.
    let run_sh = ["/home/runner/run.sh"];
    let (code, out) = run_to_exit(
        id,
        &official,
        &["ACTIONS_RUNNER_INPUT_JITCONFIG=not-base64!"],
        None,
        &run_sh,
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not base64 JSON"), "{out}");
    let (code, out) = run_to_exit(id, &official, &[], None, &run_sh).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Not configured"), "{out}");
    let config = [
        "./config.sh",
        "--unattended",
        "--url",
        "http://127.0.0.1:1/acme",
    ];
    let (code, out) = run_to_exit(id, &official, &[], None, &config).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Invalid configuration provided"), "{out}");
    let (code, out) = run_to_exit(id, &official, &[], Some("0"), &config).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Must not run with sudo"), "{out}");
}
