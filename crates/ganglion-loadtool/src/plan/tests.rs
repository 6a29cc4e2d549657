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
