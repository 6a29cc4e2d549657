//! The compliance table: every operation of the Matrix client-server API (the spec's OpenAPI
//! files, copied in `tests/spec/client-server/`) against the route table. Each operation is
//! served (a route with its method and path), or named in `compliance::NOT_YET` with the
//! reason; `compliance::PARTLY` names served ones with a limit. `docs/COMPLIANCE.md` is written
//! from this: off CI a stale one is rewritten (and the test fails once); on CI it only fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use ganglion_app::compliance::{NOT_YET, PARTLY};
use ganglion_types::{EndpointClass, Role};
use serde_norway::Value;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// One operation of the spec.
struct Operation {
    /// The file it is in, without `.yaml`, and that file's title.
    area: String,
    title: String,
    method: String,
    path: String,
    id: String,
    deprecated: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec_operations() -> Vec<Operation> {
    let dir = repo().join("tests/spec/client-server");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() > 50, "the spec's client-server files are missing from {}", dir.display());
    let mut operations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let api: Value =
            serde_norway::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        let base = api["servers"][0]["variables"]["basePath"]["default"].as_str().unwrap_or_default();
        let area = file.file_stem().unwrap().to_string_lossy().into_owned();
        let title = api["info"]["title"].as_str().unwrap_or(&area).to_owned();
        let Some(paths) = api["paths"].as_mapping() else { continue };
        for (path, item) in paths {
            // The spec writes two operations of one path with a trailing space on one key.
            let path = format!("{base}{}", path.as_str().unwrap().trim());
            for method in METHODS {
                let Some(operation) = item.get(method) else { continue };
                operations.push(Operation {
                    area: area.clone(),
                    title: title.clone(),
                    method: method.to_uppercase(),
                    path: path.clone(),
                    id: operation["operationId"].as_str().unwrap().to_owned(),
                    deprecated: operation["deprecated"].as_bool() == Some(true),
                });
            }
        }
    }
    operations
}

/// A path with its parameters' names left out: the spec and the routes name some differently.
fn shape(path: &str) -> String {
    let mut shaped = String::new();
    let mut in_parameter = false;
    for character in path.chars() {
        match character {
            '{' => {
                in_parameter = true;
                shaped.push_str("{}");
            }
            '}' => in_parameter = false,
            _ if in_parameter => {}
            _ => shaped.push(character),
        }
    }
    shaped
}

/// The class serving each (method, path shape) of the route table.
fn routes() -> BTreeMap<(String, String), EndpointClass> {
    ganglion_app::route_table()
        .into_iter()
        .map(|route| ((route.method, shape(&route.path)), route.class))
        .collect()
}

/// Which processes take a class in a cluster.
fn served_by(class: EndpointClass) -> String {
    if class == EndpointClass::WellKnown {
        return "every process".to_owned();
    }
    let roles: Vec<&str> = [Role::Sync, Role::ClientReader, Role::Media, Role::FederationReader]
        .into_iter()
        .filter(|role| role.serves(class))
        .map(Role::as_str)
        .collect();
    let writes = if class == EndpointClass::ClientWrite { ", written by the master" } else { "" };
    format!("{}{writes}", roles.join(", "))
}

#[test]
fn every_operation_of_the_spec_is_served_or_has_a_reason() {
    let operations = spec_operations();
    let routes = routes();
    let not_yet: BTreeMap<&str, &str> = NOT_YET.iter().copied().collect();
    let partly: BTreeMap<&str, &str> = PARTLY.iter().copied().collect();
    assert_eq!(not_yet.len(), NOT_YET.len(), "an operation is named twice in NOT_YET");
    let mut problems = Vec::new();
    for operation in &operations {
        let served = routes.contains_key(&(operation.method.clone(), shape(&operation.path)));
        let (id, route) = (&operation.id, format!("{} {}", operation.method, operation.path));
        match (served, not_yet.contains_key(id.as_str()), partly.contains_key(id.as_str())) {
            (false, false, _) => {
                problems.push(format!("{id} ({route}) is not served and NOT_YET gives no reason"))
            }
            (true, true, _) => problems.push(format!("{id} ({route}) is served: take it out of NOT_YET")),
            (false, _, true) => problems.push(format!("{id} ({route}) is in PARTLY but not served")),
            _ => {}
        }
    }
    let ids: BTreeSet<&str> = operations.iter().map(|operation| operation.id.as_str()).collect();
    for id in not_yet.keys().chain(partly.keys()) {
        if !ids.contains(id) {
            problems.push(format!("{id} is not an operation of the spec"));
        }
    }
    assert!(
        problems.is_empty(),
        "the compliance lists disagree with the spec and routes:\n{}",
        problems.join("\n")
    );
}

fn render(operations: &[Operation]) -> String {
    let routes = routes();
    let not_yet: BTreeMap<&str, &str> = NOT_YET.iter().copied().collect();
    let partly: BTreeMap<&str, &str> = PARTLY.iter().copied().collect();
    let served = operations
        .iter()
        .filter(|operation| routes.contains_key(&(operation.method.clone(), shape(&operation.path))))
        .count();
    let in_part = operations.iter().filter(|operation| partly.contains_key(operation.id.as_str())).count();
    let mut out = String::new();
    out.push_str(
        "# Client-server API compliance\n\n\
         Every operation of the Matrix client-server API, as the specification's OpenAPI files list\n\
         them (`tests/spec/client-server/`: the spec at commit `d0ba2aa`, 12 commits after v1.19),\n\
         with what this server does with it. Written by `cargo test -p ganglion-app --test\n\
         compliance` from those files, the route table (`ganglion routes`) and the reasons in\n\
         `crates/ganglion-app/src/compliance.rs`; the test fails when they disagree, so do not edit\n\
         this file by hand.\n\n",
    );
    out.push_str(&format!(
        "**{} operations: {} served ({} of them in part), {} not served.**\n\n",
        operations.len(),
        served,
        in_part,
        operations.len() - served
    ));
    out.push_str(
        "A served operation names its endpoint class and the worker role that takes that class in a\n\
         cluster; the embedded default (`role = \"all\"`) serves every class in one process. The\n\
         route for each is in `tests/snapshots/routes.json`. Legacy `r0` paths and unstable\n\
         endpoints (simplified sliding sync) are served beside these and are not listed.\n",
    );
    let mut area = "";
    for operation in operations {
        if operation.area != area {
            area = &operation.area;
            out.push_str(&format!("\n## {} (`{}.yaml`)\n\n", operation.title, operation.area));
            out.push_str("| Method | Path | operationId | Status |\n|---|---|---|---|\n");
        }
        let status = match routes.get(&(operation.method.clone(), shape(&operation.path))) {
            Some(class) => {
                let limit = partly.get(operation.id.as_str()).map(|limit| format!("; in part: {limit}"));
                format!("served: `{}` ({}){}", class.as_str(), served_by(*class), limit.unwrap_or_default())
            }
            None => match not_yet.get(operation.id.as_str()).copied().unwrap_or("no reason given") {
                reason if reason.starts_with("not yet") => reason.to_owned(),
                reason => format!("not served: {reason}"),
            },
        };
        let deprecated = if operation.deprecated { " (deprecated)" } else { "" };
        out.push_str(&format!(
            "| {} | `{}` | `{}`{deprecated} | {} |\n",
            operation.method,
            operation.path,
            operation.id,
            status.replace('|', "\\|")
        ));
    }
    out
}

#[test]
fn the_compliance_table_in_the_docs_is_current() {
    let rendered = render(&spec_operations());
    let path = repo().join("docs/COMPLIANCE.md");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != rendered {
        if std::env::var_os("CI").is_none() {
            std::fs::write(&path, &rendered).unwrap();
        }
        panic!(
            "{} is stale; regenerated it (run `cargo test -p ganglion-app --test compliance` and commit the diff)",
            path.display()
        );
    }
}
