//! The generated nginx config, run by a real nginx in front of fake instances that only say who
//! they are: every route of the table reaches a role that serves its class, `/sync` sticks to
//! one worker per access token, and unknown paths reach a client-reader. No database involved.

mod common;

use common::{Proxy, concrete, fake_cluster};
use ganglion_app::{nginx::nginx_config, route_table};
use ganglion_http::RouteInfo;
use ganglion_testkit::Nginx;

/// A master, two sync workers and two client-readers (fake, on loopback) behind nginx, which
/// runs the config generated from `routes`.
async fn proxy(routes: &[RouteInfo]) -> Proxy<Nginx> {
    let config = fake_cluster().await;
    let nginx = Nginx::start(&nginx_config(&config, routes).unwrap()).unwrap();
    Proxy::new(config, nginx.base_url(), nginx)
}

#[tokio::test]
async fn every_route_reaches_a_role_that_serves_its_class() {
    let routes = route_table();
    common::every_route_reaches_a_role_that_serves_its_class(&proxy(&routes).await, &routes).await;
}

#[tokio::test]
async fn sync_sticks_to_one_worker_per_access_token() {
    common::sync_sticks_to_one_worker_per_access_token(&proxy(&route_table()).await).await;
}

#[tokio::test]
async fn a_path_whose_methods_need_different_roles_is_routed_by_method() {
    common::a_path_whose_methods_need_different_roles_is_routed_by_method(proxy).await;
}

/// Bodies nginx spools to its temp dir (over 16 KiB) pass, up to `http.max_body_bytes`.
#[tokio::test]
async fn bodies_pass_up_to_max_body_bytes() {
    let proxy = proxy(&route_table()).await;
    let url = format!(
        "{}{}",
        proxy.base_url,
        concrete("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}")
    );
    let max = proxy.config.http.max_body_bytes;
    for (size, status) in [(64 * 1024, 200), (max, 200), (max + 1, 413)] {
        let response = proxy.client.put(&url).body(vec![b' '; size]).send().await.unwrap();
        assert_eq!(response.status(), status, "{size} bytes");
        if status == 413 {
            // nginx's own answer, as the server's would be: uncacheable and readable by a
            // browser client on another origin.
            assert_eq!(response.headers()["cache-control"], "no-store");
            assert_eq!(response.headers()["access-control-allow-origin"], "*");
            let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(body["errcode"], "M_TOO_LARGE");
        }
    }
}
