use crate::receiver::{Delivery, ReceiverOutcome};
use crate::sender::{SendRecord, SenderOutcome};

use crate::replication::{Lag, Status, WorkerReadings};

use std::time::Duration;

use clap::Parser as _;

use super::{
    InstanceAnswers, Measurements, Report, Usage, Window, answers_by_instance, fanout, replication,
    responses_in_window, sends, sum,
};
use crate::cli::Args;
use crate::plan::Plan;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn record(start_ns: u64, ack_ns: Option<u64>, other_members: u32) -> SendRecord {
    SendRecord { start_ns, ack_ns, other_members }
}

fn delivery(sender: u32, seq: u32, ts_ns: u64, received_ns: u64) -> Delivery {
    Delivery { sender, seq, ts_ns, received_ns }
}

fn window() -> Window {
    Window { start_ns: 10 * S, end_ns: 12 * S }
}

#[test]
fn sends_count_by_ack_inside_the_window() {
    let senders = vec![SenderOutcome {
        records: vec![
            record(9 * S, Some(9 * S + 5 * MS), 2),    // warm-up
            record(10 * S, Some(10 * S + 2 * MS), 2),  // first second
            record(11 * S, Some(11 * S + 4 * MS), 2),  // second second
            record(11 * S + MS, None, 2),              // failed
            record(12 * S - MS, Some(12 * S + MS), 2), // acked after the window
        ],
        errors: Default::default(),
    }];
    let sends = sends(&senders, window());
    assert_eq!(sends.ok_in_window, 2);
    assert_eq!(sends.ok_total, 4);
    assert_eq!(sends.per_sec, 1.0);
    assert_eq!(sends.slowest_second, Some(1));
    assert_eq!(sends.fastest_second, Some(1));
    let latency = sends.latency_ms.unwrap();
    assert_eq!(latency.p50, 2.0);
    assert_eq!(latency.max, 4.0);
}

#[test]
fn fanout_counts_missing_duplicate_and_unacknowledged_deliveries() {
    let senders = vec![SenderOutcome {
        records: vec![record(10 * S, Some(10 * S + 3 * MS), 2), record(11 * S, None, 2)],
        errors: Default::default(),
    }];
    let receivers = vec![
        ReceiverOutcome {
            deliveries: vec![
                delivery(0, 0, 10 * S, 10 * S + 2 * MS),
                delivery(0, 0, 10 * S, 10 * S + 9 * MS), // the same event again
                delivery(0, 1, 11 * S, 11 * S + 5 * MS), // its send failed
            ],
            limited_timelines: 1,
            ..Default::default()
        },
        // The second other member never saw message 0.
        ReceiverOutcome::default(),
    ];
    let fanout = fanout(&senders, &receivers, window());
    assert_eq!(fanout.expected, 2);
    assert_eq!(fanout.delivered, 1);
    assert_eq!(fanout.missing, 1);
    assert_eq!(fanout.duplicates, 1);
    assert_eq!(fanout.of_failed_sends, 1);
    assert_eq!(fanout.limited_timelines, 1);
    assert_eq!(fanout.latency_ms.unwrap().p99, 2.0);
    // The /sync answer arrived 1 ms before the sender had its 2xx.
    assert_eq!(fanout.after_ack_ms.unwrap().p50, -1.0);
}

#[test]
fn fanout_samples_only_messages_sent_inside_the_window() {
    let senders =
        vec![SenderOutcome { records: vec![record(9 * S, Some(9 * S + MS), 1)], errors: Default::default() }];
    let receivers =
        vec![ReceiverOutcome { deliveries: vec![delivery(0, 0, 9 * S, 10 * S + MS)], ..Default::default() }];
    let fanout = fanout(&senders, &receivers, window());
    assert_eq!(fanout.delivered, 1);
    assert_eq!(fanout.missing, 0);
    assert!(fanout.latency_ms.is_none());
}

fn status(following_redis: bool, lag: Lag) -> Status {
    Status { following_redis, positions: "p".to_owned(), lag_ms: lag }
}

#[test]
fn replication_reports_each_worker_and_the_worst_of_them() {
    let lag = |samples, p50, p99, max| Lag { samples, p50, p99, max };
    let readings = vec![
        WorkerReadings {
            name: "sync1".to_owned(),
            start: Ok(status(true, lag(500, 9.0, 90.0, 900.0))), // the warm-up's: ignored
            end: Ok(status(true, lag(1000, 0.5, 3.0, 12.0))),
        },
        WorkerReadings {
            name: "sync2".to_owned(),
            start: Ok(status(true, Lag::default())),
            end: Ok(status(false, lag(900, 0.7, 2.0, 20.0))),
        },
        // No entries in the window: left out of the worst-worker figures.
        WorkerReadings {
            name: "reader1".to_owned(),
            start: Ok(status(true, Lag::default())),
            end: Ok(status(true, Lag::default())),
        },
        WorkerReadings {
            name: "reader2".to_owned(),
            start: Err("connection refused".to_owned()),
            end: Ok(status(true, lag(10, 50.0, 50.0, 50.0))),
        },
    ];
    let replication = replication(&readings).unwrap();
    assert_eq!(replication.workers.len(), 4);
    assert_eq!(replication.workers[0].lag_ms, Some(lag(1000, 0.5, 3.0, 12.0)));
    assert_eq!(replication.workers[1].following_redis, (Some(true), Some(false)));
    // Without a reset at the start, the end's figures would include the warm-up.
    assert_eq!(replication.workers[3].lag_ms, None);
    assert!(replication.workers[3].error.as_deref().unwrap().contains("connection refused"));
    assert_eq!(replication.failed_workers, 1);
    assert_eq!(replication.overall, Some(lag(1900, 0.7, 3.0, 20.0)));

    assert!(super::replication(&[]).is_none());
}

#[test]
fn sync_answers_are_counted_by_process_and_user() {
    let receivers = vec![
        ReceiverOutcome { answers_by_instance: vec![("sync/sync2".to_owned(), 5)], ..Default::default() },
        ReceiverOutcome {
            answers_by_instance: vec![("sync/sync1".to_owned(), 3), ("sync/sync2".to_owned(), 1)],
            ..Default::default()
        },
        ReceiverOutcome::default(),
    ];
    assert_eq!(
        answers_by_instance(&receivers),
        vec![
            InstanceAnswers { instance: "sync/sync1".to_owned(), answers: 3, users: 1 },
            InstanceAnswers { instance: "sync/sync2".to_owned(), answers: 6, users: 2 },
        ]
    );
}

#[test]
fn sums_skip_missing_readings() {
    assert_eq!(sum([Some(1_u64), None, Some(2)].into_iter()), Some(3));
    assert_eq!(sum([None::<u64>, None].into_iter()), None);
    assert_eq!(sum(std::iter::empty::<Option<f64>>()), None);
}

#[test]
fn deliveries_per_second_count_distinct_arrivals_inside_the_window() {
    let senders = vec![SenderOutcome {
        records: vec![
            record(9 * S, Some(9 * S + MS), 1),        // warm-up, arrives in the warm-up
            record(9 * S + 900 * MS, Some(10 * S), 1), // warm-up, arrives in the window
            record(11 * S, Some(11 * S + MS), 1),      // arrives in the window, twice
            record(12 * S - MS, Some(12 * S), 1),      // arrives after the window
        ],
        errors: Default::default(),
    }];
    let receivers = vec![ReceiverOutcome {
        deliveries: vec![
            delivery(0, 0, 9 * S, 9 * S + 2 * MS),
            delivery(0, 1, 9 * S + 900 * MS, 10 * S + MS),
            delivery(0, 2, 11 * S, 11 * S + 2 * MS),
            delivery(0, 2, 11 * S, 11 * S + 3 * MS),
            delivery(0, 3, 12 * S - MS, 12 * S + MS),
        ],
        ..Default::default()
    }];
    let fanout = fanout(&senders, &receivers, window());
    assert_eq!(fanout.in_window, 2);
    assert_eq!(fanout.per_sec, 1.0);
    assert_eq!(fanout.delivered, 4);
    assert_eq!(fanout.duplicates, 1);
}

#[test]
fn sync_responses_count_answers_inside_the_window() {
    let receivers = vec![
        ReceiverOutcome { answers_ns: vec![9 * S, 10 * S, 11 * S + 500 * MS, 12 * S], ..Default::default() },
        ReceiverOutcome { answers_ns: vec![10 * S + 100 * MS], ..Default::default() },
        ReceiverOutcome::default(),
    ];
    assert_eq!(responses_in_window(&receivers, window()), 3);
}

#[test]
fn expected_deliveries_are_the_other_syncing_members() {
    // Issue 10's medium workload: 25 of each room's 50 members sync.
    let plan = Plan::new(200, 40, 10).unwrap().with_syncing_users(100).unwrap();
    let (syncing_sender, other_sender) = (plan.sender_user(1), plan.sender_user(0));
    assert!(plan.is_syncing(syncing_sender) && !plan.is_syncing(other_sender));
    let sender = |user: usize| SenderOutcome {
        records: plan.rooms_of_user[user][..2]
            .iter()
            .enumerate()
            .map(|(seq, &room)| {
                let other_members = u32::try_from(plan.recipients(room, user)).unwrap();
                record(10 * S + seq as u64 * MS, Some(10 * S + 10 * MS), other_members)
            })
            .collect(),
        errors: Default::default(),
    };
    let senders = vec![sender(other_sender), sender(syncing_sender)];
    let fanout = fanout(&senders, &[], window());
    // Two messages to 25 receivers each, two to 24 (the sender syncs but is not its own receiver).
    assert_eq!(fanout.expected, 2 * 25 + 2 * 24);
    assert_eq!(fanout.missing, 98);
}

fn measurements(receivers: Vec<ReceiverOutcome>, senders: Vec<SenderOutcome>) -> Measurements {
    Measurements {
        backend: "url",
        base_url: "http://127.0.0.1:8008".to_owned(),
        server_pid: Some(42),
        sync_workers: None,
        mean_members: 50.0,
        mean_syncing_members: Some(25.0),
        setup_took: Duration::from_secs(3),
        setup_rate_limited: 4,
        initial_sync_times: vec![Duration::from_millis(20)],
        window: window(),
        senders,
        receivers,
        usage: Usage {
            rss_samples: Vec::new(),
            processes: Vec::new(),
            database_cpu_seconds: None,
            redis_cpu_seconds: None,
            nginx_cpu_seconds: None,
            client_cpu_seconds: None,
        },
        replication: Vec::new(),
    }
}

#[test]
fn the_report_gives_deliveries_and_sync_responses_per_second_in_the_table_and_the_json() {
    let args = Args::try_parse_from([
        "ganglion-load",
        "--url",
        "http://127.0.0.1:8008",
        "--users",
        "200",
        "--rooms",
        "40",
        "--rooms-per-user",
        "10",
        "--syncing-users",
        "100",
        "--timeline-limit",
        "100",
        "--lazy-load-members",
    ])
    .unwrap();
    let mut rate_limited =
        SenderOutcome { records: vec![record(10 * S, Some(10 * S + 2 * MS), 1)], errors: Default::default() };
    rate_limited.errors.rate_limited = 7;
    let receivers = vec![ReceiverOutcome {
        deliveries: vec![delivery(0, 0, 10 * S, 10 * S + 3 * MS)],
        answers_ns: vec![10 * S + 3 * MS, 11 * S, 11 * S + 1],
        requests: 4,
        ..Default::default()
    }];
    let report = Report::new(&args, measurements(receivers, vec![rate_limited]));
    let table = report.table();
    assert!(
        table.contains("200 users (100 long-polling /sync, 25.0 of them per room) in 40 rooms"),
        "{table}"
    );
    assert!(table.contains("/sync filter: timeline limit 100, lazy-loaded members"), "{table}");
    assert!(
        table.contains("deliveries/s              0.5 (1 received in window by 1 long-pollers)"),
        "{table}"
    );
    assert!(table.contains("/sync responses/s         1.5 (3 incremental answers in window"), "{table}");
    assert!(table.contains("setup 4, send 7, sync 0"), "{table}");

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["fanout"]["per_sec"], 0.5);
    assert_eq!(json["fanout"]["in_window"], 1);
    assert_eq!(json["sync"]["responses_per_sec"], 1.5);
    assert_eq!(json["sync"]["responses_in_window"], 3);
    assert_eq!(json["sync"]["long_pollers"], 1);
    assert_eq!(json["sends"]["errors"]["rate_limited"], 7);
    assert_eq!(json["config"]["syncing_users"], 100);
    assert_eq!(json["config"]["lazy_load_members"], true);
    assert_eq!(json["config"]["mean_syncing_members_per_room"], 25.0);
}
