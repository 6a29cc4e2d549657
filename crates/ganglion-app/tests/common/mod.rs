//! What the load balancer tests (`nginx.rs`, `haproxy.rs`) share: a cluster config of fake
//! instances that only say who they are, requests that report which instance answered, a
//! realistic concrete path for each route path of the table, and the checks both proxies pass.

use std::{collections::BTreeSet, time::Duration};

use axum::{
    Router,
    http::{HeaderMap, Uri},
};
use ganglion_config::{Config, InstanceConfig};
use ganglion_http::RouteInfo;
use ganglion_testkit::{enc, free_port};
use ganglion_types::{EndpointClass, Role};
use reqwest::Method;

/// The config of a master, two sync workers, two client-readers, two media workers and a federation
/// reader (fake, on loopback), with the load balancer on a free loopback port.
pub async fn fake_cluster() -> Config {
    let mut config = Config::production_default();
    for (name, role) in [
        ("master", Role::Master),
        ("sync1", Role::Sync),
        ("sync2", Role::Sync),
        ("reader1", Role::ClientReader),
        ("reader2", Role::ClientReader),
        ("media1", Role::Media),
        ("media2", Role::Media),
        ("federation1", Role::FederationReader),
    ] {
        config.instance_map.insert(name.into(), fake_instance(name, role).await);
    }
    config.load_balancer.listen = ([127, 0, 0, 1], free_port()).into();
    config
}

/// An HTTP server answering every request 200 with `X-Ganglion-Instance: <role>/<name>` and, as
/// the body, the forwarding headers it was sent (`{"x-forwarded-for": [...], ...}`); after
/// `delay_ms` milliseconds if the query says so, as a long-poll would.
pub async fn fake_instance(name: &str, role: Role) -> InstanceConfig {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let instance = format!("{}/{name}", role.as_str());
    // Reads the whole body before answering, as a real worker does: answering first makes
    // the proxy see the connection close mid-upload (502).
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, _body: axum::body::Bytes| {
        let instance = instance.clone();
        async move {
            let delay = uri.query().unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("delay_ms="));
            if let Some(delay) = delay {
                tokio::time::sleep(Duration::from_millis(delay.parse().unwrap())).await;
            }
            let mut forwarded = serde_json::Map::new();
            for name in ["x-forwarded-for", "x-real-ip", "x-forwarded-proto"] {
                let values = headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("").into()).collect();
                forwarded.insert(name.into(), serde_json::Value::Array(values));
            }
            ([("x-ganglion-instance", instance)], serde_json::Value::Object(forwarded).to_string())
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    InstanceConfig { role, http, grpc: (role == Role::Master).then_some(http), metrics: None }
}

/// A running load balancer (`P` keeps it alive) in front of the instances of `config`.
pub struct Proxy<P> {
    pub config: Config,
    /// `http://127.0.0.1:PORT`, where the load balancer listens.
    pub base_url: String,
    pub client: reqwest::Client,
    _running: P,
}

impl<P> Proxy<P> {
    pub fn new(config: Config, base_url: String, running: P) -> Proxy<P> {
        Proxy { config, base_url, client: reqwest::Client::new(), _running: running }
    }

    /// The `role/name` of the instance that answered `method path` (sent with `token`, if any).
    pub async fn instance(&self, method: &str, path: &str, token: Option<&str>) -> String {
        self.answer(method, path, token).await.0
    }

    /// [`Proxy::instance`] and the body the instance answered.
    pub async fn answer(&self, method: &str, path: &str, token: Option<&str>) -> (String, serde_json::Value) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if method == Method::PUT || method == Method::POST {
            request = request.header("content-type", "application/json").body("{}");
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let instance = response.headers()["x-ganglion-instance"].to_str().unwrap().to_owned();
        // The header names the instance truthfully: its role is the one in the instance map.
        let (role, name) = instance.split_once('/').unwrap();
        assert_eq!(self.config.instance_map[name].role.as_str(), role, "{instance}");
        let text = response.text().await.unwrap();
        // HEAD has no body.
        let body =
            if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text).unwrap() };
        (instance, body)
    }

    pub fn role_of(&self, instance: &str) -> Role {
        self.config.instance_map[instance.split_once('/').unwrap().1].role
    }
}

/// `path` with each `{param}` replaced by a realistic, percent-encoded value.
pub fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None => segment.to_owned(),
            Some(param) => enc(match param {
                "roomId" | "roomIdOrAlias" => "!room:example.org",
                "roomAlias" => "#alias:example.org",
                "userId" | "stateKey" => "@alice:example.org",
                "eventId" => "$event:example.org",
                "eventType" => "m.room.member",
                "type" => "m.direct",
                "txnId" => "txn1",
                "deviceId" => "DEVICEID",
                "filterId" => "1",
                "kind" => "override",
                "ruleId" => ".m.rule.master",
                "receiptType" => "m.read",
                "id" => "some-id",
                "version" => "1",
                "sessionId" => "sessionid1",
                "serverName" => "example.org",
                "mediaId" => "AbCdEf123",
                "fileName" => "cat.png",
                "protocol" => "irc",
                "tag" => "m.favourite",
                "relType" => "m.thread",
                other => panic!("no example value for {{{other}}} in {path}: add one"),
            }),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route of `routes` (sent to `proxy`, which runs the config generated from them) reaches a
/// role that serves its class; unknown paths reach a client-reader.
pub async fn every_route_reaches_a_role_that_serves_its_class<P>(proxy: &Proxy<P>, routes: &[RouteInfo]) {
    for route in routes {
        let instance = proxy.instance(&route.method, &concrete(&route.path), Some("token")).await;
        assert!(
            proxy.role_of(&instance).serves(route.class),
            "{} {} ({}) went to {instance}",
            route.method,
            route.path,
            route.class.as_str()
        );
    }
    for path in ["/_matrix/client/v3/no_such_endpoint", "/_matrix/client/v3/sync/extra", "/elsewhere"] {
        let instance = proxy.instance("GET", path, Some("token")).await;
        assert_eq!(proxy.role_of(&instance), Role::ClientReader, "{path} went to {instance}");
    }
}

/// `/sync` and reads stick to one worker per access token (header or query parameter), the
/// tokens spread over both workers, and `/sync` without a token reaches a sync worker. Returns
/// the sync worker of `alice-token`.
pub async fn sync_sticks_to_one_worker_per_access_token<P>(proxy: &Proxy<P>) -> String {
    let sync = "/_matrix/client/v3/sync";
    let first = proxy.instance("GET", sync, Some("alice-token")).await;
    assert_eq!(proxy.role_of(&first), Role::Sync);
    for _ in 0..20 {
        assert_eq!(proxy.instance("GET", sync, Some("alice-token")).await, first);
        // The query parameter is the same token, so the same worker.
        assert_eq!(
            proxy.instance("GET", &format!("{sync}?access_token=alice-token&timeout=0"), None).await,
            first
        );
    }
    // Reads stick to one client-reader the same way.
    let messages = concrete("/_matrix/client/v3/rooms/{roomId}/messages");
    let reader = proxy.instance("GET", &messages, Some("alice-token")).await;
    for _ in 0..20 {
        assert_eq!(proxy.instance("GET", &messages, Some("alice-token")).await, reader);
    }

    let mut sync_workers = BTreeSet::new();
    let mut readers = BTreeSet::new();
    for user in 0..40 {
        let token = format!("token-of-user-{user}");
        sync_workers.insert(proxy.instance("GET", sync, Some(&token)).await);
        readers.insert(proxy.instance("GET", &messages, Some(&token)).await);
    }
    assert_eq!(sync_workers, BTreeSet::from(["sync/sync1".to_owned(), "sync/sync2".to_owned()]));
    assert_eq!(
        readers,
        BTreeSet::from(["client-reader/reader1".to_owned(), "client-reader/reader2".to_owned()])
    );

    // Without a token (a client's first, anonymous request) it still reaches a sync worker.
    assert_eq!(proxy.role_of(&proxy.instance("GET", sync, None).await), Role::Sync);
    first
}

/// No path of today's table mixes roles, but the config must route one by method if it does:
/// `start` runs the proxy with a config generated from such routes.
pub async fn a_path_whose_methods_need_different_roles_is_routed_by_method<P>(
    start: impl AsyncFn(&[RouteInfo]) -> Proxy<P>,
) {
    let path = "/_matrix/client/v3/mixed/{id}";
    let routes = [
        RouteInfo {
            method: "GET".into(),
            path: path.into(),
            class: EndpointClass::Sync,
            streams_body: false,
        },
        RouteInfo {
            method: "PUT".into(),
            path: path.into(),
            class: EndpointClass::ClientWrite,
            streams_body: false,
        },
    ];
    let proxy = start(&routes).await;
    let path = concrete(path);
    for (method, role) in [("GET", Role::Sync), ("HEAD", Role::Sync), ("PUT", Role::ClientReader)] {
        let instance = proxy.instance(method, &path, Some("token")).await;
        assert_eq!(proxy.role_of(&instance), role, "{method} went to {instance}");
    }
}
