//! State resolution of a fork with 1,000 conflicting state events: a room of 1,000 members whose
//! event graph splits in two, each member changing their display name on both branches.
//! `cargo bench -p ganglion-events --bench state_resolution` prints the times; results are in
//! docs/BENCHMARKS.md. A plain `main` (no harness): each resolution takes long enough to time on
//! its own.

use std::{collections::HashMap, sync::Arc, time::Instant};

use ganglion_events::{
    EventTemplate, Pdu, ServerKey, auth_chain, auth_event_types, build_pdu, resolve_state,
};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, events::StateEventType,
    room_version_rules::RoomVersionRules, state_res::StateMap,
};
use serde_json::json;

const MEMBERS: usize = 1_000;

/// A room's events and its state as they are built, one branch at a time.
struct Room {
    key: ServerKey,
    rules: RoomVersionRules,
    room_id: Option<OwnedRoomId>,
    events: HashMap<OwnedEventId, Arc<Pdu>>,
}

impl Room {
    /// Builds `template` by `sender` on top of `state` after `prev`, and applies it to `state`.
    fn append(
        &mut self,
        state: &mut StateMap<OwnedEventId>,
        prev: &mut OwnedEventId,
        sender: &UserId,
        template: EventTemplate,
        ts: u64,
    ) -> OwnedEventId {
        let content = serde_json::value::to_raw_value(&template.content).unwrap();
        let types = auth_event_types(
            &self.rules.authorization,
            &template.kind,
            sender,
            template.state_key.as_deref(),
            &content,
        )
        .unwrap();
        let auth: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| {
                state.get(&(StateEventType::from(kind.to_string()), key.clone())).cloned()
            })
            .collect();
        let depth = self.events.get(&*prev).map_or(0, |event| u64::from(event.depth));
        let prevs: Vec<OwnedEventId> = if self.events.is_empty() { vec![] } else { vec![prev.clone()] };
        let pdu = build_pdu(
            &self.key,
            &self.rules,
            self.room_id.as_deref(),
            sender,
            &template,
            &prevs,
            &auth,
            depth + 1,
            ts,
        )
        .unwrap();
        self.room_id.get_or_insert(pdu.room_id.clone());
        let id = pdu.event_id.clone();
        if let Some(key) = &pdu.state_key {
            state.insert((StateEventType::from(pdu.kind.to_string()), key.clone()), id.clone());
        }
        self.events.insert(id.clone(), Arc::new(pdu));
        *prev = id.clone();
        id
    }
}

fn fork(
    version: &RoomVersionId,
) -> (RoomVersionRules, Vec<StateMap<OwnedEventId>>, HashMap<OwnedEventId, Arc<Pdu>>) {
    let rules = version.rules().unwrap();
    let mut room = Room {
        key: ServerKey::ephemeral("example.org"),
        rules: rules.clone(),
        room_id: None,
        events: HashMap::new(),
    };
    if !rules.authorization.room_create_event_id_as_room_id {
        room.room_id = Some(RoomId::parse("!bench:example.org").unwrap());
    }
    let creator = UserId::parse("@creator:example.org").unwrap();
    let mut state = StateMap::new();
    let mut prev: OwnedEventId = "$none".try_into().unwrap();
    let mut create = json!({ "room_version": version.as_str() });
    if !rules.authorization.use_room_create_sender {
        create["creator"] = json!(creator.as_str());
    }
    room.append(&mut state, &mut prev, &creator, EventTemplate::state("m.room.create", "", create), 1);
    let join = json!({ "membership": "join" });
    room.append(
        &mut state,
        &mut prev,
        &creator,
        EventTemplate::state("m.room.member", creator.as_str(), join.clone()),
        2,
    );
    let users = if rules.authorization.explicitly_privilege_room_creators {
        json!({})
    } else {
        json!({ creator.as_str(): 100 })
    };
    room.append(
        &mut state,
        &mut prev,
        &creator,
        EventTemplate::state("m.room.power_levels", "", json!({ "users": users })),
        3,
    );
    room.append(
        &mut state,
        &mut prev,
        &creator,
        EventTemplate::state("m.room.join_rules", "", json!({ "join_rule": "public" })),
        4,
    );
    let members: Vec<OwnedUserId> =
        (0..MEMBERS).map(|n| UserId::parse(format!("@member{n}:example.org")).unwrap()).collect();
    for (n, member) in members.iter().enumerate() {
        let template = EventTemplate::state("m.room.member", member.as_str(), join.clone());
        room.append(&mut state, &mut prev, member, template, 10 + n as u64);
    }
    // The fork: both branches start after the last join.
    let mut branches = Vec::new();
    for (branch, base_ts) in [("a", 100_000_u64), ("b", 200_000)] {
        let (mut state, mut prev) = (state.clone(), prev.clone());
        for (n, member) in members.iter().enumerate() {
            let content = json!({ "membership": "join", "displayname": format!("{member} on {branch}") });
            let template = EventTemplate::state("m.room.member", member.as_str(), content);
            room.append(&mut state, &mut prev, member, template, base_ts + n as u64);
        }
        branches.push(state);
    }
    (rules, branches, room.events)
}

fn main() {
    for version in [RoomVersionId::V10, RoomVersionId::V12] {
        let started = Instant::now();
        let (rules, states, events) = fork(&version);
        eprintln!("v{version}: built {} events in {:?}", events.len(), started.elapsed());
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            // The chains as the master's index gives them would cost a query instead.
            let chains = states.iter().map(|state| auth_chain(state.values(), &events)).collect();
            let resolved = resolve_state(&rules, &states, chains, &events).unwrap();
            times.push(started.elapsed());
            assert_eq!(resolved.len(), MEMBERS + 4);
        }
        times.sort();
        println!(
            "room v{version}: {MEMBERS} conflicting state events, {} state entries: resolution median {:?} (min {:?}, max {:?})",
            MEMBERS + 4,
            times[1],
            times[0],
            times[2]
        );
    }
}
