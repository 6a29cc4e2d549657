use std::time::Duration;

use clap::Parser;

use super::{Args, SpawnBackend, Workload, parse_duration, parse_rate};

#[test]
fn durations_take_common_units() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
}

#[test]
fn durations_reject_garbage() {
    assert!(parse_duration("").is_err());
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("10 parsecs").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn url_and_spawn_are_exclusive_and_one_is_required() {
    assert!(Args::try_parse_from(["ganglion-load"]).is_err());
    assert!(Args::try_parse_from(["ganglion-load", "--url", "http://x", "--spawn", "sqlite"]).is_err());
    assert!(Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--server-pid", "1"]).is_err());
    let args = Args::try_parse_from([
        "ganglion-load",
        "--spawn",
        "postgres",
        "--users",
        "100",
        "--rooms",
        "20",
        "--senders",
        "8",
        "--duration",
        "30s",
        "--warmup",
        "5s",
        "--json",
    ])
    .unwrap();
    assert_eq!(args.spawn, Some(SpawnBackend::Postgres));
    assert_eq!(args.duration, Duration::from_secs(30));
    assert!(args.json);
}

#[test]
fn sync_workers_go_with_a_spawned_cluster_only() {
    let cluster = Args::try_parse_from(["ganglion-load", "--spawn", "cluster"]).unwrap();
    assert_eq!(cluster.spawn, Some(SpawnBackend::Cluster));
    assert!(cluster.validate().is_ok());
    assert_eq!(cluster.cluster_sync_workers(), Some(2));

    let one = Args::try_parse_from(["ganglion-load", "--spawn", "cluster", "--sync-workers", "1"]).unwrap();
    assert!(one.validate().is_ok());
    assert_eq!(one.cluster_sync_workers(), Some(1));

    assert!(Args::try_parse_from(["ganglion-load", "--spawn", "cluster", "--sync-workers", "3"]).is_err());
    assert!(Args::try_parse_from(["ganglion-load", "--spawn", "cluster", "--sync-workers", "0"]).is_err());

    let embedded =
        Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--sync-workers", "1"]).unwrap();
    assert!(embedded.validate().is_err());
    assert_eq!(embedded.cluster_sync_workers(), None);
    let url = Args::try_parse_from(["ganglion-load", "--url", "http://x"]).unwrap();
    assert_eq!(url.cluster_sync_workers(), None);
}

#[test]
fn send_rates_are_positive() {
    assert_eq!(parse_rate("1000").unwrap(), 1000.0);
    assert_eq!(parse_rate("2.5").unwrap(), 2.5);
    assert!(parse_rate("0").is_err());
    assert!(parse_rate("-3").is_err());
    assert!(parse_rate("inf").is_err());
    assert!(parse_rate("fast").is_err());
}

#[test]
fn workload_flags_go_with_their_workload() {
    let rooms = Args::try_parse_from(["ganglion-load", "--spawn", "sqlite"]).unwrap();
    assert_eq!(rooms.workload, Workload::Rooms);
    assert!(!rooms.encrypted);
    assert!(rooms.validate().is_ok());

    let encrypted = Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--encrypted"]).unwrap();
    assert!(encrypted.validate().is_ok());
    let to_device = Args::try_parse_from([
        "ganglion-load",
        "--spawn",
        "cluster",
        "--workload",
        "to-device",
        "--users",
        "10",
        "--devices-per-user",
        "10",
    ])
    .unwrap();
    assert_eq!(to_device.workload, Workload::ToDevice);
    assert_eq!(to_device.devices_per_user(), 10);
    assert!(to_device.validate().is_ok());
    let claim =
        Args::try_parse_from(["ganglion-load", "--url", "http://x", "--workload", "keys-claim"]).unwrap();
    assert_eq!(claim.devices_per_user(), 1);
    assert_eq!(claim.keys_per_request(), 10);
    assert!(claim.validate().is_ok());

    let invalid = [
        &["--workload", "to-device", "--encrypted"][..],
        &["--devices-per-user", "2"],
        &["--keys-per-request", "5"],
        &["--workload", "to-device", "--keys-per-request", "5"],
        &["--workload", "keys-query", "--send-rate", "100"],
    ];
    for flags in invalid {
        let args = Args::try_parse_from(["ganglion-load", "--spawn", "sqlite"].iter().chain(flags)).unwrap();
        assert!(args.validate().is_err(), "{flags:?} should be refused");
    }
    assert!(Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--workload", "keys"]).is_err());
}

#[test]
fn syncing_users_go_with_the_rooms_workload_and_at_most_every_user() {
    let medium = Args::try_parse_from([
        "ganglion-load",
        "--spawn",
        "sqlite",
        "--users",
        "200",
        "--syncing-users",
        "100",
        "--lazy-load-members",
        "--timeline-limit",
        "100",
    ])
    .unwrap();
    assert!(medium.validate().is_ok());
    assert_eq!(medium.syncing_users(), 100);
    assert!(medium.lazy_load_members);

    let all = Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--users", "30"]).unwrap();
    assert_eq!(all.syncing_users(), 30);
    assert!(!all.lazy_load_members);

    let invalid = [
        &["--users", "10", "--syncing-users", "11"][..],
        &["--workload", "to-device", "--syncing-users", "5"],
        &["--workload", "keys-claim", "--lazy-load-members"],
    ];
    for flags in invalid {
        let args = Args::try_parse_from(["ganglion-load", "--spawn", "sqlite"].iter().chain(flags)).unwrap();
        assert!(args.validate().is_err(), "{flags:?} should be refused");
    }
    assert!(Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--syncing-users", "0"]).is_err());
    let to_device = Args::try_parse_from([
        "ganglion-load",
        "--spawn",
        "sqlite",
        "--workload",
        "to-device",
        "--lazy-load-members",
    ])
    .unwrap();
    assert!(to_device.validate().is_ok());
}

#[test]
fn a_server_may_have_several_pids() {
    let one = Args::try_parse_from(["ganglion-load", "--url", "http://x", "--server-pid", "12"]).unwrap();
    assert_eq!(one.server_pid, [12]);
    let listed =
        Args::try_parse_from(["ganglion-load", "--url", "http://x", "--server-pid", "12,13"]).unwrap();
    assert_eq!(listed.server_pid, [12, 13]);
    let repeated = Args::try_parse_from([
        "ganglion-load",
        "--url",
        "http://x",
        "--server-pid",
        "12",
        "--server-pid",
        "14",
    ])
    .unwrap();
    assert_eq!(repeated.server_pid, [12, 14]);
    let none = Args::try_parse_from(["ganglion-load", "--url", "http://x"]).unwrap();
    assert!(none.server_pid.is_empty());
}

#[test]
fn the_media_workload_takes_its_size_and_a_spawned_server_extra_config() {
    let media = Args::try_parse_from([
        "ganglion-load",
        "--spawn",
        "sqlite",
        "--workload",
        "media",
        "--media-mib",
        "8",
        "--server-toml",
        "[media]\nclamd = \"unix:/tmp/clamd.sock\"",
    ])
    .unwrap();
    assert!(media.validate().is_ok());
    assert_eq!((media.workload, media.media_mib), (Workload::Media, Some(8)));
    let misplaced = Args::try_parse_from(["ganglion-load", "--url", "http://x", "--media-mib", "8"]).unwrap();
    assert!(misplaced.validate().unwrap_err().contains("--media-mib"));
    // The config goes to a server the tool starts, not to one behind --url.
    let elsewhere = Args::try_parse_from(["ganglion-load", "--url", "http://x", "--server-toml", "[media]"]);
    assert!(elsewhere.unwrap().validate().unwrap_err().contains("--server-toml"));
}

#[test]
fn push_goes_with_rooms_and_pusher_workers_with_a_pushing_cluster() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["ganglion-load", "--spawn", "cluster"];
        args.extend_from_slice(extra);
        Args::try_parse_from(args).unwrap()
    };
    let pushing = parse(&["--push"]);
    assert!(pushing.validate().is_ok());
    assert_eq!(pushing.cluster_pusher_workers(), Some(1), "one pusher worker unless asked");
    let master = parse(&["--push", "--pusher-workers", "0"]);
    assert!(master.validate().is_ok());
    assert_eq!(master.cluster_pusher_workers(), Some(0));
    assert_eq!(parse(&["--push", "--pusher-workers", "2"]).cluster_pusher_workers(), Some(2));
    assert!(
        Args::try_parse_from(["ganglion-load", "--spawn", "cluster", "--push", "--pusher-workers", "3"])
            .is_err()
    );
    assert!(parse(&["--pusher-workers", "1"]).validate().is_err(), "pusher workers without --push");
    assert!(parse(&["--push", "--workload", "media"]).validate().is_err());
    let embedded = Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--push"]).unwrap();
    assert!(embedded.validate().is_ok());
    assert_eq!(embedded.cluster_pusher_workers(), None);
    let embedded_workers =
        Args::try_parse_from(["ganglion-load", "--spawn", "sqlite", "--push", "--pusher-workers", "1"])
            .unwrap();
    assert!(embedded_workers.validate().is_err());
}
