use std::collections::HashMap;

use super::*;

/// SRV records from a fixed table.
struct FixedSrv(HashMap<String, Vec<(String, u16)>>);

impl SrvLookup for FixedSrv {
    fn lookup<'a>(&'a self, name: &'a str) -> SrvFuture<'a> {
        Box::pin(async move { self.0.get(name).cloned().unwrap_or_default() })
    }
}

fn discovery(allowed: &[&str], srv: &[(&str, &str, u16)]) -> Discovery {
    let mut config = ganglion_config::Config::embedded_default().federation;
    config.allowed_address_ranges = allowed.iter().map(|range| range.parse().unwrap()).collect();
    let table = srv.iter().fold(
        HashMap::new(),
        |mut table: HashMap<String, Vec<(String, u16)>>, (name, target, port)| {
            table.entry((*name).to_owned()).or_default().push(((*target).to_owned(), *port));
            table
        },
    );
    Discovery::with_srv(&config, Box::new(FixedSrv(table))).unwrap()
}

fn name(name: &str) -> ruma::OwnedServerName {
    ServerName::parse(name).unwrap()
}

#[tokio::test]
async fn ip_literals_and_explicit_ports_are_used_as_they_are() {
    let discovery = discovery(&[], &[]);
    let resolved = discovery.resolve(&name("203.0.113.1:8000")).await;
    // Documentation addresses are internal: refused.
    assert!(matches!(resolved, Err(FederationError::Refused { .. })), "{resolved:?}");
    let resolved = discovery.resolve(&name("8.8.8.8")).await.unwrap();
    assert_eq!(resolved, Resolved { authority: "8.8.8.8:8448".into(), host: "8.8.8.8:8448".into() });
    let resolved = discovery.resolve(&name("[2606:4700::1111]:9000")).await.unwrap();
    assert_eq!(resolved.authority, "[2606:4700::1111]:9000");
    let resolved = discovery.resolve(&name("matrix.example.org:8443")).await.unwrap();
    assert_eq!(resolved.authority, "matrix.example.org:8443");
    assert_eq!(resolved.host, "matrix.example.org:8443");
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed() {
    let refused = discovery(&[], &[]).resolve(&name("127.0.0.1:8448")).await;
    match refused {
        Err(FederationError::Refused { reason, .. }) => {
            assert!(reason.contains("federation.allowed_address_ranges"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let allowed = discovery(&["127.0.0.0/8"], &[]).resolve(&name("127.0.0.1:8448")).await.unwrap();
    assert_eq!(allowed.authority, "127.0.0.1:8448");
}

#[tokio::test]
async fn srv_records_name_the_target_and_keep_the_host() {
    // `.invalid` never resolves, so the well-known step finds nothing.
    let discovery = discovery(
        &["127.0.0.0/8"],
        &[
            ("_matrix-fed._tcp.chat.invalid", "localhost", 8999),
            ("_matrix._tcp.old.invalid", "localhost", 7000),
        ],
    );
    let resolved = discovery.resolve(&name("chat.invalid")).await.unwrap();
    assert_eq!(resolved, Resolved { authority: "chat.invalid".into(), host: "chat.invalid".into() });
    assert_eq!(discovery.srv_targets.read().get("chat.invalid"), Some(&vec![("localhost".to_owned(), 8999)]));
    // The deprecated service is the fallback.
    let resolved = discovery.resolve(&name("old.invalid")).await.unwrap();
    assert_eq!(resolved.authority, "old.invalid");
    assert_eq!(discovery.srv_targets.read().get("old.invalid"), Some(&vec![("localhost".to_owned(), 7000)]));
    // Neither: port 8448, with the bare host as `Host`.
    let resolved = discovery.resolve(&name("plain.invalid")).await.unwrap();
    assert_eq!(resolved, Resolved { authority: "plain.invalid:8448".into(), host: "plain.invalid".into() });
}

#[tokio::test]
async fn connections_to_srv_targets_are_checked_too() {
    let discovery = discovery(&[], &[("_matrix-fed._tcp.chat.invalid", "localhost", 8999)]);
    discovery.resolve(&name("chat.invalid")).await.unwrap();
    let resolver = discovery.connection_resolver();
    let error = match resolver.resolve("chat.invalid".parse().unwrap()).await {
        Ok(_) => panic!("localhost must be refused"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("internal address"), "{error}");
}

#[test]
fn ports_and_cache_lifetimes_parse() {
    assert_eq!(split_port("example.org:443"), ("example.org", Some(443)));
    assert_eq!(split_port("example.org"), ("example.org", None));
    assert_eq!(split_port("[::1]:8448"), ("[::1]", Some(8448)));
    assert_eq!(split_port("[::1]"), ("[::1]", None));
    assert_eq!(max_age("public, max-age=3600"), Some(Duration::from_secs(3600)));
    assert_eq!(max_age("no-store"), None);
}
