use std::{
    io::{BufRead as _, BufReader},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::Postgres;

/// Alive and not a zombie (a reparented zombie may linger if nothing reaps it).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Processes whose working directory is inside `dir` (postgres backends chdir to the data dir).
fn processes_in(dir: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(dir)
            && process_alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

fn wait_gone(pid: u32, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !process_alive(pid)
}

#[test]
fn owned_cluster_serves_a_fresh_database_and_stops_cleanly() {
    let postgres = Postgres::start().unwrap();
    let (pid, port, dir) = (postgres.pid(), postgres.port(), postgres.dir_path.clone());
    assert_ne!(port, 5432, "must never be the machine's own PostgreSQL");
    assert!(postgres.is_running());
    assert!(process_alive(pid));

    let url = postgres.create_database().unwrap();
    assert!(url.starts_with(&format!("postgres://postgres@127.0.0.1:{port}/ganglion_")), "{url}");
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(postgres.psql(db, "select current_database()").unwrap(), db);
    postgres.psql(db, "create table t (x int); insert into t values (42)").unwrap();
    assert_eq!(postgres.psql(db, "select x from t").unwrap(), "42");
    let other = postgres.create_database().unwrap();
    assert_ne!(other, url, "each call makes a new database");
    assert!(postgres.psql(other.rsplit('/').next().unwrap(), "select x from t").is_err());
    assert!(postgres.psql(db, "show fsync").unwrap() == "off");

    postgres.stop().unwrap();
    assert!(!postgres.is_running());
    assert!(!process_alive(pid), "postmaster {pid} still running");
    assert!(processes_in(&dir).is_empty(), "backends left: {:?}", processes_in(&dir));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still accepts connections");
    assert!(!dir.exists(), "{} not removed", dir.display());
    postgres.stop().unwrap();
}

/// Run in a child process by the two tests below (and harmless on its own): starts the shared
/// cluster, uses it, prints where it is, and with `GANGLION_TESTKIT_HANG=1` blocks until killed.
#[test]
fn shared_cluster_child() {
    let postgres = Postgres::shared().unwrap();
    assert!(std::ptr::eq(postgres, Postgres::shared().unwrap()), "one instance per process");
    let url = postgres.create_database().unwrap();
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(postgres.psql(db, "select 1").unwrap(), "1");
    println!("PGINFO {} {} {}", postgres.pid(), postgres.port(), postgres.dir_path.display());
    if std::env::var("GANGLION_TESTKIT_HANG").is_ok_and(|v| v == "1") {
        let mut line = String::new();
        // Blocks until the parent kills us (stdin is a pipe it keeps open).
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// Starts `shared_cluster_child` in a new process and returns it with the cluster's pid, port, dir.
fn spawn_child(hang: bool) -> (std::process::Child, u32, u16, std::path::PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "postgres::tests::shared_cluster_child", "--nocapture", "--test-threads=1"])
        .env("GANGLION_TESTKIT_HANG", if hang { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints `test … ... ` before the test's own output, on the same line.
            if let Some((_, info)) = line.split_once("PGINFO ") {
                let _ = tx.send(info.trim().to_owned());
            }
        }
    });
    let info = rx.recv_timeout(Duration::from_secs(120)).expect("child printed no PGINFO line");
    let mut parts = info.split(' ');
    let pid = parts.next().unwrap().parse().unwrap();
    let port = parts.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(parts.next().unwrap());
    (child, pid, port, dir)
}

#[test]
fn shared_cluster_is_stopped_and_removed_when_the_process_exits() {
    let (mut child, pid, port, dir) = spawn_child(false);
    let status = child.wait().unwrap();
    assert!(status.success(), "child test failed: {status}");
    assert!(wait_gone(pid, Duration::from_secs(5)), "postmaster {pid} outlived its test process");
    assert!(processes_in(&dir).is_empty(), "backends left: {:?}", processes_in(&dir));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists(), "{} not removed at exit", dir.display());
}

#[test]
fn shared_cluster_dies_with_a_killed_process() {
    let (mut child, pid, port, dir) = spawn_child(true);
    assert!(process_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(30)), "postmaster {pid} survived SIGKILL of its test process");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_in(&dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(processes_in(&dir).is_empty(), "backends left: {:?}", processes_in(&dir));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // Nothing could run in the killed process to remove the directory: do it here.
    std::fs::remove_dir_all(&dir).unwrap();
}
