//! The real binary configured as an operator would: `GANGLION_<SECTION>__<KEY>` variables with
//! and without a config file, and a variable naming no key refused at start.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use ganglion_testkit::{Api, free_port};

const DEADLINE: Duration = Duration::from_secs(60);

/// `ganglion run [--config <file>]` in `dir` with only `variables` of the `GANGLION_*` kind.
fn ganglion(dir: &Path, config: Option<&Path>, variables: &[(&str, String)]) -> Command {
    let mut command = Command::new(ganglion_testkit::ganglion_binary().unwrap());
    command.arg("run");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().to_ascii_uppercase().starts_with("GANGLION_") {
            command.env_remove(&key);
        }
    }
    command.envs(variables.iter().map(|(key, value)| (key, value)));
    command.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// A started server, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (its stderr to `stderr.log` in `dir`) and waits (bounded) for its ready
/// line; the URL it names.
async fn ready(mut command: Command, dir: &Path) -> (Running, String) {
    command.stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    let mut child = Running(command.spawn().expect("spawning ganglion"));
    let stdout = child.0.stdout.take().unwrap();
    let (url_tx, url_rx) = tokio::sync::oneshot::channel();
    // Reads stdout to the end, so the server never writes into a closed pipe.
    std::thread::spawn(move || {
        let mut url_tx = Some(url_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("ganglion ready ")
                && let Some(url_tx) = url_tx.take()
            {
                let _ = url_tx.send(url.trim().trim_end_matches('/').to_owned());
            }
        }
    });
    let url = tokio::time::timeout(DEADLINE, url_rx).await.expect("no ready line in time");
    let stderr = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let url = url.unwrap_or_else(|_| panic!("the server exited before its ready line:\n{}", stderr()));
    (child, url)
}

/// Runs the server with `variables`, which it must refuse: it exits unsuccessfully (within
/// [`DEADLINE`]) without listening. Its stderr.
async fn refused_at_start(dir: &Path, variables: &[(&str, String)]) -> String {
    let child = ganglion(dir, None, variables).spawn().expect("spawning ganglion");
    let pid = child.id();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let Ok(output) = tokio::time::timeout(DEADLINE, output).await else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("ganglion with {variables:?} did not exit within {DEADLINE:?}");
    };
    let output = output.unwrap();
    assert!(!output.status.success(), "exited with {}", output.status);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn documented_environment_variables_configure_the_server() {
    crate::run(async {
        // No config file: the embedded default, with the listener from the environment.
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let variables = [("GANGLION_HTTP__LISTEN", format!("127.0.0.1:{port}"))];
        let (_server, url) = ready(ganglion(dir.path(), None, &variables), dir.path()).await;
        assert_eq!(url, format!("http://127.0.0.1:{port}"));
        let api = Api::new(&url);
        api.get("/_matrix/client/versions", None).await.unwrap().ok();
        // The embedded default serves every file through the legacy endpoints too, and keeps
        // them in `./ganglion-data/media`.
        let alice = api.register("alice", "password-alice").await.unwrap();
        let uploaded = api
            .raw(reqwest::Method::POST, "/_matrix/media/v3/upload", Some(&alice.access_token), Some("text/plain"), Some(b"old clients".to_vec()))
            .await
            .unwrap()
            .ok();
        let mxc = uploaded["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned();
        let legacy = api.get(&format!("/_matrix/media/v3/download/{mxc}"), None).await.unwrap();
        assert_eq!((legacy.status, legacy.text.as_str()), (200, "old clients"));
        assert!(dir.path().join("ganglion-data/media/sha256").is_dir());

        // A config file, overridden: the listener, and registration (off in the file).
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ganglion.toml");
        let data_dir = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "server_name = \"localhost\"\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:1\"\n[registration]\nenabled = false\n",
                data_dir.display().to_string()
            ),
        )
        .unwrap();
        let port = free_port();
        let variables = [
            ("GANGLION_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("GANGLION_REGISTRATION__ENABLED", "true".to_owned()),
            ("GANGLION_MEDIA__MAX_UPLOAD_BYTES", "4096".to_owned()),
            // Tools sharing the prefix are left alone.
            ("GANGLION_BIN", "/nowhere/ganglion".to_owned()),
        ];
        let (_server, url) = ready(ganglion(dir.path(), Some(&config), &variables), dir.path()).await;
        assert_eq!(url, format!("http://127.0.0.1:{port}"));
        let api = Api::new(&url);
        let account = api.register("alice", "password-alice").await.unwrap();
        assert_eq!(account.user_id, "@alice:localhost");
        api.get("/_matrix/client/versions", None).await.unwrap().ok();
        let media = api.get("/_matrix/client/v1/media/config", Some(&account.access_token)).await.unwrap().ok();
        assert_eq!(media["m.upload.size"], 4096);
    })
    .await
}

#[tokio::test]
async fn an_unknown_variable_stops_the_server_with_its_name() {
    crate::run(async {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let variables =
            [("GANGLION_FOO", "1".to_owned()), ("GANGLION_HTTP__LISTEN", format!("127.0.0.1:{port}"))];
        let stderr = refused_at_start(dir.path(), &variables).await;
        assert!(stderr.contains("GANGLION_FOO") && stderr.contains("names no config key"), "{stderr}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "it listened anyway");
    })
    .await
}

/// `rooms.default_version` as docs/CONFIG.md gives it: the version of rooms created without one
/// (and the one `/capabilities` names), and a version this server cannot run (1) refused at
/// start.
#[tokio::test]
async fn rooms_default_version_sets_the_version_of_new_rooms() {
    crate::run(async {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let variables = [
            ("GANGLION_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("GANGLION_ROOMS__DEFAULT_VERSION", "10".to_owned()),
        ];
        let (_server, url) = ready(ganglion(dir.path(), None, &variables), dir.path()).await;
        let api = Api::new(&url);
        let alice = api.register("alice", "password-alice").await.unwrap();
        let bob = api.register("bob", "password-bob").await.unwrap();
        let capabilities = alice.get("/capabilities").await.unwrap().ok();
        assert_eq!(capabilities["capabilities"]["m.room_versions"]["default"], "10", "{capabilities}");
        let room = alice.create_room(&serde_json::json!({ "preset": "public_chat" })).await.unwrap();
        let path = format!("/rooms/{}/state/m.room.create/", ganglion_testkit::enc(&room));
        let created = alice.get(&path).await.unwrap().ok();
        assert_eq!(created["room_version"], "10", "{created}");
        // Version 10 rules: the creator is named, and the room id carries the server name.
        assert_eq!(created["creator"], alice.user_id, "{created}");
        assert!(room.ends_with(":localhost"), "{room}");
        bob.join(&room).await.unwrap();
        let sent = bob.send_text(&room, "in a version 10 room").await.unwrap();
        let event = alice
            .get(&format!("/rooms/{}/event/{}", ganglion_testkit::enc(&room), ganglion_testkit::enc(&sent)))
            .await
            .unwrap()
            .ok();
        assert_eq!(event["content"]["body"], "in a version 10 room", "{event}");
        // A client naming a version still gets it.
        let named = alice.create_room(&serde_json::json!({ "room_version": "12" })).await.unwrap();
        assert!(!named.contains(':'), "a version 12 room id: {named}");

        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let variables = [
            ("GANGLION_HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("GANGLION_ROOMS__DEFAULT_VERSION", "1".to_owned()),
        ];
        let stderr = refused_at_start(dir.path(), &variables).await;
        assert!(stderr.contains("rooms.default_version"), "{stderr}");
    })
    .await
}
