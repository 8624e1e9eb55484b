//! Media Source Extensions, wrapped as futures: attach a `MediaSource` to the
//! video element, and append to / remove from a `SourceBuffer` with the
//! operation's `updateend` as the future's completion.
//!
//! Invariant: one operation at a time per SourceBuffer (the MSE rule); the
//! player's per-track `busy` flag enforces it, so the single `onupdateend` /
//! `onerror` handler slot per buffer is never contended.

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    HtmlVideoElement, MediaSource, MediaSourceReadyState, SourceBuffer, TimeRanges, Url,
};

use crate::host::crypto::js_error_text;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("this browser has no Media Source Extensions")]
    Unsupported,
    #[error("this browser cannot play {0}")]
    Codec(String),
    #[error("the media buffer is full")]
    Quota,
    #[error("the media pipeline failed: {0}")]
    Failed(String),
}

impl MseError {
    fn from_js(value: &JsValue) -> Self {
        match value.dyn_ref::<web_sys::DomException>() {
            Some(e) if e.name() == "QuotaExceededError" => Self::Quota,
            _ => Self::Failed(js_error_text(value)),
        }
    }
}

/// A MediaSource attached to a video element through an object URL.
#[derive(Debug)]
pub struct Attached {
    pub source: MediaSource,
    url: String,
}

impl Attached {
    /// Attaches a new MediaSource to `video` and waits for `sourceopen`.
    pub async fn new(video: &HtmlVideoElement) -> Result<Self, MseError> {
        let source = MediaSource::new().map_err(|_| MseError::Unsupported)?;
        let url = Url::create_object_url_with_source(&source)
            .map_err(|e| MseError::Failed(js_error_text(&e)))?;
        let opened = Promise::new(&mut |resolve, _reject| {
            source.set_onsourceopen(Some(&resolve));
        });
        video.set_src(&url);
        JsFuture::from(opened)
            .await
            .map_err(|e| MseError::Failed(js_error_text(&e)))?;
        source.set_onsourceopen(None);
        Ok(Self { source, url })
    }

    pub fn add_buffer(&self, mime: &str) -> Result<SourceBuffer, MseError> {
        if !MediaSource::is_type_supported(mime) {
            return Err(MseError::Codec(mime.to_owned()));
        }
        self.source
            .add_source_buffer(mime)
            .map_err(|e| MseError::Failed(format!("{mime}: {}", js_error_text(&e))))
    }

    pub fn is_open(&self) -> bool {
        self.source.ready_state() == MediaSourceReadyState::Open
    }

    pub fn end_of_stream(&self) -> Result<(), MseError> {
        self.source
            .end_of_stream()
            .map_err(|e| MseError::Failed(js_error_text(&e)))
    }

    /// Detaches from the element and frees the object URL.
    pub fn detach(&self, video: &HtmlVideoElement) {
        video.remove_attribute("src").ok();
        video.load();
        Url::revoke_object_url(&self.url).ok();
    }
}

pub fn is_supported(mime: &str) -> bool {
    js_sys::Reflect::has(&js_sys::global(), &JsValue::from_str("MediaSource")).unwrap_or(false)
        && MediaSource::is_type_supported(mime)
}

/// Time ranges as sorted `(start, end)` seconds.
pub fn ranges(ranges: &TimeRanges) -> Vec<(f64, f64)> {
    (0..ranges.length())
        .filter_map(|i| Some((ranges.start(i).ok()?, ranges.end(i).ok()?)))
        .collect()
}

pub fn buffered(buffer: &SourceBuffer) -> Vec<(f64, f64)> {
    buffer.buffered().map(|r| ranges(&r)).unwrap_or_default()
}

/// Runs one SourceBuffer operation (`start` must begin it) and waits for its end.
async fn operate(
    buffer: &SourceBuffer,
    start: impl FnOnce() -> Result<(), JsValue>,
) -> Result<(), MseError> {
    let done = Promise::new(&mut |resolve, reject| {
        buffer.set_onupdateend(Some(&resolve));
        // `error` comes before `updateend`, so a failed operation rejects first.
        buffer.set_onerror(Some(&reject));
    });
    let result = match start() {
        Ok(()) => JsFuture::from(done).await.map(|_| ()).map_err(|e| {
            match e.dyn_ref::<web_sys::Event>() {
                Some(_) => MseError::Failed("the browser could not use the media".into()),
                None => MseError::from_js(&e),
            }
        }),
        Err(e) => Err(MseError::from_js(&e)),
    };
    buffer.set_onupdateend(None);
    buffer.set_onerror(None);
    result
}

pub async fn append(buffer: &SourceBuffer, data: &Uint8Array) -> Result<(), MseError> {
    operate(buffer, || buffer.append_buffer_with_array_buffer_view(data)).await
}

pub async fn remove(buffer: &SourceBuffer, start_s: f64, end_s: f64) -> Result<(), MseError> {
    operate(buffer, || buffer.remove(start_s, end_s)).await
}
