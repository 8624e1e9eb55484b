//! The signalling socket: one WebSocket to `telly-signalling` carrying JSON text
//! frames (`telly_proto::signal`). It turns the browser's callbacks into
//! [`SignalEvent`]s on a channel; the hub that owns it decides when to join,
//! when to ping and when to reconnect (after [`SignalEvent::Closed`] the socket
//! is dead and a new one is made).

use std::cell::Cell;
use std::rc::Rc;

use futures::channel::mpsc;
use telly_proto::signal::{ClientMessage, ServerMessage};
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::host::events::Listener;

#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    Open,
    Message(ServerMessage),
    /// A frame that does not parse: the server and this page disagree.
    Unreadable(String),
    /// The socket closed or failed; it is not reused.
    Closed(String),
}

pub struct SignalSocket {
    socket: WebSocket,
    closed: Rc<Cell<bool>>,
    _listeners: [Listener; 4],
}

impl std::fmt::Debug for SignalSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalSocket")
            .field("url", &self.socket.url())
            .finish()
    }
}

/// `ws://` or `wss://` for `path` on the page's own origin.
pub fn same_origin_url(path: &str) -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!("{scheme}://{}{path}", location.host().ok()?))
}

impl SignalSocket {
    pub fn connect(url: &str, events: mpsc::UnboundedSender<SignalEvent>) -> Result<Self, String> {
        let socket = WebSocket::new(url).map_err(|e| format!("{e:?}"))?;
        let closed = Rc::new(Cell::new(false));
        let target: &web_sys::EventTarget = socket.as_ref();
        let on_open = {
            let events = events.clone();
            move |_| {
                let _ = events.unbounded_send(SignalEvent::Open);
            }
        };
        let on_message = {
            let events = events.clone();
            move |event: web_sys::Event| {
                let event: MessageEvent = event.unchecked_into();
                let Some(text) = event.data().as_string() else {
                    let _ = events.unbounded_send(SignalEvent::Unreadable("a binary frame".into()));
                    return;
                };
                let parsed = serde_json::from_str::<ServerMessage>(&text)
                    .map(SignalEvent::Message)
                    .unwrap_or_else(|e| SignalEvent::Unreadable(e.to_string()));
                let _ = events.unbounded_send(parsed);
            }
        };
        let on_close = {
            let events = events.clone();
            let closed = Rc::clone(&closed);
            move |event: web_sys::Event| {
                if closed.replace(true) {
                    return;
                }
                let why = event
                    .dyn_ref::<CloseEvent>()
                    .map(|c| format!("closed ({} {})", c.code(), c.reason()))
                    .unwrap_or_else(|| "closed".into());
                let _ = events.unbounded_send(SignalEvent::Closed(why));
            }
        };
        let on_error = {
            let closed = Rc::clone(&closed);
            move |_| {
                if !closed.replace(true) {
                    let _ = events.unbounded_send(SignalEvent::Closed("socket error".into()));
                }
            }
        };
        let listeners = [
            Listener::new(target, "open", on_open),
            Listener::new(target, "message", on_message),
            Listener::new(target, "close", on_close),
            Listener::new(target, "error", on_error),
        ];
        Ok(Self {
            socket,
            closed,
            _listeners: listeners,
        })
    }

    pub fn is_open(&self) -> bool {
        !self.closed.get() && self.socket.ready_state() == WebSocket::OPEN
    }

    /// Sends one message; false when the socket is not open (the hub re-sends
    /// what matters, the joins, after it reconnects).
    pub fn send(&self, message: &ClientMessage) -> bool {
        if !self.is_open() {
            return false;
        }
        let Ok(text) = serde_json::to_string(message) else {
            return false;
        };
        self.socket.send_with_str(&text).is_ok()
    }
}

impl Drop for SignalSocket {
    fn drop(&mut self) {
        self.closed.set(true);
        // 1000: a normal close; the server tells the swarms we left.
        let _ = self.socket.close_with_code(1000);
    }
}
