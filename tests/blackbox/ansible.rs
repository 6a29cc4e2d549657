//! The Ansible playbook (`ansible/site.yml`) deploys a real cluster on this machine: ansible-core
//! from PyPI (in `<target>/ansible-venv`) runs it with connection `local` against an inventory
//! that puts every group on localhost, with every path under a temp directory, free loopback
//! ports and supervisord (from the same venv) as the service manager, since this machine has no
//! systemd. PostgreSQL, Redis, clamd (with a one-signature database the test writes), the
//! master, one worker of each role, nginx and Prometheus come up; a matrix-sdk client registers,
//! chats and syncs through the deployed nginx, the media worker refuses the EICAR file, and the
//! pusher worker delivers a notification to a push gateway the test runs.
//! Raising the sync count and running the playbook again starts a second sync worker that nginx
//! routes to, restarting nothing; a third run changes nothing; `rolling-restart.yml` restarts
//! every process one at a time, and the client still chats. Everything the playbook started is
//! stopped at the end, and by a drop guard if the test fails.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ganglion_testkit::{Account, Api, EICAR, enc, eventually, free_port, sdk_client};
use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{
        OwnedRoomId, UInt,
        api::client::{
            filter::FilterDefinition,
            room::create_room::v3::{Request as CreateRoom, RoomPreset},
            sync::sync_events::v3::Filter,
        },
        events::room::message::RoomMessageEventContent,
    },
};
use reqwest::Method;
use serde_json::Value;

use crate::{PASSWORD, SYNC_DEADLINE, account_at};

/// The whole scenario: four playbook runs on 2 cores, with a debug binary.
const TEST_DEADLINE: Duration = Duration::from_secs(900);
/// One `ansible-playbook` run.
const PLAYBOOK_DEADLINE: Duration = Duration::from_secs(420);
/// supervisord stopping everything it runs (PostgreSQL's fast shutdown included).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn the_playbook_deploys_a_cluster_that_serves_scales_and_restarts_without_changes() {
    match tokio::time::timeout(TEST_DEADLINE, scenario()).await {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("the Ansible scenario did not finish within {TEST_DEADLINE:?}"),
    }
}

async fn scenario() -> anyhow::Result<()> {
    anyhow::ensure!(
        fs::metadata("/proc/self")?.uid() == 0,
        "the playbook test runs as root (it runs PostgreSQL, Redis and clamd as their own users)"
    );
    let venv = tokio::task::spawn_blocking(ganglion_testkit::ansible_venv).await??;
    let binary = tokio::task::spawn_blocking(ganglion_testkit::ganglion_binary).await??;
    let mut deployment = Deployment::new(venv, binary)?;
    let started = Instant::now();

    // First run: the whole cluster.
    deployment.write_inventory(1)?;
    let recap = deployment.playbook("site.yml", "1-deploy").await?;
    eprintln!("ansible: first run {:?}, {recap:?}", started.elapsed());
    let programs = deployment.programs()?;
    for name in [
        "ganglion-postgresql",
        "ganglion-redis",
        "ganglion-clamd",
        "ganglion-master",
        "ganglion-sync-localhost-1",
        "ganglion-reader-localhost-1",
        "ganglion-media-localhost-1",
        "ganglion-federation-localhost-1",
        "ganglion-fedsender-localhost-1",
        "ganglion-pusher-localhost-1",
        "ganglion-nginx",
        "ganglion-prometheus",
    ] {
        anyhow::ensure!(
            programs.get(name).is_some_and(|p| p.0 == "RUNNING"),
            "{name} is not running: {programs:?}"
        );
    }

    // A real client through the deployed nginx.
    let base_url = deployment.base_url();
    let alice = sdk_client(&base_url, "alice", PASSWORD).await?;
    let bob = sdk_client(&base_url, "bob", PASSWORD).await?;
    let mut request = CreateRoom::new();
    request.preset = Some(RoomPreset::PublicChat);
    let room = alice.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    bob.join_room_by_id(&room_id).await?;
    room.send(RoomMessageEventContent::text_plain("hello through the playbook's nginx")).await?;
    sees_message(&bob, &room_id, "hello through the playbook's nginx").await?;

    // The media worker scans with the deployed clamd.
    let (alice_account, bob_account) = (account_at(&base_url, &alice), account_at(&base_url, &bob));
    let clean = upload(&alice_account, b"clean words").await?;
    let virus = upload(&alice_account, EICAR).await?;
    let downloaded = download(&bob_account, &clean).await?;
    anyhow::ensure!(downloaded.status == 200 && downloaded.text == "clean words", "{}", downloaded.text);
    let refused = download(&bob_account, &virus).await?;
    anyhow::ensure!(
        refused.status == 403 && refused.text.contains("eicar"),
        "the EICAR file was served: {} {}",
        refused.status,
        refused.text
    );

    // Other servers reach the federation reader through nginx's TLS listener (a self-signed
    // certificate the playbook made).
    let federation = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build()?;
    let keys = federation
        .get(format!("https://127.0.0.1:{}/_matrix/key/v2/server", deployment.ports.federation))
        .send()
        .await?;
    anyhow::ensure!(keys.status() == 200, "the key server through nginx answered {}", keys.status());
    let instance =
        keys.headers().get("x-ganglion-instance").and_then(|v| v.to_str().ok()).unwrap_or_default();
    anyhow::ensure!(instance == "federation-reader/federation-localhost-1", "answered by {instance:?}");
    let keys: serde_json::Value = keys.json().await?;
    anyhow::ensure!(keys["server_name"] == "localhost", "{keys}");
    let master_keys = keys;

    // The pusher worker delivers bob's notification to a push gateway on loopback.
    let (gateway, gateway_url) = crate::pushers::Gateway::start().await;
    let pusher = crate::pushers::pusher(&gateway_url, "bobs-phone", serde_json::json!({}));
    let set = bob_account.post("/_matrix/client/v3/pushers/set", &pusher).await?;
    anyhow::ensure!(set.status == 200, "setting bob's pusher: {} {}", set.status, set.text);
    room.send(RoomMessageEventContent::text_plain("a push for bob")).await?;
    let received = gateway
        .until("bob's push", |received| received.iter().any(|n| n["content"]["body"] == "a push for bob"))
        .await;
    anyhow::ensure!(
        received.iter().all(|n| n["devices"][0]["pushkey"] == "bobs-phone"),
        "pushes to another device: {received:?}"
    );

    // Prometheus (started by the playbook) scrapes every process.
    deployment.every_target_up(7).await?;

    // A second sync worker: started and ready, nginx reloaded, nothing restarted.
    let before = deployment.programs()?;
    deployment.write_inventory(2)?;
    let recap = deployment.playbook("site.yml", "2-add-sync-worker").await?;
    eprintln!("ansible: sync worker added at {:?}, {recap:?}", started.elapsed());
    let after = deployment.programs()?;
    anyhow::ensure!(
        after.get("ganglion-sync-localhost-2").is_some_and(|p| p.0 == "RUNNING"),
        "the new sync worker does not run: {after:?}"
    );
    for (name, (_, pid)) in &before {
        anyhow::ensure!(
            after.get(name).map(|p| p.1) == Some(*pid),
            "{name} was restarted when a sync worker was added: {before:?} → {after:?}"
        );
    }
    let nginx_conf = fs::read_to_string(deployment.root().join("etc/ganglion/nginx.conf"))?;
    let new_upstream = format!("server 127.0.0.1:{}; # sync-localhost-2", deployment.ports.sync_http + 1);
    anyhow::ensure!(nginx_conf.contains(&new_upstream), "nginx.conf has no `{new_upstream}`:\n{nginx_conf}");
    // nginx routes /sync by access token: some login of bob's lands on the new worker, and it
    // serves his rooms.
    let api = Api::new(&base_url);
    let served = eventually(Duration::from_secs(60), "a /sync answered by sync-localhost-2", || {
        let (api, room_id) = (api.clone(), room_id.to_string());
        async move {
            let bob = api.login("bob", PASSWORD).await?;
            let response = bob.get("/sync?timeout=0").await?;
            let instance = response.headers.get("x-ganglion-instance").and_then(|v| v.to_str().ok());
            Ok((response.status == 200 && instance == Some("sync/sync-localhost-2"))
                .then(|| response.body["rooms"]["join"][&room_id].is_object()))
        }
    })
    .await?;
    anyhow::ensure!(served, "sync-localhost-2 answered without bob's room");
    deployment.every_target_up(8).await?;

    // Third run: nothing to do.
    let recap = deployment.playbook("site.yml", "3-again").await?;
    eprintln!("ansible: third run at {:?}, {recap:?}", started.elapsed());
    anyhow::ensure!(!recap.is_empty(), "no PLAY RECAP");
    for (host, counts) in &recap {
        anyhow::ensure!(
            counts.get("changed") == Some(&0),
            "the third run changed {host}: {counts:?}\n{}",
            deployment.changed_tasks("3-again")
        );
    }

    // Rolling restart: every Ganglion process restarted, the client goes on.
    let before = deployment.programs()?;
    let recap = deployment.playbook("rolling-restart.yml", "4-rolling-restart").await?;
    eprintln!("ansible: rolling restart at {:?}, {recap:?}", started.elapsed());
    let after = deployment.programs()?;
    for (name, (_, pid)) in before.iter().filter(|(name, _)| is_ganglion_process(name)) {
        let (state, new_pid) = after.get(name).with_context(|| format!("{name} is gone: {after:?}"))?;
        anyhow::ensure!(
            state == "RUNNING" && new_pid != pid,
            "{name} was not restarted: {before:?} → {after:?}"
        );
    }
    room.send(RoomMessageEventContent::text_plain("after the rolling restart")).await?;
    sees_message(&bob, &room_id, "after the rolling restart").await?;

    // A second host: a federation reader on `worker2` gets a copy of the master's signing key
    // and answers other servers with it.
    deployment.second_host = true;
    deployment.write_inventory(2)?;
    let recap = deployment.playbook("site.yml", "5-second-host").await?;
    eprintln!("ansible: second host at {:?}, {recap:?}", started.elapsed());
    let key_path = "var/lib/ganglion/signing.key";
    let master_key = fs::read_to_string(deployment.root().join(key_path))?;
    let copied = fs::read_to_string(deployment.worker2_root().join(key_path))
        .context("no signing key on the second host")?;
    anyhow::ensure!(copied == master_key, "the second host's signing key is not the master's");
    let url = format!("http://127.0.0.2:{}/_matrix/key/v2/server", deployment.ports.federation_http);
    let answered = eventually(Duration::from_secs(60), "the second host's federation reader", || {
        let url = url.clone();
        async move {
            let Ok(response) = reqwest::get(&url).await else { return Ok(None) };
            let instance = response
                .headers()
                .get("x-ganglion-instance")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = response.json().await.unwrap_or_default();
            Ok(Some((instance, body)))
        }
    })
    .await?;
    anyhow::ensure!(
        answered.0.as_deref() == Some("federation-reader/federation-worker2-1"),
        "answered by {:?}",
        answered.0
    );
    anyhow::ensure!(answered.1["server_name"] == "localhost", "{}", answered.1);
    anyhow::ensure!(
        answered.1["verify_keys"] == master_keys["verify_keys"],
        "the second host's reader serves other keys: {} and {}",
        answered.1,
        master_keys
    );

    // Stop everything the playbook started; nothing may be left.
    deployment.teardown();
    let left = deployment.leftovers();
    anyhow::ensure!(left.is_empty(), "processes left after the teardown: {left:?}");
    eprintln!("ansible: done in {:?}", started.elapsed());
    Ok(())
}

fn is_ganglion_process(program: &str) -> bool {
    program == "ganglion-master"
        || ["ganglion-sync-", "ganglion-reader-", "ganglion-media-"].iter().any(|p| program.starts_with(p))
}

/// `client.sync_once` until `body` is in `room_id`'s timeline.
async fn sees_message(client: &Client, room_id: &OwnedRoomId, body: &str) -> anyhow::Result<()> {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(50u32));
    let settings =
        SyncSettings::default().timeout(Duration::from_secs(2)).filter(Filter::FilterDefinition(filter));
    let polls = async {
        loop {
            let response = client.sync_once(settings.clone()).await?;
            let seen = response.rooms.joined.get(room_id).is_some_and(|update| {
                update.timeline.events.iter().any(|event| {
                    serde_json::from_str::<Value>(event.raw().json().get())
                        .is_ok_and(|event| event["content"]["body"] == body)
                })
            });
            if seen {
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, polls).await.with_context(|| {
        format!("{} did not see {body:?} within {SYNC_DEADLINE:?}", client.user_id().unwrap())
    })?
}

/// Uploads `body`; its media id.
async fn upload(account: &Account, body: &[u8]) -> anyhow::Result<String> {
    let response = account
        .api
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            Some(&account.access_token),
            Some("application/octet-stream"),
            Some(body.to_vec()),
        )
        .await?;
    anyhow::ensure!(response.status == 200, "upload: {} {}", response.status, response.text);
    let uri = response.body["content_uri"].as_str().context("no content_uri")?;
    let id = uri.strip_prefix("mxc://localhost/").with_context(|| format!("{uri} is not on localhost"))?;
    Ok(id.to_owned())
}

async fn download(account: &Account, media_id: &str) -> anyhow::Result<ganglion_testkit::Response> {
    let path = format!("/_matrix/client/v1/media/download/localhost/{}", enc(media_id));
    account.api.get(&path, Some(&account.access_token)).await
}

/// The loopback ports of the deployment. The sync worker's are the first of two consecutive
/// ones: the second sync worker takes the next.
struct Ports {
    postgres: u16,
    redis: u16,
    prometheus: u16,
    nginx: u16,
    master_http: u16,
    master_grpc: u16,
    master_metrics: u16,
    sync_http: u16,
    sync_metrics: u16,
    reader_http: u16,
    reader_metrics: u16,
    media_http: u16,
    media_metrics: u16,
    federation_http: u16,
    federation_metrics: u16,
    fedsender_http: u16,
    fedsender_metrics: u16,
    pusher_http: u16,
    pusher_metrics: u16,
    /// nginx's federation listener (TLS).
    federation: u16,
}

impl Ports {
    fn pick() -> anyhow::Result<Ports> {
        Ok(Ports {
            postgres: free_port(),
            redis: free_port(),
            prometheus: free_port(),
            nginx: free_port(),
            master_http: free_port(),
            master_grpc: free_port(),
            master_metrics: free_port(),
            sync_http: two_consecutive_ports()?,
            sync_metrics: two_consecutive_ports()?,
            reader_http: free_port(),
            reader_metrics: free_port(),
            media_http: free_port(),
            media_metrics: free_port(),
            federation_http: free_port(),
            federation_metrics: free_port(),
            fedsender_http: free_port(),
            fedsender_metrics: free_port(),
            pusher_http: free_port(),
            pusher_metrics: free_port(),
            federation: free_port(),
        })
    }
}

/// The first of two consecutive free ports, both handed out by the testkit (so no other test of
/// this process gets the second).
fn two_consecutive_ports() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let (first, second) = (free_port(), free_port());
        if second == first + 1 {
            return Ok(first);
        }
    }
    anyhow::bail!("no two consecutive free ports")
}

/// A cluster deployed by the playbook under a temp directory: its inventory, its ports and the
/// venv with ansible-playbook and supervisord. Dropping it stops everything.
struct Deployment {
    dir: tempfile::TempDir,
    venv: PathBuf,
    binary: PathBuf,
    ports: Ports,
    /// Whether the inventory has `worker2`, a second host (127.0.0.2, its own base directory
    /// and supervisord) with a federation reader.
    second_host: bool,
    torn_down: bool,
}

impl Deployment {
    fn new(venv: PathBuf, binary: PathBuf) -> anyhow::Result<Deployment> {
        let keep = std::env::var("GANGLION_TESTKIT_KEEP").is_ok_and(|v| v == "1");
        let dir = tempfile::Builder::new().prefix("ganglion-ansible-").disable_cleanup(keep).tempdir()?;
        if keep {
            eprintln!("ansible: keeping {}", dir.path().display());
        }
        // PostgreSQL, Redis, clamd, Prometheus and nginx's workers run as their own users.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        // A copy: a build during the test must not change the binary the playbook installs.
        let copy = dir.path().join("ganglion");
        fs::copy(&binary, &copy).with_context(|| format!("copying {}", binary.display()))?;
        let deployment = Deployment {
            dir,
            venv,
            binary: copy,
            ports: Ports::pick()?,
            second_host: false,
            torn_down: false,
        };
        deployment.write_signatures()?;
        Ok(deployment)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The base directory of the second host's files.
    fn worker2_root(&self) -> PathBuf {
        self.dir.path().join("worker2")
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.nginx)
    }

    /// clamd's database: the EICAR test file's MD5 signature (`sigtool --md5`), nothing else.
    fn write_signatures(&self) -> anyhow::Result<()> {
        let db = self.dir.path().join("clamav-db");
        fs::create_dir_all(&db)?;
        fs::set_permissions(&db, fs::Permissions::from_mode(0o755))?;
        fs::write(db.join("eicar.com"), EICAR)?;
        let sigtool =
            ["/usr/bin/sigtool", "sigtool"].into_iter().find(|s| Path::new(s).is_file()).unwrap_or("sigtool");
        let signature = Command::new(sigtool)
            .args(["--md5", "eicar.com"])
            .current_dir(&db)
            .output()
            .context("running sigtool")?;
        anyhow::ensure!(signature.status.success(), "sigtool --md5 failed (install the clamav package)");
        fs::remove_file(db.join("eicar.com"))?;
        fs::write(db.join("test.hdb"), &signature.stdout)?;
        fs::set_permissions(db.join("test.hdb"), fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// The test inventory: every group on localhost (connection local), everything under the
    /// temp directory, supervisord from the venv, Grafana left out.
    fn write_inventory(&self, sync_count: u32) -> anyhow::Result<()> {
        let p = &self.ports;
        let bin = self.venv.join("bin");
        let limits = ["message", "registration", "login_address", "login_account", "media_upload"]
            .map(|name| format!("      {name}: {{ per_second: 100, burst: 1000 }}\n"))
            .concat();
        let inventory = format!(
            r#"# Written by tests/blackbox/ansible.rs.
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
{second_host}  children:
    postgres: {{ hosts: {{ localhost: }} }}
    redis: {{ hosts: {{ localhost: }} }}
    ganglion_master: {{ hosts: {{ localhost: }} }}
    ganglion_sync: {{ hosts: {{ localhost: }} }}
    ganglion_client_reader: {{ hosts: {{ localhost: }} }}
    ganglion_media: {{ hosts: {{ localhost: }} }}
    ganglion_federation_reader: {{ hosts: {{ localhost: {worker2_reader}}} }}
    ganglion_federation_sender: {{ hosts: {{ localhost: }} }}
    ganglion_pusher: {{ hosts: {{ localhost: }} }}
    loadbalancer: {{ hosts: {{ localhost: }} }}
    monitoring: {{ hosts: {{ localhost: }} }}
  vars:
    ganglion_address: 127.0.0.1
    ganglion_base_dir: {root}
    ganglion_service_manager: supervisor
    ganglion_supervisor_package: false
    ganglion_supervisord: {bin}/supervisord
    ganglion_supervisorctl: {bin}/supervisorctl
    ganglion_create_user: false
    ganglion_user: root
    ganglion_group: root
    ganglion_binary_src: {binary}
    ganglion_server_name: localhost
    ganglion_registration_enabled: true
    ganglion_rate_limits:
{limits}    ganglion_media_scanning: true
    clamav_database_dir: {clamav_db}
    clamav_freshclam: false
    postgresql_cluster: own
    postgresql_port: {postgres}
    redis_port: {redis}
    prometheus_port: {prometheus}
    prometheus_scrape_interval: 1s
    ganglion_lb_listen: 127.0.0.1:{nginx}
    ganglion_master_http_port: {master_http}
    ganglion_master_grpc_port: {master_grpc}
    ganglion_master_metrics_port: {master_metrics}
    ganglion_sync_count: {sync_count}
    ganglion_sync_http_port: {sync_http}
    ganglion_sync_metrics_port: {sync_metrics}
    ganglion_client_reader_count: 1
    ganglion_client_reader_http_port: {reader_http}
    ganglion_client_reader_metrics_port: {reader_metrics}
    ganglion_media_count: 1
    ganglion_media_http_port: {media_http}
    ganglion_media_metrics_port: {media_metrics}
    ganglion_federation_reader_count: 1
    ganglion_federation_reader_http_port: {federation_http}
    ganglion_federation_reader_metrics_port: {federation_metrics}
    ganglion_federation_sender_count: 1
    ganglion_federation_sender_http_port: {fedsender_http}
    ganglion_federation_sender_metrics_port: {fedsender_metrics}
    ganglion_pusher_count: 1
    ganglion_pusher_http_port: {pusher_http}
    ganglion_pusher_metrics_port: {pusher_metrics}
    ganglion_push_allowed_address_ranges: ["127.0.0.0/8"]
    ganglion_federation_listen: 127.0.0.1:{federation}
    ganglion_federation_verify_certificates: false
    grafana_enabled: false
"#,
            root = self.root().display(),
            second_host = if self.second_host {
                format!(
                    "    worker2:\n      ansible_connection: local\n      ansible_python_interpreter: /usr/bin/python3\n      \
                     ganglion_address: 127.0.0.2\n      ganglion_base_dir: {}\n",
                    self.worker2_root().display()
                )
            } else {
                String::new()
            },
            worker2_reader = if self.second_host { ", worker2: " } else { "" },
            bin = bin.display(),
            binary = self.binary.display(),
            clamav_db = self.dir.path().join("clamav-db").display(),
            postgres = p.postgres,
            redis = p.redis,
            prometheus = p.prometheus,
            nginx = p.nginx,
            master_http = p.master_http,
            master_grpc = p.master_grpc,
            master_metrics = p.master_metrics,
            sync_http = p.sync_http,
            sync_metrics = p.sync_metrics,
            reader_http = p.reader_http,
            reader_metrics = p.reader_metrics,
            media_http = p.media_http,
            media_metrics = p.media_metrics,
            federation_http = p.federation_http,
            federation_metrics = p.federation_metrics,
            fedsender_http = p.fedsender_http,
            fedsender_metrics = p.fedsender_metrics,
            pusher_http = p.pusher_http,
            pusher_metrics = p.pusher_metrics,
            federation = p.federation,
        );
        fs::write(self.dir.path().join("hosts.yml"), inventory)?;
        Ok(())
    }

    /// Runs `ansible-playbook -i hosts.yml <playbook>` from `ansible/`, its output in
    /// `<dir>/<log>.log`; fails unless it succeeds. The PLAY RECAP's counts by host.
    async fn playbook(
        &self,
        playbook: &str,
        log: &str,
    ) -> anyhow::Result<BTreeMap<String, BTreeMap<String, u64>>> {
        let log = self.dir.path().join(format!("{log}.log"));
        let output = fs::File::create(&log)?;
        let ansible = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ansible");
        let home = self.dir.path().join("ansible-home");
        let mut command = Command::new(self.venv.join("bin/ansible-playbook"));
        command
            .arg("-i")
            .arg(self.dir.path().join("hosts.yml"))
            .arg(playbook)
            .current_dir(&ansible)
            .env("ANSIBLE_CONFIG", ansible.join("ansible.cfg"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_REMOTE_TEMP", home.join("remote-tmp"))
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .process_group(0);
        let mut child = command.spawn().context("running ansible-playbook")?;
        let deadline = Instant::now() + PLAYBOOK_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                // Our own child's process group (not reaped yet, so not reused).
                kill(&format!("-{}", child.id()));
                let _ = child.wait();
                anyhow::bail!(
                    "ansible-playbook {playbook} did not finish within {PLAYBOOK_DEADLINE:?}:\n{}",
                    tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        anyhow::ensure!(status.success(), "ansible-playbook {playbook} failed ({status}):\n{}", tail(&log));
        let text = fs::read_to_string(&log)?;
        let recap = play_recap(&text).with_context(|| format!("no PLAY RECAP in:\n{}", tail(&log)))?;
        for (host, counts) in &recap {
            anyhow::ensure!(
                counts.get("failed") == Some(&0) && counts.get("unreachable") == Some(&0),
                "{playbook} on {host}: {counts:?}"
            );
        }
        Ok(recap)
    }

    /// The tasks a run reported `changed`, from its log.
    fn changed_tasks(&self, log: &str) -> String {
        let text = fs::read_to_string(self.dir.path().join(format!("{log}.log"))).unwrap_or_default();
        let mut task = "";
        let mut changed = Vec::new();
        for line in text.lines() {
            if line.starts_with("TASK [") || line.starts_with("RUNNING HANDLER [") {
                task = line.trim_end_matches(['*', ' ']);
            } else if line.starts_with("changed:") {
                changed.push(format!("{task}: {line}"));
            }
        }
        changed.join("\n")
    }

    fn supervisord_conf(&self) -> PathBuf {
        self.root().join("etc/ganglion/supervisord.conf")
    }

    /// `supervisorctl status`: each program's state and pid.
    fn programs(&self) -> anyhow::Result<BTreeMap<String, (String, u32)>> {
        let output = Command::new(self.venv.join("bin/supervisorctl"))
            .arg("-c")
            .arg(self.supervisord_conf())
            .arg("status")
            .output()
            .context("running supervisorctl status")?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?.to_owned();
                let state = words.next()?.to_owned();
                let pid = line.split("pid ").nth(1).and_then(|rest| rest.split(',').next()?.parse().ok());
                Some((name, (state, pid.unwrap_or(0))))
            })
            .collect())
    }

    /// Waits (bounded) until Prometheus has `count` Ganglion targets, every one up.
    async fn every_target_up(&self, count: usize) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/api/v1/targets", self.ports.prometheus);
        let last = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let result = eventually(Duration::from_secs(60), "every Ganglion target up in Prometheus", || {
            let (url, last) = (url.clone(), last.clone());
            async move {
                let Ok(response) = reqwest::get(&url).await else { return Ok(None) };
                let Ok(body) = response.json::<Value>().await else { return Ok(None) };
                let targets: Vec<(String, String)> = body["data"]["activeTargets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["labels"]["job"].as_str().is_some_and(|job| job.starts_with("ganglion")))
                    .map(|t| {
                        let name = t["labels"]["ganglion_instance"].as_str().unwrap_or("?");
                        (name.to_owned(), t["health"].as_str().unwrap_or("?").to_owned())
                    })
                    .collect();
                let done = targets.len() == count && targets.iter().all(|(_, health)| health == "up");
                *last.lock().unwrap() = targets;
                Ok(done.then_some(()))
            }
        })
        .await;
        result.with_context(|| format!("Prometheus' Ganglion targets: {:?}", last.lock().unwrap()))
    }

    /// Stops supervisord and everything it runs, then kills whatever is left.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for root in [self.root(), self.worker2_root()] {
            let pidfile = root.join("run/ganglion/supervisord.pid");
            let supervisord =
                fs::read_to_string(&pidfile).ok().and_then(|pid| pid.trim().parse::<u32>().ok());
            let conf = root.join("etc/ganglion/supervisord.conf");
            if conf.is_file() {
                let _ = Command::new(self.venv.join("bin/supervisorctl"))
                    .arg("-c")
                    .arg(&conf)
                    .arg("shutdown")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let deadline = Instant::now() + SHUTDOWN_DEADLINE;
            while supervisord.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(pid) = supervisord.filter(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                kill(&pid.to_string());
            }
        }
        // Only processes this test started: those whose command line names the temp directory.
        for pid in self.leftovers() {
            kill(&pid.to_string());
        }
    }

    /// Processes whose command line names the temp directory: every one the playbook started
    /// (PostgreSQL's, Redis', nginx's, clamd's, Prometheus', Ganglion's) does.
    fn leftovers(&self) -> Vec<u32> {
        let needle = self.dir.path().display().to_string();
        let own = std::process::id();
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != own)
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(&needle)
                })
            })
            .collect()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILL to a pid (or, `-<pgid>`, a process group).
fn kill(target: &str) {
    let _ = Command::new("kill").args(["-KILL", "--", target]).stderr(Stdio::null()).status();
}

/// The counts of each host in the PLAY RECAP (`host : ok=3 changed=0 …`).
fn play_recap(output: &str) -> Option<BTreeMap<String, BTreeMap<String, u64>>> {
    let recap = output.split("PLAY RECAP").nth(1)?;
    let hosts: BTreeMap<String, BTreeMap<String, u64>> = recap
        .lines()
        .filter_map(|line| {
            let (host, counts) = line.split_once(" : ")?;
            let counts = counts
                .split_whitespace()
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.parse().ok()?))
                })
                .collect();
            Some((host.trim().to_owned(), counts))
        })
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("({})\n{}", path.display(), lines[lines.len().saturating_sub(80)..].join("\n"))
}
