//! The player's controls: seek bar (played, buffered and stored ranges), play,
//! volume and mute, time, fullscreen, and the keyboard (space, ←/→ ±5 s,
//! ↑/↓ volume, f, m). They act on the video element directly; the host player
//! notices seeks through the element's `seeking` event.

use leptos::ev;
use leptos::html::{Div, Video};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{HtmlDivElement, HtmlVideoElement};

use super::format::format_clock;
use super::icons;
use crate::host::player::PlayerSnapshot;

const SEEK_STEP_S: f64 = 5.0;

/// A click must not leave focus on a button: space would then both press the
/// button and toggle playback. Keyboard users still reach buttons with Tab.
fn keep_focus_off(e: web_sys::MouseEvent) {
    e.prevent_default();
}
const VOLUME_STEP: f64 = 0.1;

/// The element's state as the controls show it, kept in sync by its events.
#[derive(Clone, Copy)]
pub struct MediaState {
    pub current: RwSignal<f64>,
    pub duration: RwSignal<f64>,
    pub paused: RwSignal<bool>,
    pub waiting: RwSignal<bool>,
    pub volume: RwSignal<f64>,
    pub muted: RwSignal<bool>,
    pub fullscreen: RwSignal<bool>,
}

impl MediaState {
    pub fn new() -> Self {
        Self {
            current: RwSignal::new(0.0),
            duration: RwSignal::new(0.0),
            paused: RwSignal::new(true),
            waiting: RwSignal::new(false),
            volume: RwSignal::new(1.0),
            muted: RwSignal::new(false),
            fullscreen: RwSignal::new(false),
        }
    }

    pub fn sync_time(&self, video: Option<HtmlVideoElement>) {
        if let Some(v) = video {
            self.current.set(v.current_time());
            let d = v.duration();
            if d.is_finite() {
                self.duration.set(d);
            }
        }
    }

    pub fn sync_volume(&self, video: Option<HtmlVideoElement>) {
        if let Some(v) = video {
            self.volume.set(v.volume());
            self.muted.set(v.muted());
        }
    }
}

impl Default for MediaState {
    fn default() -> Self {
        Self::new()
    }
}

pub fn toggle_play(video: Option<HtmlVideoElement>) {
    let Some(v) = video else { return };
    if v.paused() {
        if let Ok(promise) = v.play() {
            wasm_bindgen_futures::spawn_local(async move {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            });
        }
    } else {
        let _ = v.pause();
    }
}

pub fn seek_to(video: Option<HtmlVideoElement>, seconds: f64) {
    let Some(v) = video else { return };
    let duration = v.duration();
    let end = if duration.is_finite() {
        duration
    } else {
        f64::MAX
    };
    v.set_current_time(seconds.clamp(0.0, end));
}

pub fn set_volume(video: Option<HtmlVideoElement>, volume: f64) {
    let Some(v) = video else { return };
    v.set_volume(volume.clamp(0.0, 1.0));
    if volume > 0.0 {
        v.set_muted(false);
    }
}

pub fn toggle_mute(video: Option<HtmlVideoElement>) {
    if let Some(v) = video {
        v.set_muted(!v.muted());
    }
}

pub fn toggle_fullscreen(shell: Option<HtmlDivElement>) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    if document.fullscreen_element().is_some() {
        document.exit_fullscreen();
    } else if let Some(shell) = shell {
        let _ = shell.request_fullscreen();
    }
}

/// Where along the bar a pointer is, 0.0–1.0.
fn bar_fraction(ev: &web_sys::PointerEvent) -> f64 {
    let Some(bar) = ev
        .current_target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
    else {
        return 0.0;
    };
    let rect = bar.get_bounding_client_rect();
    if rect.width() <= 0.0 {
        return 0.0;
    }
    ((f64::from(ev.client_x()) - rect.left()) / rect.width()).clamp(0.0, 1.0)
}

fn percent(seconds: f64, duration: f64) -> f64 {
    if duration > 0.0 {
        (seconds / duration * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn range_style(start: f64, end: f64, duration: f64) -> String {
    let left = percent(start, duration);
    let width = (percent(end, duration) - left).max(0.0);
    format!("left:{left:.3}%;width:{width:.3}%")
}

#[component]
pub fn Controls(
    /// The video element the controls act on.
    video: NodeRef<Video>,
    /// The element that goes fullscreen (video plus controls).
    shell: NodeRef<Div>,
    media: MediaState,
    snapshot: ReadSignal<PlayerSnapshot>,
) -> impl IntoView {
    let element = move || video.get_untracked();
    let duration = move || {
        let d = media.duration.get();
        if d > 0.0 {
            d
        } else {
            snapshot.with(|s| s.duration_s)
        }
    };

    let keys = window_event_listener(ev::keydown, move |e: web_sys::KeyboardEvent| {
        // Typing in a field (the volume slider included) keeps its own keys.
        let in_field = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            .is_some();
        if in_field || e.ctrl_key() || e.meta_key() || e.alt_key() {
            return;
        }
        let v = element();
        let Some(current) = v.as_ref().map(|v| v.current_time()) else {
            return;
        };
        match e.key().as_str() {
            " " | "k" => toggle_play(v),
            "ArrowLeft" => seek_to(v, current - SEEK_STEP_S),
            "ArrowRight" => seek_to(v, current + SEEK_STEP_S),
            "ArrowUp" => set_volume(v, media.volume.get_untracked() + VOLUME_STEP),
            "ArrowDown" => set_volume(v, media.volume.get_untracked() - VOLUME_STEP),
            "f" | "F" => toggle_fullscreen(shell.get_untracked()),
            "m" | "M" => toggle_mute(v),
            _ => return,
        }
        e.prevent_default();
    });
    on_cleanup(move || keys.remove());

    // While dragging, the bar shows the pointer's position; the seek happens
    // on release, so a drag costs one re-plan, not hundreds.
    let drag = RwSignal::new(None::<f64>);
    let hover = RwSignal::new(None::<f64>);
    let shown_position = move || {
        drag.get()
            .map(|f| f * duration())
            .unwrap_or_else(|| media.current.get())
    };

    view! {
        <div class="controls" id="controls">
            <div
                class="seekbar"
                id="seekbar"
                role="slider"
                aria-label="Seek"
                aria-valuemin="0"
                aria-valuemax=move || format!("{:.0}", duration())
                aria-valuenow=move || format!("{:.0}", media.current.get())
                on:pointerdown=move |e: web_sys::PointerEvent| {
                    if let Some(bar) = e.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
                        let _ = bar.set_pointer_capture(e.pointer_id());
                    }
                    drag.set(Some(bar_fraction(&e)));
                }
                on:pointermove=move |e: web_sys::PointerEvent| {
                    let f = bar_fraction(&e);
                    hover.set(Some(f));
                    if drag.get_untracked().is_some() {
                        drag.set(Some(f));
                    }
                }
                on:pointerup=move |e: web_sys::PointerEvent| {
                    if drag.get_untracked().is_some() {
                        drag.set(None);
                        seek_to(element(), bar_fraction(&e) * duration());
                    }
                }
                on:pointerleave=move |_| hover.set(None)
            >
                <div class="bar-bg"></div>
                {move || {
                    let d = duration();
                    snapshot
                        .with(|s| s.stored.clone())
                        .into_iter()
                        .map(|(a, b)| view! { <div class="bar-range stored" style=range_style(a, b, d)></div> })
                        .collect_view()
                }}
                {move || {
                    let d = duration();
                    snapshot
                        .with(|s| s.buffered.clone())
                        .into_iter()
                        .map(|(a, b)| view! { <div class="bar-range buffered" style=range_style(a, b, d)></div> })
                        .collect_view()
                }}
                <div class="bar-range played" style=move || range_style(0.0, shown_position(), duration())></div>
                <div class="bar-thumb" style=move || format!("left:{:.3}%", percent(shown_position(), duration()))></div>
                {move || {
                    hover
                        .get()
                        .map(|f| {
                            view! {
                                <div class="bar-hover" style=format!("left:{:.3}%", f * 100.0)>
                                    {format_clock(f * duration())}
                                </div>
                            }
                        })
                }}
            </div>
            <div class="control-row">
                <button
                    class="icon-button"
                    on:mousedown=keep_focus_off
                    id="play-pause"
                    aria-label=move || if media.paused.get() { "Play" } else { "Pause" }
                    on:click=move |_| toggle_play(element())
                >
                    {move || if media.paused.get() { icons::play().into_any() } else { icons::pause().into_any() }}
                </button>
                <button
                    class="icon-button"
                    on:mousedown=keep_focus_off
                    id="mute"
                    aria-label=move || if media.muted.get() { "Unmute" } else { "Mute" }
                    on:click=move |_| toggle_mute(element())
                >
                    {move || {
                        if media.muted.get() || media.volume.get() == 0.0 {
                            icons::muted().into_any()
                        } else {
                            icons::volume().into_any()
                        }
                    }}
                </button>
                <input
                    class="volume"
                    id="volume"
                    type="range"
                    min="0"
                    max="1"
                    step="0.05"
                    aria-label="Volume"
                    prop:value=move || if media.muted.get() { 0.0 } else { media.volume.get() }
                    on:input=move |e| {
                        if let Ok(v) = event_target_value(&e).parse::<f64>() {
                            set_volume(element(), v);
                        }
                    }
                />
                <span class="time" id="time">
                    {move || format!("{} / {}", format_clock(shown_position()), format_clock(duration()))}
                </span>
                <span class="spacer"></span>
                <span class="player-status" id="player-status">
                    {move || {
                        snapshot
                            .with(|s| {
                                let signed = if s.stats.manifest_verified { "Signed ✓" } else { "Checking…" };
                                format!("{signed} · {} blocks on this device", s.stats.stored_blocks)
                            })
                    }}
                </span>
                <button
                    class="icon-button"
                    on:mousedown=keep_focus_off
                    id="fullscreen"
                    aria-label="Fullscreen"
                    on:click=move |_| toggle_fullscreen(shell.get_untracked())
                >
                    {move || {
                        if media.fullscreen.get() {
                            icons::exit_fullscreen().into_any()
                        } else {
                            icons::fullscreen().into_any()
                        }
                    }}
                </button>
            </div>
        </div>
    }
}
