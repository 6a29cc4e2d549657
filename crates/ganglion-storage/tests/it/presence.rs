//! The presence stream: the latest row per user, moved to a new position on each update.

use ganglion_storage::{
    presence::{self, PresenceRow},
    replication,
};

fn row(user_id: &str, state: &str, stream_pos: i64) -> PresenceRow {
    PresenceRow {
        user_id: user_id.into(),
        state: state.into(),
        status_msg: None,
        last_active_ts: stream_pos * 1000,
        currently_active: false,
        stream_pos,
    }
}

on_both_backends!(presence_keeps_the_latest_row_per_user, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(presence::max_presence_stream_pos(&mut conn).await.unwrap(), 0);
    assert_eq!(presence::presence_of_user(&mut conn, "@a:x").await.unwrap(), None);
    presence::upsert_presence(&mut conn, &row("@a:x", "online", 1)).await.unwrap();
    presence::upsert_presence(&mut conn, &row("@b:x", "unavailable", 2)).await.unwrap();
    let busy =
        PresenceRow { status_msg: Some("busy".into()), currently_active: true, ..row("@a:x", "online", 3) };
    presence::upsert_presence(&mut conn, &busy).await.unwrap();
    presence::upsert_presence(&mut conn, &row("@c:x", "offline", 4)).await.unwrap();
    assert_eq!(presence::presence_of_user(&mut conn, "@a:x").await.unwrap(), Some(busy.clone()));
    assert_eq!(presence::max_presence_stream_pos(&mut conn).await.unwrap(), 4);

    let everyone = vec!["@a:x".to_owned(), "@b:x".to_owned(), "@c:x".to_owned()];
    assert_eq!(
        presence::presence_between(&mut conn, &everyone, 0, 4).await.unwrap(),
        vec![row("@b:x", "unavailable", 2), busy.clone(), row("@c:x", "offline", 4)]
    );
    // The row left position 1 for 3.
    assert_eq!(
        presence::presence_between(&mut conn, &everyone, 0, 2).await.unwrap(),
        vec![row("@b:x", "unavailable", 2)]
    );
    assert!(presence::presence_between(&mut conn, &everyone, 4, 10).await.unwrap().is_empty());
    let mut many: Vec<String> = (0..1000).map(|n| format!("@u{n}:x")).collect();
    many.push("@a:x".to_owned());
    many.insert(0, "@c:x".to_owned());
    assert_eq!(
        presence::presence_between(&mut conn, &many, 0, 4).await.unwrap(),
        vec![busy, row("@c:x", "offline", 4)]
    );
    assert_eq!(
        replication::presence_rows_between(&mut conn, 1, 4, 10).await.unwrap(),
        vec![(2, "@b:x".to_owned()), (3, "@a:x".to_owned()), (4, "@c:x".to_owned())]
    );
    assert_eq!(
        replication::presence_rows_between(&mut conn, 0, 10, 1).await.unwrap(),
        vec![(2, "@b:x".to_owned())]
    );
});

on_both_backends!(presence_of_room_mates_follows_joined_rooms, |db| {
    use ganglion_storage::rooms;
    use ganglion_types::{EventNid, RoomNid};
    let mut conn = db.conn().await.unwrap();
    let join = |room: i64, user: &'static str, membership: &'static str, at: i64| {
        (RoomNid(room), user, membership, EventNid(at), at)
    };
    // @a and @b share room 1; @c is only invited there; @d is alone in room 2 with @a left.
    for (room, user, membership, event, at) in [
        join(1, "@a:x", "join", 1),
        join(1, "@b:x", "join", 2),
        join(1, "@c:x", "invite", 3),
        join(2, "@d:x", "join", 4),
        join(2, "@a:x", "leave", 5),
    ] {
        rooms::upsert_membership(&mut conn, room, user, membership, event, at).await.unwrap();
    }
    for (user, at) in [("@a:x", 1), ("@b:x", 2), ("@c:x", 3), ("@d:x", 4)] {
        presence::upsert_presence(&mut conn, &row(user, "online", at)).await.unwrap();
    }
    let users_of = |rows: Vec<PresenceRow>| rows.into_iter().map(|row| row.user_id).collect::<Vec<_>>();
    let seen = presence::presence_of_room_mates_between(&mut conn, "@a:x", 0, 10).await.unwrap();
    assert_eq!(users_of(seen), ["@a:x", "@b:x"]);
    let seen = presence::presence_of_room_mates_between(&mut conn, "@a:x", 1, 10).await.unwrap();
    assert_eq!(users_of(seen), ["@b:x"]);
    let seen = presence::presence_of_room_mates_between(&mut conn, "@c:x", 0, 10).await.unwrap();
    assert_eq!(users_of(seen), ["@c:x"], "an invite shares nothing");
    let seen = presence::presence_of_room_mates_between(&mut conn, "@nobody:x", 0, 10).await.unwrap();
    assert!(seen.is_empty());

    assert!(rooms::users_share_a_room(&mut conn, "@a:x", "@b:x").await.unwrap());
    assert!(rooms::users_share_a_room(&mut conn, "@b:x", "@a:x").await.unwrap());
    assert!(!rooms::users_share_a_room(&mut conn, "@a:x", "@c:x").await.unwrap());
    assert!(!rooms::users_share_a_room(&mut conn, "@a:x", "@d:x").await.unwrap(), "@a left room 2");

    presence::upsert_presence(&mut conn, &row("@b:x", "offline", 6)).await.unwrap();
    let awake = presence::presence_not_offline(&mut conn).await.unwrap();
    let mut awake = users_of(awake);
    awake.sort();
    assert_eq!(awake, ["@a:x", "@c:x", "@d:x"]);
});
