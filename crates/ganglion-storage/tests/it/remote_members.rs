//! Which other servers share a room: the joined members of a room, and of a user's rooms, who
//! are not users of this server; and typing notifications dropped from the outbox once stale.

use ganglion_storage::{federation, rooms};
use ganglion_types::EventNid;

on_both_backends!(remote_members_are_joined_users_of_other_servers, |db| {
    let mut conn = db.conn().await.unwrap();
    let ours = "our.example:8448";
    let room = rooms::insert_room(&mut conn, "!r:our.example:8448", "12", true).await.unwrap();
    let other = rooms::insert_room(&mut conn, "!o:our.example:8448", "12", true).await.unwrap();
    let alone = rooms::insert_room(&mut conn, "!alone:our.example:8448", "12", true).await.unwrap();
    let members = [
        (room, "@alice:our.example:8448", "join"),
        (room, "@bob:remote.example", "join"),
        (room, "@carol:remote.example", "join"),
        // A server whose name ends like ours, one that has left, one only invited.
        (room, "@dan:evilour.example:8448", "join"),
        (room, "@erin:gone.example", "leave"),
        (room, "@frank:invited.example", "invite"),
        (other, "@alice:our.example:8448", "join"),
        (other, "@bob:remote.example", "join"),
        (other, "@gil:[::1]:8448", "join"),
        (alone, "@alice:our.example:8448", "join"),
        (alone, "@hal:our.example:8448", "join"),
        // Not a room alice is joined to.
        (
            rooms::insert_room(&mut conn, "!x:our.example:8448", "12", true).await.unwrap(),
            "@ivy:x.example",
            "join",
        ),
    ];
    for (n, (room, user, membership)) in members.iter().enumerate() {
        rooms::upsert_membership(&mut conn, *room, user, membership, EventNid(n as i64 + 1), n as i64 + 1)
            .await
            .unwrap();
    }
    assert_eq!(
        rooms::remote_joined_members_of_room(&mut conn, room, ours).await.unwrap(),
        vec!["@bob:remote.example", "@carol:remote.example", "@dan:evilour.example:8448"]
    );
    assert!(rooms::remote_joined_members_of_room(&mut conn, alone, ours).await.unwrap().is_empty());
    assert_eq!(
        rooms::remote_users_sharing_a_room_with(&mut conn, "@alice:our.example:8448", ours).await.unwrap(),
        vec!["@bob:remote.example", "@carol:remote.example", "@dan:evilour.example:8448", "@gil:[::1]:8448"]
    );
    assert!(
        rooms::remote_users_sharing_a_room_with(&mut conn, "@hal:our.example:8448", ours)
            .await
            .unwrap()
            .is_empty()
    );
    // `%` and `_` in a server name match only themselves.
    assert_eq!(rooms::remote_joined_members_of_room(&mut conn, alone, "%").await.unwrap().len(), 2);
    assert_eq!(
        rooms::remote_joined_members_of_room(&mut conn, alone, "our_example:8448").await.unwrap().len(),
        2
    );
});

on_both_backends!(stale_typing_notifications_leave_the_outbox, |db| {
    let mut conn = db.conn().await.unwrap();
    let edu = |edu_type: &str| ("a.example".to_owned(), edu_type.to_owned(), "{}".to_owned());
    federation::insert_outbox_edus(&mut conn, &[edu("m.typing"), edu("m.receipt")], 1000).await.unwrap();
    federation::insert_outbox_edus(&mut conn, &[edu("m.typing")], 5000).await.unwrap();
    let queued = federation::outbox_edus_for(&mut conn, "a.example", 10).await.unwrap();
    assert_eq!(queued.iter().map(|row| row.created_ts).collect::<Vec<_>>(), vec![1000, 1000, 5000]);
    assert_eq!(federation::delete_outbox_edus_queued_before(&mut conn, "m.typing", 5000).await.unwrap(), 1);
    let left = federation::outbox_edus_for(&mut conn, "a.example", 10).await.unwrap();
    let left: Vec<(&str, i64)> = left.iter().map(|row| (row.edu_type.as_str(), row.created_ts)).collect();
    assert_eq!(left, vec![("m.receipt", 1000), ("m.typing", 5000)]);
});
