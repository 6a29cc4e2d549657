use crate::receiver::{Delivery, ReceiverOutcome};
use crate::sender::{SendRecord, SenderOutcome};

use crate::replication::{Lag, Status, WorkerReadings};

use super::{InstanceAnswers, Window, answers_by_instance, fanout, replication, sends, sum};

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
