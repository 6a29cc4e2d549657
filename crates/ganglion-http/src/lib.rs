//! The HTTP edge shared by every role: the route table type, the single mapping from
//! [`ErrorClass`] to Matrix errors, the JSON body and access-token extractors, rate limits,
//! CORS, and `serve`.
//!
//! Handlers live in the role crates; this crate knows nothing of storage or of the master.

mod auth;
mod error;
mod json;
mod ratelimit;
mod route;

pub use auth::{Auth, Authenticator, BoxFuture, MaybeAuth, Session, access_token};
pub use error::{MatrixError, MatrixResult};
pub use json::{MatrixJson, MatrixQuery, lenient};
pub use ratelimit::{RateLimiter, client_ip, forwarded_client};
pub use route::{Route, RouteInfo, router_from_routes, with_r0_aliases};

use std::{future::Future, io, net::SocketAddr};

use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on a bound listener until `shutdown` completes (tests bind port 0).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use axum::serve::ListenerExt as _;
    // A streamed body (media) goes out after its headers, in writes of its own: without
    // TCP_NODELAY, Nagle's algorithm holds each back until the client's delayed ACK (40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
