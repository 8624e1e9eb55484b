//! The WebRTC links of one title's swarm: who dials whom, SDP and candidates
//! through signalling, and a bounded outbox per link over the data channel's
//! own flow control.
//!
//! Invariants:
//! - a link's engine peer is connected (`handle_peer_connected`) exactly from
//!   its data channel's `Open` to its removal, and disconnected exactly once;
//! - remote candidates are added only after the remote description is set
//!   (earlier ones wait in `early_candidates`);
//! - nothing is queued in the browser beyond [`HIGH_WATER_BYTES`]; the rest
//!   waits in `outbox` until the channel drains (`Writable`).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use telly_proto::Sha256Hash;
use telly_proto::signal::{IceCandidate, PeerId as SignalPeer};

use super::hub::HubEvent;
use crate::host::rtc::{HIGH_WATER_BYTES, LinkEvent, PeerLink, RtcOptions};

/// Bytes a link may hold in its own outbox before the peer is taken as stuck
/// and dropped (a peer that never reads would otherwise grow it without end).
const MAX_OUTBOX_BYTES: usize = 16 * 1024 * 1024;

pub struct Link {
    pub link: Rc<PeerLink>,
    /// The engine's name for this peer.
    pub engine_id: telly_swarm::PeerId,
    /// We sent the offer (and have not yet had the answer, while `!remote_set`).
    pub dialled: bool,
    pub remote_set: bool,
    pub open: bool,
    early_candidates: Vec<Option<IceCandidate>>,
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
}

/// What to do after a link event.
pub enum Flow {
    Ok,
    /// The outbox overflowed: drop the peer.
    Stuck,
}

#[derive(Default)]
pub struct Links {
    pub by_peer: HashMap<SignalPeer, Link>,
    pub by_engine: HashMap<telly_swarm::PeerId, SignalPeer>,
    next_engine_id: u64,
}

impl Links {
    /// Links the other side dialled.
    pub fn followers(&self) -> usize {
        self.by_peer.values().filter(|l| !l.dialled).count()
    }

    /// Links with an open channel (peers the engine knows).
    pub fn open_count(&self) -> usize {
        self.by_peer.values().filter(|l| l.open).count()
    }

    pub fn connecting_count(&self) -> usize {
        self.by_peer.values().filter(|l| !l.open).count()
    }

    /// A new link to `peer`, its events forwarded to the hub tagged with the
    /// swarm and peer.
    pub fn create(
        &mut self,
        swarm: Sha256Hash,
        peer: &SignalPeer,
        options: &RtcOptions,
        hub: &mpsc::UnboundedSender<HubEvent>,
        dialled: bool,
    ) -> Result<Rc<PeerLink>, String> {
        let (link, mut events) = PeerLink::new(options).map_err(|e| e.to_string())?;
        let link = Rc::new(link);
        self.next_engine_id += 1;
        let engine_id = telly_swarm::PeerId(self.next_engine_id);
        let forward = hub.clone();
        let tagged = peer.clone();
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(event) = events.next().await {
                let closed = matches!(event, LinkEvent::Closed(_));
                let message = HubEvent::Link {
                    swarm,
                    peer: tagged.clone(),
                    engine_id,
                    event,
                };
                if forward.unbounded_send(message).is_err() || closed {
                    break;
                }
            }
        });
        self.by_peer.insert(
            peer.clone(),
            Link {
                link: Rc::clone(&link),
                engine_id,
                dialled,
                remote_set: false,
                open: false,
                early_candidates: Vec::new(),
                outbox: VecDeque::new(),
                outbox_bytes: 0,
            },
        );
        self.by_engine.insert(engine_id, peer.clone());
        Ok(link)
    }

    pub fn remove(&mut self, peer: &SignalPeer) -> Option<Link> {
        let link = self.by_peer.remove(peer)?;
        self.by_engine.remove(&link.engine_id);
        Some(link)
    }

    /// The link of `peer` if it is still the one `engine_id` named (a link
    /// replaced after a glare or a reconnect must not take the old one's events).
    pub fn current(
        &mut self,
        peer: &SignalPeer,
        engine_id: telly_swarm::PeerId,
    ) -> Option<&mut Link> {
        self.by_peer
            .get_mut(peer)
            .filter(|l| l.engine_id == engine_id)
    }

    /// The remote description is set: candidates that came early are added now.
    pub fn remote_description_set(&mut self, peer: &SignalPeer, engine_id: telly_swarm::PeerId) {
        let Some(link) = self.current(peer, engine_id) else {
            return;
        };
        link.remote_set = true;
        let early = std::mem::take(&mut link.early_candidates);
        let pc = Rc::clone(&link.link);
        wasm_bindgen_futures::spawn_local(async move {
            for candidate in early {
                if let Err(e) = pc.add_candidate(candidate.as_ref()).await {
                    tracing::debug!(%e, "an early candidate was refused");
                }
            }
        });
    }

    pub fn add_remote_candidate(&mut self, peer: &SignalPeer, candidate: IceCandidate) {
        let Some(link) = self.by_peer.get_mut(peer) else {
            return;
        };
        let candidate = (!candidate.candidate.is_empty()).then_some(candidate);
        if !link.remote_set {
            // Bounded: a peer flooding candidates before its SDP gets the rest ignored.
            if link.early_candidates.len() < 32 {
                link.early_candidates.push(candidate);
            }
            return;
        }
        let pc = Rc::clone(&link.link);
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = pc.add_candidate(candidate.as_ref()).await {
                tracing::debug!(%e, "a candidate was refused");
            }
        });
    }

    /// Queues a frame for the engine peer `to` and sends what the channel takes.
    pub fn send(&mut self, to: telly_swarm::PeerId, frame: Vec<u8>) -> Flow {
        let Some(peer) = self.by_engine.get(&to) else {
            return Flow::Ok;
        };
        let Some(link) = self.by_peer.get_mut(peer) else {
            return Flow::Ok;
        };
        link.outbox_bytes += frame.len();
        link.outbox.push_back(frame);
        if link.outbox_bytes > MAX_OUTBOX_BYTES {
            return Flow::Stuck;
        }
        Self::flush_link(link);
        Flow::Ok
    }

    /// Sends queued frames while the channel is below its high-water mark.
    pub fn flush(&mut self, peer: &SignalPeer) {
        if let Some(link) = self.by_peer.get_mut(peer) {
            Self::flush_link(link);
        }
    }

    fn flush_link(link: &mut Link) {
        if !link.open {
            return;
        }
        while link.link.buffered_amount() < HIGH_WATER_BYTES {
            let Some(frame) = link.outbox.pop_front() else {
                break;
            };
            link.outbox_bytes -= frame.len();
            if link.link.send(&frame).is_err() {
                // The channel is closing; its Closed event ends the link.
                link.outbox.clear();
                link.outbox_bytes = 0;
                break;
            }
        }
    }
}
