//! Dependency rules between our crates (STYLE.md): role crates never depend on each other, and
//! the lower layers never reach up. Read from `cargo metadata`, so a new `[dependencies]` line
//! that breaks a rule fails here.

use std::{collections::BTreeMap, process::Command};

/// Crates that must not appear among a crate's normal dependencies.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("ganglion-master", &["ganglion-sync", "ganglion-client", "ganglion-http"]),
    ("ganglion-sync", &["ganglion-master", "ganglion-client"]),
    ("ganglion-client", &["ganglion-master", "ganglion-sync", "ganglion-federation-api"]),
    // Talking to other servers is a library the roles share; the federation API is a role crate.
    (
        "ganglion-federation",
        &[
            "ganglion-http",
            "ganglion-rpc",
            "ganglion-replication",
            "ganglion-master",
            "ganglion-client",
            "ganglion-sync",
            "ganglion-federation-api",
        ],
    ),
    (
        "ganglion-federation-api",
        &[
            "ganglion-master",
            "ganglion-sync",
            "ganglion-client",
            "ganglion-media",
            "ganglion-federation-sender",
        ],
    ),
    (
        "ganglion-federation-sender",
        &[
            "ganglion-master",
            "ganglion-sync",
            "ganglion-client",
            "ganglion-media",
            "ganglion-federation-api",
            "ganglion-http",
        ],
    ),
    (
        "ganglion-storage",
        &["ganglion-http", "ganglion-rpc", "ganglion-replication", "ganglion-state", "ganglion-events"],
    ),
    ("ganglion-events", &["ganglion-storage", "ganglion-http", "ganglion-rpc", "ganglion-replication"]),
    ("ganglion-state", &["ganglion-http", "ganglion-rpc", "ganglion-replication"]),
    ("ganglion-types", &["ganglion-config", "ganglion-storage", "ganglion-events", "ganglion-http"]),
    ("ganglion-http", &["ganglion-storage", "ganglion-state", "ganglion-rpc", "ganglion-replication"]),
    ("ganglion-replication", &["ganglion-http", "ganglion-rpc", "ganglion-state"]),
    // Observability sits under everything that reports to it.
    (
        "ganglion-metrics",
        &["ganglion-storage", "ganglion-rpc", "ganglion-replication", "ganglion-state", "ganglion-http"],
    ),
    (
        "ganglion-telemetry",
        &["ganglion-storage", "ganglion-rpc", "ganglion-replication", "ganglion-state", "ganglion-http"],
    ),
];

#[test]
fn crate_dependencies_follow_the_layering() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut normal_dependencies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|dependency| dependency["kind"].is_null())
            .map(|dependency| dependency["name"].as_str().unwrap().to_owned())
            .collect();
        normal_dependencies.insert(name, dependencies);
    }
    // The metadata is read right: the app composes the roles.
    assert!(normal_dependencies["ganglion-app"].iter().any(|d| d == "ganglion-master"));
    let mut violations = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        let dependencies =
            normal_dependencies.get(*krate).unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        for dependency in dependencies {
            if forbidden.contains(&dependency.as_str()) {
                violations.push(format!("{krate} -> {dependency}"));
            }
        }
    }
    // The testkit is a tool for tests and benchmarks, never a server dependency.
    for (krate, dependencies) in &normal_dependencies {
        if krate != "ganglion-loadtool" && dependencies.iter().any(|d| d == "ganglion-testkit") {
            violations.push(format!("{krate} -> ganglion-testkit"));
        }
    }
    assert!(violations.is_empty(), "forbidden crate dependencies: {violations:?}");
}
