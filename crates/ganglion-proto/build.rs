//! Compiles every `.proto` under the repository's `proto/` with protox (pure Rust, so no system
//! `protoc` is needed) and generates prost messages with tonic clients and servers.

use std::{
    io,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    // Cargo scans a directory recursively, so new and removed files count too.
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    proto_files(&root, &mut files)?;
    // Sorted so the generated code does not depend on directory order.
    files.sort();
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().build_transport(false).compile_fds(descriptors)?;
    Ok(())
}

fn proto_files(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, files)?;
        } else if path.extension().is_some_and(|extension| extension == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
