//! OpenTelemetry traces: with `tracing.otlp_endpoint` set, one client's send is one trace whose
//! spans come from every process it crosses (the client-reader's HTTP request and its gRPC call,
//! the master's answer and the event's persisting, the sync worker receiving the Redis entry) and
//! ends with the moment the receiving user's long-polling `/sync` was woken. A real OTLP/gRPC
//! receiver (tonic, the OTLP protobuf definitions) collects them; parent links are checked span by
//! span.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ganglion_testkit::{Account, Backend, ServerOptions, TestServer};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use serde_json::json;

use crate::register_all;

/// One span as received: which process sent it, its ids and its name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    instance: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
}

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attribute = |key: &str| {
                resource_spans
                    .resource
                    .iter()
                    .flat_map(|resource| &resource.attributes)
                    .find(|attribute| attribute.key == key)
                    .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(value) => Some(value.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
            };
            let (service, instance) = (attribute("service.name"), attribute("service.instance.id"));
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    spans.push(Received {
                        service: service.clone(),
                        instance: instance.clone(),
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        name: span.name.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the receiver on a free loopback port: its `http://` endpoint and what it collects.
async fn receiver() -> (String, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener))
            .await
            .unwrap()
    });
    (endpoint, receiver)
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

#[tokio::test]
async fn embedded_default_one_send_is_one_trace_to_the_woken_sync() {
    crate::run(one_send_is_one_trace_across_processes_to_the_woken_sync(Backend::Sqlite)).await
}

#[tokio::test]
async fn cluster_one_send_is_one_trace_across_processes_to_the_woken_sync() {
    crate::run(one_send_is_one_trace_across_processes_to_the_woken_sync(Backend::Cluster)).await
}

async fn one_send_is_one_trace_across_processes_to_the_woken_sync(backend: Backend) {
    let (endpoint, receiver) = receiver().await;
    let options = ServerOptions {
        extra_toml: format!("[tracing]\notlp_endpoint = \"{endpoint}\"\n"),
        ..ServerOptions::default()
    };
    let server = TestServer::start(backend, options).await.unwrap();
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    let poll = crate::long_poll(&bob).await;
    // The long-poll waits before the send, so the send is what wakes it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    alice.send_text(&room, "traced").await.unwrap();
    assert!(poll.await.unwrap().ok()["rooms"]["join"][&room].is_object());

    // The send's trace: from its HTTP request down to the woken /sync (exported within seconds).
    let trace = ganglion_testkit::eventually(
        Duration::from_secs(20),
        "the send's trace down to the woken /sync",
        || async {
            let spans = receiver.spans.lock().unwrap().clone();
            let Some(send) =
                spans.iter().find(|span| span.name.starts_with("PUT ") && span.name.contains("/send/"))
            else {
                return Ok(None);
            };
            let trace: Vec<Received> =
                spans.iter().filter(|span| span.trace_id == send.trace_id).cloned().collect();
            // Each process exports on its own schedule: wait for every part of the chain, and
            // for every span's parent.
            let has = |name: &str| trace.iter().any(|span| span.name == name);
            let calls = trace.iter().filter(|span| span.name == "SendEvent").count();
            let linked = trace.iter().all(|span| {
                span.parent_span_id.is_empty()
                    || trace.iter().any(|parent| parent.span_id == span.parent_span_id)
            });
            let complete = has("sync woken")
                && has("persist event")
                && linked
                && (backend != Backend::Cluster || calls == 2);
            Ok(complete.then_some(trace))
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}: {:#?}", receiver.spans.lock().unwrap()));
    let by_id: HashMap<&[u8], &Received> = trace.iter().map(|span| (span.span_id.as_slice(), span)).collect();
    let named = |name: &str| {
        trace
            .iter()
            .find(|span| span.name == name || span.name.starts_with(name))
            .unwrap_or_else(|| panic!("no span {name} in the trace: {trace:#?}"))
    };
    let parent_of = |span: &Received| {
        by_id
            .get(span.parent_span_id.as_slice())
            .copied()
            .unwrap_or_else(|| panic!("{span:?} has no parent in the trace"))
    };
    let send = named("PUT ");
    assert!(send.parent_span_id.is_empty(), "the send starts the trace: {send:?}");
    let persist = named("persist event");
    let woken = named("sync woken");
    match backend {
        Backend::Cluster => {
            // client-reader: HTTP → gRPC call; master: the call → persisting; sync worker: the
            // Redis entry → the woken long-poll.
            let call = named("SendEvent");
            let calls: Vec<&Received> = trace.iter().filter(|span| span.name == "SendEvent").collect();
            let (client, answer) = match calls[..] {
                [a, b] if parent_of(b).span_id == a.span_id => (a, b),
                [a, b] if parent_of(a).span_id == b.span_id => (b, a),
                _ => panic!("a client and a server span for the call: {calls:#?} (first {call:?})"),
            };
            assert_eq!(parent_of(client).span_id, send.span_id);
            assert_eq!(parent_of(persist).span_id, answer.span_id);
            // Every sync worker receives the entry; the one whose long-poll it woke is the parent.
            let receive = parent_of(woken);
            assert!(receive.name.starts_with("receive events"), "{receive:?}");
            assert_eq!(parent_of(receive).span_id, persist.span_id);
            assert_eq!(send.service, "ganglion-client-reader");
            assert_eq!(client.service, "ganglion-client-reader");
            assert_eq!(answer.service, "ganglion-master");
            assert_eq!(persist.service, "ganglion-master");
            assert_eq!(receive.service, "ganglion-sync");
            assert_eq!(woken.service, "ganglion-sync");
            assert_eq!(
                receive.instance, woken.instance,
                "the worker that received the row woke the long-poll"
            );
        }
        _ => {
            assert_eq!(parent_of(persist).span_id, send.span_id);
            assert_eq!(parent_of(woken).span_id, persist.span_id);
            assert!(trace.iter().all(|span| span.service == "ganglion-all"), "{trace:#?}");
        }
    }
}

/// A send in a room shared with another server: the federation sender's transaction carrying
/// the event is a span of the send's trace, under the master's persisting of it.
#[tokio::test]
async fn cluster_send_to_another_server_traces_into_the_federation_senders_transaction() {
    crate::run(async {
        let (endpoint, receiver) = receiver().await;
        let options = ServerOptions {
            extra_toml: format!("[tracing]\notlp_endpoint = \"{endpoint}\"\n"),
            ..ServerOptions::default()
        };
        let (cluster, node) = tokio::join!(
            ganglion_testkit::Cluster::start_federating(options),
            ganglion_testkit::FederationNode::start()
        );
        let (cluster, node) = (cluster.unwrap(), node.unwrap());
        let alice =
            ganglion_testkit::Api::new(cluster.base_url()).register("alice", crate::PASSWORD).await.unwrap();
        let bob = node.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let room = alice
            .create_room(&json!({ "preset": "public_chat", "room_alias_name": "traced" }))
            .await
            .unwrap();
        bob.join(&format!("#traced:{}", cluster.server_name())).await.unwrap();
        let members = || async {
            let joined = alice.get(&format!("/rooms/{}/joined_members", ganglion_testkit::enc(&room))).await;
            joined.map(|response| response.body["joined"].as_object().map_or(0, |joined| joined.len()))
        };
        ganglion_testkit::eventually(Duration::from_secs(20), "bob's join on the cluster", || async {
            Ok((members().await? == 2).then_some(()))
        })
        .await
        .unwrap();
        let event_id = alice.send_text(&room, "traced across servers").await.unwrap();
        crate::federation_rooms::wait_for_messages(&bob, &room, 1, || node.log()).await;

        let (transaction, persist) = ganglion_testkit::eventually(
            Duration::from_secs(20),
            "the federation sender's transaction in the send's trace",
            || async {
                let spans = receiver.spans.lock().unwrap().clone();
                let sends: Vec<&Received> = spans
                    .iter()
                    .filter(|span| span.name.starts_with("PUT ") && span.name.contains("/send/"))
                    .collect();
                for send in sends {
                    let trace: Vec<&Received> =
                        spans.iter().filter(|span| span.trace_id == send.trace_id).collect();
                    let transaction = trace.iter().find(|span| span.name == "federation.transaction");
                    let persist = trace.iter().find(|span| span.name == "persist event");
                    if let (Some(transaction), Some(persist)) = (transaction, persist) {
                        return Ok(Some(((*transaction).clone(), (*persist).clone())));
                    }
                }
                Ok(None)
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error} ({event_id}): {:#?}", receiver.spans.lock().unwrap()));
        assert_eq!(transaction.service, "ganglion-federation-sender");
        assert!(transaction.instance.starts_with("fedsender"), "{transaction:?}");
        assert_eq!(transaction.parent_span_id, persist.span_id, "{transaction:?} under {persist:?}");
        assert_eq!(persist.service, "ganglion-master");
    })
    .await
}
