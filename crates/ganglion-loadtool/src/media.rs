//! The `media` workload, against any homeserver's media repository (Synapse's included), through
//! the authenticated client endpoints:
//!
//! a. small files: --senders closed-loop clients upload 4 KiB files for --duration (after
//!    --warmup), then download them back round-robin for as long: requests/s and latency;
//! b. a large file (--media-mib MiB, default 32, under both servers' 50 MiB upload limit): one upload and three downloads, streamed,
//!    in MiB/s;
//! c. thumbnails: ten distinct 1920x1080 PNGs, each asked for a 320x240 `scale` thumbnail once
//!    (first: rendered, unless the server made it at upload) and again (cached);
//! d. the first download of fresh 64 KiB files against a repeat one: with antivirus scanning on,
//!    the difference is the scan.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::json;

use crate::cli::Args;
use crate::matrix::Api;
use crate::run::{Progress, REQUEST_TIMEOUT, run_id};
use crate::server::Server;
use crate::setup::Setup;
use crate::stats::{self, Summary};

const SMALL_BYTES: usize = 4096;
const THUMBNAILS: usize = 10;
const SCANNED: usize = 20;
const SCANNED_BYTES: usize = 64 * 1024;
const LARGE_DOWNLOADS: usize = 3;
/// A large file's transfer may take a slow server a while.
const LARGE_TIMEOUT: Duration = Duration::from_secs(600);

fn random_bytes(len: usize) -> Bytes {
    use rand::RngCore as _;
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    Bytes::from(bytes)
}

/// A 1920x1080 PNG that differs per `seed` (gradients compress, so uploads stay a few MiB).
fn picture(seed: u32) -> Bytes {
    let image = image::RgbImage::from_fn(1920, 1080, |x, y| {
        image::Rgb([(x / 8 + seed * 7) as u8, (y / 5 + seed * 13) as u8, ((x + y) / 12 + seed) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).expect("encoding a PNG in memory");
    Bytes::from(out.into_inner())
}

/// Runs `one` from `clients` closed loops for --warmup then --duration; the measured window's
/// latencies (ns) and how many failed.
async fn closed_loop<F, Fut>(clients: usize, warmup: Duration, duration: Duration, one: F) -> (Vec<i64>, u64)
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (one, measuring, stop, failures) =
            (one.clone(), measuring.clone(), stop.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let counted = measuring.load(Ordering::Relaxed);
                let started = Instant::now();
                let outcome = one(client, round).await;
                round += 1;
                if counted && !stop.load(Ordering::Relaxed) {
                    match outcome {
                        Ok(()) => latencies.push(started.elapsed().as_nanos() as i64),
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    (all, failures.load(Ordering::Relaxed))
}

pub async fn media(args: &Args, server: Server, progress: &Progress) -> anyhow::Result<()> {
    let clients = args.senders as usize;
    let api = Api::new(&server.base_url, clients.max(4), REQUEST_TIMEOUT)?;
    api.versions().await.context("the server does not answer /_matrix/client/versions")?;
    let run_id = run_id();
    let rate_limited = AtomicU64::new(0);
    let setup = Setup { api: &api, run_id: &run_id, concurrency: 4, rate_limited: &rate_limited };
    let user = Arc::new(setup.register("media", 1).await?.pop().context("no user registered")?);
    let seconds = args.duration.as_secs_f64();

    // a. Small files, up then down.
    progress.say(&format!("a. {clients} clients upload 4 KiB files for {:?}", args.duration));
    let uploaded = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (mut up, up_failed) = {
        let (api, user, uploaded) = (api.clone(), user.clone(), uploaded.clone());
        closed_loop(clients, args.warmup, args.duration, move |_, _| {
            let (api, user, uploaded) = (api.clone(), user.clone(), uploaded.clone());
            async move {
                let id = api.upload(&user, "application/octet-stream", random_bytes(SMALL_BYTES)).await?;
                uploaded.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                Ok(())
            }
        })
        .await
    };
    let ids: Arc<Vec<String>> =
        Arc::new(std::mem::take(&mut *uploaded.lock().unwrap_or_else(|e| e.into_inner())));
    anyhow::ensure!(!ids.is_empty(), "no small upload succeeded");
    progress.say(&format!("a. {clients} clients download them back for {:?}", args.duration));
    let (mut down, down_failed) = {
        let (api, user, ids) = (api.clone(), user.clone(), ids.clone());
        closed_loop(clients, args.warmup, args.duration, move |client, round| {
            let (api, user, ids) = (api.clone(), user.clone(), ids.clone());
            async move {
                let id = &ids[(client * 7919 + round as usize) % ids.len()];
                anyhow::ensure!(api.media_get(&user, &format!("download/{id}")).await? == SMALL_BYTES as u64);
                Ok(())
            }
        })
        .await
    };
    let (up_rate, down_rate) = (up.len() as f64 / seconds, down.len() as f64 / seconds);
    let (up, down) = (stats::summarize_ns(&mut up), stats::summarize_ns(&mut down));

    // b. One large file.
    let mib = args.media_mib.unwrap_or(32) as usize;
    progress.say(&format!("b. a {mib} MiB file: one upload, {LARGE_DOWNLOADS} downloads"));
    let large_api = Api::new(&server.base_url, 1, LARGE_TIMEOUT)?;
    let large = random_bytes(mib * 1024 * 1024);
    let started = Instant::now();
    let large_id = large_api.upload(&user, "application/octet-stream", large.clone()).await?;
    let upload_mib_s = mib as f64 / started.elapsed().as_secs_f64();
    drop(large);
    let mut download_mib_s = Vec::new();
    for _ in 0..LARGE_DOWNLOADS {
        let started = Instant::now();
        let received = large_api.media_get(&user, &format!("download/{large_id}")).await?;
        anyhow::ensure!(received == (mib * 1024 * 1024) as u64, "the large download was cut short");
        download_mib_s.push(mib as f64 / started.elapsed().as_secs_f64());
    }
    let download_mib_s = download_mib_s.iter().sum::<f64>() / download_mib_s.len() as f64;

    // c. Thumbnails, first and cached.
    progress.say(&format!("c. {THUMBNAILS} pictures of 1920x1080: a 320x240 thumbnail each, twice"));
    let pictures: Vec<String> = stream::iter(0..THUMBNAILS as u32)
        .map(|seed| {
            let (api, user) = (&api, &user);
            async move { api.upload(user, "image/png", picture(seed)).await }
        })
        .buffered(2)
        .try_collect()
        .await?;
    let mut first = Vec::new();
    let mut cached = Vec::new();
    for round in [&mut first, &mut cached] {
        for id in &pictures {
            let started = Instant::now();
            api.media_get(&user, &format!("thumbnail/{id}?width=320&height=240&method=scale")).await?;
            round.push(started.elapsed().as_nanos() as i64);
        }
    }
    let (first, cached) = (stats::summarize_ns(&mut first), stats::summarize_ns(&mut cached));

    // d. First downloads (scanned, when the server scans) against repeats.
    progress.say(&format!("d. {SCANNED} fresh 64 KiB files: first download against a repeat"));
    let mut fresh = Vec::new();
    let mut repeat = Vec::new();
    for _ in 0..SCANNED {
        let id = api.upload(&user, "application/octet-stream", random_bytes(SCANNED_BYTES)).await?;
        for round in [&mut fresh, &mut repeat] {
            let started = Instant::now();
            api.media_get(&user, &format!("download/{id}")).await?;
            round.push(started.elapsed().as_nanos() as i64);
        }
    }
    let (fresh, repeat) = (stats::summarize_ns(&mut fresh), stats::summarize_ns(&mut repeat));

    if args.json {
        let report = json!({
            "workload": "media", "backend": server.backend, "clients": clients,
            "small_uploads_per_s": up_rate, "small_upload_ms": up, "small_upload_failures": up_failed,
            "small_downloads_per_s": down_rate, "small_download_ms": down, "small_download_failures": down_failed,
            "large_mib": mib, "large_upload_mib_s": upload_mib_s, "large_download_mib_s": download_mib_s,
            "thumbnail_first_ms": first, "thumbnail_cached_ms": cached,
            "first_download_ms": fresh, "repeat_download_ms": repeat,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let fmt = |summary: Option<Summary>| {
        summary.map_or_else(|| "n/a".to_owned(), |s| format!("{:.1} / {:.1}", s.p50, s.p99))
    };
    println!("media, {} ({}): {clients} clients", server.backend, server.base_url);
    println!(
        "| 4 KiB uploads/s (p50 / p99 ms) | 4 KiB downloads/s (p50 / p99 ms) | {mib} MiB up / down (MiB/s) | thumbnail first / cached p50 (ms) | first / repeat download p50 (ms) | failures |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {up_rate:.0} ({}) | {down_rate:.0} ({}) | {upload_mib_s:.0} / {download_mib_s:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
        fmt(up),
        fmt(down),
        first.map_or(f64::NAN, |s| s.p50),
        cached.map_or(f64::NAN, |s| s.p50),
        fresh.map_or(f64::NAN, |s| s.p50),
        repeat.map_or(f64::NAN, |s| s.p50),
        up_failed + down_failed,
    );
    Ok(())
}
