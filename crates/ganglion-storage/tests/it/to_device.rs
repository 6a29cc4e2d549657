//! The to-device stream: messages per device, their deletion, the high-water mark and txn ids.

use ganglion_storage::{
    replication,
    to_device::{self, ToDeviceRow},
};

fn message(stream_pos: i64, user_id: &str, device_id: &str) -> ToDeviceRow {
    ToDeviceRow {
        stream_pos,
        user_id: user_id.into(),
        device_id: device_id.into(),
        sender: "@s:x".into(),
        event_type: "m.room_key_request".into(),
        content_json: format!("{{\"n\":{stream_pos}}}"),
        message_id: format!("m{stream_pos}"),
    }
}

on_both_backends!(messages_are_read_and_deleted_per_device, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(to_device::max_to_device_stream_pos(&mut conn).await.unwrap(), 0);
    to_device::insert_to_device_messages(&mut conn, &[]).await.unwrap();
    let messages = vec![
        message(1, "@a:x", "A1"),
        message(2, "@a:x", "A2"),
        message(3, "@a:x", "A1"),
        message(4, "@b:x", "B1"),
        message(5, "@a:x", "A1"),
    ];
    to_device::insert_to_device_messages(&mut conn, &messages).await.unwrap();
    let for_a1 = to_device::to_device_messages_for(&mut conn, "@a:x", "A1", 0, 10, 10).await.unwrap();
    assert_eq!(for_a1, vec![messages[0].clone(), messages[2].clone(), messages[4].clone()]);
    let window = to_device::to_device_messages_for(&mut conn, "@a:x", "A1", 1, 4, 10).await.unwrap();
    assert_eq!(window, vec![messages[2].clone()]);
    let limited = to_device::to_device_messages_for(&mut conn, "@a:x", "A1", 0, 10, 2).await.unwrap();
    assert_eq!(limited.iter().map(|m| m.stream_pos).collect::<Vec<_>>(), vec![1, 3]);

    assert_eq!(to_device::delete_to_device_messages_up_to(&mut conn, "@a:x", "A1", 3).await.unwrap(), 2);
    let left = to_device::to_device_messages_for(&mut conn, "@a:x", "A1", 0, 10, 10).await.unwrap();
    assert_eq!(left, vec![messages[4].clone()]);
    assert_eq!(to_device::delete_to_device_messages_of_device(&mut conn, "@a:x", "A1").await.unwrap(), 1);
    assert_eq!(to_device::delete_to_device_messages_of_device(&mut conn, "@a:x", "A1").await.unwrap(), 0);
    // Other devices keep theirs.
    assert_eq!(to_device::to_device_messages_for(&mut conn, "@a:x", "A2", 0, 10, 10).await.unwrap().len(), 1);
    assert_eq!(
        replication::to_device_rows_between(&mut conn, 0, 10, 10).await.unwrap(),
        vec![(2, "@a:x".to_owned(), "A2".to_owned()), (4, "@b:x".to_owned(), "B1".to_owned())]
    );
    assert_eq!(
        replication::to_device_rows_between(&mut conn, 2, 10, 10).await.unwrap(),
        vec![(4, "@b:x".to_owned(), "B1".to_owned())]
    );
    assert_eq!(replication::to_device_rows_between(&mut conn, 0, 10, 1).await.unwrap().len(), 1);
    // The newest message is gone, but its position stays used.
    assert_eq!(to_device::max_to_device_stream_pos(&mut conn).await.unwrap(), 5);
    to_device::delete_to_device_messages_up_to(&mut conn, "@a:x", "A2", 10).await.unwrap();
    to_device::delete_to_device_messages_up_to(&mut conn, "@b:x", "B1", 10).await.unwrap();
    assert_eq!(to_device::max_to_device_stream_pos(&mut conn).await.unwrap(), 5);
    to_device::insert_to_device_messages(&mut conn, &[message(7, "@a:x", "A1")]).await.unwrap();
    to_device::delete_to_device_messages_up_to(&mut conn, "@a:x", "A1", 7).await.unwrap();
    // The mark only rises, even for a batch below it (which the single writer never sends).
    to_device::insert_to_device_messages(&mut conn, &[message(6, "@b:x", "B1")]).await.unwrap();
    assert_eq!(to_device::max_to_device_stream_pos(&mut conn).await.unwrap(), 7);
});

on_both_backends!(a_large_batch_is_inserted_in_chunks, |db| {
    let mut tx = db.begin().await.unwrap();
    let messages: Vec<_> = (1..=1201).map(|position| message(position, "@a:x", "A1")).collect();
    to_device::insert_to_device_messages(&mut tx, &messages).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = db.conn().await.unwrap();
    let stored = to_device::to_device_messages_for(&mut conn, "@a:x", "A1", 0, 5000, 5000).await.unwrap();
    assert_eq!(stored, messages);
    assert_eq!(to_device::max_to_device_stream_pos(&mut conn).await.unwrap(), 1201);
});

on_both_backends!(to_device_txn_ids_are_seen_once, |db| {
    let mut conn = db.conn().await.unwrap();
    assert!(to_device::insert_to_device_txn(&mut conn, "@a:x", "A1", "t1").await.unwrap());
    assert!(!to_device::insert_to_device_txn(&mut conn, "@a:x", "A1", "t1").await.unwrap());
    // The same txn id from another device or user is another transaction.
    assert!(to_device::insert_to_device_txn(&mut conn, "@a:x", "A2", "t1").await.unwrap());
    assert!(to_device::insert_to_device_txn(&mut conn, "@b:x", "A1", "t1").await.unwrap());
});
