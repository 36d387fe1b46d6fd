//! Network pieces between the parts of a multi-replica test (issue 15 §3), on loopback:
//! [`TcpProxy`], a TCP forwarder a test can cut (a replica's database connection lost, as in a
//! network partition), and [`RoundRobin`], the load balancer in front of several controller
//! replicas that GitHub's deliveries go through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

/// Forwards every TCP connection on its own loopback port to `upstream`, until [`cut`]: then
/// every open connection breaks at once and new ones are refused (the port is closed).
///
/// [`cut`]: TcpProxy::cut
pub struct TcpProxy {
    pub addr: SocketAddr,
    /// The proxy's own runtime: shutting it down drops the listener and every connection.
    tokio: Option<tokio::runtime::Runtime>,
}

impl TcpProxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = {
            let _inside = tokio.enter();
            let std = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
            std.set_nonblocking(true).expect("non-blocking");
            tokio::net::TcpListener::from_std(std).expect("tokio listener")
        };
        let addr = listener.local_addr().expect("proxy address");
        tokio.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            tokio: Some(tokio),
        }
    }

    /// Cuts every connection and refuses new ones, for good.
    pub fn cut(&mut self) {
        if let Some(rt) = self.tokio.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// An HTTP load balancer: each request goes to the next backend in turn; when a backend cannot
/// be reached or answers 5xx, the next is tried (as nginx's `proxy_next_upstream error
/// http_502 http_503`). Retrying a delivery is safe: the controller deduplicates by
/// `X-GitHub-Delivery`. Runs on the test's runtime until dropped.
pub struct RoundRobin {
    pub addr: SocketAddr,
    /// Requests each backend answered with 2xx, in backend order.
    pub served: Arc<Vec<AtomicUsize>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Balancer {
    backends: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    served: Arc<Vec<AtomicUsize>>,
    http: reqwest::Client,
}

impl RoundRobin {
    /// Balances over `backends` (`http://host:port` each).
    pub async fn start(backends: Vec<String>) -> Self {
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let balancer = Balancer {
            backends: Arc::new(backends),
            next: Arc::default(),
            served: served.clone(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri,
                  method: axum::http::Method,
                  headers: HeaderMap,
                  body: Bytes| {
                let balancer = balancer.clone();
                async move { balancer.forward(method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("balancer binds");
        let addr = listener.local_addr().expect("balancer address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, served, task }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    async fn forward(
        &self,
        method: axum::http::Method,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let first = self.next.fetch_add(1, Ordering::SeqCst);
        let mut last = (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new());
        for i in 0..self.backends.len() {
            let index = (first + i) % self.backends.len();
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.backends[index]));
            for (name, value) in &headers {
                if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                    request = request.header(name, value);
                }
            }
            let Ok(response) = request.body(body.clone()).send().await else {
                continue;
            };
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut out = HeaderMap::new();
            if let Some(ct) = response.headers().get(axum::http::header::CONTENT_TYPE) {
                out.insert(axum::http::header::CONTENT_TYPE, ct.clone());
            }
            let bytes = response.bytes().await.unwrap_or_default();
            if status.is_server_error() {
                last = (status, out, bytes);
                continue;
            }
            if status.is_success() {
                self.served[index].fetch_add(1, Ordering::SeqCst);
            }
            return (status, out, bytes);
        }
        last
    }
}
