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
pub use json::{AtTimestamp, MatrixJson, MatrixQuery, lenient};
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

/// Serves `app` over TLS on `listener` until `shutdown` completes. Handshakes run concurrently,
/// each bounded in time, so a slow or broken client never holds up the others.
pub async fn serve_tls(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (handshaken, incoming) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "accepting a TLS connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, handshaken) = (acceptor.clone(), handshaken.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = handshaken.send((stream, peer)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    let listener = TlsListener { incoming, local_addr };
    // Handlers read the peer as `ConnectInfo<SocketAddr>`, as on the plain listener.
    let app = app.layer(axum::middleware::from_fn(
        |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
            if let Some(axum::extract::ConnectInfo(TlsPeer(peer))) = request.extensions().get().copied() {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            }
            next.run(request).await
        },
    ));
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<TlsPeer>())
        .with_graceful_shutdown(shutdown)
        .await;
    accepting.abort();
    served
}

/// The peer of a TLS connection.
#[derive(Clone, Copy)]
struct TlsPeer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> TlsPeer {
        TlsPeer(*stream.remote_addr())
    }
}

const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections whose TLS handshake completed.
struct TlsListener {
    incoming:
        tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // The accepting task ends only with the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}
