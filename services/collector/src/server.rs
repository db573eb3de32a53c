//! The HTTP listener: hyper's HTTP/1 connection driver under our own accept loop, so the edge bounds
//! what `axum::serve` leaves open: the time a client may take to send a request head, how long an
//! unused keep-alive connection stays, and how many connections are open at once.
//!
//! Connections over the cap are not accepted; they wait in the kernel's listen backlog (and the
//! client's connect times out if the backlog is full), so a flood cannot exhaust file descriptors.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// File descriptors kept free for everything that is not a client connection: broker sockets,
/// the admin port, the workspace file, logs.
const RESERVED_FDS: u64 = 256;

/// Bounds on client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

/// The connection metrics (a subset of [`Metrics`]).
#[derive(Clone)]
struct ConnMetrics {
    open: IntGauge,
    timeouts: IntCounterVec,
    accept_errors: IntCounter,
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting, lets requests in progress
/// finish, closes idle connections and returns once every connection is closed.
pub async fn run(
    app: Router,
    listener: TcpListener,
    limits: Limits,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let max = fit_to_fd_limit(limits.max_connections, open_file_limit());
    let permits = Arc::new(Semaphore::new(max as usize));
    let metrics = ConnMetrics {
        open: metrics.connections_open.clone(),
        timeouts: metrics.connection_timeouts.clone(),
        accept_errors: metrics.accept_errors.clone(),
    };
    loop {
        // Take a slot before accepting: at the cap, new connections queue in the backlog.
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: the connection stays in the backlog and
                    // accept would fail again at once, so back off instead of spinning.
                    metrics.accept_errors.inc();
                    tracing::warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            metrics.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    // Every connection holds a permit until it closes: all of them back means all closed.
    let _all_closed = permits.acquire_many(max).await;
    Ok(())
}

/// `configured`, lowered when the process may not open that many files (with a warning).
fn fit_to_fd_limit(configured: u32, fd_limit: Option<u64>) -> u32 {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let fits = u32::try_from(limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(u32::MAX);
    if configured > fits {
        tracing::warn!(
            configured,
            used = fits,
            open_file_limit = limit,
            "CDP_MAX_CONNECTIONS exceeds the open-file limit; lowered to fit (raise `ulimit -n` to allow more)"
        );
        return fits;
    }
    configured
}

/// The soft limit on open files (Linux; `None` elsewhere or when unlimited).
fn open_file_limit() -> Option<u64> {
    soft_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft `Max open files` of a `/proc/<pid>/limits` text.
fn soft_open_file_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Errors about one incoming connection (it went away before we took it), not about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    metrics: ConnMetrics,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _open = OpenGauge::inc(metrics.open);
    let clock = Arc::new(Mutex::new(Clock {
        phase: Phase::Head {
            since: Instant::now(),
            received: false,
        },
        reader: None,
    }));
    let io = TokioIo::new(TimedIo {
        stream,
        clock: clock.clone(),
        limits,
        sleep: Box::pin(tokio::time::sleep(limits.header_timeout)),
        armed: None,
        timed_out: false,
        timeouts: metrics.timeouts,
    });
    let service = hyper::service::service_fn({
        let clock = clock.clone();
        move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::enter(&clock);
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await;
                drop(busy);
                resp
            }
        }
    });
    let conn = http1::Builder::new()
        // The timeouts are TimedIo's: hyper's header timeout also counts idle keep-alive time.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        // The connection first, so bytes already received count before the shutdown check.
        biased;
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            if lock(&clock).phase.is_unused() {
                return; // nothing started on it: close now rather than wait for a request
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Counts a connection in `cdp_collector_http_connections_open` while it lives.
struct OpenGauge(IntGauge);

impl OpenGauge {
    fn inc(gauge: IntGauge) -> OpenGauge {
        gauge.inc();
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a connection is doing, for its timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head: since the connection opened (first request) or since the first
    /// byte of the next one arrived.
    Head { since: Instant, received: bool },
    /// Requests in progress; their bodies have `CDP_BODY_TIMEOUT_MS`, the broker its own timeout.
    Busy(usize),
    /// Keep-alive: the last response went out at `since` and nothing has arrived since.
    Idle { since: Instant },
}

impl Phase {
    /// When the connection is to be closed, and which timeout that would be.
    fn deadline(self, limits: &Limits) -> Option<(Instant, &'static str)> {
        match self {
            Phase::Head { since, .. } => Some((since + limits.header_timeout, "header")),
            Phase::Idle { since } => Some((since + limits.idle_timeout, "idle")),
            Phase::Busy(_) => None,
        }
    }

    fn bytes_arrived(&mut self) {
        match self {
            Phase::Idle { .. } => {
                *self = Phase::Head {
                    since: Instant::now(),
                    received: true,
                }
            }
            Phase::Head { received, .. } => *received = true,
            Phase::Busy(_) => {}
        }
    }

    /// True when closing the connection cannot cut a request short.
    fn is_unused(self) -> bool {
        matches!(
            self,
            Phase::Idle { .. }
                | Phase::Head {
                    received: false,
                    ..
                }
        )
    }
}

/// A connection's phase, shared by its socket and its requests.
struct Clock {
    phase: Phase,
    /// The task last told that the socket has nothing to read. hyper polls the socket again after
    /// a response only when it is woken, so the end of a request wakes it to arm the idle timeout.
    reader: Option<Waker>,
}

fn lock(clock: &Mutex<Clock>) -> std::sync::MutexGuard<'_, Clock> {
    clock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks a request in progress from the moment its head is parsed until its response is ready
/// (or the request is dropped).
struct Busy(Arc<Mutex<Clock>>);

impl Busy {
    fn enter(clock: &Arc<Mutex<Clock>>) -> Busy {
        let mut c = lock(clock);
        c.phase = match c.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        Busy(clock.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let reader = {
            let mut c = lock(&self.0);
            if let Phase::Busy(n @ 2..) = c.phase {
                c.phase = Phase::Busy(n - 1);
                return;
            }
            c.phase = Phase::Idle {
                since: Instant::now(),
            };
            c.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// The client socket with the header and idle timeouts. hyper reads whenever it waits for a
/// request head (and to notice a close while idle), so a read that stays pending past the current
/// deadline fails with `TimedOut` and hyper closes the connection.
struct TimedIo {
    stream: TcpStream,
    clock: Arc<Mutex<Clock>>,
    limits: Limits,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    timed_out: bool,
    timeouts: IntCounterVec,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    lock(&this.clock).phase.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let phase = {
                    let mut c = lock(&this.clock);
                    if !c.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        c.reader = Some(cx.waker().clone());
                    }
                    c.phase
                };
                let Some((deadline, reason)) = phase.deadline(&this.limits) else {
                    return Poll::Pending;
                };
                if this.armed != Some(deadline) {
                    this.sleep.as_mut().reset(deadline);
                    this.armed = Some(deadline);
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timeouts.with_label_values(&[reason]).inc();
                this.timed_out = true;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{reason} timeout"),
                )))
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_under_the_open_file_limit() {
        assert_eq!(fit_to_fd_limit(10_000, Some(1024)), 768);
        assert_eq!(fit_to_fd_limit(10_000, Some(100)), 1);
        assert_eq!(fit_to_fd_limit(500, Some(1_048_576)), 500);
        assert_eq!(fit_to_fd_limit(10_000, None), 10_000);
    }

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             127431               127431               processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_file_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_open_file_limit(unlimited), None);
        assert_eq!(soft_open_file_limit(""), None);
    }

    #[test]
    fn head_time_starts_with_the_connection_or_the_first_byte_after_idling() {
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1,
        };
        let opened = Instant::now();
        let mut phase = Phase::Head {
            since: opened,
            received: false,
        };
        assert!(phase.is_unused());
        phase.bytes_arrived();
        assert!(!phase.is_unused());
        assert_eq!(
            phase.deadline(&limits),
            Some((opened + limits.header_timeout, "header")),
            "a trickled head does not restart the clock"
        );
        assert_eq!(Phase::Busy(1).deadline(&limits), None);
        let idle_since = Instant::now();
        let mut phase = Phase::Idle { since: idle_since };
        assert!(phase.is_unused());
        assert_eq!(
            phase.deadline(&limits),
            Some((idle_since + limits.idle_timeout, "idle"))
        );
        phase.bytes_arrived();
        let Phase::Head { since, received } = phase else {
            panic!("{phase:?}")
        };
        assert!(received && since >= idle_since);
    }
}
