//! The dashboard's HTML (maud): layouts of the [`super::views`] models, nothing computed here.
//! Every page is complete without JavaScript; `app.js` only swaps `#content` on live changes.

use maud::{DOCTYPE, Markup, html};

use super::events::Event;
use super::views::{self, AgentRow, Overview, QueueRow, RunnerRow, Step};
use crate::store::JobRecord;

/// The pages, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    Queue,
    Runners,
    Agents,
    Events,
    Job,
}

const NAV: [(Page, &str, &str); 5] = [
    (Page::Overview, "/ui/", "Overview"),
    (Page::Queue, "/ui/queue", "Queue"),
    (Page::Runners, "/ui/runners", "Runners"),
    (Page::Agents, "/ui/agents", "Agents"),
    (Page::Events, "/ui/events", "Events"),
];

/// A whole page around `content`; `csrf` is set for sessions (the logout button).
pub fn layout(page: Page, title: &str, content: Markup, csrf: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gha-scaler" }
                link rel="stylesheet" href="/ui/assets/app.css";
                noscript { meta http-equiv="refresh" content="15"; }
            }
            body {
                header {
                    a.brand href="/ui/" { "gha-scaler" }
                    @for (p, href, label) in NAV {
                        a class=[(p == page).then_some("here")] href=(href) { (label) }
                    }
                    span #live .live data-state="static" { "static" }
                    @if let Some(csrf) = csrf {
                        form.inline method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #content { (content) }
                script src="/ui/assets/app.js" {}
            }
        }
    }
}

pub fn login(message: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in · gha-scaler" }
                link rel="stylesheet" href="/ui/assets/app.css";
            }
            body {
                form.login method="post" action="/ui/login" {
                    h1 { "gha-scaler dashboard" }
                    @if let Some(m) = message { p.bad #login-error { (m) } }
                    label for="token" { "API_TOKEN (full access) or STATUS_TOKEN (read-only)" }
                    input #token type="password" name="token" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
            }
        }
    }
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "—".into())
}

pub fn overview(o: &Overview) -> Markup {
    html! {
        h1 { "Overview" }
        div.cards {
            div.card { div.n #count-queued { (o.queued) } div.l { "jobs waiting" } }
            div.card { div.n #count-runners { (o.runners) } div.l { "runners" } }
            div.card { div.n #count-agents { (o.agents_connected) } div.l { "agents connected" } }
        }
        h2 { "Needs a person" }
        @if o.problems.is_empty() {
            p.ok #problems { "Nothing: every owner can be served." }
        } @else {
            ul.problems #problems { @for p in &o.problems { li { (p) } } }
        }
        h2 { "Owners" }
        table #owners {
            thead { tr {
                th { "Owner" } th { "Runners in use" } th { "Queue" } th { "Oldest waiting" }
                th { "Served (1 h)" } th { "Queue time p50" } th { "p95" } th { "GitHub quota" }
            } }
            tbody {
                @for r in &o.owners {
                    tr data-owner=(r.name) {
                        td { (r.name) }
                        td.num data-field="in-use" { (r.in_use) " / " (r.max_runners) }
                        td.num data-field="queued" { (r.queued) }
                        td.reason data-field="oldest" {
                            @if let Some((id, age, why)) = &r.oldest {
                                a href=(format!("/ui/jobs/{}/{id}", r.name)) { "job " (id) }
                                " (" (age) "): " (why)
                            } @else { span.muted { "none" } }
                        }
                        td.num data-field="served" { (r.served_last_hour) }
                        td.num { (or_dash(r.queue_p50.clone())) }
                        td.num { (or_dash(r.queue_p95.clone())) }
                        td.num {
                            @if let Some((left, limit)) = r.quota { (left) " / " (limit) }
                            @else { span.muted { "not seen yet" } }
                        }
                    }
                }
            }
        }
        h2 { "Agents by architecture" }
        table #archs {
            thead { tr { th { "Architecture" } th { "Agents" } th { "Healthy" } th { "Runners / capacity" } } }
            tbody {
                @for a in &o.archs {
                    tr { td { (a.arch) } td.num { (a.agents) } td.num { (a.healthy) }
                         td.num { (a.in_use) " / " (a.capacity) } }
                }
            }
        }
    }
}

pub fn queue(rows: &[QueueRow]) -> Markup {
    html! {
        h1 { "Queue" }
        @if rows.is_empty() { p.muted #queue-empty { "No job is waiting." } }
        table #queue {
            thead { tr { th { "Job" } th { "Owner" } th { "Repository" } th { "Labels" } th { "Age" } th { "Why it waits" } } }
            tbody {
                @for r in rows {
                    tr data-job=(r.id) data-owner=(r.owner) {
                        td { a href=(format!("/ui/jobs/{}/{}", r.owner, r.id)) { (r.id) } " "
                             a.muted href=(r.github_url) rel="noreferrer" { "on GitHub" } }
                        td { (r.owner) }
                        td { (r.repo) br; span.muted { (r.name) } }
                        td { (r.labels) }
                        td.num { (r.age) }
                        td.reason data-field="reason" { (r.reason) }
                    }
                }
            }
        }
    }
}

pub fn runners(rows: &[RunnerRow]) -> Markup {
    html! {
        h1 { "Runners" }
        @if rows.is_empty() { p.muted { "No runner is active." } }
        table #runners {
            thead { tr { th { "Runner" } th { "Owner" } th { "State" } th { "Job" } th { "Agent" } th { "Age" } th { "Image" } } }
            tbody {
                @for r in rows {
                    tr data-runner=(r.name) {
                        td { (r.name) @if !r.reason.is_empty() { br; span.muted { (r.reason) } } }
                        td { (r.owner) }
                        td data-field="state" { (r.state) }
                        td { @if let Some(j) = r.job { a href=(format!("/ui/jobs/{}/{j}", r.owner)) { (j) } } }
                        td { (r.agent) }
                        td.num { (r.age) }
                        td.muted { (r.image) }
                    }
                }
            }
        }
    }
}

pub fn agents(rows: &[AgentRow], csrf: Option<&str>) -> Markup {
    html! {
        h1 { "Agents" }
        @if rows.is_empty() { p.muted { "No agent has connected." } }
        table #agents {
            thead { tr { th { "Agent" } th { "Arch" } th { "Runtime" } th { "Runners / capacity" } th { "Labels" }
                         th { "Version" } th { "Last heartbeat" } th { "State" } th {} } }
            tbody {
                @for a in rows {
                    tr data-agent=(a.name) {
                        td { (a.name) }
                        td { (a.archs) }
                        td { (a.runtime) }
                        td.num { (a.running) " / " (a.capacity) }
                        td { (a.labels) }
                        td { (a.version) }
                        td.num { (a.last_heartbeat) }
                        td data-field="state" class=(if a.state == "healthy" { "ok" } else { "warn" }) { (a.state) }
                        td {
                            @if let (Some(csrf), true) = (csrf, a.can_drain) {
                                form.inline method="post" action=(format!("/ui/agents/{}/drain", a.name)) {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.danger type="submit" data-drain=(a.name) { "Drain" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if csrf.is_none() { p.muted { "Read-only: log in with API_TOKEN to drain agents." } }
    }
}

pub fn job(job: &JobRecord, explanation: &str, steps: &[Step]) -> Markup {
    html! {
        h1 { "Job " (job.id) " of " (job.owner) }
        table {
            tbody {
                tr { th { "Repository" } td { (job.repo) } }
                tr { th { "Name" } td { (job.name) } }
                tr { th { "Labels" } td { (job.labels.join(", ")) } }
                tr { th { "State" } td #job-state { (job.state.as_str()) } }
                tr { th { "Now" } td #job-explanation { (explanation) } }
            }
        }
        h2 { "Timeline" }
        ol.timeline #timeline {
            @for s in steps { li { time { (views::clock(s.at_ms)) } (s.text) } }
        }
    }
}

pub fn events(events: &[Event]) -> Markup {
    html! {
        h1 { "Events" }
        p.muted { "The latest decisions, changes and errors, newest first (kept in memory, bounded)." }
        table #events {
            thead { tr { th { "When" } th { "Kind" } th { "What" } } }
            tbody {
                @for e in events {
                    tr data-kind=(e.event.kind.as_str()) {
                        td.num { (views::clock(e.event.at_ms)) }
                        td class=(if e.event.kind == super::events::EventKind::Error { "bad" } else { "" }) { (e.event.kind.as_str()) }
                        td {
                            @if let (Some(owner), Some(job)) = (&e.event.owner, e.event.job) {
                                a href=(format!("/ui/jobs/{owner}/{job}")) { (e.event.message) }
                            } @else { (e.event.message) }
                        }
                    }
                }
            }
        }
    }
}

pub fn error(message: &str) -> Markup {
    html! { h1 { "Unavailable" } p.bad { (message) } }
}

/// The embedded assets.
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");
