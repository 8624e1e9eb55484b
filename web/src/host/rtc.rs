//! One WebRTC link to another peer: an `RTCPeerConnection` carrying one ordered,
//! reliable, binary `RTCDataChannel`, with the flow control a swarm needs.
//!
//! The link knows nothing of the swarm: it turns the browser's callbacks into
//! [`LinkEvent`]s on a channel, and the host loop that owns it drives signalling
//! (offers, answers and candidates travel through `telly-signalling`) and feeds
//! received messages to the engine.
//!
//! Flow control: `send` never blocks. It reports [`Backpressure::Full`] once the
//! channel has [`HIGH_WATER_BYTES`] queued; the host stops sending to that peer
//! until [`LinkEvent::Writable`] (the browser's `bufferedamountlow`, fired when
//! the queue drains to [`LOW_WATER_BYTES`]). Chromium closes a data channel whose
//! send queue passes 16 MiB, so an unbounded sender would lose the link.

use std::cell::Cell;
use std::rc::Rc;

use futures::channel::mpsc;
use js_sys::{Array, ArrayBuffer, Reflect, Uint8Array};
use telly_proto::signal::IceCandidate;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelInit,
    RtcDataChannelState, RtcDataChannelType, RtcIceCandidateInit, RtcIceServer, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
};

use crate::host::events::Listener;

/// Queue depth at which `send` reports the channel full.
pub const HIGH_WATER_BYTES: u32 = 1024 * 1024;
/// Queue depth at which a full channel becomes writable again.
pub const LOW_WATER_BYTES: u32 = 256 * 1024;
/// The data channel's label; both ends agree on it.
const CHANNEL_LABEL: &str = "telly";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcError {
    #[error("WebRTC: {0}")]
    Browser(String),
    #[error("the data channel is not open")]
    NotOpen,
    #[error("the link is closed")]
    Closed,
}

impl RtcError {
    fn from_js(value: &JsValue) -> Self {
        let text = value
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| value.as_string())
            .unwrap_or_else(|| format!("{value:?}"));
        Self::Browser(text)
    }
}

/// How peers reach each other (the provider's `NetworkConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcOptions {
    /// STUN/TURN URLs; none by default.
    pub ice_servers: Vec<String>,
    /// Keep only loopback candidates (tests and one-machine demos).
    pub loopback_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A candidate to pass to the other peer through signalling; `None` ends them.
    LocalCandidate(Option<IceCandidate>),
    /// The data channel opened: the link is usable.
    Open,
    /// One binary message from the other peer.
    Message(Vec<u8>),
    /// A full channel drained: sending may resume.
    Writable,
    /// The link failed or was closed by either side; it is not reused.
    Closed(String),
}

/// What `send` left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// More may be sent now.
    Ready,
    /// Wait for [`LinkEvent::Writable`] before sending more.
    Full,
}

/// The address field of an ICE candidate line
/// (`candidate:<foundation> <component> <transport> <priority> <address> <port> typ …`).
pub fn candidate_address(candidate: &str) -> Option<&str> {
    let line = candidate.strip_prefix("a=").unwrap_or(candidate);
    let mut fields = line.strip_prefix("candidate:")?.split_ascii_whitespace();
    fields.nth(4)
}

/// Whether a candidate may be used under `loopback_only`.
pub fn is_loopback_candidate(candidate: &str) -> bool {
    matches!(candidate_address(candidate), Some(a) if a == "::1" || a.starts_with("127."))
}

/// Chromium gathers loopback candidates only for a page that holds a media
/// permission (DESIGN.md); asking once and stopping the track at once is enough.
/// Needs `--use-fake-ui-for-media-stream` where no person can answer the prompt.
pub async fn unlock_loopback_candidates() -> Result<(), RtcError> {
    let window = web_sys::window().ok_or(RtcError::Browser("no window".into()))?;
    let devices = window
        .navigator()
        .media_devices()
        .map_err(|e| RtcError::from_js(&e))?;
    let constraints = web_sys::MediaStreamConstraints::new();
    constraints.set_audio(&JsValue::TRUE);
    let promise = devices
        .get_user_media_with_constraints(&constraints)
        .map_err(|e| RtcError::from_js(&e))?;
    let stream: web_sys::MediaStream = JsFuture::from(promise)
        .await
        .map_err(|e| RtcError::from_js(&e))?
        .unchecked_into();
    for track in stream.get_tracks().iter() {
        track.unchecked_into::<web_sys::MediaStreamTrack>().stop();
    }
    Ok(())
}

pub struct PeerLink {
    pc: RtcPeerConnection,
    channel: Rc<std::cell::RefCell<Option<RtcDataChannel>>>,
    events: mpsc::UnboundedSender<LinkEvent>,
    closed: Rc<Cell<bool>>,
    _listeners: Vec<Listener>,
    channel_listeners: Rc<std::cell::RefCell<Vec<Listener>>>,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("state", &self.pc.connection_state())
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    /// A new, unconnected link; its events arrive on the returned receiver.
    pub fn new(
        options: &RtcOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LinkEvent>), RtcError> {
        let config = RtcConfiguration::new();
        let servers = Array::new();
        for url in &options.ice_servers {
            let server = RtcIceServer::new();
            server.set_urls_str(url);
            servers.push(&server);
        }
        config.set_ice_servers(&servers);
        let pc = RtcPeerConnection::new_with_configuration(&config)
            .map_err(|e| RtcError::from_js(&e))?;
        let (events, receiver) = mpsc::unbounded();
        let channel = Rc::new(std::cell::RefCell::new(None));
        let closed = Rc::new(Cell::new(false));
        let channel_listeners = Rc::new(std::cell::RefCell::new(Vec::new()));

        let on_candidate = {
            let events = events.clone();
            let loopback_only = options.loopback_only;
            move |event: web_sys::Event| {
                let event: RtcPeerConnectionIceEvent = event.unchecked_into();
                let candidate = event.candidate().map(|c| IceCandidate {
                    candidate: c.candidate(),
                    sdp_mid: c.sdp_mid(),
                    sdp_m_line_index: c.sdp_m_line_index(),
                });
                match candidate {
                    // An empty line is the browser's own end-of-candidates.
                    Some(c) if c.candidate.is_empty() => {}
                    Some(c) if loopback_only && !is_loopback_candidate(&c.candidate) => {}
                    other => {
                        let _ = events.unbounded_send(LinkEvent::LocalCandidate(other));
                    }
                }
            }
        };
        let on_state = {
            let events = events.clone();
            let closed = Rc::clone(&closed);
            let pc = pc.clone();
            move |_| {
                let state = pc.connection_state();
                if matches!(
                    state,
                    RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
                ) && !closed.replace(true)
                {
                    let _ =
                        events.unbounded_send(LinkEvent::Closed(format!("connection {state:?}")));
                }
            }
        };
        let on_remote_channel = {
            let events = events.clone();
            let channel = Rc::clone(&channel);
            let closed = Rc::clone(&closed);
            let channel_listeners = Rc::clone(&channel_listeners);
            move |event: web_sys::Event| {
                let event: RtcDataChannelEvent = event.unchecked_into();
                let remote = event.channel();
                if remote.label() != CHANNEL_LABEL || channel.borrow().is_some() {
                    remote.close();
                    return;
                }
                *channel_listeners.borrow_mut() = wire_channel(&remote, &events, &closed);
                *channel.borrow_mut() = Some(remote);
            }
        };
        let target: &web_sys::EventTarget = pc.as_ref();
        let listeners = vec![
            Listener::new(target, "icecandidate", on_candidate),
            Listener::new(target, "connectionstatechange", on_state),
            Listener::new(target, "datachannel", on_remote_channel),
        ];
        Ok((
            Self {
                pc,
                channel,
                events,
                closed,
                _listeners: listeners,
                channel_listeners,
            },
            receiver,
        ))
    }

    /// The dialling side: opens the channel and returns the offer's SDP.
    pub async fn create_offer(&self) -> Result<String, RtcError> {
        let init = RtcDataChannelInit::new();
        init.set_ordered(true);
        let local = self
            .pc
            .create_data_channel_with_data_channel_dict(CHANNEL_LABEL, &init);
        *self.channel_listeners.borrow_mut() = wire_channel(&local, &self.events, &self.closed);
        *self.channel.borrow_mut() = Some(local);
        let offer = JsFuture::from(self.pc.create_offer())
            .await
            .map_err(|e| RtcError::from_js(&e))?;
        self.set_local(RtcSdpType::Offer, &offer).await
    }

    /// The dialled side: takes the offer and returns the answer's SDP.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, RtcError> {
        self.set_remote(RtcSdpType::Offer, sdp).await?;
        let answer = JsFuture::from(self.pc.create_answer())
            .await
            .map_err(|e| RtcError::from_js(&e))?;
        self.set_local(RtcSdpType::Answer, &answer).await
    }

    /// The dialling side: takes the answer.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), RtcError> {
        self.set_remote(RtcSdpType::Answer, sdp).await
    }

    /// A candidate from the other peer; `None` marks the end of them.
    pub async fn add_candidate(&self, candidate: Option<&IceCandidate>) -> Result<(), RtcError> {
        let init = candidate.map(|c| {
            let init = RtcIceCandidateInit::new(&c.candidate);
            init.set_sdp_mid(c.sdp_mid.as_deref());
            init.set_sdp_m_line_index(c.sdp_m_line_index);
            init
        });
        let promise = self
            .pc
            .add_ice_candidate_with_opt_rtc_ice_candidate_init(init.as_ref());
        JsFuture::from(promise)
            .await
            .map(|_| ())
            .map_err(|e| RtcError::from_js(&e))
    }

    /// Queues one binary message; see the module's note on flow control.
    pub fn send(&self, bytes: &[u8]) -> Result<Backpressure, RtcError> {
        if self.closed.get() {
            return Err(RtcError::Closed);
        }
        let channel = self.channel.borrow();
        let channel = channel.as_ref().ok_or(RtcError::NotOpen)?;
        if channel.ready_state() != RtcDataChannelState::Open {
            return Err(RtcError::NotOpen);
        }
        channel
            .send_with_u8_array(bytes)
            .map_err(|e| RtcError::from_js(&e))?;
        Ok(if channel.buffered_amount() >= HIGH_WATER_BYTES {
            Backpressure::Full
        } else {
            Backpressure::Ready
        })
    }

    /// Bytes queued in the channel, not yet handed to the network.
    pub fn buffered_amount(&self) -> u32 {
        self.channel
            .borrow()
            .as_ref()
            .map_or(0, RtcDataChannel::buffered_amount)
    }

    pub fn is_open(&self) -> bool {
        !self.closed.get()
            && self
                .channel
                .borrow()
                .as_ref()
                .is_some_and(|c| c.ready_state() == RtcDataChannelState::Open)
    }

    async fn set_local(&self, kind: RtcSdpType, description: &JsValue) -> Result<String, RtcError> {
        let sdp = Reflect::get(description, &JsValue::from_str("sdp"))
            .ok()
            .and_then(|v| v.as_string())
            .ok_or_else(|| {
                RtcError::Browser("the browser made a description without SDP".into())
            })?;
        let init = RtcSessionDescriptionInit::new(kind);
        init.set_sdp(&sdp);
        JsFuture::from(self.pc.set_local_description(&init))
            .await
            .map_err(|e| RtcError::from_js(&e))?;
        Ok(sdp)
    }

    async fn set_remote(&self, kind: RtcSdpType, sdp: &str) -> Result<(), RtcError> {
        let init = RtcSessionDescriptionInit::new(kind);
        init.set_sdp(sdp);
        JsFuture::from(self.pc.set_remote_description(&init))
            .await
            .map(|_| ())
            .map_err(|e| RtcError::from_js(&e))
    }
}

impl PeerLink {
    /// Closes the channel and the connection; no event follows.
    pub fn close(&self) {
        self.closed.set(true);
        if let Some(channel) = self.channel.borrow_mut().take() {
            channel.close();
        }
        self.pc.close();
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Binary mode, flow-control threshold and event forwarding for one channel.
fn wire_channel(
    channel: &RtcDataChannel,
    events: &mpsc::UnboundedSender<LinkEvent>,
    closed: &Rc<Cell<bool>>,
) -> Vec<Listener> {
    channel.set_binary_type(RtcDataChannelType::Arraybuffer);
    channel.set_buffered_amount_low_threshold(LOW_WATER_BYTES);
    let target: &web_sys::EventTarget = channel.as_ref();
    let on_open = {
        let events = events.clone();
        move |_| {
            let _ = events.unbounded_send(LinkEvent::Open);
        }
    };
    let on_message = {
        let events = events.clone();
        move |event: web_sys::Event| {
            let event: MessageEvent = event.unchecked_into();
            // Text frames are not part of the protocol: ignored, never parsed.
            if let Ok(buffer) = event.data().dyn_into::<ArrayBuffer>() {
                let bytes = Uint8Array::new(&buffer).to_vec();
                let _ = events.unbounded_send(LinkEvent::Message(bytes));
            }
        }
    };
    let on_low = {
        let events = events.clone();
        move |_| {
            let _ = events.unbounded_send(LinkEvent::Writable);
        }
    };
    let on_close = {
        let events = events.clone();
        let closed = Rc::clone(closed);
        move |_| {
            if !closed.replace(true) {
                let _ = events.unbounded_send(LinkEvent::Closed("data channel closed".into()));
            }
        }
    };
    vec![
        Listener::new(target, "open", on_open),
        Listener::new(target, "message", on_message),
        Listener::new(target, "bufferedamountlow", on_low),
        Listener::new(target, "close", on_close),
    ]
}
