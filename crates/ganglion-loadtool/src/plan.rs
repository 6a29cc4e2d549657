//! Who is in which room. Pure arithmetic, so the same arguments always give the same rooms.

/// Room membership for a run. User `u` joins rooms `(u * k + j) mod rooms` for `j < k`: the
/// sequence `0, 1, …, users * k - 1` wraps around the rooms evenly, so every room gets
/// `users * k / rooms` members (±1) and no user joins a room twice.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rooms_of_user: Vec<Vec<usize>>,
    pub members_of_room: Vec<Vec<usize>>,
}

impl Plan {
    pub fn new(users: usize, rooms: usize, rooms_per_user: usize) -> Result<Plan, String> {
        if users == 0 || rooms == 0 || rooms_per_user == 0 {
            return Err("users, rooms and rooms-per-user must all be at least 1".to_owned());
        }
        let rooms_per_user = rooms_per_user.min(rooms);
        if users * rooms_per_user < rooms {
            return Err(format!(
                "{users} users in {rooms_per_user} rooms each leave some of the {rooms} rooms \
                 empty; raise --users or --rooms-per-user"
            ));
        }
        let rooms_of_user: Vec<Vec<usize>> = (0..users)
            .map(|user| (0..rooms_per_user).map(|j| (user * rooms_per_user + j) % rooms).collect())
            .collect();
        let mut members_of_room = vec![Vec::new(); rooms];
        for (user, user_rooms) in rooms_of_user.iter().enumerate() {
            for &room in user_rooms {
                members_of_room[room].push(user);
            }
        }
        Ok(Plan { rooms_of_user, members_of_room })
    }

    /// The user who creates `room`: its lowest-numbered member, so the creator is a member anyway.
    pub fn creator(&self, room: usize) -> usize {
        self.members_of_room[room][0]
    }

    /// The `(user, room)` joins still needed after every room's creator created it.
    pub fn joins(&self) -> Vec<(usize, usize)> {
        self.members_of_room
            .iter()
            .enumerate()
            .flat_map(|(room, members)| members.iter().skip(1).map(move |&user| (user, room)))
            .collect()
    }

    pub fn mean_members(&self) -> f64 {
        let total: usize = self.members_of_room.iter().map(Vec::len).sum();
        total as f64 / self.members_of_room.len() as f64
    }
}

#[cfg(test)]
mod tests;
