//! Numeric ids (NIDs) for rows the database owns. A NID is never 0 and never appears in a client
//! or federation API.

macro_rules! nid {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

nid!(
    /// An event.
    EventNid
);
nid!(
    /// A room.
    RoomNid
);
nid!(
    /// An event type string (`m.room.member`).
    TypeNid
);
nid!(
    /// A state key string.
    StateKeyNid
);
nid!(
    /// A state snapshot: the full state of a room at some point, stored as shared blocks.
    SnapshotNid
);
nid!(
    /// A block of state entries shared between snapshots.
    BlockNid
);
