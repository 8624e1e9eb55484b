//! The host loop: one task owns the player's state and reacts to events (ticks,
//! seeks, finished fetches, finished SourceBuffer operations, key exchange).
//!
//! Invariants:
//! - a block reaches a SourceBuffer only as the output of `Pipeline::get`,
//!   i.e. verified against the signed manifest and opened;
//! - at most one operation runs per SourceBuffer (`TrackState::busy`);
//! - at most [`MAX_PARALLEL_FETCHES`] blocks are being fetched at once;
//! - a block's slot is `Appended` only while its middle is in its buffer's
//!   buffered ranges (checked after every operation), so evicted media is
//!   fetched again when the playhead returns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use gloo_timers::future::TimeoutFuture;
use js_sys::Uint8Array;
use telly_proto::{Manifest, Sha256Hash};
use web_sys::{HtmlVideoElement, SourceBuffer};

use super::eme::{KeyEvent, KeySession};
use super::fetch::{Outcome, Pipeline, Provenance};
use super::mse::{self, MseError};
use super::plan;
use super::snapshot::{Phase, PlayerSnapshot, TrackStats, publish_debug};
use crate::host::busy;
use crate::host::events::Listener;
use crate::host::marks::{self, Stage};

pub const MAX_PARALLEL_FETCHES: usize = 3;
const TICK_MS: u32 = 250;
/// How long a block that could not be fetched rests before another try; the
/// rest doubles with each failure up to [`MAX_RETRY_MS`].
const FAILED_RETRY_MS: f64 = 5_000.0;
const MAX_RETRY_MS: f64 = 60_000.0;
/// Appends of one block whose media never shows as buffered before it is
/// taken as held anyway (stops a refetch loop on odd media).
const MAX_APPENDS_PER_BLOCK: u32 = 3;
/// How long a non-fatal warning stays on screen.
const WARNING_SHOWN_MS: f64 = 8_000.0;

pub enum Event {
    Tick,
    Seeking,
    MediaError,
    Key(KeyEvent),
    Fetched {
        track: usize,
        index: usize,
        outcome: Outcome,
    },
    Operated {
        track: usize,
        op: Op,
        result: Result<(), MseError>,
    },
    Stop,
}

pub enum Op {
    Append { index: usize, media: Uint8Array },
    Remove { start_s: f64, end_s: f64 },
}

enum Slot {
    Fetching,
    Ready(Uint8Array),
    Appending,
    Appended,
    Failed { retry_at_ms: f64 },
}

struct TrackState {
    buffer: SourceBuffer,
    /// Per block index; absent means nothing is held or under way.
    slots: BTreeMap<usize, Slot>,
    busy: bool,
    appends: HashMap<usize, u32>,
    /// Failed fetches per block, for the retry back-off.
    failures: HashMap<usize, u32>,
}

/// Keeps the snapshot and tells the UI and `window.__telly` about it.
pub struct Reporter {
    snapshot: PlayerSnapshot,
    /// When the shown warning was set; it is cleared [`WARNING_SHOWN_MS`] later.
    warned_at_ms: f64,
    video: HtmlVideoElement,
    on_snapshot: Box<dyn Fn(&PlayerSnapshot)>,
}

impl Reporter {
    pub fn new(video: HtmlVideoElement, on_snapshot: Box<dyn Fn(&PlayerSnapshot)>) -> Self {
        let mut snapshot = PlayerSnapshot::default();
        snapshot.stats.keys = "pending".into();
        Self {
            snapshot,
            warned_at_ms: 0.0,
            video,
            on_snapshot,
        }
    }

    pub fn publish(&self) {
        (self.on_snapshot)(&self.snapshot);
        publish_debug(&self.snapshot, Some(&self.video));
    }

    pub fn fail(&mut self, message: String) {
        self.snapshot.phase = Phase::Failed;
        self.snapshot.stats.last_error = Some(message.clone());
        self.snapshot.message = Some(message);
        self.publish();
    }

    pub fn warn(&mut self, message: String) {
        self.set_warning(message);
        self.publish();
    }

    fn set_warning(&mut self, message: String) {
        tracing::warn!(%message);
        self.snapshot.stats.last_error = Some(message.clone());
        self.snapshot.warning = Some(message);
        self.warned_at_ms = js_sys::Date::now();
    }

    fn expire_warning(&mut self) {
        if self.snapshot.warning.is_some()
            && js_sys::Date::now() - self.warned_at_ms > WARNING_SHOWN_MS
        {
            self.snapshot.warning = None;
        }
    }

    pub fn manifest_verified(&mut self, manifest: &Manifest) {
        let snapshot = &mut self.snapshot;
        snapshot.stats.manifest_verified = true;
        snapshot.title = manifest.title.clone();
        snapshot.duration_s = manifest.duration_ms as f64 / 1000.0;
        snapshot.stats.tracks = manifest
            .tracks
            .iter()
            .map(|t| TrackStats {
                kind: format!("{:?}", t.kind).to_lowercase(),
                mime: t.mime.clone(),
                blocks: t.blocks.len(),
                ..TrackStats::default()
            })
            .collect();
        self.publish();
    }

    /// Adds what getting one block did to the statistics.
    pub fn count(&mut self, outcome: &Outcome, sha: &Sha256Hash) {
        let stats = &mut self.snapshot.stats;
        stats.verify_failures += outcome.rejected;
        if outcome.rejected > 0 {
            stats.rejected_blocks.insert(sha.to_hex());
        }
        stats.corrupt_in_store += u32::from(outcome.corrupt_in_store);
        stats.origin_bytes += outcome.source_bytes;
        match outcome.provenance {
            Some(Provenance::Store) => stats.from_store += 1,
            Some(Provenance::Source) => stats.from_origin += 1,
            None => {}
        }
        if let Some(e) = &outcome.store_error {
            self.set_warning(format!("Blocks are not being kept on this device: {e}"));
        }
        if outcome.rejected > 0 {
            self.set_warning(format!(
                "Refused {} corrupt cop{} of a block; fetching it again.",
                outcome.rejected,
                if outcome.rejected == 1 { "y" } else { "ies" }
            ));
        }
        if let Err(e) = &outcome.media {
            self.set_warning(e.clone());
        }
    }
}

pub struct Engine {
    video: HtmlVideoElement,
    media: mse::Attached,
    manifest: Rc<Manifest>,
    pipeline: Rc<Pipeline>,
    tracks: Vec<TrackState>,
    stored: HashSet<Sha256Hash>,
    events: mpsc::UnboundedSender<Event>,
    _keys: KeySession,
    failed: bool,
    /// Where the playhead last moved, and when (for [`plan::reseek_in_place`]).
    still_at: (f64, f64),
    /// Since when playback is held at rate 0 for the resume goal.
    held_since: Option<f64>,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        video: HtmlVideoElement,
        media: mse::Attached,
        manifest: Rc<Manifest>,
        pipeline: Rc<Pipeline>,
        buffers: Vec<SourceBuffer>,
        stored: HashSet<Sha256Hash>,
        keys: KeySession,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let tracks = buffers
            .into_iter()
            .map(|buffer| TrackState {
                buffer,
                slots: BTreeMap::new(),
                busy: false,
                appends: HashMap::new(),
                failures: HashMap::new(),
            })
            .collect();
        Self {
            video,
            media,
            manifest,
            pipeline,
            tracks,
            stored,
            events,
            _keys: keys,
            failed: false,
            still_at: (-1.0, 0.0),
            held_since: None,
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>, mut reporter: Reporter) {
        let target: &web_sys::EventTarget = self.video.as_ref();
        let on_seeking = self.events.clone();
        let on_error = self.events.clone();
        let _listeners = [
            Listener::new(target, "seeking", move |_| {
                let _ = on_seeking.unbounded_send(Event::Seeking);
            }),
            Listener::new(target, "error", move |_| {
                let _ = on_error.unbounded_send(Event::MediaError);
            }),
        ];
        let ticks = self.events.clone();
        wasm_bindgen_futures::spawn_local(async move {
            // Ends when the loop below has gone and the channel is closed.
            while ticks.unbounded_send(Event::Tick).is_ok() {
                TimeoutFuture::new(TICK_MS).await;
            }
        });
        reporter.snapshot.phase = Phase::Running;
        self.refresh(&mut reporter);

        while let Some(event) = inbox.next().await {
            if matches!(event, Event::Stop) {
                break;
            }
            busy::timed("player", || self.handle(event, &mut reporter));
        }
        reporter.snapshot.phase = Phase::Stopped;
        reporter.publish();
        self.media.detach(&self.video);
    }

    fn handle(&mut self, event: Event, reporter: &mut Reporter) {
        match event {
            // The loop ends on it before it gets here.
            Event::Stop => {}
            Event::Tick => {
                self.hold_for_goal();
                self.unstick(reporter);
                self.pump();
                self.refresh(reporter);
            }
            Event::Seeking => {
                self.hold_for_goal();
                self.pump();
            }
            Event::MediaError => {
                let why = self
                    .video
                    .error()
                    .map(|e| format!("{} (media error {})", e.message(), e.code()))
                    .unwrap_or_else(|| "the media element reported an error".into());
                self.failed = true;
                reporter.fail(format!("Playback failed: {why}"));
            }
            Event::Key(KeyEvent::Ready) => {
                reporter.snapshot.stats.keys = "ready".into();
            }
            Event::Key(KeyEvent::Failed(why)) => {
                reporter.snapshot.stats.keys = "failed".into();
                self.failed = true;
                reporter.fail(format!("The title's keys were refused: {why}"));
            }
            Event::Fetched {
                track,
                index,
                outcome,
            } => {
                self.on_fetched(track, index, outcome, reporter);
                self.pump();
            }
            Event::Operated { track, op, result } => {
                self.on_operated(track, op, result, reporter);
                self.hold_for_goal();
                self.pump();
            }
        }
    }

    fn now_ms() -> f64 {
        js_sys::Date::now()
    }

    fn playhead(&self) -> (f64, u64) {
        let s = self.video.current_time().max(0.0);
        (s, (s * 1000.0) as u64)
    }

    /// Holds playback (rate 0) while the element waits for media and has less
    /// than the resume goal ahead, and lets it go once the goal is in
    /// ([`plan::holds_resume_goal`]), the viewer pauses, or the hold has
    /// lasted [`plan::MAX_HOLD_MS`].
    fn hold_for_goal(&mut self) {
        let video = &self.video;
        let ready = || {
            plan::holds_resume_goal(
                &mse::ranges(&video.buffered()),
                video.current_time(),
                self.manifest.duration_ms as f64 / 1000.0,
            )
        };
        match self.held_since {
            None => {
                let waiting = !video.paused()
                    && (video.seeking()
                        || video.ready_state() < web_sys::HtmlMediaElement::HAVE_FUTURE_DATA);
                if waiting && !self.failed && !ready() {
                    self.held_since = Some(Self::now_ms());
                    video.set_playback_rate(0.0);
                }
            }
            Some(since) => {
                if video.paused()
                    || self.failed
                    || Self::now_ms() - since >= plan::MAX_HOLD_MS
                    || !video.seeking() && ready()
                {
                    self.held_since = None;
                    video.set_playback_rate(video.default_playback_rate());
                }
            }
        }
    }

    /// Restarts decoding where a playhead stands still over media it holds
    /// (see [`plan::reseek_in_place`]).
    fn unstick(&mut self, reporter: &mut Reporter) {
        let now = Self::now_ms();
        let position = self.video.current_time();
        if self.failed
            || self.video.paused()
            || self.video.seeking()
            || self.held_since.is_some()
            || position != self.still_at.0
        {
            self.still_at = (position, now);
            return;
        }
        let buffered = mse::ranges(&self.video.buffered());
        let rejected = &reporter.snapshot.stats.rejected_blocks;
        let refused_behind = |(from, to): plan::MsRange| {
            self.manifest.tracks.iter().any(|track| {
                track.blocks.iter().any(|b| {
                    b.start_ms < to
                        && from < b.start_ms + b.duration_ms
                        && rejected.contains(&b.sha256.to_hex())
                })
            })
        };
        if plan::reseek_in_place(&buffered, position, now - self.still_at.1, refused_behind) {
            tracing::warn!(
                at = position,
                "the playhead stood still over buffered media: restarting decoding there"
            );
            reporter.snapshot.stats.reseeks += 1;
            self.video.set_current_time(position);
            self.still_at = (position, now);
        }
    }

    /// Starts whatever work the current state allows.
    fn pump(&mut self) {
        if self.failed {
            return;
        }
        let (playhead_s, playhead_ms) = self.playhead();
        for track in 0..self.tracks.len() {
            self.drop_far_ready(track, playhead_ms);
            self.operate_next(track, playhead_s);
        }
        self.fetch_next(playhead_ms);
        self.end_if_complete(playhead_ms);
    }

    /// After a seek, opened blocks far from the playhead are dropped from
    /// memory; they stay in IndexedDB.
    fn drop_far_ready(&mut self, track: usize, playhead_ms: u64) {
        let blocks = &self.manifest.tracks[track].blocks;
        self.tracks[track].slots.retain(|&index, slot| {
            !matches!(slot, Slot::Ready(_)) || plan::in_keep_window(&blocks[index], playhead_ms)
        });
    }

    fn operate_next(&mut self, track: usize, playhead_s: f64) {
        let state = &mut self.tracks[track];
        if state.busy || state.buffer.updating() {
            return;
        }
        let ready = state
            .slots
            .iter()
            .find(|(_, slot)| matches!(slot, Slot::Ready(_)))
            .map(|(&index, _)| index);
        if let Some(index) = ready {
            let Some(Slot::Ready(media)) = state.slots.insert(index, Slot::Appending) else {
                return;
            };
            marks::block_stage(track, index, Stage::Appending);
            self.start_op(track, Op::Append { index, media });
            return;
        }
        if let Some(&(start_s, end_s)) =
            plan::evictions(&mse::buffered(&state.buffer), playhead_s).first()
        {
            self.start_op(track, Op::Remove { start_s, end_s });
        }
    }

    fn start_op(&mut self, track: usize, op: Op) {
        let state = &mut self.tracks[track];
        state.busy = true;
        let buffer = state.buffer.clone();
        let events = self.events.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = match &op {
                Op::Append { media, .. } => mse::append(&buffer, media).await,
                Op::Remove { start_s, end_s } => mse::remove(&buffer, *start_s, *end_s).await,
            };
            let _ = events.unbounded_send(Event::Operated { track, op, result });
        });
    }

    fn fetch_next(&mut self, playhead_ms: u64) {
        let in_flight = self
            .tracks
            .iter()
            .flat_map(|t| t.slots.values())
            .filter(|s| matches!(s, Slot::Fetching))
            .count();
        let now = Self::now_ms();
        let wants = plan::next_wants(
            &self.manifest,
            playhead_ms,
            plan::AHEAD_MS,
            MAX_PARALLEL_FETCHES.saturating_sub(in_flight),
            |track, index| match self.tracks[track].slots.get(&index) {
                None => true,
                Some(Slot::Failed { retry_at_ms }) => *retry_at_ms <= now,
                Some(_) => false,
            },
        );
        for want in wants {
            marks::block_stage(want.track, want.index, Stage::Asked);
            self.tracks[want.track]
                .slots
                .insert(want.index, Slot::Fetching);
            let pipeline = self.pipeline.clone();
            let manifest = self.manifest.clone();
            let events = self.events.clone();
            let maybe_stored = self
                .stored
                .contains(&manifest.tracks[want.track].blocks[want.index].sha256);
            wasm_bindgen_futures::spawn_local(async move {
                let entry = &manifest.tracks[want.track].blocks[want.index];
                let outcome = pipeline.get_hinted(entry, maybe_stored).await;
                let _ = events.unbounded_send(Event::Fetched {
                    track: want.track,
                    index: want.index,
                    outcome,
                });
            });
        }
    }

    /// Tells MSE the stream is complete once every block from the playhead to
    /// the end of every track is in its buffer; an append after a seek back
    /// reopens the MediaSource by itself.
    fn end_if_complete(&self, playhead_ms: u64) {
        if !self.media.is_open() {
            return;
        }
        for (t, state) in self.tracks.iter().enumerate() {
            if state.busy || state.buffer.updating() {
                return;
            }
            let from = self.manifest.block_at(t, playhead_ms).unwrap_or(0);
            let last = self.manifest.tracks[t].blocks.len();
            if !(from..last).all(|i| matches!(state.slots.get(&i), Some(Slot::Appended))) {
                return;
            }
        }
        if let Err(e) = self.media.end_of_stream() {
            tracing::warn!(error = %e, "endOfStream");
        }
    }

    fn on_fetched(
        &mut self,
        track: usize,
        index: usize,
        outcome: Outcome,
        reporter: &mut Reporter,
    ) {
        let entry = &self.manifest.tracks[track].blocks[index];
        reporter.count(&outcome, &entry.sha256);
        if outcome.newly_stored || outcome.provenance == Some(Provenance::Store) {
            self.stored.insert(entry.sha256);
        }
        let (_, playhead_ms) = self.playhead();
        let state = &mut self.tracks[track];
        if outcome.media.is_ok() {
            state.failures.remove(&index);
        }
        match outcome.media {
            Ok(media) if plan::in_keep_window(entry, playhead_ms) => {
                marks::block_stage(track, index, Stage::Got);
                state.slots.insert(index, Slot::Ready(media));
            }
            Ok(_) => {
                state.slots.remove(&index);
            }
            Err(_) => {
                let failures = state.failures.entry(index).or_default();
                *failures += 1;
                let rest =
                    (FAILED_RETRY_MS * f64::from(1u32 << (*failures - 1).min(8))).min(MAX_RETRY_MS);
                state.slots.insert(
                    index,
                    Slot::Failed {
                        retry_at_ms: Self::now_ms() + rest,
                    },
                );
            }
        }
    }

    fn on_operated(
        &mut self,
        track: usize,
        op: Op,
        result: Result<(), MseError>,
        reporter: &mut Reporter,
    ) {
        self.tracks[track].busy = false;
        match (op, result) {
            (Op::Append { index, .. }, Ok(())) => {
                marks::mark("first media block appended");
                marks::block_stage(track, index, Stage::Appended);
                let sha = self.manifest.tracks[track].blocks[index].sha256;
                let state = &mut self.tracks[track];
                state.slots.insert(index, Slot::Appended);
                *state.appends.entry(index).or_default() += 1;
                let stats = &mut reporter.snapshot.stats;
                stats.tracks[track].appended += 1;
                stats.appended_blocks.insert(sha.to_hex());
                self.reconcile(track);
            }
            (Op::Append { index, media }, Err(MseError::Quota)) => {
                // The buffer is full: put the block back, free what lies behind
                // the playhead (and far ahead), and append again afterwards.
                reporter.snapshot.stats.quota_errors += 1;
                self.tracks[track].slots.insert(index, Slot::Ready(media));
                let (playhead_s, _) = self.playhead();
                let buffered = mse::buffered(&self.tracks[track].buffer);
                let ahead_s = plan::AHEAD_MS as f64 / 1000.0 + 5.0;
                match plan::evictions_with(&buffered, playhead_s, 10.0, ahead_s).first() {
                    Some(&(start_s, end_s)) => self.start_op(track, Op::Remove { start_s, end_s }),
                    None => {
                        self.tracks[track].slots.insert(
                            index,
                            Slot::Failed {
                                retry_at_ms: Self::now_ms() + 1_000.0,
                            },
                        );
                        reporter.warn(
                            "The media buffer is full; waiting for playback to free it.".into(),
                        );
                    }
                }
            }
            (Op::Append { index, .. }, Err(e)) => {
                self.tracks[track].slots.insert(
                    index,
                    Slot::Failed {
                        retry_at_ms: Self::now_ms() + FAILED_RETRY_MS,
                    },
                );
                if self.media.is_open() {
                    reporter.warn(format!("A block could not be appended: {e}"));
                } else {
                    self.failed = true;
                    reporter.fail(format!("Playback failed: {e}"));
                }
            }
            (Op::Remove { .. }, Ok(())) => {
                reporter.snapshot.stats.evictions += 1;
                self.reconcile(track);
            }
            (Op::Remove { .. }, Err(e)) => {
                reporter.warn(format!("Buffered media could not be removed: {e}"))
            }
        }
    }

    /// Forgets appended blocks whose media is no longer buffered (removed by us
    /// or evicted by the browser), so they are fetched again when needed.
    fn reconcile(&mut self, track: usize) {
        let blocks = &self.manifest.tracks[track].blocks;
        let state = &mut self.tracks[track];
        let buffered = mse::buffered(&state.buffer);
        let appends = &state.appends;
        state.slots.retain(|index, slot| {
            !matches!(slot, Slot::Appended)
                || plan::block_buffered(&blocks[*index], &buffered)
                || appends.get(index).copied().unwrap_or(0) >= MAX_APPENDS_PER_BLOCK
        });
    }

    /// Refreshes the snapshot's views of the buffers and the store, and publishes.
    fn refresh(&self, reporter: &mut Reporter) {
        reporter.expire_warning();
        let snapshot = &mut reporter.snapshot;
        snapshot.buffered = mse::ranges(&self.video.buffered());
        let stored = &self.stored;
        snapshot.stored =
            plan::held_ranges_all_tracks(&self.manifest, |b| stored.contains(&b.sha256))
                .into_iter()
                .map(|(s, e)| (s as f64 / 1000.0, e as f64 / 1000.0))
                .collect();
        snapshot.stats.stored_blocks = self
            .manifest
            .tracks
            .iter()
            .flat_map(|t| std::iter::once(&t.init).chain(&t.blocks))
            .filter(|b| stored.contains(&b.sha256))
            .count();
        for (t, state) in self.tracks.iter().enumerate() {
            snapshot.stats.tracks[t].buffered_blocks = state
                .slots
                .values()
                .filter(|s| matches!(s, Slot::Appended))
                .count();
        }
        reporter.publish();
    }
}
