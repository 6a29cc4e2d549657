use redis::Value;

use super::follower::tests_support::parse;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn xread_replies_parse_in_resp2_and_resp3_shapes() {
    let entries = Value::Array(vec![Value::Array(vec![
        bulk("7-0"),
        Value::Array(vec![bulk("p"), bulk("7"), bulk("r"), bulk("!a:x"), bulk("u"), bulk("[\"@b:x\"]")]),
    ])]);
    let resp2 = Value::Array(vec![Value::Array(vec![bulk("ganglion:events"), entries.clone()])]);
    let resp3 = Value::Map(vec![(bulk("ganglion:events"), entries)]);
    for reply in [resp2, resp3] {
        let streams = parse(reply);
        assert_eq!(streams.len(), 1);
        let (key, entries) = &streams[0];
        assert_eq!(key, "ganglion:events");
        assert_eq!(
            entries,
            &vec![("7-0".to_owned(), Some(7), Some("!a:x".to_owned()), vec!["@b:x".to_owned()])]
        );
    }
    assert!(parse(Value::Nil).is_empty());
}

mod live {
    //! A master's `RedisBus` and a worker's `Follower` over a real (throwaway) Redis, with an
    //! empty database behind the follower.

    use std::{sync::Arc, time::Duration};

    use ganglion_storage::Db;
    use ganglion_types::{StreamKind, StreamPosition, SyncToken};
    use parking_lot::Mutex;

    use crate::{
        BoxFuture, Bus, InProcessBus, Invalidation, Notifier, Positions, RecentEvents, StreamRow,
        TypingStore,
        redis::{Follower, FollowerHooks, RedisBus, TypingState},
    };

    const EPOCH: u64 = 7;

    struct Hooks {
        master_typing: Arc<TypingStore>,
        invalidations: Mutex<Vec<Option<Invalidation>>>,
    }

    impl FollowerHooks for Hooks {
        fn typing_snapshot(&self) -> BoxFuture<'_, Option<TypingState>> {
            Box::pin(async move {
                let (position, rooms) = self.master_typing.snapshot();
                Some((EPOCH, position, rooms))
            })
        }

        fn invalidate(&self, what: Option<Invalidation>) {
            self.invalidations.lock().push(what);
        }
    }

    fn account_data(position: i64) -> StreamRow {
        StreamRow {
            kind: StreamKind::AccountData,
            position: StreamPosition(position),
            room_id: None,
            user_ids: vec![Arc::from("@alice:x")],
            event_nid: None,
            event: None,
            event_txn: None,
            receipt: None,
            keys_complete: true,
            trace: None,
            push: None,
        }
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follower_takes_only_the_next_positions_from_redis() {
        let redis = ganglion_testkit::Redis::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display()), 2).await.unwrap();

        let master_typing = Arc::new(TypingStore::new());
        let master_positions =
            Arc::new(Positions::new(SyncToken { typing_epoch: EPOCH, ..SyncToken::default() }));
        let local = InProcessBus::new(
            master_positions,
            Notifier::new(),
            Arc::new(RecentEvents::new(SyncToken::default())),
        );
        let bus = RedisBus::start(local, master_typing.clone(), &redis.url(), 1000, EPOCH, None).unwrap();

        let positions = Arc::new(Positions::new(SyncToken::default()));
        let typing = Arc::new(TypingStore::new());
        let hooks =
            Arc::new(Hooks { master_typing: master_typing.clone(), invalidations: Mutex::new(Vec::new()) });
        let follower = Follower::new(
            db,
            positions.clone(),
            Notifier::new(),
            Arc::new(RecentEvents::new(SyncToken::default())),
            typing.clone(),
            hooks.clone(),
            redis.url(),
            Duration::from_millis(100),
        );
        follower.start();
        until("the follower reads Redis", || follower.is_following_redis()).await;
        assert_eq!(positions.typing_epoch(), EPOCH, "the typing epoch comes from the master");

        // Rows that follow on from the worker's position are taken straight from Redis.
        bus.publish_all(vec![account_data(1), account_data(2)]);
        until("account data reaches position 2", || positions.get(StreamKind::AccountData).0 == 2).await;

        let position = master_typing.set("!room:x", "@alice:x", true, Duration::from_secs(30)).unwrap();
        bus.publish(StreamRow {
            kind: StreamKind::Typing,
            position,
            room_id: Some(Arc::from("!room:x")),
            user_ids: Vec::new(),
            event_nid: None,
            event: None,
            event_txn: None,
            receipt: None,
            keys_complete: true,
            trace: None,
            push: None,
        });
        until("typing arrives", || typing.typing_in_room("!room:x") == ["@alice:x"]).await;

        bus.invalidate(Invalidation::Sessions);
        until("the invalidation arrives", || {
            hooks.invalidations.lock().contains(&Some(Invalidation::Sessions))
        })
        .await;

        // A position past a gap sends the worker to the database, which has no such row: Redis
        // alone never moves a worker past what is committed.
        bus.publish(account_data(5));
        let token = SyncToken { account_data: StreamPosition(5), ..positions.current() };
        assert!(!positions.wait_for(&token, Duration::from_millis(500)).await);
        assert_eq!(positions.get(StreamKind::AccountData).0, 2);
        assert!(follower.take_lag_stats().samples >= 2);
    }
}

#[test]
fn event_rows_cross_redis_unchanged() {
    use ganglion_storage::events::EventRow;
    use ganglion_types::{EventNid, RoomNid, SnapshotNid, StateKeyNid, TypeNid};
    let row = EventRow {
        event_nid: EventNid(12),
        stream_pos: 40,
        event_id: "$abc".into(),
        room_nid: RoomNid(3),
        depth: 7,
        type_nid: TypeNid(2),
        state_key_nid: Some(StateKeyNid(9)),
        sender: "@alice:x".into(),
        origin_server_ts: 1_764_000_000_000,
        snapshot_nid: SnapshotNid(5),
        replaces_nid: None,
        redacted_by: None,
        json: r#"{"content":{"body":"hi \"there\""},"type":"m.room.message"}"#.into(),
    };
    assert_eq!(super::decode_event(&super::encode_event(&row)), Some(row));
    assert_eq!(super::decode_event("[1,2]"), None);
    assert_eq!(super::decode_event("not json"), None);
}
