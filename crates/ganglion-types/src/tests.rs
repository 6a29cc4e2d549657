use super::*;

#[test]
fn sync_token_round_trips() {
    let token = SyncToken {
        events: StreamPosition(42),
        receipts: StreamPosition(7),
        typing: StreamPosition(3),
        account_data: StreamPosition(9),
        typing_epoch: 1_700_000_000_000,
        to_device: StreamPosition(5),
        device_lists: StreamPosition(11),
        presence: StreamPosition(2),
    };
    let text = token.to_string();
    assert_eq!(text, "s2_42_7_3_9_1700000000000_5_11_2");
    assert_eq!(SyncToken::parse(&text), Ok(token));
}

#[test]
fn a_version_1_token_reads_the_newer_streams_from_their_start() {
    let token = SyncToken::parse("s1_42_7_3_9_1700000000000").unwrap();
    assert_eq!(
        (token.events, token.account_data, token.typing_epoch),
        (StreamPosition(42), StreamPosition(9), 1_700_000_000_000)
    );
    assert_eq!((token.to_device, token.device_lists, token.presence), Default::default());
}

#[test]
fn sync_token_rejects_garbage() {
    let bad = [
        "",
        "s1",
        "s3_1_2_3_4_5_6_7_8",
        "s2_1_2_3_4_5",
        "s2_1_2_3_4_5_6_7",
        "s2_1_2_3_4_5_6_7_8_9",
        "s1_1_2_3_4",
        "s1_1_2_3_4_5_6",
        "s1_-1_2_3_4_5",
        "s2_1_2_3_4_5_6_-7_8",
        "s1_a_2_3_4_5",
    ];
    for bad in bad {
        assert_eq!(SyncToken::parse(bad), Err(TokenParseError), "{bad}");
    }
}

#[test]
fn every_stream_is_in_the_token() {
    let mut token = SyncToken::default();
    for (index, kind) in StreamKind::all().into_iter().enumerate() {
        token.set(kind, StreamPosition(index as i64 + 1));
        assert_eq!(token.get(kind), StreamPosition(index as i64 + 1));
        // Readers index per-stream arrays by the discriminant.
        assert_eq!(kind as usize, index);
    }
}

#[test]
fn all_role_serves_every_class() {
    assert!(Role::All.serves(EndpointClass::Sync));
    assert!(Role::All.serves(EndpointClass::ClientWrite));
    assert!(!Role::Sync.serves(EndpointClass::ClientRead));
}

#[test]
fn shards_are_stable_and_spread() {
    // Fixed values: every process and release must agree on them.
    assert_eq!(crate::shard_of("matrix.org", 1), 0);
    let first = crate::shard_of("example.com", 2);
    assert_eq!(crate::shard_of("example.com", 2), first);
    let mut counts = [0_usize; 4];
    for n in 0..1000 {
        counts[crate::shard_of(&format!("server{n}.example"), 4)] += 1;
    }
    assert!(counts.iter().all(|count| (150..350).contains(count)), "{counts:?}");
}

#[test]
fn a_federation_sender_serves_no_endpoint() {
    assert!(!Role::FederationSender.serves(EndpointClass::WellKnown));
    assert!(!Role::FederationSender.serves(EndpointClass::Federation));
}
