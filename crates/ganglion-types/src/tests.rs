use super::*;

#[test]
fn sync_token_round_trips() {
    let token = SyncToken {
        events: StreamPosition(42),
        receipts: StreamPosition(7),
        typing: StreamPosition(3),
        account_data: StreamPosition(9),
        typing_epoch: 1_700_000_000_000,
    };
    let text = token.to_string();
    assert_eq!(text, "s1_42_7_3_9_1700000000000");
    assert_eq!(SyncToken::parse(&text), Ok(token));
}

#[test]
fn sync_token_rejects_garbage() {
    for bad in ["", "s1", "s2_1_2_3_4_5", "s1_1_2_3_4", "s1_1_2_3_4_5_6", "s1_-1_2_3_4_5", "s1_a_2_3_4_5"] {
        assert_eq!(SyncToken::parse(bad), Err(TokenParseError), "{bad}");
    }
}

#[test]
fn every_stream_is_in_the_token() {
    let mut token = SyncToken::default();
    for (index, kind) in StreamKind::all().into_iter().enumerate() {
        token.set(kind, StreamPosition(index as i64 + 1));
        assert_eq!(token.get(kind), StreamPosition(index as i64 + 1));
    }
}

#[test]
fn all_role_serves_every_class() {
    assert!(Role::All.serves(EndpointClass::Sync));
    assert!(Role::All.serves(EndpointClass::ClientWrite));
    assert!(!Role::Sync.serves(EndpointClass::ClientRead));
}
