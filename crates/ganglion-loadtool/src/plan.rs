//! Who is in which room. Pure arithmetic, so the same arguments always give the same rooms.

/// Room membership for a run. User `u` joins rooms `(u * k + j) mod rooms` for `j < k`: the
/// sequence `0, 1, …, users * k - 1` wraps around the rooms evenly, so every room gets
/// `users * k / rooms` members (±1) and no user joins a room twice.
///
/// The users who long-poll `/sync` are the first `syncing` ones. Their memberships are the start
/// `0, 1, …, syncing * k - 1` of the same sequence, so they too are spread evenly: every room gets
/// `syncing * k / rooms` syncing members (±1). (Every other user, say, would not: with 200 users
/// in 40 rooms, 10 each, the even users all sit in the same 20 rooms.)
#[derive(Debug, Clone)]
pub struct Plan {
    pub rooms_of_user: Vec<Vec<usize>>,
    pub members_of_room: Vec<Vec<usize>>,
    /// Users `0..syncing` run a `/sync` loop.
    pub syncing: usize,
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
        Ok(Plan { rooms_of_user, members_of_room, syncing: users })
    }

    /// Only the first `syncing` users long-poll `/sync` (`1..=users`).
    pub fn with_syncing_users(mut self, syncing: usize) -> Result<Plan, String> {
        let users = self.rooms_of_user.len();
        if syncing == 0 || syncing > users {
            return Err(format!("the syncing users must be between 1 and the {users} users, not {syncing}"));
        }
        self.syncing = syncing;
        Ok(self)
    }

    pub fn is_syncing(&self, user: usize) -> bool {
        user < self.syncing
    }

    /// The user that sender `index` sends as. With every user syncing, user `index mod users`.
    /// Otherwise the senders are a mix in proportion to the syncing share: sender `i` is a
    /// syncing user when `floor((i + 1) * syncing / users)` steps up from `floor(i * syncing /
    /// users)`. The syncing senders are users `0, 1, …` and the others users `syncing, syncing +
    /// 1, …` (each wrapping within its group); consecutive users hold consecutive stretches of
    /// rooms, so both groups' senders cover the rooms evenly.
    pub fn sender_user(&self, index: usize) -> usize {
        let (users, syncing) = (self.rooms_of_user.len(), self.syncing);
        if syncing == users {
            return index % users;
        }
        let before = index * syncing / users;
        if (index + 1) * syncing / users > before {
            before % syncing
        } else {
            syncing + (index - before) % (users - syncing)
        }
    }

    /// The syncing members of `room`.
    pub fn syncing_members(&self, room: usize) -> usize {
        self.members_of_room[room].iter().filter(|&&user| self.is_syncing(user)).count()
    }

    /// The members whose `/sync` should get a message `sender` sends into `room`: its syncing
    /// members, less the sender itself (its own messages are not counted as deliveries).
    pub fn recipients(&self, room: usize, sender: usize) -> usize {
        let own = usize::from(self.is_syncing(sender) && self.members_of_room[room].contains(&sender));
        self.syncing_members(room) - own
    }

    pub fn mean_syncing_members(&self) -> f64 {
        let total: usize = (0..self.members_of_room.len()).map(|room| self.syncing_members(room)).sum();
        total as f64 / self.members_of_room.len() as f64
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
