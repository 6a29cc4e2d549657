//! State resolution as the master does it, database included: a room of ours (SQLite) that 1,000
//! users of another server join, whose event graph then forks, every member changing their
//! display name on both branches (1,000 conflicting state keys). Then, in a master started
//! afresh (empty caches, no remembered resolutions), another server's event that joins the two
//! branches: its state is the resolution of theirs, loaded from the database (cold). A second
//! event with the same prev events finds that resolution remembered (memoised), and one that
//! follows a single event resolves nothing (the cost of taking an event at all).
//!
//! `cargo bench -p ganglion-master --bench resolution_in_master` prints the times; results are in
//! docs/BENCHMARKS.md. A plain `main` (no harness): each step takes long enough to time on its own.

use std::{collections::HashMap, sync::Arc, time::Instant};

use ganglion_events::{
    EventTemplate, Pdu, ServerKey, auth_event_types, build_pdu,
    ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId},
};
use ganglion_master::MasterService;
use ganglion_replication::{InProcessBus, Notifier, Positions, RecentEvents, TypingStore};
use ganglion_rpc::{AcceptEvents, CreateRoom, CreateRoomRequest, Preset, Rooms};
use ganglion_storage::{Db, events as event_store, rooms as room_store};
use ganglion_types::SyncToken;
use serde_json::json;

/// Members, and so conflicting state keys; `RESOLUTION_MEMBERS` sets another count (a quick
/// check of the bench itself).
fn member_count() -> usize {
    std::env::var("RESOLUTION_MEMBERS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000)
}
const REMOTE: &str = "remote.example";

async fn master(db: &Db) -> Arc<MasterService> {
    let positions = Arc::new(Positions::new(SyncToken::default()));
    let recent = Arc::new(RecentEvents::new(SyncToken::default()));
    let bus = Arc::new(InProcessBus::new(positions.clone(), Notifier::new(), recent));
    let config = ganglion_config::Config::embedded_default();
    MasterService::new(
        db.clone(),
        Arc::new(ganglion_state::Caches::new()),
        Arc::new(ServerKey::ephemeral(&config.server_name)),
        Arc::new(config),
        bus,
        Arc::new(TypingStore::new()),
        positions,
    )
    .await
    .unwrap()
}

/// The events another server builds in the room, with the state it sees on its branch.
struct Remote {
    key: ServerKey,
    rules: ganglion_events::ruma::room_version_rules::RoomVersionRules,
    room_id: OwnedRoomId,
    depths: HashMap<OwnedEventId, u64>,
}

impl Remote {
    /// `template` by `sender` after `prevs`, authorised by `state` (which it then changes).
    fn build(
        &mut self,
        state: &mut HashMap<(String, String), OwnedEventId>,
        prevs: &[OwnedEventId],
        sender: &UserId,
        template: EventTemplate,
        ts: u64,
    ) -> Pdu {
        let content = serde_json::value::to_raw_value(&template.content).unwrap();
        let types = auth_event_types(
            &self.rules.authorization,
            &template.kind,
            sender,
            template.state_key.as_deref(),
            &content,
        )
        .unwrap();
        let mut auth: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())).cloned())
            .collect();
        if self.rules.authorization.room_create_event_id_as_room_id {
            let create = &state[&("m.room.create".to_owned(), String::new())];
            auth.retain(|id| id != create);
        }
        let depth = prevs.iter().map(|id| self.depths[id]).max().unwrap_or(0) + 1;
        let pdu = build_pdu(
            &self.key,
            &self.rules,
            Some(&self.room_id),
            sender,
            &template,
            prevs,
            &auth,
            depth,
            ts,
        )
        .unwrap();
        self.depths.insert(pdu.event_id.clone(), depth);
        if let Some(key) = &pdu.state_key {
            state.insert((pdu.kind.to_string(), key.clone()), pdu.event_id.clone());
        }
        pdu
    }
}

async fn accept(service: &MasterService, pdus: &[Pdu]) {
    for chunk in pdus.chunks(100) {
        let events = chunk.iter().map(|pdu| (pdu.event_id.clone(), pdu.json.to_string())).collect();
        let outcomes = service
            .accept_events(AcceptEvents { origin: REMOTE.to_owned(), events, outliers: vec![], gaps: vec![] })
            .await
            .unwrap();
        for outcome in outcomes {
            assert!(outcome.error.is_none(), "{}: {:?}", outcome.event_id, outcome.error);
        }
    }
}

async fn run(version: RoomVersionId) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()), 4).await.unwrap();
    let service = master(&db).await;
    let server = ganglion_config::Config::embedded_default().server_name;
    let alice = OwnedUserId::try_from(format!("@alice:{server}")).unwrap();
    let request = CreateRoomRequest {
        preset: Some(Preset::PublicChat),
        room_version: Some(version.clone()),
        ..CreateRoomRequest::default()
    };
    let room_id = service.create_room(CreateRoom { sender: alice, request }).await.unwrap();

    // The room as it is after its creation, as the other server would learn it from a join.
    let mut state = HashMap::new();
    let mut remote = Remote {
        key: ServerKey::ephemeral(REMOTE),
        rules: version.rules().unwrap(),
        room_id: room_id.clone(),
        depths: HashMap::new(),
    };
    let mut prev = {
        let mut conn = db.conn().await.unwrap();
        let room = room_store::room_by_id(&mut conn, room_id.as_str()).await.unwrap().unwrap();
        let rows =
            event_store::events_in_room(&mut conn, room.room_nid, 0, i64::MAX, 100, false).await.unwrap();
        let mut last = None;
        for row in rows {
            let pdu = Pdu::from_json(row.event_id.as_str().try_into().unwrap(), Arc::from(row.json)).unwrap();
            if let Some(key) = &pdu.state_key {
                state.insert((pdu.kind.to_string(), key.clone()), pdu.event_id.clone());
            }
            remote.depths.insert(pdu.event_id.clone(), u64::from(pdu.depth));
            last = Some(pdu.event_id);
        }
        last.unwrap()
    };

    let started = Instant::now();
    let members: Vec<OwnedUserId> =
        (0..member_count()).map(|n| OwnedUserId::try_from(format!("@member{n}:{REMOTE}")).unwrap()).collect();
    let mut joins = Vec::with_capacity(member_count());
    for (n, member) in members.iter().enumerate() {
        let template =
            EventTemplate::state("m.room.member", member.as_str(), json!({ "membership": "join" }));
        let pdu = remote.build(&mut state, &[prev.clone()], member, template, 1_000 + n as u64);
        prev = pdu.event_id.clone();
        joins.push(pdu);
    }
    accept(&service, &joins).await;
    let mut heads = Vec::new();
    let mut last_of_b = None;
    for (branch, base_ts) in [("a", 100_000_u64), ("b", 200_000)] {
        let (mut state, mut head) = (state.clone(), prev.clone());
        let mut events = Vec::with_capacity(members.len());
        for (n, member) in members.iter().enumerate() {
            let content = json!({ "membership": "join", "displayname": format!("{member} on {branch}") });
            let template = EventTemplate::state("m.room.member", member.as_str(), content);
            let pdu = remote.build(&mut state, &[head.clone()], member, template, base_ts + n as u64);
            head = pdu.event_id.clone();
            events.push(pdu);
        }
        // The last event of the second branch is taken by a master started afresh.
        if branch == "b" {
            last_of_b = events.pop();
        }
        accept(&service, &events).await;
        heads.push((head, state));
    }
    eprintln!("v{version}: built the fork ({} events) in {:?}", 3 * members.len(), started.elapsed());
    drop(service);

    let service = master(&db).await;
    let mut times = Vec::new();
    // The second branch's last event: the room's state becomes the resolution of both
    // branches' states (1,000 conflicting keys), their events and auth chains read from the
    // database.
    let started = Instant::now();
    accept(&service, &[last_of_b.unwrap()]).await;
    times.push(("cold: the branches' states resolved, loaded from the database", started.elapsed()));
    let merged_state = {
        let mut merged = heads[0].1.clone();
        merged.extend(heads[1].1.clone());
        merged
    };
    let prevs: Vec<OwnedEventId> = heads.iter().map(|(head, _)| head.clone()).collect();
    let message = |remote: &mut Remote, n: u64, prevs: &[OwnedEventId]| {
        let mut state = merged_state.clone();
        let template =
            EventTemplate::message("m.room.message", json!({ "msgtype": "m.text", "body": "merged" }));
        remote.build(&mut state, prevs, &members[0], template, 300_000 + n)
    };
    // A message after both branches takes the room's state as it is; a second one, concurrent
    // with it, needs the state after both branches again: the resolution remembered.
    let merge = message(&mut remote, 0, &prevs);
    accept(&service, std::slice::from_ref(&merge)).await;
    let again = message(&mut remote, 1, &prevs);
    let started = Instant::now();
    accept(&service, std::slice::from_ref(&again)).await;
    times.push(("memoised: the same states resolved again", started.elapsed()));
    let linear = message(&mut remote, 2, std::slice::from_ref(&again.event_id));
    let started = Instant::now();
    accept(&service, std::slice::from_ref(&linear)).await;
    times.push(("linear: one prev event, nothing to resolve", started.elapsed()));
    for (what, took) in times {
        println!("room v{version}, {} conflicting state events: {what}: {took:?}", members.len());
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for version in [RoomVersionId::V10, RoomVersionId::V12] {
        runtime.block_on(run(version));
    }
}
