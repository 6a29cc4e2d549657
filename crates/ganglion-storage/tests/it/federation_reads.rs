//! What other servers may read of a room: whether a server has a joined member in it.

use ganglion_storage::{federation_reads::server_has_joined_member, rooms};
use ganglion_types::EventNid;

on_both_backends!(a_server_is_in_a_room_through_its_joined_users_only, |db| {
    let mut conn = db.conn().await.unwrap();
    let room = rooms::insert_room(&mut conn, "!f:x", "12", false).await.unwrap();
    let other = rooms::insert_room(&mut conn, "!g:x", "12", false).await.unwrap();
    let memberships = [
        (room, "@a:joined.example", "join"),
        (room, "@b:left.example", "leave"),
        (room, "@c:127.0.0.1:8448", "join"),
        (room, "@d:host:8449", "join"),
        (other, "@e:elsewhere.example", "join"),
    ];
    for (n, (room, user, membership)) in memberships.into_iter().enumerate() {
        let n = n as i64 + 1;
        rooms::upsert_membership(&mut conn, room, user, membership, EventNid(n), n).await.unwrap();
    }
    let in_room = async |conn: &mut ganglion_storage::DbConn, server: &str| {
        server_has_joined_member(conn, room, server).await.unwrap()
    };
    assert!(in_room(&mut conn, "joined.example").await);
    assert!(in_room(&mut conn, "127.0.0.1:8448").await);
    assert!(in_room(&mut conn, "host:8449").await);
    // Left, another room's, case or a suffix of the name: not in.
    assert!(!in_room(&mut conn, "left.example").await);
    assert!(!in_room(&mut conn, "elsewhere.example").await);
    assert!(!in_room(&mut conn, "JOINED.example").await);
    assert!(!in_room(&mut conn, "example").await);
    assert!(!in_room(&mut conn, "ined.example").await);
    // `8449` is the port of `host:8449`, not the server of `@d:host:8449`.
    assert!(!in_room(&mut conn, "8449").await);
    assert!(!in_room(&mut conn, "a-much-longer-server-name-than-any-user-id.example").await);
});
