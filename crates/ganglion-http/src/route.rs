//! The route table: every endpoint is one `Route` with its method, path, endpoint class and
//! handler. The HTTP router and the load balancer configs are built from the same list.

use std::{borrow::Cow, collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::Request,
    handler::Handler,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use ganglion_types::{EndpointClass, ErrorClass};

use http::{HeaderValue, Method, StatusCode, header};
use serde::Serialize;

use crate::MatrixError;

pub struct Route<S> {
    pub method: Method,
    pub path: Cow<'static, str>,
    pub class: EndpointClass,
    pub handler: MethodRouter<S>,
    /// The handler reads its body as a stream and bounds it itself (uploads): `http.max_body_bytes`
    /// does not apply, and load balancers pass the body on as it arrives.
    pub streams_body: bool,
}

/// A route without its handler, for printing and for load balancer configs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteInfo {
    pub method: String,
    pub path: String,
    pub class: EndpointClass,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub streams_body: bool,
}

macro_rules! constructor {
    ($name:ident, $method:ident, $filter:ident) => {
        pub fn $name<H, T>(path: &'static str, class: EndpointClass, handler: H) -> Route<S>
        where
            H: Handler<T, S>,
            T: 'static,
        {
            Route {
                method: Method::$method,
                path: Cow::Borrowed(path),
                class,
                handler: on(MethodFilter::$filter, handler),
                streams_body: false,
            }
        }
    };
}

impl<S: Clone + Send + Sync + 'static> Route<S> {
    constructor!(get, GET, GET);
    constructor!(put, PUT, PUT);
    constructor!(post, POST, POST);
    constructor!(delete, DELETE, DELETE);

    /// Marks the route as streaming its body (see [`Route::streams_body`]).
    pub fn streaming_body(mut self) -> Route<S> {
        self.streams_body = true;
        self
    }

    /// Supplies the handler's state, producing a route of the app's router.
    pub fn with_state(self, state: S) -> Route<()> {
        Route {
            method: self.method,
            path: self.path,
            class: self.class,
            handler: self.handler.with_state(state),
            streams_body: self.streams_body,
        }
    }

    pub fn info(&self) -> RouteInfo {
        RouteInfo {
            method: self.method.to_string(),
            path: self.path.clone().into_owned(),
            class: self.class,
            streams_body: self.streams_body,
        }
    }
}

/// The client-server API's version prefix before v1.1 renamed `r0` to `v3`.
const V3_PREFIX: &str = "/_matrix/client/v3/";
const R0_PREFIX: &str = "/_matrix/client/r0/";

/// `v3` endpoints that the spec added after r0.6.1: they have no `r0` form. Every other `v3`
/// path existed in `r0` with the same semantics.
const NOT_IN_R0: [&str; 7] = [
    "/_matrix/client/v3/knock/",
    "/_matrix/client/v3/refresh",
    "/_matrix/client/v3/login/get_token",
    "/_matrix/client/v3/keys/device_signing/",
    "/_matrix/client/v3/keys/signatures/",
    "/_matrix/client/v3/rooms/{roomId}/report",
    "/_matrix/client/v3/users/{userId}/report",
];

/// Adds the `r0` form of every `v3` route that existed in r0, with the same class and handler.
/// Clients, bots and bridges still call `r0`; the aliases come from the table itself, so the
/// router and the load balancer config follow it without a second list.
pub fn with_r0_aliases<S: Clone>(mut routes: Vec<Route<S>>) -> Vec<Route<S>> {
    let aliases: Vec<Route<S>> = routes
        .iter()
        .filter_map(|route| {
            let rest = route.path.strip_prefix(V3_PREFIX)?;
            if NOT_IN_R0.iter().any(|newer| route.path.starts_with(newer)) {
                return None;
            }
            Some(Route {
                method: route.method.clone(),
                path: Cow::Owned(format!("{R0_PREFIX}{rest}")),
                class: route.class,
                handler: route.handler.clone(),
                streams_body: route.streams_body,
            })
        })
        .collect();
    routes.extend(aliases);
    routes
}

/// Builds the router: routes of one path merge into one method router; unknown paths answer
/// 404 and known paths with another method 405, both `M_UNRECOGNIZED`; CORS headers on every
/// response; any plain-text error from the framework is rewritten as a Matrix error. Rate limits
/// are the handlers' (per action), never the edge's: reads from many users behind one address
/// must not throttle each other.
pub fn router_from_routes(
    routes: Vec<Route<()>>,
    max_body_bytes: usize,
    metrics: Option<Arc<ganglion_metrics::HttpMetrics>>,
) -> Router {
    let mut by_path: BTreeMap<Cow<'static, str>, MethodRouter<()>> = BTreeMap::new();
    for route in routes {
        let (class, method) = (route.class.as_str(), method_name(&route.method));
        // Each route's body limit applies before its handler runs; a streaming handler bounds
        // its body itself.
        let handler = if route.streams_body {
            route.handler.layer(axum::extract::DefaultBodyLimit::disable())
        } else {
            route.handler.layer(axum::extract::DefaultBodyLimit::max(max_body_bytes)).layer(
                middleware::from_fn(move |request: Request, next: Next| async move {
                    if content_length(&request).is_some_and(|length| length > max_body_bytes as u64) {
                        return MatrixError::new(ErrorClass::TooLarge, "Request body too large")
                            .into_response();
                    }
                    next.run(request).await
                }),
            )
        };
        // Each route counts its own requests (refusals of its body included), labelled with
        // what it was registered as, so the label set stays bounded.
        let handler = match &metrics {
            Some(metrics) => {
                let metrics = Arc::new(metrics.route(class, route.path.clone(), method));
                handler.layer(middleware::from_fn(move |request: Request, next: Next| {
                    let metrics = metrics.clone();
                    async move {
                        let started = std::time::Instant::now();
                        let response = next.run(request).await;
                        metrics.observe(response.status().as_u16(), started.elapsed());
                        response
                    }
                }))
            }
            None => handler,
        };
        let merged = match by_path.remove(&route.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(route.path, merged);
    }
    let mut router = Router::new();
    for (path, method_router) in by_path {
        router = router.route(&path, method_router.fallback(method_not_allowed));
    }
    router.fallback(unrecognized).layer(middleware::from_fn(edge))
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized()
}

async fn method_not_allowed() -> MatrixError {
    MatrixError::new(ErrorClass::MethodNotAllowed, "Unrecognized request: method not allowed")
}

async fn edge(request: Request, next: Next) -> Response {
    let cacheable = request.uri().path().starts_with("/.well-known/");
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        matrixify(next.run(request).await).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    // Answers carry tokens, messages and account data: no browser or proxy may keep them.
    // Discovery documents are the same for everyone and may be cached for a while.
    if !headers.contains_key(header::CACHE_CONTROL) {
        let policy = if cacheable { "public, max-age=3600" } else { "no-store" };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    response
}

fn content_length(request: &Request) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Turns a non-JSON error response (an extractor rejection from the framework) into a Matrix
/// error with the same status.
async fn matrixify(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&body).into_owned();
    let class = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorClass::TooLarge,
        StatusCode::METHOD_NOT_ALLOWED => ErrorClass::MethodNotAllowed,
        StatusCode::NOT_FOUND => ErrorClass::Unrecognized,
        StatusCode::UNAUTHORIZED => ErrorClass::MissingToken,
        StatusCode::FORBIDDEN => ErrorClass::Forbidden,
        status if status.is_server_error() => ErrorClass::Internal,
        _ => ErrorClass::InvalidParam,
    };
    let mut response = MatrixError::new(class, message).into_response();
    *response.status_mut() = status;
    response
}
