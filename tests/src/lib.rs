//! The end-to-end test harness of gha-scaler: a real controller and real agents talking
//! mutual-TLS gRPC on loopback ([`harness`]), with certificates made for the occasion
//! ([`pki`]), a GitHub simulator built from GitHub's published payloads ([`github_sim`]),
//! helpers for the tests on the real Docker engine ([`docker`]), and a fake Kubernetes API
//! server ([`kube_fake`]), throwaway PostgreSQL databases ([`postgres`]), and a cuttable TCP proxy and a load balancer for multi-replica tests ([`net`]). [`browser`] drives a headless chromium for the dashboard's test. The tests themselves live in `tests/tests/`; [`quota_bench`] is the
//! body of `bench quota`, [`fleet_bench`] of `bench fleet`; [`stages`] records the cold-start
//! stage marks for `bench latency`.

pub mod browser;
pub mod docker;
pub mod emulator;
pub mod fleet_bench;
pub mod github_sim;
pub mod harness;
pub mod images;
pub mod kube_fake;
pub mod latency_bench;
pub mod net;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod quota_bench;
pub mod raw_agent;
pub mod stages;
