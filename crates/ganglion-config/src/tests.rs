use super::*;

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ganglion.toml");
    std::fs::write(&path, text).unwrap();
    Config::from_figment(
        Figment::from(Serialized::defaults(Config::production_default())).merge(Toml::file(&path)),
    )
}

#[test]
fn embedded_default_is_open_and_on_loopback() {
    let config = Config::embedded_default();
    assert!(config.registration.enabled);
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8008");
    assert_eq!(config.server_name, "localhost");
    assert!(config.database_url().starts_with("sqlite://"));
}

#[test]
fn config_file_defaults_to_production_values() {
    let config = load_toml("server_name = \"example.org\"\n").unwrap();
    assert!(!config.registration.enabled);
    assert_eq!(config.rate_limits.login.burst, 3);
}

#[test]
fn invalid_value_names_the_key() {
    let error = load_toml("[http]\nlisten = \"not an address\"\n").unwrap_err().to_string();
    assert!(error.contains("http.listen"), "{error}");
    let error = load_toml("server_name = \"bad name!\"\n").unwrap_err().to_string();
    assert!(error.contains("server_name"), "{error}");
    let error = load_toml("[rooms]\ndefault_version = \"3\"\n").unwrap_err().to_string();
    assert!(error.contains("rooms.default_version"), "{error}");
}

#[test]
fn unknown_key_is_rejected() {
    let error = load_toml("[http]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err().to_string();
    assert!(error.contains("listen_addr"), "{error}");
}

const CLUSTER: &str = r#"
server_name = "example.org"
[database]
url = "postgres://ganglion@127.0.0.1:5432/ganglion"
[redis]
url = "redis://127.0.0.1:6379"
[instance_map.master]
role = "master"
http = "127.0.0.1:8100"
grpc = "127.0.0.1:9100"
[instance_map.sync1]
role = "sync"
http = "127.0.0.1:8101"
[instance_map.reader1]
role = "client-reader"
http = "127.0.0.1:8102"
"#;

fn load_instance(text: &str, instance: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ganglion.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_instance(Some(&path), Some(instance))
}

#[test]
fn instance_takes_role_and_listener_from_the_map() {
    let config = load_instance(CLUSTER, "sync1").unwrap();
    assert_eq!(config.worker.role, Role::Sync);
    assert_eq!(config.worker.name, "sync1");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8101");
    assert_eq!(config.master_grpc().unwrap().to_string(), "127.0.0.1:9100");
    assert_eq!(config.instances_of(Role::ClientReader).len(), 1);
}

#[test]
fn cluster_config_errors_name_the_key() {
    let error = load_instance(CLUSTER, "nobody").unwrap_err().to_string();
    assert!(error.contains("instance_map") && error.contains("nobody"), "{error}");
    let no_redis = CLUSTER.replace("url = \"redis://127.0.0.1:6379\"", "url = \"\"");
    let error = load_instance(&no_redis, "sync1").unwrap_err().to_string();
    assert!(error.contains("redis.url"), "{error}");
    let sqlite = CLUSTER.replace("postgres://ganglion@127.0.0.1:5432/ganglion", "sqlite://x.db");
    let error = load_instance(&sqlite, "reader1").unwrap_err().to_string();
    assert!(error.contains("database.url"), "{error}");
    let two_masters = format!("{CLUSTER}[instance_map.master2]\nrole = \"master\"\nhttp = \"127.0.0.1:1\"\n");
    let error = load_instance(&two_masters, "sync1").unwrap_err().to_string();
    assert!(error.contains("exactly one master"), "{error}");
    let wrong_role = format!("{CLUSTER}[worker]\nrole = \"sync\"\nname = \"reader1\"\n");
    let error = load_toml(&wrong_role).unwrap_err().to_string();
    assert!(error.contains("worker.role"), "{error}");
}
