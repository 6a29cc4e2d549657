//! What the nginx and HAProxy configs share: which role takes a class several roles serve, the
//! pools' names, the routes grouped by path, the order paths are tried in, and a route's path as
//! an anchored regex.

use std::{cmp::Ordering, collections::BTreeMap};

use ganglion_config::Config;
use ganglion_http::RouteInfo;
use ganglion_types::{EndpointClass, Role};

/// Which role gets a class several roles serve; lower wins. The master is the single writer, so
/// it gets only what no worker serves.
pub(crate) fn preference(role: Role) -> u8 {
    match role {
        Role::ClientReader => 0,
        Role::Sync => 1,
        Role::Media => 2,
        Role::FederationReader => 3,
        Role::All => 4,
        Role::Master => 5,
        Role::FederationSender => 6,
        Role::Pusher => 7,
    }
}

/// The name of a role's pool of servers (nginx's upstream, HAProxy's backend).
pub(crate) fn pool(role: Role) -> &'static str {
    match role {
        Role::All => "ganglion_all",
        Role::Master => "ganglion_master",
        Role::Sync => "ganglion_sync",
        Role::ClientReader => "ganglion_client_reader",
        Role::Media => "ganglion_media",
        Role::FederationReader => "ganglion_federation_reader",
        Role::FederationSender => "ganglion_federation_sender",
        Role::Pusher => "ganglion_pusher",
    }
}

/// The roles of `instance_map`, each once, the one [`preference`] prefers first.
pub(crate) fn roles(config: &Config) -> Vec<Role> {
    // A role that serves no endpoint (the federation sender, the pusher) gets no pool.
    let mut roles: Vec<Role> = config
        .instance_map
        .values()
        .map(|instance| instance.role)
        .filter(|role| !matches!(role, Role::FederationSender | Role::Pusher))
        .collect();
    roles.sort_by_key(|role| preference(*role));
    roles.dedup();
    roles
}

/// The pool each class in play goes to: that of the first of `roles` serving it. The classes of
/// `routes` are in play, and client reads for unknown paths. A class no role serves is an error
/// naming it and what needs it (the first such route, or `unknown paths`).
pub(crate) fn pool_of_class(
    roles: &[Role],
    routes: &[RouteInfo],
) -> Result<BTreeMap<EndpointClass, &'static str>, (EndpointClass, String)> {
    // Every class in play has a role, checked in class order so the error is the same whatever
    // the route order; unknown paths need a client-reader (they answer 404 M_UNRECOGNIZED).
    let mut needed: BTreeMap<EndpointClass, String> = BTreeMap::new();
    for route in routes {
        needed.entry(route.class).or_insert_with(|| format!("{} {}", route.method, route.path));
    }
    needed.entry(EndpointClass::ClientRead).or_insert_with(|| "unknown paths".into());
    let mut pool_of = BTreeMap::new();
    // Without federation readers nothing answers other servers, so no federation class (the
    // media workers' included) is routed.
    let federating = roles.iter().any(|role| role.serves(EndpointClass::Federation));
    for (class, route) in needed {
        if federates(class) && !federating {
            continue;
        }
        match roles.iter().find(|role| role.serves(class)) {
            Some(role) => {
                pool_of.insert(class, pool(*role));
            }
            // A cluster without federation readers does not federate: those paths go nowhere.
            None if federates(class) => {}
            None => return Err((class, route)),
        }
    }
    Ok(pool_of)
}

/// Classes only a federating cluster serves.
fn federates(class: EndpointClass) -> bool {
    matches!(class, EndpointClass::Federation | EndpointClass::FederationMedia | EndpointClass::Keys)
}

/// The routes a proxy config sends somewhere: those whose class has a pool.
pub(crate) fn routed(
    routes: &[RouteInfo],
    pool_of: &BTreeMap<EndpointClass, &'static str>,
) -> Vec<RouteInfo> {
    routes.iter().filter(|route| pool_of.contains_key(&route.class)).cloned().collect()
}

/// `routes` grouped by path, in path order, each path's routes sorted.
pub(crate) fn by_path(routes: &[RouteInfo]) -> BTreeMap<&str, Vec<&RouteInfo>> {
    let mut by_path: BTreeMap<&str, Vec<&RouteInfo>> = BTreeMap::new();
    for route in routes {
        by_path.entry(&route.path).or_default().push(route);
    }
    for routes in by_path.values_mut() {
        routes.sort();
    }
    by_path
}

/// The order a proxy tries paths in, the first match winning: static segments before parameters
/// gives the router's precedence (`/x/literal` over `/x/{param}`) where paths overlap.
pub(crate) fn path_order(a: &str, b: &str) -> Ordering {
    precedence(a).cmp(&precedence(b)).then(a.cmp(b))
}

/// Per segment: static (0) before parameter (1) before catch-all (2); parameter names ignored.
fn precedence(path: &str) -> Vec<(u8, &str)> {
    path.split('/')
        .map(|segment| match segment.find('{') {
            None => (0, segment),
            Some(start) if segment[start + 1..].starts_with('*') => (2, ""),
            Some(_) => (1, ""),
        })
        .collect()
}

/// `^…$` with each `{param}` as one segment (`[^/]+`), `{*rest}` as the remainder, and the
/// literal parts escaped; `None` when a literal part holds a character `refused` names (the
/// config's quoting cannot carry it) or a brace is unmatched.
pub(crate) fn path_regex(path: &str, refused: fn(char) -> bool) -> Option<String> {
    let mut regex = String::from("^");
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}')? + start;
        escape_literal(&mut regex, &rest[..start], refused)?;
        regex.push_str(if rest[start + 1..].starts_with('*') { ".+" } else { "[^/]+" });
        rest = &rest[end + 1..];
    }
    escape_literal(&mut regex, rest, refused)?;
    regex.push('$');
    Some(regex)
}

fn escape_literal(regex: &mut String, literal: &str, refused: fn(char) -> bool) -> Option<()> {
    for c in literal.chars() {
        if refused(c) || matches!(c, '{' | '}') || c.is_whitespace() || c.is_control() {
            return None;
        }
        if matches!(c, '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '|') {
            regex.push('\\');
        }
        regex.push(c);
    }
    Some(())
}

/// Fixtures and checks the nginx and HAProxy generators' tests share; each keeps the assertions
/// on its own config's text.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::{collections::BTreeSet, net::SocketAddr};

    use ganglion_config::{Config, InstanceConfig};
    use ganglion_http::RouteInfo;
    use ganglion_types::{EndpointClass, Role};

    /// A cluster of every role, its instances not in name order.
    pub(crate) const FULL: &[(&str, Role)] = &[
        ("reader2", Role::ClientReader),
        ("master", Role::Master),
        ("sync1", Role::Sync),
        ("reader1", Role::ClientReader),
        ("media1", Role::Media),
        ("federation1", Role::FederationReader),
    ];

    /// The production defaults with `roles` as `instance_map`: the n-th instance (from 0) serves
    /// HTTP on `10.0.0.1:9001+n` and metrics 2000 ports above; the master gRPC 1000 ports above.
    pub(crate) fn cluster(roles: &[(&str, Role)]) -> Config {
        let mut config = Config::production_default();
        for (port, (name, role)) in (9001..).zip(roles) {
            let http = SocketAddr::from(([10, 0, 0, 1], port));
            let grpc = (*role == Role::Master).then(|| SocketAddr::from(([10, 0, 0, 1], port + 1000)));
            let metrics = Some(SocketAddr::from(([10, 0, 0, 1], port + 2000)));
            config
                .instance_map
                .insert((*name).to_owned(), InstanceConfig { role: *role, http, grpc, metrics });
        }
        config
    }

    pub(crate) fn route(method: &str, path: &str, class: EndpointClass) -> RouteInfo {
        RouteInfo { method: method.into(), path: path.into(), class, streams_body: false }
    }

    /// The route table rendered for [`FULL`], checked to be the same whatever the routes' order,
    /// and the table's distinct paths.
    pub(crate) fn rendered_in_any_order<E: std::fmt::Debug>(
        render: impl Fn(&Config, &[RouteInfo]) -> Result<String, E>,
    ) -> (String, BTreeSet<String>) {
        let routes = crate::route_table();
        let rendered = render(&cluster(FULL), &routes).unwrap();
        let mut reversed = routes.clone();
        reversed.reverse();
        assert_eq!(rendered, render(&cluster(FULL), &reversed).unwrap());
        (rendered, routes.into_iter().map(|route| route.path).collect())
    }

    /// Checks that a class no instance serves is an error naming the class and a route that
    /// needs it, or the fallback for unknown paths; returns the error for a cluster without a
    /// client-reader.
    pub(crate) fn unserved_classes_are_errors<E: std::fmt::Display + std::fmt::Debug>(
        render: impl Fn(&Config, &[RouteInfo]) -> Result<String, E>,
    ) -> E {
        let config = cluster(&[("master", Role::Master), ("sync1", Role::Sync)]);
        let unserved_client_read = render(&config, &crate::route_table()).unwrap_err();

        let config_without_sync = cluster(&[("master", Role::Master), ("reader1", Role::ClientReader)]);
        let error = render(&config_without_sync, &crate::route_table()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no instance in instance_map serves sync endpoints (needed by GET /_matrix/client/r0/sync)"
        );

        // The fallback for unknown paths needs a client-reader too.
        let routes = [route("GET", "/_matrix/client/v3/sync", EndpointClass::Sync)];
        let error = render(&config, &routes).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no instance in instance_map serves client_read endpoints (needed by unknown paths)"
        );
        // A cluster without federation readers does not federate: its config leaves those
        // paths out rather than failing.
        let config = cluster(&FULL[..FULL.len() - 1]);
        let rendered = render(&config, &crate::route_table()).unwrap();
        assert!(
            !rendered.contains("/_matrix/federation") && !rendered.contains("/_matrix/key"),
            "{rendered}"
        );
        let rendered = render(&cluster(FULL), &crate::route_table()).unwrap();
        assert!(rendered.contains("/_matrix/federation") && rendered.contains("/_matrix/key"));
        unserved_client_read
    }

    /// One path whose methods need different roles (no path of today's table does).
    pub(crate) fn mixed_routes() -> [RouteInfo; 2] {
        [
            route("PUT", "/_matrix/client/v3/mixed/{id}", EndpointClass::ClientWrite),
            route("GET", "/_matrix/client/v3/mixed/{id}", EndpointClass::Sync),
        ]
    }

    /// A parameter, a catch-all and a static segment at the same place of a path.
    pub(crate) fn precedence_routes() -> [RouteInfo; 3] {
        [
            route("GET", "/_matrix/client/v3/x/{id}", EndpointClass::ClientRead),
            route("GET", "/_matrix/client/v3/x/{*rest}", EndpointClass::ClientRead),
            route("GET", "/_matrix/client/v3/x/sync", EndpointClass::Sync),
        ]
    }
}
