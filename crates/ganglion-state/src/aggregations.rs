//! Bundled aggregations: what the spec has a server sum up of an event's children under
//! `unsigned.m.relations`: the thread (`m.thread`: newest reply, count, whether the viewer took
//! part), the newest valid edit (`m.replace`), and references (`m.reference`). Annotations are
//! not aggregated (the spec leaves them to `/relations`).
//!
//! Children sent by users the viewer ignores are left out; so are those past the position the
//! viewer may read up to. A redacted child has no relation any more (its row is gone).

use std::collections::{HashMap, HashSet};

use ganglion_storage::{
    Connect,
    relations::{self as relation_store, ChildRow},
};
use serde_json::{Map, Value, json};

use crate::{Caches, Result, StoredEvent};

/// Whom the aggregations are for.
pub struct AggregationViewer<'a> {
    pub user_id: &'a str,
    pub ignored: &'a HashSet<String>,
    /// The newest position the viewer may see.
    pub up_to: i64,
}

impl Caches {
    /// Adds `unsigned.m.relations` to each of `formatted`, the client form of `events` (same
    /// order), that has children to aggregate.
    pub async fn bundle_aggregations(
        &self,
        conn: &mut impl Connect,
        events: &[StoredEvent],
        formatted: &mut [Value],
        viewer: &AggregationViewer<'_>,
    ) -> Result<()> {
        let bundles = self.aggregations(conn, events, viewer, true).await?;
        attach(events, formatted, bundles);
        Ok(())
    }

    /// The bundled aggregations of `events` by event id, for responses that write events in
    /// their shared form (`/sync`).
    pub async fn aggregations_by_id(
        &self,
        conn: &mut impl Connect,
        events: &[StoredEvent],
        viewer: &AggregationViewer<'_>,
    ) -> Result<HashMap<String, Map<String, Value>>> {
        self.aggregations(conn, events, viewer, true).await
    }

    /// The bundles of `events` by event id. With `threads`, thread summaries too (not for a
    /// thread's newest reply, whose own children are only edits and references).
    async fn aggregations(
        &self,
        conn: &mut impl Connect,
        events: &[StoredEvent],
        viewer: &AggregationViewer<'_>,
        threads: bool,
    ) -> Result<HashMap<String, Map<String, Value>>> {
        // State events receive no bundled aggregations.
        let parents: Vec<&StoredEvent> = events.iter().filter(|event| !event.pdu.is_state()).collect();
        let mut bundles: HashMap<String, Map<String, Value>> = HashMap::new();
        if parents.is_empty() {
            return Ok(bundles);
        }
        let ids: Vec<&str> = parents.iter().map(|event| event.row.event_id.as_str()).collect();
        // Most events have no children: one indexed look-up settles them all.
        let with_children = relation_store::parents_with_children(conn.connection().await?, &ids).await?;
        if with_children.is_empty() {
            return Ok(bundles);
        }
        let ids: Vec<&str> = ids.into_iter().filter(|id| with_children.contains(*id)).collect();
        let by_id: HashMap<&str, &StoredEvent> =
            parents.iter().map(|event| (event.row.event_id.as_str(), *event)).collect();

        for (parent_id, edit) in self.newest_edits(conn, &ids, &by_id, viewer).await? {
            bundles.entry(parent_id).or_default().insert("m.replace".into(), edit);
        }

        let references =
            relation_store::children_of(conn.connection().await?, &ids, "m.reference", viewer.up_to).await?;
        let mut chunks: HashMap<String, Vec<Value>> = HashMap::new();
        for child in references.into_iter().filter(|child| !viewer.ignored.contains(&child.sender)) {
            chunks.entry(child.parent_id).or_default().push(json!({ "event_id": child.event_id }));
        }
        for (parent_id, chunk) in chunks {
            bundles.entry(parent_id).or_default().insert("m.reference".into(), json!({ "chunk": chunk }));
        }

        if threads {
            for (root_id, summary) in self.thread_summaries(conn, &ids, &by_id, viewer).await? {
                bundles.entry(root_id).or_default().insert("m.thread".into(), summary);
            }
        }
        Ok(bundles)
    }

    /// Each parent's newest valid edit, in client form: by the parent's sender, of the parent's
    /// type, carrying `m.new_content` (unless encrypted), on a parent that is not redacted and not
    /// an edit itself. The newest by `origin_server_ts`, then by event id.
    async fn newest_edits(
        &self,
        conn: &mut impl Connect,
        ids: &[&str],
        by_id: &HashMap<&str, &StoredEvent>,
        viewer: &AggregationViewer<'_>,
    ) -> Result<Vec<(String, Value)>> {
        let edits =
            relation_store::children_of(conn.connection().await?, ids, "m.replace", viewer.up_to).await?;
        let mut candidates: HashMap<String, Vec<ChildRow>> = HashMap::new();
        for edit in edits {
            let Some(parent) = by_id.get(edit.parent_id.as_str()) else { continue };
            let editable = parent.row.redacted_by.is_none()
                && parent.pdu.relation().is_none_or(|relation| relation.rel_type != "m.replace");
            if editable && edit.sender == parent.row.sender {
                candidates.entry(edit.parent_id.clone()).or_default().push(edit);
            }
        }
        let mut newest = Vec::new();
        for (parent_id, mut edits) in candidates {
            let Some(parent) = by_id.get(parent_id.as_str()) else { continue };
            edits.sort_by(|a, b| (b.origin_server_ts, &b.event_id).cmp(&(a.origin_server_ts, &a.event_id)));
            for edit in edits {
                let Some(event) = self.event(conn, edit.event_nid).await? else { continue };
                if event.row.redacted_by.is_some() || event.pdu.kind != parent.pdu.kind {
                    continue;
                }
                let encrypted = event.pdu.kind.to_string() == "m.room.encrypted";
                if !encrypted && event.pdu.content_value().get("m.new_content").is_none_or(|c| !c.is_object())
                {
                    continue;
                }
                let mut formatted = self.client_events(conn, std::slice::from_ref(&event), None).await?;
                if let Some(value) = formatted.pop() {
                    newest.push((parent_id.clone(), value));
                }
                break;
            }
        }
        Ok(newest)
    }

    /// The thread summaries of the roots among `ids`: the newest reply (with its own bundle),
    /// the number of replies and whether the viewer sent the root or a reply, all without
    /// ignored users.
    async fn thread_summaries(
        &self,
        conn: &mut impl Connect,
        ids: &[&str],
        by_id: &HashMap<&str, &StoredEvent>,
        viewer: &AggregationViewer<'_>,
    ) -> Result<Vec<(String, Value)>> {
        let senders = relation_store::thread_senders(conn.connection().await?, ids, viewer.up_to).await?;
        // Root id → (count, newest position, viewer took part).
        let mut threads: HashMap<String, (i64, i64, bool)> = HashMap::new();
        for row in senders.into_iter().filter(|row| !viewer.ignored.contains(&row.sender)) {
            let thread = threads.entry(row.root_id).or_insert((0, i64::MIN, false));
            thread.0 += row.count;
            thread.1 = thread.1.max(row.latest_pos);
            thread.2 |= row.sender == viewer.user_id;
        }
        if threads.is_empty() {
            return Ok(Vec::new());
        }
        let positions: Vec<i64> = threads.values().map(|(_, latest, _)| *latest).collect();
        let rows =
            ganglion_storage::events::events_at_positions(conn.connection().await?, &positions).await?;
        let latest: Vec<StoredEvent> = rows.into_iter().map(StoredEvent::from_row).collect::<Result<_>>()?;
        let mut formatted = self.client_events(conn, &latest, None).await?;
        let bundles = Box::pin(self.aggregations(conn, &latest, viewer, false)).await?;
        attach(&latest, &mut formatted, bundles);
        let mut latest_by_pos: HashMap<i64, Value> =
            latest.iter().map(|event| event.row.stream_pos).zip(formatted).collect();
        let mut summaries = Vec::with_capacity(threads.len());
        for (root_id, (count, newest, took_part)) in threads {
            let Some(latest_event) = latest_by_pos.remove(&newest) else { continue };
            let root_sender = by_id.get(root_id.as_str()).map(|root| root.row.sender.as_str());
            let participated = took_part || root_sender == Some(viewer.user_id);
            summaries.push((
                root_id,
                json!({
                    "latest_event": latest_event,
                    "count": count,
                    "current_user_participated": participated,
                }),
            ));
        }
        Ok(summaries)
    }
}

/// Puts each bundle in its event's `unsigned.m.relations`.
fn attach(events: &[StoredEvent], formatted: &mut [Value], mut bundles: HashMap<String, Map<String, Value>>) {
    if bundles.is_empty() {
        return;
    }
    for (event, value) in events.iter().zip(formatted.iter_mut()) {
        let Some(bundle) = bundles.remove(&event.row.event_id) else { continue };
        let Some(object) = value.as_object_mut() else { continue };
        let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.insert("m.relations".into(), Value::Object(bundle));
        }
    }
}
