use std::{
    io::{BufRead as _, BufReader, Cursor},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{Redis, Reply, read_reply};

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

fn text(reply: Reply) -> Option<String> {
    reply.as_text()
}

#[test]
fn serves_flushes_stops_and_starts_again_on_the_same_port() {
    let mut redis = Redis::start().unwrap();
    let port = redis.port();
    let pid = redis.pid().unwrap();
    assert_ne!(port, 6379, "must never be the machine's own Redis");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert!(redis.is_running() && process_alive(pid));
    assert_eq!(redis.command(&["PING"]).unwrap(), Reply::Status("PONG".into()));

    // Nothing is persisted, and it listens on loopback only.
    let save = redis.command(&["CONFIG", "GET", "save"]).unwrap();
    assert_eq!(
        save,
        Reply::Array(Some(vec![Reply::Bulk(Some(b"save".to_vec())), Reply::Bulk(Some(Vec::new()))]))
    );
    let Reply::Array(Some(bind)) = redis.command(&["CONFIG", "GET", "bind"]).unwrap() else { panic!() };
    assert_eq!(text(bind[1].clone()).unwrap(), "127.0.0.1");

    assert_eq!(redis.command(&["SET", "k", "v"]).unwrap(), Reply::Status("OK".into()));
    assert_eq!(text(redis.command(&["GET", "k"]).unwrap()).unwrap(), "v");
    assert_eq!(
        redis.command(&["XADD", "s", "*", "f", "1"]).unwrap().as_text().map(|id| id.contains('-')),
        Some(true)
    );
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), Reply::Integer(2));
    assert!(matches!(redis.command(&["NOSUCHCOMMAND"]).unwrap(), Reply::Error(e) if e.starts_with("ERR")));
    redis.flushall().unwrap();
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), Reply::Integer(0));
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), Reply::Bulk(None));

    redis.command(&["SET", "k", "v"]).unwrap();
    redis.stop().unwrap();
    assert!(!redis.is_running());
    assert_eq!(redis.pid(), None);
    assert!(!process_alive(pid), "redis {pid} still running after stop");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still accepts connections");
    assert!(redis.command(&["PING"]).is_err());
    redis.stop().unwrap();

    redis.start_again().unwrap();
    assert_eq!(redis.port(), port);
    let new_pid = redis.pid().unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(redis.command(&["PING"]).unwrap(), Reply::Status("PONG".into()));
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), Reply::Bulk(None), "nothing survives a restart");
    assert!(redis.start_again().is_err(), "already running");

    redis.kill().unwrap();
    assert!(!redis.is_running() && !process_alive(new_pid));
    redis.start_again().unwrap();
    assert_eq!(redis.command(&["PING"]).unwrap(), Reply::Status("PONG".into()));
    assert!(redis.log().contains("Ready to accept connections"), "{}", redis.log());
}

#[test]
fn drop_kills_the_server_and_removes_its_directory() {
    let redis = Redis::start().unwrap();
    let (pid, port, dir) = (redis.pid().unwrap(), redis.port(), redis.dir().to_path_buf());
    assert!(dir.join("redis.log").is_file());
    drop(redis);
    assert!(!process_alive(pid));
    // (Its port is free now, but another test may already have taken it: not checked.)
    let _ = port;
    assert!(!dir.exists());
}

#[test]
fn start_in_keeps_the_callers_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("redis");
    let redis = Redis::start_in(&dir).unwrap();
    assert_eq!(redis.dir(), dir);
    drop(redis);
    assert!(dir.join("redis.log").is_file());
}

#[test]
fn replies_parse_nested_and_null_values() {
    let wire = b"*3\r\n$3\r\nabc\r\n*2\r\n:-7\r\n$-1\r\n*-1\r\n";
    let reply = read_reply(&mut Cursor::new(&wire[..])).unwrap();
    assert_eq!(
        reply,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"abc".to_vec())),
            Reply::Array(Some(vec![Reply::Integer(-7), Reply::Bulk(None)])),
            Reply::Array(None),
        ]))
    );
    assert_eq!(read_reply(&mut Cursor::new(&b"$0\r\n\r\n"[..])).unwrap(), Reply::Bulk(Some(Vec::new())));
    assert!(read_reply(&mut Cursor::new(&b"$5\r\nab"[..])).is_err());
    assert!(read_reply(&mut Cursor::new(&b"?x\r\n"[..])).is_err());
}

/// Run in a child process by the test below (and harmless on its own): starts Redis from a thread
/// that exits at once, prints where it is, and with `GANGLION_TESTKIT_HANG=1` blocks until killed.
#[test]
fn redis_child() {
    let redis = std::thread::spawn(|| Redis::start().unwrap()).join().unwrap();
    // The starting thread is gone; the server must not have gone with it.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(redis.command(&["PING"]).unwrap(), Reply::Status("PONG".into()));
    println!("REDISINFO {} {} {}", redis.pid().unwrap(), redis.port(), redis.dir().display());
    if std::env::var("GANGLION_TESTKIT_HANG").is_ok_and(|v| v == "1") {
        let mut line = String::new();
        // Blocks until the parent kills us (stdin is a pipe it keeps open).
        let _ = std::io::stdin().read_line(&mut line);
    }
}

#[test]
fn dies_with_a_killed_test_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "redis::tests::redis_child", "--nocapture", "--test-threads=1"])
        .env("GANGLION_TESTKIT_HANG", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, info)) = line.split_once("REDISINFO ") {
                let _ = tx.send(info.trim().to_owned());
            }
        }
    });
    let info = rx.recv_timeout(Duration::from_secs(60)).expect("child printed no REDISINFO line");
    let mut parts = info.splitn(3, ' ');
    let pid: u32 = parts.next().unwrap().parse().unwrap();
    let port: u16 = parts.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(parts.next().unwrap());
    assert!(process_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_alive(pid), "redis {pid} survived SIGKILL of its test process");
    // (Its port is free now, but another test may already have taken it: not checked.)
    let _ = port;
    // Nothing could run in the killed process to remove the directory: do it here.
    std::fs::remove_dir_all(&dir).unwrap();
}
