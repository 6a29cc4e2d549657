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
    assert_eq!(config.rate_limits.login_account.burst, 3);
}

#[test]
fn invalid_value_names_the_key() {
    let error = load_toml("[http]\nlisten = \"not an address\"\n").unwrap_err().to_string();
    assert!(error.contains("http.listen"), "{error}");
    let error = load_toml("server_name = \"bad name!\"\n").unwrap_err().to_string();
    assert!(error.contains("server_name"), "{error}");
    let error = load_toml("[rooms]\ndefault_version = \"1\"\n").unwrap_err().to_string();
    assert!(error.contains("rooms.default_version"), "{error}");
    let error = load_toml("[federation]\nallowed_servers = [\"a b\"]\n").unwrap_err().to_string();
    assert!(error.contains("federation.allowed_servers"), "{error}");
    let error = load_toml("[federation]\ntls_certificate = \"/x.pem\"\n").unwrap_err().to_string();
    assert!(error.contains("federation.tls_certificate"), "{error}");
    let config = load_toml("[federation]\nallowed_servers = [\"*.example.org\", \"127.0.0.1:*\"]\n").unwrap();
    assert_eq!(config.federation.allowed_servers.len(), 2);
    let config = load_with(Some("[federation]\nblocked_servers = [\"bad.example\"]\n"), &[]).unwrap();
    assert!(config.source.is_some(), "the file is remembered for SIGHUP");
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

fn variables(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

fn load_with(file_text: Option<&str>, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ganglion.toml");
    if let Some(text) = file_text {
        std::fs::write(&path, text).unwrap();
    }
    Config::load_with_variables(file_text.map(|_| path.as_path()), None, variables(pairs))
}

#[test]
fn upper_case_variables_override_as_documented() {
    let pairs = [
        ("GANGLION_HTTP__LISTEN", "127.0.0.1:9999"),
        ("GANGLION_SERVER_NAME", "example.org"),
        ("GANGLION_RATE_LIMITS__MESSAGE__BURST", "7"),
        ("GANGLION_RATE_LIMITS__EXEMPT_USERS", "[\"@bot:example.org\"]"),
        ("GANGLION_HTTP__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
        ("GANGLION_HTTP__PUBLIC_BASEURL", "https://matrix.example.org"),
        // A room version reads as a number, and is taken as the version's name.
        ("GANGLION_ROOMS__DEFAULT_VERSION", "10"),
        ("GANGLION_BIN", "/usr/bin/ganglion"),
        ("GANGLION_TESTKIT_KEEP", "1"),
        ("PATH", "/usr/bin"),
    ];
    // Without a file (embedded default) and over a file (production default).
    for file in [None, Some("server_name = \"file.example\"\n[http]\nlisten = \"127.0.0.1:1\"\n")] {
        let config = load_with(file, &pairs).unwrap();
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9999", "file {file:?}");
        assert_eq!(config.server_name, "example.org");
        assert_eq!(config.rate_limits.message.burst, 7);
        assert_eq!(config.rate_limits.exempt_users, ["@bot:example.org"]);
        assert!(config.http.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
        assert_eq!(config.http.public_baseurl.as_deref(), Some("https://matrix.example.org"));
        assert_eq!(config.rooms.default_version, "10");
    }
    let over_file =
        load_with(Some("server_name = \"file.example\"\n"), &[("GANGLION_HTTP__LISTEN", "127.0.0.1:9")]);
    let over_file = over_file.unwrap();
    assert_eq!(over_file.server_name, "file.example", "keys not overridden keep the file's value");
    assert_eq!(over_file.rate_limits.login_account.burst, 3, "production defaults under a file");
    // The lower-case form keeps working.
    let lower = load_with(None, &[("ganglion_http__listen", "127.0.0.1:9998")]).unwrap();
    assert_eq!(lower.http.listen.to_string(), "127.0.0.1:9998");
}

#[test]
fn unknown_variable_is_refused_with_its_name() {
    for name in
        ["GANGLION_FOO", "GANGLION_HTTP__LISTEN_ADDR", "GANGLION_HTTP__LISTEN__PORT", "GANGLION_HTTP_LISTEN"]
    {
        let error = load_with(None, &[(name, "1")]).unwrap_err();
        assert!(matches!(error, ConfigError::UnknownVariable { .. }), "{name}: {error}");
        let message = error.to_string();
        assert!(message.contains(name) && message.contains("GANGLION_HTTP__LISTEN"), "{message}");
    }
    let error = load_with(None, &[("GANGLION_HTTP__LISTEN", "nowhere")]).unwrap_err().to_string();
    assert!(error.contains("http.listen") && error.contains("GANGLION_HTTP__LISTEN"), "{error}");
}

#[test]
fn rate_limits_are_per_action_with_exemptions() {
    let config = load_toml(
        "[rate_limits]\nmessage = { per_second = 1, burst = 2 }\nexempt_users = [\"@bot:example.org\"]\n\
         exempt_addresses = [\"192.168.0.0/16\", \"::1\"]\n",
    )
    .unwrap();
    assert_eq!(config.rate_limits.message, Bucket { per_second: 1.0, burst: 2 });
    assert_eq!(config.rate_limits.joins, RateLimitConfig::production().joins, "others keep their default");
    let exempt = &config.rate_limits.exempt_addresses;
    assert!(exempt[0].contains("192.168.4.5".parse().unwrap()));
    assert!(exempt[0].contains("::ffff:192.168.4.5".parse().unwrap()), "IPv4-mapped peers");
    assert!(!exempt[0].contains("192.169.0.1".parse().unwrap()));
    assert!(exempt[1].contains("::1".parse().unwrap()) && !exempt[1].contains("::2".parse().unwrap()));

    let error = load_toml("[rate_limits]\nexempt_users = [\"bot\"]\n").unwrap_err().to_string();
    assert!(error.contains("rate_limits.exempt_users"), "{error}");
    let error = load_toml("[rate_limits]\nexempt_addresses = [\"10.0.0.0/33\"]\n").unwrap_err().to_string();
    assert!(error.contains("rate_limits.exempt_addresses") && error.contains("10.0.0.0/33"), "{error}");
    let error =
        load_toml("[rate_limits]\nmessage = { per_second = 0, burst = 2 }\n").unwrap_err().to_string();
    assert!(error.contains("rate_limits") && error.contains("message"), "{error}");
    let error = load_toml("[rate_limits]\nper_ip = { per_second = 1, burst = 2 }\n").unwrap_err().to_string();
    assert!(error.contains("per_ip"), "the old generic buckets are gone: {error}");
}

#[test]
fn production_defaults_trust_no_proxy_and_let_an_office_log_in() {
    let config = load_toml("server_name = \"example.org\"\n").unwrap();
    assert!(config.http.trusted_proxies.is_empty());
    assert!(Config::embedded_default().http.trusted_proxies.is_empty());
    for bucket in [config.rate_limits.login_address, config.rate_limits.registration] {
        assert!(f64::from(bucket.burst) >= 200.0, "200 at once from one address: {bucket:?}");
    }
}

#[test]
fn presence_is_on_by_default_and_switched_by_file_or_environment() {
    let config = load_toml("server_name = \"example.org\"\n").unwrap();
    assert!(config.presence.enabled);
    assert_eq!((config.presence.idle_timeout_ms, config.presence.offline_timeout_ms), (300_000, 60_000));
    let config =
        load_toml("[presence]\nenabled = false\nidle_timeout_ms = 1500\noffline_timeout_ms = 2000\n")
            .unwrap();
    assert!(!config.presence.enabled);
    assert_eq!((config.presence.idle_timeout_ms, config.presence.offline_timeout_ms), (1500, 2000));
    let config = load_with(None, &[("GANGLION_PRESENCE__ENABLED", "false")]).unwrap();
    assert!(!config.presence.enabled);
    let config = load_with(Some("[presence]\nenabled = false\n"), &[("GANGLION_PRESENCE__ENABLED", "true")]);
    assert!(config.unwrap().presence.enabled, "the environment wins over the file");
    let error = load_toml("[presence]\noffline_timeout_ms = 10\n").unwrap_err().to_string();
    assert!(error.contains("presence.offline_timeout_ms"), "{error}");
}

#[test]
fn s3_media_comes_from_the_file_with_credentials_from_the_environment() {
    let file = "[media.s3]\nbucket = \"media\"\nendpoint = \"https://s3.example.org\"\n";
    let config = load_with(
        Some(file),
        &[("GANGLION_MEDIA__S3__ACCESS_KEY_ID", "id"), ("GANGLION_MEDIA__S3__SECRET_ACCESS_KEY", "secret")],
    )
    .unwrap();
    let s3 = config.media.s3.unwrap();
    assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("media", "us-east-1"));
    assert_eq!((s3.access_key_id.as_deref(), s3.secret_access_key.as_deref()), (Some("id"), Some("secret")));
    assert!(load_toml("server_name = \"example.org\"\n").unwrap().media.s3.is_none());
    for (toml, key) in [
        ("[media.s3]\nregion = \"eu-west-1\"\n", "media.s3.bucket"),
        ("[media.s3]\nbucket = \"m\"\nendpoint = \"http://10.0.0.5:9000\"\n", "media.s3.endpoint"),
        ("[media.s3]\nbucket = \"m\"\nendpoint = \"s3.example.org\"\n", "media.s3.endpoint"),
        ("[media.s3]\nbucket = \"m\"\naccess_key_id = \"id\"\n", "media.s3.access_key_id"),
    ] {
        let error = load_toml(toml).unwrap_err().to_string();
        assert!(error.contains(key), "{toml}: {error}");
    }
    let plain =
        load_toml("[media.s3]\nbucket = \"m\"\nendpoint = \"http://10.0.0.5:9000\"\nallow_http = true\n");
    assert!(plain.unwrap().media.s3.unwrap().allow_http);
}

#[test]
fn turn_servers_need_a_secret_and_turn_uris() {
    assert!(Config::embedded_default().voip.turn_uris.is_empty(), "no TURN server unless configured");
    let config =
        load_toml("[voip]\nturn_uris = [\"turn:t.example.org\"]\nturn_shared_secret = \"s\"\n").unwrap();
    assert_eq!(config.voip.turn_user_lifetime_s, 86_400);
    let error = load_toml("[voip]\nturn_uris = [\"turn:t.example.org\"]\n").unwrap_err().to_string();
    assert!(error.contains("voip.turn_shared_secret"), "{error}");
    let error = load_toml("[voip]\nturn_uris = [\"https://t.example.org\"]\nturn_shared_secret = \"s\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("voip.turn_uris"), "{error}");
    let error = load_toml("[voip]\nturn_user_lifetime_s = 0\n").unwrap_err().to_string();
    assert!(error.contains("voip.turn_user_lifetime_s"), "{error}");
    // The documented environment variables set them too.
    let env = [
        ("GANGLION_VOIP__TURN_URIS", "[\"turns:t.example.org:5349\"]"),
        ("GANGLION_VOIP__TURN_SHARED_SECRET", "from-env"),
    ];
    let config = load_with(None, &env).unwrap();
    assert_eq!(config.voip.turn_uris, ["turns:t.example.org:5349"]);
    assert_eq!(config.voip.turn_shared_secret, "from-env");
}

#[test]
fn the_user_directory_searches_users_in_shared_and_public_rooms_unless_told_all() {
    assert!(!Config::embedded_default().user_directory.search_all_users);
    let config = load_toml("[user_directory]\nsearch_all_users = true\n").unwrap();
    assert!(config.user_directory.search_all_users);
    let config = load_with(None, &[("GANGLION_USER_DIRECTORY__SEARCH_ALL_USERS", "true")]).unwrap();
    assert!(config.user_directory.search_all_users);
    let error = load_toml("[user_directory]\nsearch_everyone = true\n").unwrap_err().to_string();
    assert!(error.contains("search_everyone"), "{error}");
}
