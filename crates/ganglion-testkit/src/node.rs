//! npm packages for the tests, installed once from the npm registry under the target directory
//! with the machine's Node.js: Grafana's published dashboard schema and the TypeScript compiler
//! that checks the dashboards against it.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Mutex, OnceLock},
};

use anyhow::Context as _;

/// Grafana's schema package (its `Dashboard` type) and the compiler, pinned.
const GRAFANA_SCHEMA: [&str; 2] = ["@grafana/schema@13.2.3", "typescript@5.9.3"];

static PROVISIONED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();

/// A directory whose `node_modules` holds `@grafana/schema` and `typescript`:
/// `<target>/grafana-schema`, installed (`npm install`) on first use. Blocks while it installs.
pub fn grafana_schema() -> anyhow::Result<PathBuf> {
    let mut provisioned =
        PROVISIONED.get_or_init(|| Mutex::new(None)).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = provisioned.as_ref() {
        return Ok(dir.clone());
    }
    let dir = crate::binary::target_dir().join("grafana-schema");
    let installed = || {
        dir.join("node_modules/@grafana/schema/package.json").is_file()
            && dir.join("node_modules/typescript/bin/tsc").is_file()
    };
    if !installed() {
        std::fs::create_dir_all(&dir)?;
        let output = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .args(GRAFANA_SCHEMA)
            .output()
            .context("running npm (Node.js)")?;
        anyhow::ensure!(
            output.status.success() && installed(),
            "npm install {} failed:\n{}",
            GRAFANA_SCHEMA.join(" "),
            crate::binary::tail(&String::from_utf8_lossy(&output.stderr), 30)
        );
    }
    *provisioned = Some(dir.clone());
    Ok(dir)
}
