//! [`RemoteMaster`]: the master's services over gRPC, for workers in cluster mode.
//!
//! Every call carries a deadline and the caller's trace context. Only calls the master
//! recognises when repeated ([`Call::idempotent`]) are retried; any other call may have taken
//! effect even when its answer was lost. After a call, a worker's [`ReadYourWrites`] does what
//! the request asks ([`Call::after`]), once here for every call.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use ganglion_proto::master::v1::{self as pb, streams_client::StreamsClient};
use ganglion_types::{ErrorClass, SyncToken};
use tokio::time::Instant;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint, Uri},
};

use tracing::Instrument as _;

use super::{
    POSITIONS, TRACEPARENT, method_name,
    status::{error_from_status, invalid_answer, unavailable},
};
use crate::{AfterCall, Answer, Call, MasterResult, Streams, TypingSnapshot, trace};

/// Beyond this a master that does not accept connections counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idempotent calls get this many attempts within twice the call timeout.
const ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// What a worker does after its own calls, so the client's next read on this worker sees them.
#[async_trait]
pub trait ReadYourWrites: Send + Sync + 'static {
    /// Waits (bounded) until this worker's replication has reached `positions`.
    async fn reach(&self, positions: SyncToken);
    /// Drops this worker's cached sessions.
    fn forget_sessions(&self);
}

/// The master in another process, implementing every service. Cheap to share; one HTTP/2 connection carries every call.
#[derive(Debug, Clone)]
pub struct RemoteMaster {
    channel: Channel,
    timeout: Duration,
    worker: Option<Arc<dyn ReadYourWrites>>,
    metrics: Option<Arc<ganglion_metrics::GrpcMetrics>>,
}

impl std::fmt::Debug for dyn ReadYourWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadYourWrites")
    }
}

impl RemoteMaster {
    /// Connects lazily, so a master that is down (or not up yet) fails calls with `Unavailable`
    /// rather than the worker's start; the channel reconnects by itself when it comes back.
    /// Each call waits at most `timeout`. Must be called within a Tokio runtime.
    pub fn new(address: SocketAddr, timeout: Duration) -> RemoteMaster {
        // Rebuilt without an IPv6 scope id, which a URI cannot carry.
        let authority = SocketAddr::new(address.ip(), address.port()).to_string();
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/")
            .build()
            .expect("a socket address is a valid URI authority");
        let channel = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Pings find a dead master (or a silently dropped connection) between calls too.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        RemoteMaster { channel, timeout, worker: None, metrics: None }
    }

    /// The same master, its calls counted in `metrics`.
    pub fn counting_in(mut self, metrics: Arc<ganglion_metrics::GrpcMetrics>) -> RemoteMaster {
        self.metrics = Some(metrics);
        self
    }

    /// The same master, whose calls then wait for `worker`'s replication as each call asks.
    pub fn reading_own_writes(mut self, worker: Arc<dyn ReadYourWrites>) -> RemoteMaster {
        self.worker = Some(worker);
        self
    }

    /// Makes one call of any service: retried only when idempotent, then followed by what the
    /// request asks of this worker.
    pub(crate) async fn call<C: Call, Res, Fut>(
        &self,
        request: C,
        rpc: impl Fn(Channel, Request<C::Message>) -> Fut,
    ) -> MasterResult<Res>
    where
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        let after = request.after();
        let idempotent = request.idempotent();
        let message = request.into_message();
        let (answer, positions) = if idempotent {
            self.call_idempotent(message, rpc).await?
        } else {
            self.attempt(message, self.timeout, rpc).await?
        };
        if let Some(worker) = &self.worker {
            match after {
                AfterCall::Nothing => {}
                AfterCall::AwaitReplication => {
                    let positions = match positions {
                        Some(positions) => Some(positions),
                        None => self.positions().await.ok(),
                    };
                    if let Some(positions) = positions {
                        worker.reach(positions).await;
                    }
                }
                AfterCall::ForgetSessions => worker.forget_sessions(),
            }
        }
        Ok(answer)
    }

    /// Retries an idempotent call while the master is unavailable, within twice the timeout.
    async fn call_idempotent<Req: Clone, Res, Fut>(
        &self,
        message: Req,
        rpc: impl Fn(Channel, Request<Req>) -> Fut,
    ) -> MasterResult<(Res, Option<SyncToken>)>
    where
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        let deadline = Instant::now() + 2 * self.timeout;
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.attempt(message.clone(), self.timeout.min(remaining), &rpc).await {
                Err(error) if error.class == ErrorClass::Unavailable && attempt < ATTEMPTS => {
                    let backoff = RETRY_BACKOFF * attempt;
                    if Instant::now() + backoff >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn attempt<Req, Res, Fut>(
        &self,
        message: Req,
        timeout: Duration,
        rpc: impl FnOnce(Channel, Request<Req>) -> Fut,
    ) -> MasterResult<(Res, Option<SyncToken>)>
    where
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        let mut request = Request::new(message);
        // Sent as grpc-timeout, so the master stops working on a call nobody waits for.
        request.set_timeout(timeout);
        // Exported, the call is a span of its own, the master's a child of it.
        let span = if ganglion_telemetry::exporting() {
            let method = method_name::<Req>();
            tracing::info_span!(
                "grpc.client",
                otel.name = method,
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.method = method
            )
        } else {
            tracing::Span::none()
        };
        let traceparent = ganglion_telemetry::traceparent(&span).unwrap_or_else(|| {
            trace::current().map_or_else(trace::new_traceparent, |parent| trace::child_of(&parent))
        });
        if let Ok(value) = traceparent.parse() {
            request.metadata_mut().insert(TRACEPARENT, value);
        }
        let started = Instant::now();
        // grpc-timeout bounds the call once connected; this also bounds connecting.
        let outcome =
            tokio::time::timeout(timeout, rpc(self.channel.clone(), request)).instrument(span).await;
        if let Some(metrics) = &self.metrics {
            metrics.observe(method_name::<Req>(), matches!(outcome, Ok(Ok(_))), started.elapsed());
        }
        match outcome {
            Ok(Ok(response)) => {
                let positions = response
                    .metadata()
                    .get(POSITIONS)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| SyncToken::parse(value).ok());
                Ok((response.into_inner(), positions))
            }
            Ok(Err(status)) => Err(error_from_status(&status)),
            Err(_elapsed) => Err(unavailable()),
        }
    }
}

#[async_trait]
impl Streams for RemoteMaster {
    async fn positions(&self) -> MasterResult<SyncToken> {
        let (answer, _) = self
            .attempt(pb::PositionsRequest {}, self.timeout, |channel, request| async move {
                StreamsClient::new(channel).positions(request).await
            })
            .await?;
        SyncToken::from_message(answer).map_err(invalid_answer)
    }

    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot> {
        let (answer, _) = self
            .attempt(pb::TypingSnapshotRequest {}, self.timeout, |channel, request| async move {
                StreamsClient::new(channel).typing_snapshot(request).await
            })
            .await?;
        TypingSnapshot::from_message(answer).map_err(invalid_answer)
    }
}
