//! A programmable HTTP/1.1 upstream for proxy tests: each route answers with a status,
//! headers and a body sent in timed chunks (or cut off mid-body), and every request is
//! recorded, so tests can count what reached the upstream and what it was sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::{HarnessError, Result, io_err};

/// How one route answers.
#[derive(Debug, Clone)]
pub struct Route {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Body chunks, sent in order.
    pub chunks: Vec<Bytes>,
    /// Wait before the response header.
    pub header_delay: Duration,
    /// Wait before each chunk after the first.
    pub chunk_delay: Duration,
    /// Cut the connection after this many chunks (an aborted transfer).
    pub abort_after: Option<usize>,
}

impl Route {
    /// 200 with `body` in one chunk and `Content-Length`.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            chunks: vec![body.into()],
            header_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            abort_after: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Splits the body into `chunks`, sent `delay` apart (no `Content-Length`: chunked).
    pub fn chunked(mut self, chunks: Vec<Bytes>, delay: Duration) -> Self {
        self.chunks = chunks;
        self.chunk_delay = delay;
        self
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.header_delay = delay;
        self
    }

    /// Drops the connection after `n` chunks.
    pub fn abort_after(mut self, n: usize) -> Self {
        self.abort_after = Some(n);
        self
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// First value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    seen: Vec<SeenRequest>,
}

/// A running upstream. Routes match on the path alone (the query is recorded, not matched).
pub struct TestUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestUpstream {
    /// Starts on a free loopback port, on its own thread and runtime.
    pub fn start() -> Result<Self> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("bind the test upstream"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(io_err("set nonblocking"))?;
        let addr = std_listener
            .local_addr()
            .map_err(io_err("read the test upstream address"))?;
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread_state = Arc::clone(&state);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io_err("start the test upstream runtime"))?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                let accept = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        let state = Arc::clone(&thread_state);
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                answer(req, Arc::clone(&state))
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stop => {}
                }
            });
            runtime.shutdown_background();
        });
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets how `path` answers.
    pub fn route(&self, path: &str, route: Route) {
        self.lock().routes.insert(path.to_owned(), route);
    }

    /// Requests received whose path (without query) is `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|r| r.target.split('?').next() == Some(path))
            .count()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> std::result::Result<Response<ChannelBody>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let seen = SeenRequest {
        method: req.method().to_string(),
        target,
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let route = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.seen.push(seen);
        s.routes.get(&path).cloned()
    };
    let route = route.unwrap_or_else(|| Route::ok(Bytes::from_static(b"not found\n")).status(404));
    tokio::time::sleep(route.header_delay).await;
    let (tx, rx) = mpsc::channel(4);
    let mut builder = Response::builder().status(route.status);
    for (k, v) in &route.headers {
        builder = builder.header(k, v);
    }
    let whole_body = route.chunk_delay.is_zero() && route.abort_after.is_none();
    if whole_body {
        let len: usize = route.chunks.iter().map(Bytes::len).sum();
        builder = builder.header("content-length", len.to_string());
    }
    let chunks = route.chunks.clone();
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if route.abort_after == Some(i) {
                let _ = tx
                    .send(Err(HarnessError::Service("aborted by the test".into())))
                    .await;
                return;
            }
            if i > 0 {
                tokio::time::sleep(route.chunk_delay).await;
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if route.abort_after.is_some() {
            let _ = tx
                .send(Err(HarnessError::Service("aborted by the test".into())))
                .await;
        }
    });
    let body = ChannelBody { rx };
    Ok(builder
        .body(body)
        .unwrap_or_else(|_| Response::new(ChannelBody::empty())))
}

/// A body fed from a channel; an `Err` item aborts the connection.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes>>,
}

impl ChannelBody {
    fn empty() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self { rx }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = HarnessError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, HarnessError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}
