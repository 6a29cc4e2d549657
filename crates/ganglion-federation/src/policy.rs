//! Which servers this one federates with: `federation.allowed_servers` (empty: any) and
//! `federation.blocked_servers`, patterns with `*` and `?`. A server outside them is neither
//! contacted (requests, key fetches) nor answered. The lists are swapped whole on a reload
//! (SIGHUP), so a request sees either the old lists or the new ones.

use std::sync::Arc;

use ganglion_config::FederationConfig;
use parking_lot::RwLock;
use wildmatch::WildMatch;

#[derive(Default)]
struct Lists {
    allowed: Vec<WildMatch>,
    blocked: Vec<WildMatch>,
}

pub struct ServerPolicy {
    own: String,
    lists: RwLock<Arc<Lists>>,
}

impl ServerPolicy {
    pub fn new(own: &str, config: &FederationConfig) -> ServerPolicy {
        let policy = ServerPolicy { own: own.to_ascii_lowercase(), lists: RwLock::default() };
        policy.reload(config);
        policy
    }

    /// Takes the lists of `config`.
    pub fn reload(&self, config: &FederationConfig) {
        let compile =
            |patterns: &[String]| patterns.iter().map(|p| WildMatch::new(&p.to_ascii_lowercase())).collect();
        *self.lists.write() = Arc::new(Lists {
            allowed: compile(&config.allowed_servers),
            blocked: compile(&config.blocked_servers),
        });
    }

    /// Why `server` is refused, or `None` when this server federates with it.
    pub fn refusal(&self, server: &str) -> Option<&'static str> {
        let server = server.to_ascii_lowercase();
        if server == self.own {
            return None;
        }
        let lists = self.lists.read().clone();
        if lists.blocked.iter().any(|pattern| pattern.matches(&server)) {
            return Some("it is in federation.blocked_servers");
        }
        if !lists.allowed.is_empty() && !lists.allowed.iter().any(|pattern| pattern.matches(&server)) {
            return Some("it is not in federation.allowed_servers");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], blocked: &[&str]) -> ServerPolicy {
        let mut config = ganglion_config::Config::embedded_default().federation;
        config.allowed_servers = allowed.iter().map(|s| s.to_string()).collect();
        config.blocked_servers = blocked.iter().map(|s| s.to_string()).collect();
        ServerPolicy::new("us.example", &config)
    }

    #[test]
    fn empty_lists_federate_with_everyone() {
        assert_eq!(policy(&[], &[]).refusal("anyone.example:8448"), None);
    }

    #[test]
    fn the_allowlist_takes_wildcards_and_the_blocklist_wins() {
        let policy = policy(&["*.ministry.example", "partner.example"], &["rogue.ministry.example"]);
        assert_eq!(policy.refusal("health.ministry.example"), None);
        assert_eq!(policy.refusal("Partner.Example"), None);
        assert_eq!(policy.refusal("matrix.org"), Some("it is not in federation.allowed_servers"));
        assert_eq!(policy.refusal("rogue.ministry.example"), Some("it is in federation.blocked_servers"));
        // This server itself is never refused.
        assert_eq!(policy.refusal("us.example"), None);
    }

    #[test]
    fn a_reload_replaces_the_lists() {
        let policy = policy(&["a.example"], &[]);
        assert!(policy.refusal("b.example").is_some());
        let mut config = ganglion_config::Config::embedded_default().federation;
        config.blocked_servers = vec!["a.example".into()];
        policy.reload(&config);
        assert_eq!(policy.refusal("b.example"), None);
        assert!(policy.refusal("a.example").is_some());
    }
}
