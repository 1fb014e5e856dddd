//! Closed-loop HTTP/1.1 load: each of N keep-alive connections sends GET, reads the whole
//! body, and sends the next, until the duration ends. A broken connection is re-opened.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::{Recorder, Summary};

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// `Host` header.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Runs `plan` and summarises it.
pub async fn run(plan: LoadPlan) -> Summary {
    let start = Instant::now();
    let deadline = start + plan.duration;
    let workers: Vec<_> = (0..plan.connections)
        .map(|_| tokio::spawn(worker(plan.clone(), deadline)))
        .collect();
    let mut total = Recorder::default();
    for w in workers {
        match w.await {
            Ok(recorder) => total.merge(recorder),
            Err(e) => total.error(format!("worker panicked: {e}")),
        }
    }
    total.summarise(start.elapsed())
}

async fn worker(plan: LoadPlan, deadline: Instant) -> Recorder {
    let mut rec = Recorder::default();
    while Instant::now() < deadline {
        let stream = match TcpStream::connect(plan.addr).await {
            Ok(s) => s,
            Err(e) => {
                rec.error(format!("connect: {}", e.kind()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(e) => {
                    rec.error(format!("handshake: {e}"));
                    continue;
                }
            };
        let driver = tokio::spawn(conn);
        while Instant::now() < deadline {
            let request = match Request::get(&plan.path)
                .header(hyper::header::HOST, &plan.host)
                .body(Empty::<Bytes>::new())
            {
                Ok(r) => r,
                Err(e) => {
                    rec.error(format!("request: {e}"));
                    return rec;
                }
            };
            let sent = Instant::now();
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let keep_alive = response
                    .headers()
                    .get(hyper::header::CONNECTION)
                    .is_none_or(|v| v != "close");
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body.len() as u64, keep_alive))
            };
            match tokio::time::timeout(plan.timeout, exchange).await {
                Ok(Ok((status, bytes, keep_alive))) => {
                    rec.response(status, sent.elapsed(), bytes);
                    if !keep_alive {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    rec.error(if e.is_incomplete_message() {
                        "connection closed".into()
                    } else {
                        format!("http: {e}")
                    });
                    break;
                }
                Err(_) => {
                    rec.error("timeout");
                    break;
                }
            }
        }
        driver.abort();
    }
    rec
}
