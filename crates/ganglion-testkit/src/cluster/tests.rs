use std::{path::Path, time::Duration};

use ganglion_config::Config;
use ganglion_types::Role;

use super::{Cluster, INSTANCES, Instance, MASTER, topology};
use crate::server::{Backend, Bucket, ConfigSettings, RateLimits, ServerOptions, TestServer, config_toml};

fn instances() -> Vec<Instance> {
    INSTANCES
        .iter()
        .zip(41001..)
        .map(|(&(name, role), http_port)| Instance {
            name,
            role,
            http_port,
            grpc_port: (name == MASTER).then_some(42000),
            metrics_port: http_port + 1000,
            process: None,
        })
        .collect()
}

/// The config file a cluster writes, loaded by the server's own loader as process `name`.
fn load_as(options: &ServerOptions, name: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let settings = ConfigSettings {
        server_name: "localhost",
        data_dir: Path::new("/tmp/cluster \"data\""),
        database_url: "postgres://postgres@127.0.0.1:5999/ganglion_1_0",
        options,
        trusted_proxies: &[super::NGINX_ADDRESS],
    };
    let text = config_toml(&settings, None, &topology("redis://127.0.0.1:6999", 43000, &instances()));
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, &text).unwrap();
    Config::load_instance(Some(&path), Some(name)).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

#[test]
fn every_process_loads_the_cluster_config_with_its_role_and_port() {
    let options = ServerOptions::default();
    let expected = [
        (MASTER, Role::Master, 41001),
        ("sync1", Role::Sync, 41002),
        ("sync2", Role::Sync, 41003),
        ("reader1", Role::ClientReader, 41004),
        ("reader2", Role::ClientReader, 41005),
        ("media1", Role::Media, 41006),
        ("media2", Role::Media, 41007),
    ];
    for (name, role, port) in expected {
        let config = load_as(&options, name);
        assert_eq!((config.worker.name.as_str(), config.worker.role), (name, role));
        assert_eq!(config.http.listen.to_string(), format!("127.0.0.1:{port}"));
        assert_eq!(config.metrics.listen.map(|a| a.to_string()), Some(format!("127.0.0.1:{}", port + 1000)));
        assert_eq!(config.master_grpc().unwrap().to_string(), "127.0.0.1:42000");
        assert_eq!(config.redis.url, "redis://127.0.0.1:6999");
        assert_eq!(config.load_balancer.listen.to_string(), "127.0.0.1:43000");
        assert_eq!(config.database.url, "postgres://postgres@127.0.0.1:5999/ganglion_1_0");
        assert_eq!(config.data_dir, Path::new("/tmp/cluster \"data\""));
        assert_eq!(config.server_name, "localhost");
        assert_eq!(config.instance_map.len(), 7);
        assert!(config.registration.enabled);
        assert_eq!(config.rate_limits.message.burst, 5000, "generous limits, not production ones");
        assert!(config.http.trusted_proxies[0].contains(super::NGINX_ADDRESS.parse().unwrap()));
        assert_eq!(config.rooms.default_version, "12");
    }
}

#[test]
fn cluster_config_carries_the_server_options() {
    let options = ServerOptions {
        registration: false,
        rate_limits: Some(RateLimits {
            exempt_users: vec!["@bot:localhost".to_owned()],
            exempt_addresses: vec!["10.0.0.0/8".to_owned()],
            ..RateLimits::production()
                .with("message", Bucket { per_second: 1.5, burst: 2 })
                .with("login_address", Bucket { per_second: 0.5, burst: 1 })
        }),
        max_body_bytes: Some(4096),
        extra_toml: "[cluster]\nreplication_wait_ms = 1234".to_owned(),
        env: Vec::new(),
    };
    let config = load_as(&options, "reader2");
    assert!(!config.registration.enabled);
    assert_eq!(config.rate_limits.message.per_second, 1.5);
    assert_eq!(config.rate_limits.login_address.burst, 1);
    assert_eq!(config.rate_limits.joins.burst, 10, "actions not named keep the production default");
    assert_eq!(config.rate_limits.exempt_users, ["@bot:localhost"]);
    assert!(config.rate_limits.exempt_addresses[0].contains("10.1.1.1".parse().unwrap()));
    assert_eq!(config.http.max_body_bytes, 4096);
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:41005", "the instance map's address wins");
    assert_eq!(config.cluster.replication_wait_ms, 1234);

    let production = load_as(&ServerOptions { rate_limits: None, ..ServerOptions::default() }, "sync1");
    assert_eq!(production.rate_limits.message.burst, 10, "no [rate_limits]: the production defaults");
}

/// `X-Ganglion-Instance` of any answer from `base_url` (a worker answers 404 for the classes it
/// does not serve), or why none came.
async fn instance_at(base_url: &str) -> anyhow::Result<String> {
    let response = crate::Api::new(base_url).get("/_matrix/client/versions", None).await?;
    Ok(response.headers["x-ganglion-instance"].to_str()?.to_owned())
}

/// The whole life of a cluster behind the `TestServer` interface: start, per-process kill and
/// restart, restart of everything on the same ports, SIGTERM.
#[tokio::test]
async fn test_server_runs_a_cluster_and_restarts_its_processes() {
    let mut server = TestServer::start(Backend::Cluster, ServerOptions::default()).await.unwrap();
    let alice = server.register("alice", "password-alice").await.unwrap();
    let room = alice.create_room(&serde_json::json!({})).await.unwrap();
    let base_url = server.base_url.clone();
    let first_master = server.pid;
    assert!(server.dir().join("cluster.toml").is_file());
    assert!(server.database_url().starts_with("postgres://"));

    let cluster = server.cluster().unwrap();
    assert_eq!(cluster.base_url(), base_url);
    assert_eq!(cluster.pid_of(MASTER), Some(first_master));
    assert_eq!(
        cluster.instance_names(),
        ["master", "sync1", "sync2", "reader1", "reader2", "media1", "media2"]
    );
    for name in cluster.instance_names() {
        let expected = format!("{}/{name}", cluster.role_of(name));
        assert_eq!(instance_at(&cluster.url_of(name)).await.unwrap(), expected);
        assert!(cluster.dir().join(format!("{name}.stdout.log")).is_file());
    }
    assert!(cluster.redis().is_running());

    // One process: a crash, then a start on the same port.
    let sync1 = cluster.pid_of("sync1").unwrap();
    cluster.kill("sync1");
    assert_eq!(cluster.pid_of("sync1"), None);
    assert!(instance_at(&cluster.url_of("sync1")).await.is_err());
    cluster.kill("sync1");
    cluster.start_instance("sync1").await.unwrap();
    assert_ne!(cluster.pid_of("sync1"), Some(sync1));
    assert_eq!(instance_at(&cluster.url_of("sync1")).await.unwrap(), "sync/sync1");
    let error = cluster.start_instance("sync1").await.unwrap_err().to_string();
    assert!(error.contains("already running"), "{error}");
    let error = cluster.start_instance("nobody").await.unwrap_err().to_string();
    assert!(error.contains("nobody") && error.contains("reader2"), "{error}");
    let reader1 = cluster.pid_of("reader1").unwrap();
    cluster.restart("reader1").await.unwrap();
    assert_ne!(cluster.pid_of("reader1"), Some(reader1));

    // Everything: same ports, same database, so the account keeps working through nginx.
    let before: Vec<Option<u32>> = cluster.instance_names().iter().map(|name| cluster.pid_of(name)).collect();
    server.restart().await.unwrap();
    assert_eq!(server.base_url, base_url);
    assert_ne!(server.pid, first_master);
    let cluster = server.cluster().unwrap();
    for (name, old_pid) in cluster.instance_names().into_iter().zip(before) {
        assert!(
            cluster.pid_of(name).is_some() && cluster.pid_of(name) != old_pid,
            "{name} was not restarted"
        );
    }
    crate::eventually(Duration::from_secs(30), "the room through the restarted cluster", || async {
        let joined = alice.get("/joined_rooms").await?;
        Ok((joined.status == 200 && joined.body["joined_rooms"][0] == room.as_str()).then_some(()))
    })
    .await
    .unwrap();

    let pids: Vec<u32> = {
        let cluster = server.cluster().unwrap();
        cluster.instance_names().iter().filter_map(|name| cluster.pid_of(name)).collect()
    };
    assert_eq!(pids.len(), 7);
    let status = server.terminate(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "master exited with {status}");
    let cluster = server.cluster().unwrap();
    assert!(cluster.instance_names().iter().all(|name| cluster.pid_of(name).is_none()));
    assert!(server.terminate(Duration::from_secs(1)).await.is_err(), "nothing left to terminate");
    server.kill();
    assert!(server.stderr_log().contains("--- reader2 ---"));
    drop(server);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the cluster"
        );
    }
}

#[tokio::test]
async fn a_process_that_fails_to_start_is_named_with_its_stderr() {
    let options =
        ServerOptions { extra_toml: "[cluster]\nrpc_timeout_ms = 0".to_owned(), ..ServerOptions::default() };
    let error = format!("{:#}", Cluster::start(options).await.unwrap_err());
    assert!(error.contains("ganglion master (master"), "{error}");
    assert!(error.contains("rpc_timeout_ms = 0"), "the config is shown: {error}");
    assert!(error.contains("timeouts must be at least 1 ms"), "the stderr tail is shown: {error}");
}

#[tokio::test]
async fn a_cluster_can_have_a_postgres_of_its_own() {
    let mut cluster = Cluster::start_with_own_postgres(ServerOptions::default()).await.unwrap();
    let port = cluster.own_postgres().unwrap().port();
    assert!(cluster.database_url().starts_with(&format!("postgres://postgres@127.0.0.1:{port}/")));
    let account = crate::Api::new(cluster.base_url()).register("bob", "password-bob").await.unwrap();
    assert_eq!(account.user_id, "@bob:localhost");
    assert!(cluster.nginx().base_url().starts_with("http://127.0.0.1:"));
}
