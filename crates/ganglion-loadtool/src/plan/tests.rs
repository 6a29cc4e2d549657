use super::Plan;

#[test]
fn issue_configuration_gives_fifteen_members_per_room() {
    let plan = Plan::new(100, 20, 3).unwrap();
    assert!(plan.members_of_room.iter().all(|members| members.len() == 15));
    assert_eq!(plan.mean_members(), 15.0);
    assert_eq!(plan.joins().len(), 100 * 3 - 20);
}

#[test]
fn no_user_joins_a_room_twice() {
    let plan = Plan::new(7, 5, 4).unwrap();
    for rooms in &plan.rooms_of_user {
        let mut sorted = rooms.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), rooms.len());
    }
}

#[test]
fn creator_is_a_member_and_not_asked_to_join() {
    let plan = Plan::new(10, 4, 2).unwrap();
    for room in 0..4 {
        let creator = plan.creator(room);
        assert!(plan.rooms_of_user[creator].contains(&room));
        assert!(!plan.joins().contains(&(creator, room)));
    }
}

#[test]
fn more_rooms_per_user_than_rooms_is_clamped() {
    let plan = Plan::new(3, 2, 5).unwrap();
    assert!(plan.rooms_of_user.iter().all(|rooms| rooms.len() == 2));
}

#[test]
fn empty_rooms_are_refused() {
    assert!(Plan::new(2, 10, 3).is_err());
}

/// The medium workload of issue 10: 200 users in 40 rooms, 10 rooms each, 100 of them syncing.
fn medium() -> Plan {
    Plan::new(200, 40, 10).unwrap().with_syncing_users(100).unwrap()
}

#[test]
fn the_first_syncing_users_are_spread_evenly_over_the_rooms() {
    let plan = medium();
    assert!(plan.members_of_room.iter().all(|members| members.len() == 50));
    assert!((0..40).all(|room| plan.syncing_members(room) == 25));
    assert_eq!(plan.mean_syncing_members(), 25.0);
    assert!(plan.is_syncing(0) && plan.is_syncing(99) && !plan.is_syncing(100));

    // Uneven counts stay within one of each other.
    let plan = Plan::new(23, 7, 3).unwrap().with_syncing_users(5).unwrap();
    let counts: Vec<usize> = (0..7).map(|room| plan.syncing_members(room)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 5 * 3);
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
}

#[test]
fn syncing_users_are_between_one_and_all() {
    assert!(Plan::new(10, 2, 1).unwrap().with_syncing_users(0).is_err());
    assert!(Plan::new(10, 2, 1).unwrap().with_syncing_users(11).is_err());
    let all = Plan::new(10, 2, 1).unwrap();
    assert_eq!(all.syncing, 10);
    assert!((0..10).all(|user| all.is_syncing(user)));
}

#[test]
fn with_every_user_syncing_sender_i_is_user_i_mod_users() {
    let plan = Plan::new(5, 2, 1).unwrap();
    let users: Vec<usize> = (0..12).map(|sender| plan.sender_user(sender)).collect();
    assert_eq!(users, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
}

#[test]
fn senders_mix_syncing_and_other_users_and_reach_every_room() {
    let plan = medium();
    let users: Vec<usize> = (0..16).map(|sender| plan.sender_user(sender)).collect();
    assert_eq!(users, [100, 0, 101, 1, 102, 2, 103, 3, 104, 4, 105, 5, 106, 6, 107, 7]);
    let mut rooms: Vec<usize> = users.iter().flat_map(|&user| plan.rooms_of_user[user].clone()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    assert_eq!(rooms.len(), 40);

    // A quarter syncing: one sender in four is a syncing user; groups wrap within themselves.
    let plan = Plan::new(8, 4, 2).unwrap().with_syncing_users(2).unwrap();
    let users: Vec<usize> = (0..12).map(|sender| plan.sender_user(sender)).collect();
    assert_eq!(users, [2, 3, 4, 0, 5, 6, 7, 1, 2, 3, 4, 0]);
}

#[test]
fn recipients_are_the_other_syncing_members() {
    let plan = medium();
    let room = plan.rooms_of_user[0][0];
    // User 0 syncs: the other 24 syncing members receive its message.
    assert_eq!(plan.recipients(room, 0), 24);
    // User 100 (in the same rooms as user 0) does not: all 25 receive.
    assert_eq!(plan.rooms_of_user[100], plan.rooms_of_user[0]);
    assert_eq!(plan.recipients(room, 100), 25);
    // Everyone syncing: every other member.
    let all = Plan::new(100, 20, 3).unwrap();
    assert_eq!(all.recipients(0, all.members_of_room[0][0]), 14);
}
