//! The route table is data: `tests/snapshots/routes.json` is generated from it and checked in,
//! so a change of routing shows up in review. Off CI a stale snapshot is rewritten (and the test
//! fails once); on CI it only fails.

use std::collections::BTreeSet;

#[test]
fn route_table_matches_snapshot() {
    let table = ganglion_app::route_table();
    let rendered = format!("{}\n", serde_json::to_string_pretty(&table).unwrap());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/snapshots/routes.json");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != rendered {
        if std::env::var_os("CI").is_none() {
            std::fs::write(&path, &rendered).unwrap();
        }
        panic!(
            "{} is stale; regenerated it (run `cargo test -p ganglion-app` and commit the diff)",
            path.display()
        );
    }
}

#[test]
fn every_route_is_registered_once_under_a_matrix_prefix() {
    let table = ganglion_app::route_table();
    let mut seen = BTreeSet::new();
    for route in &table {
        assert!(
            route.path.starts_with("/_matrix/") || route.path.starts_with("/.well-known/"),
            "{} {}",
            route.method,
            route.path
        );
        assert!(
            seen.insert((route.method.clone(), route.path.clone())),
            "duplicate {} {}",
            route.method,
            route.path
        );
    }
    assert!(table.iter().any(|route| route.path == "/_matrix/client/v3/sync"));
}

/// `deploy/generated/nginx.conf` is what `ganglion routes --format nginx` makes of the example
/// cluster beside it: a change of routing shows up there in review.
#[test]
fn example_nginx_config_matches_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/generated");
    let config = ganglion_config::Config::load(Some(&dir.join("cluster.toml"))).unwrap();
    let rendered = ganglion_app::nginx::nginx_config(&config, &ganglion_app::route_table()).unwrap();
    let path = dir.join("nginx.conf");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != rendered {
        if std::env::var_os("CI").is_none() {
            std::fs::write(&path, &rendered).unwrap();
        }
        panic!(
            "{} is stale; regenerated it (run `cargo test -p ganglion-app` and commit the diff)",
            path.display()
        );
    }
}

/// `deploy/generated/haproxy.cfg` is what `ganglion routes --format haproxy` makes of the same
/// example cluster.
#[test]
fn example_haproxy_config_matches_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/generated");
    let config = ganglion_config::Config::load(Some(&dir.join("cluster.toml"))).unwrap();
    let rendered = ganglion_app::haproxy::haproxy_config(&config, &ganglion_app::route_table()).unwrap();
    let path = dir.join("haproxy.cfg");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != rendered {
        if std::env::var_os("CI").is_none() {
            std::fs::write(&path, &rendered).unwrap();
        }
        panic!(
            "{} is stale; regenerated it (run `cargo test -p ganglion-app` and commit the diff)",
            path.display()
        );
    }
}
