//! Encrypted Media Extensions with Clear Key: the CDM decrypts the CENC samples,
//! the content key reaching it only through the licence endpoint.
//!
//! The page starts the session itself with `keyids` init data naming the
//! manifest's key id, rather than waiting for the `encrypted` event.

use std::rc::Rc;

use futures::future::LocalBoxFuture;
use js_sys::{Array, Uint8Array};
use telly_proto::{KeyId, Track, TrackKind};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    HtmlVideoElement, MediaKeyMessageEvent, MediaKeySession, MediaKeySystemAccess,
    MediaKeySystemConfiguration, MediaKeySystemMediaCapability, MediaKeys,
};

use crate::host::crypto::js_error_text;

pub const CLEAR_KEY: &str = "org.w3.clearkey";

/// Asks the licence server for keys: takes the session's message, answers the
/// JSON Web Key set for `update`.
pub type LicenceRequest =
    Rc<dyn Fn(Uint8Array) -> LocalBoxFuture<'static, Result<Uint8Array, String>>>;

/// What the key session reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    Ready,
    Failed(String),
}

/// A running Clear Key session; closes when dropped.
pub struct KeySession {
    session: MediaKeySession,
    _on_message: Closure<dyn FnMut(web_sys::Event)>,
}

impl std::fmt::Debug for KeySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySession").finish_non_exhaustive()
    }
}

impl Drop for KeySession {
    fn drop(&mut self) {
        self.session.set_onmessage(None);
        let _ = self.session.close();
    }
}

fn capabilities(tracks: &[Track], kind: TrackKind) -> Array {
    tracks
        .iter()
        .filter(|t| t.kind == kind)
        .map(|t| {
            let capability = MediaKeySystemMediaCapability::new();
            capability.set_content_type(&t.mime);
            JsValue::from(capability)
        })
        .collect()
}

async fn wait(promise: js_sys::Promise, what: &str) -> Result<JsValue, String> {
    JsFuture::from(promise)
        .await
        .map_err(|e| format!("{what}: {}", js_error_text(&e)))
}

/// Sets up Clear Key on `video` for `tracks` and starts a session for `key_id`.
/// `on_event` hears when keys arrive or the licence exchange fails.
pub async fn start(
    video: &HtmlVideoElement,
    tracks: &[Track],
    key_id: &KeyId,
    licence: LicenceRequest,
    on_event: Rc<dyn Fn(KeyEvent)>,
) -> Result<KeySession, String> {
    let window = web_sys::window().ok_or("no window")?;
    let config = MediaKeySystemConfiguration::new();
    config.set_init_data_types(&Array::of2(&"keyids".into(), &"cenc".into()));
    config.set_video_capabilities(&capabilities(tracks, TrackKind::Video));
    config.set_audio_capabilities(&capabilities(tracks, TrackKind::Audio));
    let access = wait(
        window
            .navigator()
            .request_media_key_system_access(CLEAR_KEY, &Array::of1(&config)),
        "this browser cannot decrypt the title (Clear Key)",
    )
    .await?;
    let access: MediaKeySystemAccess = access.unchecked_into();
    let keys: MediaKeys = wait(access.create_media_keys(), "creating media keys")
        .await?
        .unchecked_into();
    wait(video.set_media_keys(Some(&keys)), "attaching media keys").await?;
    let session = keys
        .create_session()
        .map_err(|e| format!("creating a key session: {}", js_error_text(&e)))?;

    let session_for_update = session.clone();
    let on_message = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
        let Some(event) = event.dyn_ref::<MediaKeyMessageEvent>() else {
            return;
        };
        let message = match event.message() {
            Ok(m) => Uint8Array::new(&m),
            Err(e) => {
                on_event(KeyEvent::Failed(js_error_text(&e)));
                return;
            }
        };
        let licence = licence.clone();
        let on_event = on_event.clone();
        let session = session_for_update.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let outcome = match licence(message).await {
                Ok(response) => wait(
                    session.update_with_buffer_source(&response),
                    "the CDM refused the licence",
                )
                .await
                .map(|_| ()),
                Err(e) => Err(e),
            };
            on_event(match outcome {
                Ok(()) => KeyEvent::Ready,
                Err(e) => KeyEvent::Failed(e),
            });
        });
    });
    session.set_onmessage(Some(on_message.as_ref().unchecked_ref()));

    let init = serde_json::json!({ "kids": [key_id.to_base64url()] }).to_string();
    let init = Uint8Array::from(init.as_bytes());
    wait(
        session.generate_request_with_buffer_source("keyids", &init),
        "starting the key session",
    )
    .await?;
    Ok(KeySession {
        session,
        _on_message: on_message,
    })
}
