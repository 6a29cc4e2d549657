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
