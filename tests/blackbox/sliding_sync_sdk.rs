//! Simplified sliding sync (MSC4186) as Element X drives it: matrix-sdk-ui's `SyncService` (a
//! `room-list` connection with the `all_rooms` list plus an `encryption` connection for to-device
//! and E2EE data), its `RoomListService` room list sorted by recency, and a `Timeline` per opened
//! room. Bob is the Element X user; Alice uses plain matrix-sdk and `/sync` v2.

use std::{
    collections::BTreeMap,
    future::{Future, IntoFuture},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use ganglion_testkit::{Backend, eventually, sdk_client, sdk_register};
use matrix_sdk::{
    Client, RoomState,
    config::{RequestConfig, SyncSettings},
    room::Room,
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::{
            receipt::create_receipt::v3::ReceiptType as SendReceiptType,
            room::create_room::v3::{Request as CreateRoom, RoomPreset},
        },
        events::{
            AnyInitialStateEvent, InitialStateEvent,
            receipt::{ReceiptThread, ReceiptType},
            room::{
                encryption::RoomEncryptionEventContent, member::MembershipState,
                message::RoomMessageEventContent,
            },
        },
        serde::Raw,
    },
    sliding_sync::VersionBuilder,
};
use matrix_sdk_ui::{
    Timeline,
    eyeball_im::{Vector, VectorDiff},
    room_list_service::{
        self, RoomListDynamicEntriesController, RoomListItem, RoomListLoadingState, filters,
    },
    sync_service::{self, SyncService},
    timeline::{EventTimelineItem, RoomExt, TimelineItem},
};
use serde_json::json;
use tokio::time::Instant;

use crate::{PASSWORD, SYNC_DEADLINE, account_at, start};

on_all_backends!(
    element_x_lists_rooms_by_recency_and_chats_encrypted,
    element_x_sees_invites_typing_and_receipts
);

/// Type-erases a matrix-sdk(-ui) future. Their types nest very deeply; awaited inline, a whole
/// scenario's future overflows the compiler's layout query depth.
fn boxed<'a, T>(future: impl IntoFuture<Output = T> + 'a) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(future.into_future())
}

/// How often a wait re-checks the sync service's health while nothing arrives.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Registers `name` and logs in the way Element X does: the client discovers sliding sync from
/// `/versions` (`unstable_features["org.matrix.simplified_msc3575"] == true`) and refuses to
/// build otherwise.
async fn element_x_client(base_url: &str, name: &str) -> Client {
    sdk_register(base_url, name, PASSWORD).await.unwrap();
    let builder = Client::builder()
        .homeserver_url(base_url)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .request_config(RequestConfig::new().disable_retry().timeout(Duration::from_secs(60)));
    let client = boxed(builder.build()).await.unwrap_or_else(|error| {
        panic!(
            "matrix-sdk does not discover simplified sliding sync on this server (expected \
                 `unstable_features[\"org.matrix.simplified_msc3575\"]: true` in /versions): {error}"
        )
    });
    let login = client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name("Element X (ganglion black-box)")
        .send();
    boxed(login).await.unwrap_or_else(|error| panic!("logging in as {name}: {error}"));
    client
}

/// Builds and starts Bob's `SyncService` (both sliding sync connections) and waits for the room
/// list to be running.
async fn start_sync_service(client: &Client) -> SyncService {
    let sync_service = boxed(SyncService::builder(client.clone()).build())
        .await
        .unwrap_or_else(|error| panic!("building the SyncService: {error}"));
    boxed(sync_service.start()).await;
    let room_list_state = sync_service.room_list_service().state();
    wait_for(&sync_service, "the room list service to reach `Running`", || {
        (room_list_state.get() == room_list_service::State::Running).then_some(())
    })
    .await;
    sync_service
}

/// Panics if the sync service has stopped: sliding sync failed (a request error, a response the
/// SDK could not parse, `M_UNKNOWN_POS` it could not recover from…).
fn assert_syncing(sync_service: &SyncService, waiting_for: &str) {
    let state = sync_service.state().get();
    if matches!(state, sync_service::State::Error(_) | sync_service::State::Terminated) {
        panic!("the sync service stopped while waiting for {waiting_for}: {state:?}");
    }
}

/// Re-checks `check` (every [`CHECK_EVERY`]) until it gives a value, failing fast if the sync
/// service stops and after [`SYNC_DEADLINE`] otherwise.
async fn wait_for<T>(sync_service: &SyncService, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert_syncing(sync_service, what);
        assert!(Instant::now() < deadline, "{what}: not reached within {SYNC_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type RoomListStream<'a> = Pin<Box<dyn Stream<Item = Vec<VectorDiff<RoomListItem>>> + 'a>>;

/// Bob's room list as the Element X UI renders it: `all_rooms` with the dynamic adapters (non-left
/// rooms, sorted by unsent / recency / name), mirrored from its diffs.
struct RoomListView<'a> {
    stream: RoomListStream<'a>,
    /// Kept alive with the stream: it owns the page-size observable the stream follows.
    _controller: RoomListDynamicEntriesController,
    rooms: Vector<RoomListItem>,
    /// Readable names for the room ids of this scenario.
    labels: BTreeMap<OwnedRoomId, String>,
}

impl<'a> RoomListView<'a> {
    fn new(room_list: &'a room_list_service::RoomList) -> Self {
        let (stream, controller) = room_list.entries_with_dynamic_adapters(50);
        // Nothing is emitted before a filter is set; Element X's "All" tab shows non-left rooms.
        assert!(controller.set_filter(Box::new(filters::new_filter_non_left())));
        RoomListView {
            stream: Box::pin(stream),
            _controller: controller,
            rooms: Vector::new(),
            labels: BTreeMap::new(),
        }
    }

    fn label(&mut self, room_id: &RoomId, label: &str) {
        self.labels.insert(room_id.to_owned(), label.to_owned());
    }

    fn name_of(&self, room_id: &RoomId) -> String {
        self.labels.get(room_id).cloned().unwrap_or_else(|| room_id.to_string())
    }

    /// The rooms, top first, by label.
    fn order(&self) -> Vec<String> {
        self.rooms.iter().map(|room| self.name_of(room.room_id())).collect()
    }

    fn find(&self, room_id: &RoomId) -> Option<&RoomListItem> {
        self.rooms.iter().find(|room| room.room_id() == room_id)
    }

    /// One line per room, top first: label, membership, recency stamp, latest-event timestamp,
    /// display name.
    fn describe(&self) -> String {
        let lines: Vec<String> = self
            .rooms
            .iter()
            .map(|room| {
                format!(
                    "  {} state={:?} bump_stamp={:?} latest_event_ts={:?} name={:?}",
                    self.name_of(room.room_id()),
                    room.state(),
                    room.recency_stamp(),
                    room.latest_event_timestamp().map(|ts| ts.get()),
                    room.cached_display_name().map(|name| name.to_string()),
                )
            })
            .collect();
        if lines.is_empty() { "  (empty)".to_owned() } else { lines.join("\n") }
    }

    /// Applies the list's diffs until `done` holds for the current rows (checked on every diff
    /// and every [`CHECK_EVERY`], since memberships and names change inside rows).
    async fn wait_until(&mut self, sync_service: &SyncService, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + SYNC_DEADLINE;
        loop {
            if done(self) {
                return;
            }
            assert_syncing(sync_service, what);
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "bob's room list: {what} not seen within {SYNC_DEADLINE:?}; the list is:\n{}",
                    self.describe()
                );
            }
            match tokio::time::timeout((deadline - now).min(CHECK_EVERY), self.stream.next()).await {
                Ok(Some(diffs)) => {
                    for diff in diffs {
                        diff.apply(&mut self.rooms);
                    }
                }
                Ok(None) => panic!("bob's room list stream ended while waiting for {what}"),
                Err(_) => {}
            }
        }
    }

    /// Waits until the rooms labelled in `expected` are listed in exactly that order, top first.
    async fn wait_for_order(&mut self, sync_service: &SyncService, expected: &[&str]) {
        let what = format!("the order {expected:?} (newest message first)");
        self.wait_until(sync_service, &what, |view| view.order() == expected).await;
    }
}

/// Waits for the room list to report itself loaded with `count` rooms (`lists.all_rooms.count`).
async fn wait_for_count(sync_service: &SyncService, room_list: &room_list_service::RoomList, count: u32) {
    let loading = room_list.loading_state();
    let what = format!("the room list loaded with a count of {count}");
    wait_for(sync_service, &what, || {
        (loading.get() == RoomListLoadingState::Loaded { maximum_number_of_rooms: Some(count) }).then_some(())
    })
    .await;
}

fn describe_event(item: &EventTimelineItem) -> String {
    let content = item.content();
    let what = if let Some(message) = content.as_message() {
        format!("message {:?}", message.body())
    } else if content.is_unable_to_decrypt() {
        "UNABLE TO DECRYPT".to_owned()
    } else {
        content.event_type_str().unwrap_or_else(|| "(no type)".to_owned())
    };
    let id = item.event_id().map_or_else(|| "(local echo)".to_owned(), |id| id.to_string());
    let decrypted = if item.encryption_info().is_some() { " [decrypted]" } else { "" };
    let receipts: Vec<&OwnedUserId> = item.read_receipts().keys().collect();
    format!("  {id} from {}: {what}{decrypted} read by {receipts:?}", item.sender())
}

fn describe_timeline(items: &Vector<Arc<TimelineItem>>) -> String {
    let lines: Vec<String> = items.iter().filter_map(|item| item.as_event()).map(describe_event).collect();
    if lines.is_empty() { "  (no events)".to_owned() } else { lines.join("\n") }
}

/// Waits until the timeline holds an event item `matches` accepts; returns it.
async fn timeline_until(
    timeline: &Timeline,
    sync_service: &SyncService,
    what: &str,
    matches: impl Fn(&EventTimelineItem) -> bool,
) -> EventTimelineItem {
    let (_, updates) = boxed(timeline.subscribe()).await;
    let mut updates = Box::pin(updates);
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let items = boxed(timeline.items()).await;
        if let Some(found) = items.iter().filter_map(|item| item.as_event()).find(|event| matches(event)) {
            return found.clone();
        }
        assert_syncing(sync_service, what);
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "bob's timeline: {what} not seen within {SYNC_DEADLINE:?}; its events are:\n{}",
                describe_timeline(&items)
            );
        }
        let _ = tokio::time::timeout((deadline - now).min(CHECK_EVERY), updates.next()).await;
    }
}

/// Is `item` the message `body` from `sender`, decrypted (it was sent encrypted)?
fn is_decrypted_message(item: &EventTimelineItem, sender: &UserId, body: &str) -> bool {
    item.sender() == sender
        && item.content().as_message().is_some_and(|message| message.body() == body)
        && item.encryption_info().is_some()
}

/// A room Alice creates with Bob invited, optionally encrypted, named, or flagged as a DM.
async fn alice_creates(
    alice: &Client,
    bob: &UserId,
    name: Option<&str>,
    encrypted: bool,
    direct: bool,
) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.name = name.map(str::to_owned);
    request.preset = Some(if direct { RoomPreset::TrustedPrivateChat } else { RoomPreset::PrivateChat });
    request.is_direct = direct;
    request.invite = vec![bob.to_owned()];
    if encrypted {
        let encryption =
            InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults());
        request.initial_state = vec![Raw::new(&encryption).unwrap().cast::<AnyInitialStateEvent>()];
    }
    boxed(alice.create_room(request)).await.unwrap().room_id().to_owned()
}

/// Syncs `client` (`/sync` v2, short polls) until it knows `user` as joined in `room_id`.
async fn until_joined_for(client: &Client, room_id: &RoomId, user: &UserId) {
    let what = format!("{} to see {user} joined in {room_id}", client.user_id().unwrap());
    eventually(SYNC_DEADLINE, &what, || async move {
        boxed(client.sync_once(SyncSettings::default().timeout(Duration::from_millis(200)))).await?;
        let Some(room) = client.get_room(room_id) else { return Ok(None) };
        let member = boxed(room.get_member_no_sync(user)).await?;
        Ok(member.filter(|member| *member.membership() == MembershipState::Join).map(|_| ()))
    })
    .await
    .unwrap();
}

/// Waits until the server hands out `client`'s device keys (the SDK uploads them alongside its
/// first sliding sync requests), so that others can share room keys with it.
async fn until_device_keys_published(base_url: &str, asker: &Client, client: &Client) {
    let asker = account_at(base_url, asker);
    let (user, device) = (client.user_id().unwrap().to_string(), client.device_id().unwrap().to_string());
    let what = format!("{user}'s device {device} keys in /keys/query");
    let (asker, user, device) = (&asker, user.as_str(), device.as_str());
    eventually(SYNC_DEADLINE, &what, || async move {
        let response = asker.post("/keys/query", &json!({ "device_keys": { user: [] } })).await?;
        Ok(response.body["device_keys"][user][device].get("keys").map(|_| ()))
    })
    .await
    .unwrap();
}

async fn alice_sends(alice: &Client, room_id: &RoomId, body: &str) -> OwnedEventId {
    let room = alice.get_room(room_id).unwrap();
    boxed(room.send(RoomMessageEventContent::text_plain(body))).await.unwrap().response.event_id
}

/// Element X's "accept invite": the invited room, joined from the room list.
async fn accept_invite(room: &Room) {
    assert_eq!(room.state(), RoomState::Invited, "{} is not an invite for bob", room.room_id());
    boxed(room.join()).await.unwrap_or_else(|error| panic!("bob joining {}: {error}", room.room_id()));
}

async fn element_x_lists_rooms_by_recency_and_chats_encrypted(backend: Backend) {
    let server = start(backend).await;
    lists_rooms_by_recency_and_chats_encrypted(&server.base_url).await;
}

/// Element X's first-run path against the server at `base_url`: also run against the README's
/// cluster (`scripts/cluster.sh`) by `readme_cluster`.
pub async fn lists_rooms_by_recency_and_chats_encrypted(base_url: &str) {
    let alice = sdk_client(base_url, "alice", PASSWORD).await.unwrap();
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob = element_x_client(base_url, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();

    // A fresh Element X login: the sync service comes up on an empty account.
    let sync_service = start_sync_service(&bob).await;
    let room_list_service = sync_service.room_list_service();
    let all_rooms = boxed(room_list_service.all_rooms()).await.unwrap();
    let mut list = RoomListView::new(&all_rooms);
    wait_for_count(&sync_service, &all_rooms, 0).await;
    until_device_keys_published(base_url, &alice, &bob).await;

    // Alice invites Bob to a DM and two named rooms, all encrypted.
    let dm = alice_creates(&alice, &bob_id, None, true, true).await;
    let middle = alice_creates(&alice, &bob_id, Some("Middle"), true, false).await;
    let newest = alice_creates(&alice, &bob_id, Some("Newest"), true, false).await;
    list.label(&dm, "dm");
    list.label(&middle, "Middle");
    list.label(&newest, "Newest");
    let rooms = [&dm, &middle, &newest];

    list.wait_until(&sync_service, "three invites", |view| {
        rooms.iter().all(|id| view.find(id).is_some_and(|room| room.state() == RoomState::Invited))
    })
    .await;
    wait_for_count(&sync_service, &all_rooms, 3).await;
    for room_id in rooms {
        let room = room_list_service.room(room_id).unwrap();
        let invite = boxed(room.invite_details()).await.unwrap_or_else(|error| {
            panic!(
                "no invite details for {} (own m.room.member missing from invite_state?): {error}",
                list.name_of(room_id)
            )
        });
        assert_eq!(invite.inviter_id, alice_id, "inviter of {}", list.name_of(room_id));
    }
    let dm_room = room_list_service.room(&dm).unwrap();
    assert!(boxed(dm_room.is_direct()).await.unwrap(), "the DM invite does not carry is_direct for bob");

    for room_id in rooms {
        accept_invite(&room_list_service.room(room_id).unwrap()).await;
    }
    list.wait_until(&sync_service, "all three rooms joined, encrypted, named", |view| {
        rooms.iter().all(|id| {
            view.find(id).is_some_and(|room| {
                room.state() == RoomState::Joined && room.encryption_state().is_encrypted()
            })
        }) && [(&middle, "Middle"), (&newest, "Newest")].iter().all(|(id, name)| {
            view.find(id)
                .and_then(|room| room.cached_display_name())
                .is_some_and(|shown| shown.to_string() == *name)
        })
    })
    .await;
    // Joining a DM invite makes the SDK add it to `m.direct`, but only when the join's answer
    // comes before the sync that shows the room joined (its own race, which a fast server
    // loses); so Bob marks it as Element X's "mark as DM" does. It comes back through the
    // account_data extension.
    boxed(dm_room.set_is_direct(true)).await.unwrap();
    let what = "the DM marked direct after joining (m.direct through the account_data extension)";
    let (dm_ref, sync_ref) = (&dm_room, &sync_service);
    if let Err(error) = eventually(SYNC_DEADLINE, what, || async move {
        assert_syncing(sync_ref, what);
        Ok(boxed(dm_ref.is_direct()).await?.then_some(()))
    })
    .await
    {
        // What the server holds tells a lost write from a lost delivery.
        let stored = account_at(base_url, &bob)
            .get(&format!("/user/{}/account_data/m.direct", ganglion_testkit::enc(bob_id.as_str())))
            .await
            .unwrap();
        panic!("{error}; the server's m.direct for bob: {} {}", stored.status, stored.text);
    }
    for room_id in rooms {
        until_joined_for(&alice, room_id, &bob_id).await;
    }

    // One message per room, oldest first; each lands on top of Bob's list before the next is sent
    // (so the timestamps differ).
    for (room_id, label) in [(&dm, "dm"), (&middle, "Middle"), (&newest, "Newest")] {
        alice_sends(&alice, room_id, &format!("hello in {label}")).await;
        let what = format!("{label} on top after a message in it");
        list.wait_until(&sync_service, &what, |view| view.order().first().map(String::as_str) == Some(label))
            .await;
    }
    list.wait_for_order(&sync_service, &["Newest", "Middle", "dm"]).await;

    // A new message in the oldest room makes it jump to the top.
    alice_sends(&alice, &dm, "jump to the top").await;
    list.wait_for_order(&sync_service, &["dm", "Newest", "Middle"]).await;

    // Bob opens the DM: a room subscription, and its timeline holds the decrypted history.
    boxed(room_list_service.subscribe_to_rooms(&[&dm])).await;
    let timeline = boxed(dm_room.timeline()).await.unwrap();
    timeline_until(&timeline, &sync_service, "alice's \"jump to the top\", decrypted", |item| {
        is_decrypted_message(item, &alice_id, "jump to the top")
    })
    .await;

    // A live encrypted message arrives in the open timeline, decrypted.
    let live = alice_sends(&alice, &dm, "a live secret for bob").await;
    let item = timeline_until(&timeline, &sync_service, "alice's live message, decrypted", |item| {
        item.event_id() == Some(&*live)
    })
    .await;
    assert!(
        is_decrypted_message(&item, &alice_id, "a live secret for bob"),
        "the live message is not a decrypted text from alice:\n{}",
        describe_event(&item)
    );
    assert_eq!(list.order().first().map(String::as_str), Some("dm"), "list:\n{}", list.describe());

    boxed(sync_service.stop()).await;
}

async fn element_x_sees_invites_typing_and_receipts(backend: Backend) {
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob = element_x_client(&server.base_url, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();

    let sync_service = start_sync_service(&bob).await;
    let room_list_service = sync_service.room_list_service();
    let all_rooms = boxed(room_list_service.all_rooms()).await.unwrap();
    let mut list = RoomListView::new(&all_rooms);
    wait_for_count(&sync_service, &all_rooms, 0).await;

    // The invite shows up in the list, with the room's name and who invited.
    let room_id = alice_creates(&alice, &bob_id, Some("Invitation"), false, false).await;
    list.label(&room_id, "Invitation");
    list.wait_until(&sync_service, "the invite to \"Invitation\", named", |view| {
        view.find(&room_id).is_some_and(|room| {
            room.state() == RoomState::Invited
                && room.cached_display_name().is_some_and(|name| name.to_string() == "Invitation")
        })
    })
    .await;
    let room = room_list_service.room(&room_id).unwrap();
    let invite = boxed(room.invite_details()).await.unwrap_or_else(|error| {
        panic!("no invite details (own m.room.member missing from invite_state?): {error}")
    });
    assert_eq!(invite.inviter_id, alice_id);

    accept_invite(&room).await;
    list.wait_until(&sync_service, "\"Invitation\" joined", |view| {
        view.find(&room_id).is_some_and(|room| room.state() == RoomState::Joined)
    })
    .await;
    until_joined_for(&alice, &room_id, &bob_id).await;

    // Bob opens the room.
    boxed(room_list_service.subscribe_to_rooms(&[&room_id])).await;
    let timeline = boxed(room.timeline()).await.unwrap();
    let (_typing_guard, mut typing) = room.subscribe_to_typing_notifications();
    let alice_room = alice.get_room(&room_id).unwrap();

    // Alice types, then stops; Bob sees both.
    boxed(alice_room.typing_notice(true)).await.unwrap();
    let mut seen = Vec::new();
    let typing_seen = async {
        loop {
            let users = typing.recv().await.expect("typing notifications channel closed");
            seen.push(users.clone());
            if users == [alice_id.clone()] {
                return;
            }
        }
    };
    if tokio::time::timeout(SYNC_DEADLINE, typing_seen).await.is_err() {
        assert_syncing(&sync_service, "alice typing");
        panic!("bob did not see alice typing within {SYNC_DEADLINE:?}; typing updates seen: {seen:?}");
    }
    boxed(alice_room.typing_notice(false)).await.unwrap();
    let mut seen = Vec::new();
    let stop_seen = async {
        loop {
            let users = typing.recv().await.expect("typing notifications channel closed");
            seen.push(users.clone());
            if users.is_empty() {
                return;
            }
        }
    };
    if tokio::time::timeout(SYNC_DEADLINE, stop_seen).await.is_err() {
        assert_syncing(&sync_service, "alice to stop typing");
        panic!("bob did not see alice stop typing within {SYNC_DEADLINE:?}; typing updates seen: {seen:?}");
    }

    // Bob writes; Alice reads it; Bob sees her read receipt on his message.
    let sent = boxed(room.send(RoomMessageEventContent::text_plain("did you get my invite?"))).await;
    let message = sent.unwrap().response.event_id;
    timeline_until(&timeline, &sync_service, "bob's own message", |item| item.event_id() == Some(&*message))
        .await;
    let receipt =
        alice_room.send_single_receipt(SendReceiptType::Read, ReceiptThread::Unthreaded, message.clone());
    boxed(receipt).await.unwrap();

    let what = "alice's read receipt in bob's store";
    let (room_ref, alice_ref, message_ref, sync_ref) = (&room, &alice_id, &message, &sync_service);
    let stored = eventually(SYNC_DEADLINE, what, || async move {
        assert_syncing(sync_ref, what);
        let receipt =
            boxed(room_ref.load_user_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, alice_ref))
                .await?;
        Ok(receipt.filter(|(event_id, _)| event_id == message_ref))
    })
    .await;
    if let Err(error) = stored {
        let last =
            boxed(room.load_user_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, &alice_id)).await;
        panic!("{error}: expected alice's m.read on {message}, bob has {last:?}");
    }
    timeline_until(&timeline, &sync_service, "alice's read receipt on bob's message", |item| {
        item.event_id() == Some(&*message) && item.read_receipts().contains_key(&alice_id)
    })
    .await;

    boxed(sync_service.stop()).await;
}
