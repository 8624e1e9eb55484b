//! The player page: the video element, the host player feeding it, and the
//! controls. The page owns the `Player`; leaving the page drops it, which
//! stops the host loop and detaches the media.

use leptos::html::{Div, Video};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::controls::{Controls, MediaState, toggle_play};
use super::icons;
use super::stats_panel::StatsPanel;
use crate::host::events::Listener;
use std::rc::Rc;

use crate::host::player::{Phase, Player, PlayerOptions, PlayerSnapshot, SwarmWatch};
use crate::host::swarm::{SwarmHub, SwarmSnapshot};

#[component]
pub fn PlayerPage() -> impl IntoView {
    let params = use_params_map();
    // A new title id means a new player: the view is rebuilt around it.
    move || {
        let id = params.with(|p| p.get("id")).unwrap_or_default();
        view! { <PlayerView id=id/> }
    }
}

#[component]
fn PlayerView(id: String) -> impl IntoView {
    let video_ref = NodeRef::<Video>::new();
    let shell_ref = NodeRef::<Div>::new();
    let (snapshot, set_snapshot) = signal(PlayerSnapshot::default());
    let (swarm, set_swarm) = signal(None::<SwarmSnapshot>);
    let hub = SwarmHub::for_this_tab();
    let upload_cap = RwSignal::new(hub.upload_cap());
    // The viewer's choice goes to the hub (and is remembered) as it changes.
    Effect::new(move |previous: Option<u64>| {
        let cap = upload_cap.get();
        if previous.is_some_and(|p| p != cap) {
            hub.set_upload_cap(cap);
        }
        cap
    });
    let media = MediaState::new();
    let player = StoredValue::new_local(None::<Player>);
    let fullscreen_listener = StoredValue::new_local(None::<Listener>);

    let player_id = id.clone();
    Effect::new(move |_| {
        let Some(video) = video_ref.get() else {
            return;
        };
        if player.with_value(|p| p.is_some()) {
            return;
        }
        let mut options = PlayerOptions::new(player_id.clone());
        options.swarm = Some(SwarmWatch {
            hub: SwarmHub::for_this_tab(),
            on_snapshot: Rc::new(move |s: &SwarmSnapshot| {
                set_swarm.try_set(Some(s.clone()));
            }),
        });
        let started = Player::start(video.clone(), options, move |s| {
            // The page may be gone by the time the loop's last snapshot arrives.
            set_snapshot.try_set(s.clone());
        });
        player.set_value(Some(started));
        if let Some(document) = web_sys::window().and_then(|w| w.document()) {
            let listener = Listener::new(document.as_ref(), "fullscreenchange", move |_| {
                let full = web_sys::window()
                    .and_then(|w| w.document())
                    .and_then(|d| d.fullscreen_element())
                    .is_some();
                media.fullscreen.set(full);
            });
            fullscreen_listener.set_value(Some(listener));
        }
        // Autoplay may be refused without a gesture; the play button remains.
        if let Ok(promise) = video.play() {
            wasm_bindgen_futures::spawn_local(async move {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            });
        }
    });
    on_cleanup(move || {
        player.try_set_value(None);
        fullscreen_listener.try_set_value(None);
    });

    let video_element = move || video_ref.get_untracked();
    let back = format!("/title/{id}");
    let back_on_error = back.clone();
    view! {
        <div class="player-shell" node_ref=shell_ref class:paused=move || media.paused.get()>
            <video
                id="player"
                node_ref=video_ref
                autoplay=true
                playsinline=true
                data-title-id=id.clone()
                on:timeupdate=move |_| media.sync_time(video_element())
                on:durationchange=move |_| media.sync_time(video_element())
                on:seeked=move |_| media.sync_time(video_element())
                on:play=move |_| media.paused.set(false)
                on:pause=move |_| media.paused.set(true)
                on:playing=move |_| media.waiting.set(false)
                on:waiting=move |_| media.waiting.set(true)
                on:volumechange=move |_| media.sync_volume(video_element())
                on:click=move |_| toggle_play(video_element())
                on:dblclick=move |_| super::controls::toggle_fullscreen(shell_ref.get_untracked())
            ></video>
            <div class="player-top">
                <a class="icon-button" href=back title="Back">{icons::back()}</a>
                <span class="player-title">{move || snapshot.with(|s| s.title.clone())}</span>
            </div>
            <Show when=move || {
                let s = snapshot.get();
                s.phase == Phase::Starting || (media.waiting.get() && !media.paused.get())
            }>
                <div class="spinner" id="player-spinner" aria-label="Loading"></div>
            </Show>
            <Show when=move || media.paused.get() && snapshot.with(|s| s.phase == Phase::Running)>
                <button
                    class="big-play"
                    id="big-play"
                    aria-label="Play"
                    on:click=move |_| toggle_play(video_element())
                >
                    {icons::play()}
                </button>
            </Show>
            <Show when=move || snapshot.with(|s| s.warning.is_some() && s.phase != Phase::Failed)>
                <div class="player-warning" id="player-warning" role="status">
                    {move || snapshot.with(|s| s.warning.clone())}
                </div>
            </Show>
            <Show when=move || snapshot.with(|s| s.phase == Phase::Failed)>
                <div class="player-error" id="player-error" role="alert">
                    <h2>"This title can't be played"</h2>
                    <p id="player-error-message">
                        {move || snapshot.with(|s| s.message.clone())}
                    </p>
                    <a class="primary" href=back_on_error.clone()>"Back"</a>
                </div>
            </Show>
            <Controls video=video_ref shell=shell_ref media=media snapshot=snapshot/>
            <StatsPanel swarm=Signal::from(swarm) upload_cap=upload_cap/>
        </div>
    }
}
