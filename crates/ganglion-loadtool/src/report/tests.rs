use crate::receiver::{Delivery, ReceiverOutcome};
use crate::sender::{SendRecord, SenderOutcome};

use super::{Window, fanout, sends};

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
