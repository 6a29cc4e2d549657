use std::{sync::Arc, time::Duration};

use axum::{Json, body::Body, extract::Request};
use ganglion_config::{Bucket, RateLimitConfig};
use ganglion_types::{EndpointClass, ErrorClass};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

#[derive(Deserialize)]
struct Body1 {
    #[allow(dead_code)]
    name: String,
}

async fn echo(MatrixJson(body): MatrixJson<Body1>) -> Json<Value> {
    let _ = body;
    Json(json!({}))
}

fn limiter(per_ip_burst: u32) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(&RateLimitConfig {
        enabled: true,
        per_user: Bucket { per_second: 1.0, burst: 5 },
        per_ip: Bucket { per_second: 1.0, burst: per_ip_burst },
        login: Bucket { per_second: 1.0, burst: 5 },
    }))
}

fn app(per_ip_burst: u32) -> axum::Router {
    let routes = vec![Route::<()>::post("/echo", EndpointClass::ClientWrite, echo)];
    router_from_routes(routes, limiter(per_ip_burst), 2048)
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: &'static str) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(uri).body(Body::from(body)).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn edge_errors_are_matrix_errors() {
    let app = app(100);
    let (status, body) = call(&app, "POST", "/echo", "{not json").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_NOT_JSON")));
    let (status, body) = call(&app, "POST", "/echo", "{\"name\": 5}").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")));
    let (status, body) = call(&app, "POST", "/nowhere", "").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED")));
    let (status, body) = call(&app, "GET", "/echo", "").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("M_UNRECOGNIZED")));
    let big: &'static str = Box::leak(format!("{{\"name\": \"{}\"}}", "x".repeat(4096)).into_boxed_str());
    let (status, body) = call(&app, "POST", "/echo", big).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE")));
    let (status, _) = call(&app, "POST", "/echo", "{\"name\": \"ok\"}").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn per_ip_limit_answers_429_with_retry_after() {
    let app = app(2);
    for _ in 0..2 {
        let (status, _) = call(&app, "POST", "/echo", "{\"name\": \"ok\"}").await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = call(&app, "POST", "/echo", "{\"name\": \"ok\"}").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
}

#[test]
fn every_error_class_maps_to_an_errcode() {
    let classes = [
        ErrorClass::Forbidden,
        ErrorClass::NotFound,
        ErrorClass::NotJson,
        ErrorClass::BadJson,
        ErrorClass::LimitExceeded { retry_after: Duration::from_secs(1) },
        ErrorClass::TooLarge,
        ErrorClass::Unrecognized,
        ErrorClass::MethodNotAllowed,
        ErrorClass::ServerManaged,
        ErrorClass::MissingToken,
        ErrorClass::UnknownToken,
    ];
    for class in classes {
        let (status, errcode) = MatrixError::status_and_errcode(&class);
        assert!(status.is_client_error(), "{class:?}");
        assert!(errcode.starts_with("M_"));
    }
}
