//! The hub's peering half: the signalling socket (connect, ping, reconnect,
//! join), what the server says, dialling and answering peers, and the events of
//! their links. The hub's state and the titles' lifecycle are in `hub.rs`.

use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use telly_proto::Grant;
use telly_proto::Sha256Hash;
use telly_proto::api::GrantResponse;
use telly_proto::signal::{ClientMessage, PeerId as SignalPeer, SIGNAL_VERSION, ServerMessage};
use telly_proto::wire::{self, Message};
use telly_swarm::{Millis, PeerMessage, Signed};

use super::{Hub, HubEvent, MAX_BACKOFF_MS, MAX_LINKS, PING_MS, SIGNAL_SILENCE_MS, TARGET_PEERS};
use crate::host::marks;
use crate::host::rtc::LinkEvent;
use crate::host::swarm::signal::{SignalEvent, SignalSocket};
use crate::host::swarm::title::TitleSwarm;

impl Hub {
    // ------------------------------------------------------------- signalling

    pub(super) fn keep_signalling(&mut self, ms: f64) {
        let open = self.socket.as_ref().is_some_and(|s| s.is_open());
        self.shared.signalling_open.set(open);
        if self.socket.is_some() {
            if open && ms - self.last_signal_frame > SIGNAL_SILENCE_MS {
                tracing::warn!("signalling went silent; reconnecting");
                self.lose_socket(ms);
            } else if open && ms >= self.next_ping {
                self.next_ping = ms + PING_MS;
                self.ping_nonce += 1;
                self.signal(&ClientMessage::Ping {
                    nonce: self.ping_nonce,
                });
            }
            return;
        }
        if self.titles.is_empty() || ms < self.reconnect_at {
            return;
        }
        let Some(url) = self.signal_url.clone() else {
            return;
        };
        self.generation += 1;
        let generation = self.generation;
        let (tx, mut rx) = mpsc::unbounded();
        let hub = self.events.clone();
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(event) = rx.next().await {
                if hub
                    .unbounded_send(HubEvent::Signal { generation, event })
                    .is_err()
                {
                    break;
                }
            }
        });
        match SignalSocket::connect(&url, tx) {
            Ok(socket) => {
                self.socket = Some(socket);
                self.last_signal_frame = ms;
            }
            Err(e) => {
                tracing::warn!(%e, "no signalling socket");
                self.lose_socket(ms);
            }
        }
    }

    pub(super) fn lose_socket(&mut self, ms: f64) {
        self.socket = None;
        self.shared.signalling_open.set(false);
        self.reconnect_at = ms + self.backoff_ms;
        self.backoff_ms = (self.backoff_ms * 2.0).min(MAX_BACKOFF_MS);
        for title in self.titles.values_mut() {
            if !title.joined {
                // No answer is coming for this join.
                title.engine.handle_joined(0, Millis(ms as u64));
            }
            title.joined = false;
        }
    }

    pub(super) fn signal(&self, message: &ClientMessage) -> bool {
        self.socket.as_ref().is_some_and(|s| s.send(message))
    }

    pub(super) fn join(&self, title: &TitleSwarm, grant: &GrantResponse) {
        let grant = if self.shared.faults.no_grant {
            None
        } else {
            Some(grant.grant.clone())
        };
        self.signal(&ClientMessage::Join {
            version: SIGNAL_VERSION,
            swarm_id: title.swarm_id,
            peer_id: self.shared.peer_id.clone(),
            grant,
            have: title.have_summary(),
        });
    }

    pub(super) fn on_signal(&mut self, event: SignalEvent, now: Millis) {
        let ms = now.0 as f64;
        self.last_signal_frame = ms;
        match event {
            SignalEvent::Open => {
                marks::mark("signalling open");
                self.backoff_ms = 1_000.0;
                self.shared.signalling_open.set(true);
                let swarms: Vec<Sha256Hash> = self.titles.keys().copied().collect();
                for swarm in swarms {
                    self.join_or_ask(swarm);
                }
            }
            SignalEvent::Closed(why) => {
                tracing::info!(%why, "signalling closed");
                self.lose_socket(ms);
            }
            SignalEvent::Unreadable(why) => tracing::warn!(%why, "unreadable signalling frame"),
            SignalEvent::Message(message) => self.on_server_message(message, now),
        }
    }

    fn on_server_message(&mut self, message: ServerMessage, now: Millis) {
        match message {
            ServerMessage::Welcome { .. } | ServerMessage::Pong { .. } => {}
            ServerMessage::Joined { swarm_id, peers }
            | ServerMessage::Peers { swarm_id, peers } => {
                if let Some(title) = self.titles.get_mut(&swarm_id) {
                    if !title.joined {
                        marks::mark(if peers.is_empty() {
                            "joined alone"
                        } else {
                            "joined"
                        });
                        title.engine.handle_joined(peers.len(), now);
                    }
                    title.joined = true;
                    title.refused = None;
                }
                for peer in peers {
                    self.dial(swarm_id, peer.peer_id);
                }
            }
            ServerMessage::Refused {
                swarm_id,
                reason,
                detail,
            } => {
                tracing::warn!(?reason, %detail, "signalling refused our join");
                if let Some(title) = self.titles.get_mut(&swarm_id) {
                    title.joined = false;
                    title.refused = Some(format!("{reason:?}: {detail}"));
                    title.engine.handle_joined(0, now);
                }
            }
            ServerMessage::Removed { swarm_id, reason } => {
                tracing::info!(?reason, "removed from a swarm; joining again");
                let Some(title) = self.titles.get_mut(&swarm_id) else {
                    return;
                };
                title.joined = false;
                // A fresh grant, as the removal may be the old one's expiry.
                self.request_grant(swarm_id);
            }
            ServerMessage::PeerLeft { swarm_id, peer_id } => {
                if let Some(title) = self.titles.get_mut(&swarm_id) {
                    title.drop_link(&peer_id, now);
                }
            }
            ServerMessage::Offer {
                swarm_id,
                from,
                sdp,
                stranded,
            } => self.on_offer(swarm_id, from, sdp, stranded, now),
            ServerMessage::Answer {
                swarm_id,
                from,
                sdp,
            } => {
                let Some(title) = self.titles.get_mut(&swarm_id) else {
                    return;
                };
                let Some(link) = title.links.by_peer.get(&from) else {
                    return;
                };
                if !link.dialled || link.remote_set {
                    return;
                }
                let (pc, engine_id) = (Rc::clone(&link.link), link.engine_id);
                let hub = self.events.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let result = pc.accept_answer(&sdp).await.map(|()| None);
                    let _ = hub.unbounded_send(HubEvent::Sdp {
                        swarm: swarm_id,
                        peer: from,
                        engine_id,
                        offer: false,
                        result: result.map_err(|e| e.to_string()),
                    });
                });
            }
            ServerMessage::Candidate {
                swarm_id,
                from,
                candidate,
            } => {
                if let Some(title) = self.titles.get_mut(&swarm_id) {
                    title.links.add_remote_candidate(&from, candidate);
                }
            }
            ServerMessage::Error { code, detail } => {
                tracing::warn!(?code, %detail, "signalling error");
            }
        }
    }

    fn dial(&mut self, swarm: Sha256Hash, peer: SignalPeer) {
        if peer == self.shared.peer_id {
            return;
        }
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        if title.links.by_peer.contains_key(&peer) || title.links.by_peer.len() >= MAX_LINKS {
            return;
        }
        let link = match title
            .links
            .create(swarm, &peer, &self.shared.rtc, &self.events, true)
        {
            Ok(link) => link,
            Err(e) => return tracing::warn!(%e, "no peer connection"),
        };
        let engine_id = title.links.by_peer[&peer].engine_id;
        let hub = self.events.clone();
        let rtc_ready = self.shared.rtc_ready.clone();
        wasm_bindgen_futures::spawn_local(async move {
            rtc_ready.await;
            let result = link.create_offer().await.map(Some);
            let _ = hub.unbounded_send(HubEvent::Sdp {
                swarm,
                peer,
                engine_id,
                offer: true,
                result: result.map_err(|e| e.to_string()),
            });
        });
    }

    fn on_offer(
        &mut self,
        swarm: Sha256Hash,
        from: SignalPeer,
        sdp: String,
        stranded: bool,
        now: Millis,
    ) {
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        if let Some(existing) = title.links.by_peer.get(&from) {
            // Glare (both dialled): the smaller peer id's offer wins.
            let ours_wins = existing.dialled && !existing.remote_set && self.shared.peer_id < from;
            if ours_wins || existing.open {
                return;
            }
            title.drop_link(&from, now);
        }
        let full = title.links.by_peer.len() >= MAX_LINKS
            || title.links.followers() >= MAX_LINKS - TARGET_PEERS;
        // A stranded dialler has nobody ahead of it, and the tracker sent it
        // to us because we hold what it lacks: with every place taken, a
        // peer we neither serve nor need goes for it.
        if full {
            if !stranded || !title.engine.make_room(now) {
                return;
            }
            title.drain(&self.shared, &self.events, now);
        }
        let link = match title
            .links
            .create(swarm, &from, &self.shared.rtc, &self.events, false)
        {
            Ok(link) => link,
            Err(e) => return tracing::warn!(%e, "no peer connection"),
        };
        let engine_id = title.links.by_peer[&from].engine_id;
        let hub = self.events.clone();
        let rtc_ready = self.shared.rtc_ready.clone();
        wasm_bindgen_futures::spawn_local(async move {
            rtc_ready.await;
            let result = link.accept_offer(&sdp).await.map(Some);
            let _ = hub.unbounded_send(HubEvent::Sdp {
                swarm,
                peer: from,
                engine_id,
                offer: false,
                result: result.map_err(|e| e.to_string()),
            });
        });
    }

    pub(super) fn on_sdp(
        &mut self,
        swarm: Sha256Hash,
        peer: SignalPeer,
        engine_id: telly_swarm::PeerId,
        offer: bool,
        result: Result<Option<String>, String>,
        now: Millis,
    ) {
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        if title.links.current(&peer, engine_id).is_none() {
            return;
        }
        match result {
            Err(e) => {
                tracing::warn!(%e, "an SDP step failed; dropping the link");
                title.drop_link(&peer, now);
            }
            // Our offer: the remote description comes with the answer.
            Ok(Some(sdp)) if offer => {
                let stranded = title.engine.stranded(now);
                self.signal(&ClientMessage::Offer {
                    swarm_id: swarm,
                    to: peer,
                    sdp,
                    stranded,
                });
            }
            // Our answer: the offer (remote) is set.
            Ok(Some(sdp)) => {
                title.links.remote_description_set(&peer, engine_id);
                self.signal(&ClientMessage::Answer {
                    swarm_id: swarm,
                    to: peer,
                    sdp,
                });
            }
            // Their answer is set.
            Ok(None) => title.links.remote_description_set(&peer, engine_id),
        }
    }

    // ------------------------------------------------------------------ links

    pub(super) fn on_link(
        &mut self,
        swarm: Sha256Hash,
        peer: SignalPeer,
        engine_id: telly_swarm::PeerId,
        event: LinkEvent,
        now: Millis,
    ) {
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        let Some(link) = title.links.current(&peer, engine_id) else {
            return;
        };
        match event {
            LinkEvent::LocalCandidate(candidate) => {
                let candidate = candidate.unwrap_or(telly_proto::signal::IceCandidate {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_m_line_index: None,
                });
                self.signal(&ClientMessage::Candidate {
                    swarm_id: swarm,
                    to: peer,
                    candidate,
                });
            }
            LinkEvent::Open => {
                marks::mark("first link open");
                link.open = true;
                title.engine.handle_peer_connected(engine_id, now);
                title.links.flush(&peer);
            }
            LinkEvent::Writable => title.links.flush(&peer),
            LinkEvent::Closed(why) => {
                tracing::info!(%why, "a peer link closed");
                title.drop_link(&peer, now);
            }
            LinkEvent::Message(bytes) => match wire::decode(&bytes) {
                Ok(Message::Handshake(handshake)) if !grant_names(&handshake.grant, &peer) => {
                    tracing::warn!(?peer, "a peer presented someone else's grant");
                    title.engine.handle_undecodable(engine_id);
                }
                Ok(message) => {
                    match &message {
                        Message::Handshake(_) => marks::mark("first peer handshake"),
                        Message::Chunk { .. } => marks::mark("first peer chunk"),
                        _ => {}
                    }
                    let msg = PeerMessage::<Signed>::from_wire(message);
                    title.engine.handle_message(engine_id, msg, now);
                }
                Err(error) => {
                    tracing::warn!(%error, ?peer, "an unreadable frame from a peer");
                    title.engine.handle_undecodable(engine_id);
                }
            },
        }
    }
}

/// Whether a handshake grant names `peer` (signature and expiry are the engine's
/// to check). A grant is no secret, so without this a peer could replay another's.
fn grant_names(grant: &telly_proto::SignedGrant, peer: &SignalPeer) -> bool {
    serde_json::from_str::<Grant>(&grant.body).is_ok_and(|g| g.peer_id == peer.as_str())
}
