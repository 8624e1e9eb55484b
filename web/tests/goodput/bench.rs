//! The goodput benchmark itself (feature `bench`): raw, then the swarm path,
//! in alternating rounds; medians printed as a `BENCH tab-goodput` line.

use super::*;
use telly_swarm::Trust;
use telly_web::host::rtc::Backpressure;

const MESSAGE_BYTES: usize = 64 * 1024;
const STEADY_MS: f64 = 3_000.0;
const ROUNDS: usize = 7;

struct RawRun {
    mb_s: f64,
    busy_share: f64,
    /// `PeerLink::send` time per MB sent (compare the swarm's `send`).
    send_ms_per_mb: f64,
}

/// A bare sender: 64 KiB messages as fast as flow control allows; MB/s
/// received over `STEADY_MS` after `WARM_UP_MS`.
async fn raw_run() -> RawRun {
    let (a, mut a_events, _b, mut b_events) = linked().await;
    let payload = random_bytes(MESSAGE_BYTES);
    let start = now_ms();
    let (from, until) = (start + WARM_UP_MS, start + WARM_UP_MS + STEADY_MS);
    let (mut counted, mut waited) = (0u64, 0.0);
    let (mut sent, mut send_ms) = (0u64, 0.0);
    let mut writable = true;
    let mut count = |event: LinkEvent, writable: &mut bool| {
        let t = now_ms();
        match event {
            LinkEvent::Message(bytes) if t >= from && t < until => counted += bytes.len() as u64,
            LinkEvent::Writable => *writable = true,
            LinkEvent::Message(_) | LinkEvent::LocalCandidate(_) => {}
            other => panic!("the raw link saw {other:?}"),
        }
    };
    loop {
        let t = now_ms();
        if t >= until {
            break;
        }
        let before = now_ms();
        while writable {
            writable = a.send(&payload).unwrap() == Backpressure::Ready;
            sent += MESSAGE_BYTES as u64;
        }
        send_ms += now_ms() - before;
        while let Ok(event) = b_events.try_recv() {
            count(event, &mut writable);
        }
        while let Ok(event) = a_events.try_recv() {
            count(event, &mut writable);
        }
        if writable {
            continue;
        }
        let before = now_ms();
        let timeout = TimeoutFuture::new((until - t).ceil() as u32);
        let event = match select(select(a_events.next(), b_events.next()), timeout).await {
            Either::Left((Either::Left((e, _)), _)) | Either::Left((Either::Right((e, _)), _)) => {
                Some(e.expect("the raw link's events ended"))
            }
            Either::Right(_) => None,
        };
        waited += now_ms() - before;
        if let Some(event) = event {
            count(event, &mut writable);
        }
    }
    RawRun {
        mb_s: counted as f64 / 1e6 / (STEADY_MS / 1000.0),
        busy_share: 1.0 - waited / (until - start),
        send_ms_per_mb: send_ms / (sent as f64 / 1e6).max(1e-9),
    }
}

/// Milliseconds per MB of the hashing the engines do: a seeder's check of
/// a whole block read back from its store (`Signed::open_fetched`, as
/// `handle_loaded` runs it), a viewer's check of one chunk against the
/// leaves (`wire::check_chunk`), and one plain SHA-256 pass.
fn hashing_ms_per_mb(title: &Title) -> (f64, f64, f64) {
    let trust = title.trust();
    let media = &title.bytes[1..];
    let mb = media.iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6;
    let t = now_ms();
    let mut leaves = Vec::new();
    for (i, bytes) in media.iter().enumerate() {
        let entry = &title.layout.info(BlockId(i as u32 + 1)).entry;
        let (hashes, chunks) = trust
            .open_fetched(entry, 0, bytes.clone().into(), None)
            .expect("the title's own bytes check out");
        assert_eq!(chunks.len(), bytes.len().div_ceil(wire::CHUNK_SIZE));
        leaves.push(hashes);
    }
    let open = (now_ms() - t) / mb;
    let t = now_ms();
    for (bytes, hashes) in media.iter().zip(&leaves) {
        for (i, chunk) in bytes.chunks(wire::CHUNK_SIZE).enumerate() {
            assert!(wire::check_chunk(bytes.len() as u64, hashes, i, chunk));
        }
    }
    let check = (now_ms() - t) / mb;
    let t = now_ms();
    for bytes in media {
        std::hint::black_box(Sha256Hash::of(bytes));
    }
    let sha = (now_ms() - t) / mb;
    (open, check, sha)
}

/// Milliseconds per MB (wall, one block at a time) for WebCrypto to hash a
/// block's leaves as a seeder's load does (`crypto::with_leaves`).
async fn webcrypto_leaves_ms_per_mb(title: &Title) -> f64 {
    let media: Vec<js_sys::Uint8Array> = title.bytes[1..]
        .iter()
        .map(|b| js_sys::Uint8Array::from(&b[..]))
        .collect();
    let mb = title.bytes[1..].iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6;
    let t = now_ms();
    for bytes in &media {
        let fetched = telly_web::host::crypto::with_leaves(bytes).await;
        assert!(fetched.leaves.is_some());
    }
    (now_ms() - t) / mb
}

/// Milliseconds per MB to frame chunks (`to_wire` + `wire::encode`) and to
/// read them back (`wire::decode` + `from_wire`), and of one plain copy.
fn framing_ms_per_mb(title: &Title) -> (f64, f64, f64) {
    let chunks: Vec<PeerMessage<Signed>> = title.bytes[1..]
        .iter()
        .enumerate()
        .flat_map(|(b, bytes)| {
            bytes
                .chunks(wire::CHUNK_SIZE)
                .enumerate()
                .map(move |(i, c)| PeerMessage::Chunk {
                    block: BlockId(b as u32 + 1),
                    index: i as u16,
                    data: Arc::from(c),
                })
        })
        .collect();
    let mb = title.bytes[1..].iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6;
    let t = now_ms();
    let frames: Vec<Vec<u8>> = chunks
        .iter()
        .map(|m| wire::encode(&m.to_wire()).unwrap())
        .collect();
    let encode = (now_ms() - t) / mb;
    let t = now_ms();
    for frame in &frames {
        std::hint::black_box(PeerMessage::<Signed>::from_wire(
            wire::decode(frame).unwrap(),
        ));
    }
    let decode = (now_ms() - t) / mb;
    let t = now_ms();
    for frame in &frames {
        std::hint::black_box(frame.clone());
    }
    let copy = (now_ms() - t) / mb;
    (encode, decode, copy)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn describe(label: &str, s: &SwarmRun) -> String {
    let (se, vi) = (&s.seeder_per_mb, &s.viewer_per_mb);
    let both = se.plus(vi);
    format!(
        "BENCH tab-goodput-run {label} mb_s={:.2} whole_mb_s={:.2} seconds={:.3} bytes={} frame_bytes={} \
         origin_fetches={} seeder_loads={} duplicate_bytes={} requests={} chunks_requested={} \
         mean_outstanding_chunks={:.1} max_outstanding_chunks={} mean_seeder_queue_kib={:.0} \
         seeder_idle_share={:.3} busy_share={:.3} encode_ms_per_mb={:.2} decode_ms_per_mb={:.2} \
         engine_ms_per_mb={:.2} send_ms_per_mb={:.2} seeder_load_ms_per_mb={:.2} \
         seeder_input_ms_per_mb={:.2} seeder_poll_ms_per_mb={:.2} viewer_input_ms_per_mb={:.2} \
         viewer_poll_ms_per_mb={:.2} peer_rate_mb_s={:.2}",
        s.steady_mb_s,
        s.goodput_mb_s,
        s.seconds,
        s.bytes_from_peers,
        s.frame_bytes,
        s.origin_fetches,
        s.seeder_loads,
        s.bytes_duplicate,
        s.requests,
        s.chunks_requested,
        s.mean_outstanding_chunks,
        s.max_outstanding_chunks,
        s.mean_seeder_queue_kib,
        s.seeder_idle_share,
        s.busy_share,
        both.encode,
        both.decode,
        both.engine(),
        both.send,
        se.load,
        se.input,
        se.poll,
        vi.input,
        vi.poll,
        s.peer_rate_mb_s,
    )
}

fn print(line: &str) {
    console_log!("{line}");
}

/// The browser half of `cargo xtask bench goodput`:
/// CHROMEDRIVER=/usr/bin/chromedriver cargo test -p telly-web --release \
///   --target wasm32-unknown-unknown --features bench --test browser_goodput -- bench_goodput --nocapture
///
/// Rounds of: raw link, swarm path from a seeder reading its store (the
/// figure), swarm path again from the same seeder now holding every block
/// in memory (diagnosis: the seeder's loads left out). Medians.
#[wasm_bindgen_test]
async fn bench_goodput() {
    // 120 blocks of 512 KiB: about 63 MB, a steady window of some 3 s at
    // loopback rates, as long as the raw sender's.
    let title = Title::new(120, 512 * 1024);
    // Warm up (WASM tier-up of the engines' and the hashes' code, the
    // WebRTC stack) on a small title whose figures are thrown away.
    let small = Title::new(6, 512 * 1024);
    let _ = swarm_run(&small, small.seeder(), PeerId(2)).await;
    let (open, check, sha) = hashing_ms_per_mb(&title);
    let webcrypto = webcrypto_leaves_ms_per_mb(&title).await;
    let (encode, decode, copy) = framing_ms_per_mb(&title);
    let (mut raw, mut cold, mut hot) = (Vec::new(), Vec::new(), Vec::new());
    let mut cold_whole = Vec::new();
    let mut next_id = 2;
    for round in 0..ROUNDS {
        let r = raw_run().await;
        print(&format!(
            "BENCH tab-goodput-run raw#{round} mb_s={:.2} busy_share={:.3} send_ms_per_mb={:.2}",
            r.mb_s, r.busy_share, r.send_ms_per_mb
        ));
        raw.push(r.mb_s);
        let (run, seeder) = swarm_run(&title, title.seeder(), PeerId(next_id)).await;
        print(&describe(&format!("cold#{round}"), &run));
        cold.push(run.steady_mb_s);
        cold_whole.push(run.goodput_mb_s);
        let (run, _) = swarm_run(&title, seeder, PeerId(next_id + 1)).await;
        print(&describe(&format!("hot#{round}"), &run));
        hot.push(run.steady_mb_s);
        next_id += 2;
    }
    // Each round's swarm figures against its own raw one: the machine's
    // load drifts less within a round than across the run.
    let round_ratio = median(cold.iter().zip(&raw).map(|(c, r)| c / r).collect());
    let hot_ratio = median(hot.iter().zip(&raw).map(|(h, r)| h / r).collect());
    let whole_ratio = median(cold_whole.iter().zip(&raw).map(|(c, r)| c / r).collect());
    let whole = median(cold_whole);
    let (raw, cold, hot) = (median(raw), median(cold), median(hot));
    print(&format!(
        "BENCH tab-goodput-detail hot_mb_s={hot:.2} round_ratio={round_ratio:.3} \
         whole_mb_s={whole:.2} whole_round_ratio={whole_ratio:.3} \
         hot_round_ratio={hot_ratio:.3} seeder_open_ms_per_mb={open:.2} \
         webcrypto_leaves_ms_per_mb={webcrypto:.2} \
         viewer_check_ms_per_mb={check:.2} sha256_ms_per_mb={sha:.2} \
         chunk_encode_ms_per_mb={encode:.2} chunk_decode_ms_per_mb={decode:.2} \
         copy_ms_per_mb={copy:.2} rounds={ROUNDS}"
    ));
    print(&format!(
        "BENCH tab-goodput swarm_mb_s={cold:.2} raw_mb_s={raw:.2}"
    ));
}
