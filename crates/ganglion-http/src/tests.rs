use std::time::Duration;

use axum::{Json, body::Body, extract::Request};
use ganglion_config::{Bucket, RateLimitAction, RateLimitConfig};
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

fn app() -> axum::Router {
    let routes = vec![Route::<()>::post("/echo", EndpointClass::ClientWrite, echo)];
    router_from_routes(routes, 2048, None)
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
    let app = app();
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
async fn the_edge_limits_nothing() {
    let app = app();
    for _ in 0..500 {
        let (status, _) = call(&app, "POST", "/echo", "{\"name\": \"ok\"}").await;
        assert_eq!(status, StatusCode::OK);
    }
}

fn limiter(config: impl FnOnce(&mut RateLimitConfig)) -> RateLimiter {
    let mut limits = RateLimitConfig::uniform(Bucket { per_second: 0.5, burst: 2 });
    config(&mut limits);
    RateLimiter::new(&limits)
}

fn retry_after(result: Result<(), MatrixError>) -> Duration {
    match result.expect_err("limited").class {
        ErrorClass::LimitExceeded { retry_after } => retry_after,
        other => panic!("not a rate limit: {other:?}"),
    }
}

#[test]
fn actions_are_limited_per_user_and_per_action() {
    let limiter = limiter(|_| {});
    let (alice, bob) = ("@alice:example.org", "@bob:example.org");
    for _ in 0..2 {
        limiter.check_user(RateLimitAction::Message, alice).unwrap();
    }
    let wait = retry_after(limiter.check_user(RateLimitAction::Message, alice));
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(2), "{wait:?} for 0.5/s");
    // Another user, another action: their own buckets.
    limiter.check_user(RateLimitAction::Message, bob).unwrap();
    limiter.check_user(RateLimitAction::Joins, alice).unwrap();
    // Per address.
    let office: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    limiter.check_address(RateLimitAction::Registration, office).unwrap();
    limiter.check_address(RateLimitAction::Registration, office).unwrap();
    retry_after(limiter.check_address(RateLimitAction::Registration, office));
    let mapped: std::net::IpAddr = "::ffff:203.0.113.9".parse().unwrap();
    retry_after(limiter.check_address(RateLimitAction::Registration, mapped));
    limiter.check_address(RateLimitAction::Registration, "203.0.113.10".parse().unwrap()).unwrap();
}

#[test]
fn exempt_users_and_addresses_are_never_limited() {
    let limiter = limiter(|limits| {
        limits.exempt_users = vec!["@bridge:example.org".to_owned()];
        limits.exempt_addresses = vec!["10.0.0.0/8".parse().unwrap()];
    });
    for _ in 0..50 {
        limiter.check_user(RateLimitAction::Message, "@bridge:example.org").unwrap();
        limiter
            .check_on_behalf_of(RateLimitAction::InvitesPerRoom, "!room:x", "@bridge:example.org")
            .unwrap();
        limiter.check_address(RateLimitAction::LoginAddress, "10.2.3.4".parse().unwrap()).unwrap();
    }
    retry_after((0..3).try_for_each(|_| limiter.check_user(RateLimitAction::Message, "@alice:example.org")));
    retry_after(
        (0..3).try_for_each(|_| {
            limiter.check_address(RateLimitAction::LoginAddress, "11.2.3.4".parse().unwrap())
        }),
    );
}

#[test]
fn failed_logins_lock_the_account_and_the_address() {
    let limiter = limiter(|limits| limits.login_failed_attempts_address.burst = 4);
    let (alice, bob, carol) = ("@alice:example.org", "@bob:example.org", "@carol:example.org");
    let (home, other): (std::net::IpAddr, std::net::IpAddr) =
        ("198.51.100.1".parse().unwrap(), "198.51.100.2".parse().unwrap());
    // Checking does not count: only failures do.
    for _ in 0..10 {
        limiter.check_failed_logins(alice, home).unwrap();
    }
    limiter.record_failed_login(alice, home);
    limiter.record_failed_login(alice, home);
    // Per account: from any address, even before the password is checked.
    retry_after(limiter.check_failed_logins(alice, other));
    limiter.check_failed_logins(bob, home).unwrap();
    // Per address: failures spread over accounts.
    limiter.record_failed_login(bob, home);
    limiter.record_failed_login(carol, home);
    retry_after(limiter.check_failed_logins("@dave:example.org", home));
    limiter.check_failed_logins("@dave:example.org", other).unwrap();
}

#[test]
fn disabled_limits_limit_nothing() {
    let limiter = limiter(|limits| limits.enabled = false);
    for _ in 0..10 {
        limiter.check_user(RateLimitAction::Message, "@alice:example.org").unwrap();
        limiter.record_failed_login("@alice:example.org", "198.51.100.1".parse().unwrap());
    }
    limiter.check_failed_logins("@alice:example.org", "198.51.100.1".parse().unwrap()).unwrap();
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
        ErrorClass::InvalidSignature,
        ErrorClass::MissingToken,
        ErrorClass::UnknownToken,
        ErrorClass::WrongRoomKeysVersion { current_version: "1".to_owned() },
    ];
    for class in classes {
        let (status, errcode) = MatrixError::status_and_errcode(&class);
        assert!(status.is_client_error(), "{class:?}");
        assert!(errcode.starts_with("M_"));
    }
}

#[tokio::test]
async fn a_wrong_room_keys_version_names_the_current_one() {
    use axum::response::IntoResponse;
    let class = ErrorClass::WrongRoomKeysVersion { current_version: "42".to_owned() };
    let response = MatrixError::new(class, "Wrong backup version.").into_response();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        body,
        json!({
            "errcode": "M_WRONG_ROOM_KEYS_VERSION",
            "error": "Wrong backup version.",
            "current_version": "42",
        })
    );
}

fn client_of(peer: &str, forwarded_for: &[&str], real_ip: Option<&str>, trusted: &[&str]) -> String {
    let mut headers = http::HeaderMap::new();
    for value in forwarded_for {
        headers.append("x-forwarded-for", value.parse().unwrap());
    }
    if let Some(real_ip) = real_ip {
        headers.insert("x-real-ip", real_ip.parse().unwrap());
    }
    let trusted: Vec<ganglion_config::AddressRange> = trusted.iter().map(|t| t.parse().unwrap()).collect();
    forwarded_client(peer.parse().unwrap(), &headers, &trusted).to_string()
}

#[test]
fn only_trusted_proxies_name_the_client() {
    // No trusted proxy (the production default): headers change nothing, from loopback too.
    assert_eq!(client_of("127.0.0.1", &["6.6.6.6"], Some("7.7.7.7"), &[]), "127.0.0.1");
    // A peer that is not a trusted proxy.
    assert_eq!(client_of("203.0.113.5", &["6.6.6.6"], None, &["10.0.0.2"]), "203.0.113.5");
    // The right-most hop that is not a proxy; what the client forged further left is ignored.
    assert_eq!(client_of("10.0.0.2", &["6.6.6.6, 203.0.113.5"], None, &["10.0.0.2"]), "203.0.113.5");
    assert_eq!(
        client_of("10.0.0.2", &["6.6.6.6, 203.0.113.5, 10.0.0.3"], Some("10.0.0.3"), &["10.0.0.0/24"]),
        "203.0.113.5"
    );
    assert_eq!(client_of("10.0.0.2", &["6.6.6.6", "203.0.113.5:4711"], None, &["10.0.0.2"]), "203.0.113.5");
    // X-Real-IP only without X-Forwarded-For, and only from a trusted proxy.
    assert_eq!(client_of("10.0.0.2", &[], Some("203.0.113.7"), &["10.0.0.2"]), "203.0.113.7");
    assert_eq!(client_of("::ffff:10.0.0.2", &["203.0.113.8"], None, &["10.0.0.2"]), "203.0.113.8");
    // A broken chain: the nearest hop that could be read.
    assert_eq!(client_of("10.0.0.2", &["203.0.113.5, junk"], None, &["10.0.0.2"]), "10.0.0.2");
    // Every hop a proxy: the left-most.
    assert_eq!(client_of("10.0.0.2", &["10.0.0.3"], None, &["10.0.0.0/24"]), "10.0.0.3");
}
