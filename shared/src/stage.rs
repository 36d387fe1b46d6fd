//! Marks on a cold start's path, for timing it stage by stage (issue 16 §3).
//!
//! The controller and the agent emit one `debug` event under the target [`TARGET`] at each
//! point a cold start passes (webhook recorded, runner recorded, registration made,
//! `StartRunner` sent; on the agent `StartRunner` received, image ready, container created,
//! program checked, container started), with the field `stage` naming it and the job id
//! (`job`) or the runner's name (`runner`) it belongs to. Off unless asked for
//! (`RUST_LOG=gha_scaler::stage=debug`), they cost nothing in normal operation; the latency
//! bench (`tests::stages`) records them with the time each was emitted.

/// The tracing target of every stage mark.
pub const TARGET: &str = "gha_scaler::stage";

/// The names of the stages, in the order a cold start passes them.
pub mod names {
    /// Controller: a `workflow_job` delivery committed (field `handler_us`: how long since
    /// its request arrived).
    pub const WEBHOOK_RECORDED: &str = "webhook_recorded";
    /// Controller: the runner planned for the job is recorded (durable) before its
    /// registration is asked for.
    pub const RUNNER_RECORDED: &str = "runner_recorded";
    /// Controller: GitHub (the JIT configuration or registration token call) answered.
    pub const REGISTERED: &str = "registered";
    /// Controller: `StartRunner` is queued on the agent's session.
    pub const START_SENT: &str = "start_sent";
    /// Agent: `StartRunner` received and accepted.
    pub const START_RECEIVED: &str = "start_received";
    /// Agent: the image is present, checked for the runner's platform, its configuration read.
    pub const IMAGE_READY: &str = "image_ready";
    /// Agent: the runner's cache volumes exist.
    pub const VOLUMES_READY: &str = "volumes_ready";
    /// Agent: `create_container` answered.
    pub const CONTAINER_CREATED: &str = "container_created";
    /// Agent: the created container is of the image inspected for it and holds the program it
    /// runs first.
    pub const PROGRAM_CHECKED: &str = "program_checked";
    /// Agent: `start_container` answered.
    pub const CONTAINER_STARTED: &str = "container_started";
}
