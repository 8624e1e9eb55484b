//! A baseline modelled on p2p-media-loader's documented behaviour (core 0.6 and
//! 2.x settings): the segment at or right after the playhead is loaded over HTTP
//! unless it is already there (so every viewer's first segments come from HTTP),
//! once a second one missing segment of the window is loaded over HTTP with a
//! fixed probability (`httpDownloadProbability` 0.06), and up to three segments of
//! a 60 s window at a time come from a peer chosen at random among those that
//! announced them. Peers announce whole segments only (store-and-forward), serve
//! requests first come first served, and a peer download that stalls for 2 s is
//! dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use telly_proto::wire::{Bitfield, BlockId, CHUNK_SIZE};
use telly_swarm::{Action, Layout, Millis, PeerId, PeerMessage, PlayState};

use crate::model::{Modelled, ModelledChunk};
use crate::node::SimNode;

const HTTP_URGENT_MS: u64 = 4_000;
const P2P_WINDOW_MS: u64 = 60_000;
const SIMULTANEOUS_P2P: usize = 3;
const HTTP_PROBABILITY: f64 = 0.06;
const TICK_MS: u64 = 1_000;
const P2P_STALL_MS: u64 = 2_000;

enum Fetch {
    Http,
    Peer {
        peer: PeerId,
        got: u16,
        last_byte: Millis,
    },
}

pub struct Baseline {
    layout: Arc<Layout>,
    have: Vec<bool>,
    fetching: BTreeMap<BlockId, Fetch>,
    peers: BTreeMap<PeerId, Bitfield>,
    uploads: VecDeque<(PeerId, BlockId, u16)>,
    up_rate: f64,
    up_tokens: f64,
    up_at: Millis,
    position_ms: u64,
    position_at: Millis,
    playing: bool,
    next_tick: Millis,
    upload_wake: Millis,
    rng: u64,
    actions: VecDeque<Action<Modelled>>,
}

impl Baseline {
    /// `upload_rate` in bytes per second.
    pub fn new(layout: Arc<Layout>, upload_rate: u64, seed: u64) -> Self {
        let blocks = layout.len();
        Self {
            layout,
            have: vec![false; blocks],
            fetching: BTreeMap::new(),
            peers: BTreeMap::new(),
            uploads: VecDeque::new(),
            up_rate: upload_rate as f64 / 1000.0,
            up_tokens: 0.0,
            up_at: Millis::ZERO,
            position_ms: 0,
            position_at: Millis::ZERO,
            playing: false,
            next_tick: Millis::ZERO,
            upload_wake: Millis::NEVER,
            rng: seed | 1,
            actions: VecDeque::new(),
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn position(&self, now: Millis) -> u64 {
        if self.playing {
            self.position_ms + now.since(self.position_at)
        } else {
            self.position_ms
        }
    }

    fn http(&mut self, block: BlockId) {
        if let Some(Fetch::Peer { peer, .. }) = self.fetching.remove(&block) {
            let count = self.layout.info(block).chunks;
            self.actions.push_back(Action::Send {
                peer,
                msg: PeerMessage::Cancel {
                    block,
                    first: 0,
                    count,
                },
            });
        }
        self.fetching.insert(block, Fetch::Http);
        let count = self.layout.info(block).chunks;
        self.actions.push_back(Action::FetchFromOrigin {
            block,
            first: 0,
            count,
        });
    }

    fn plan(&mut self, now: Millis) {
        let pos = self.position(now);
        let window: Vec<BlockId> = self
            .layout
            .inits()
            .chain(
                self.layout.by_time()[self.layout.window(pos, P2P_WINDOW_MS)]
                    .iter()
                    .copied(),
            )
            .filter(|b| !self.have[b.0 as usize] && !self.layout.is_behind(*b, pos))
            .collect();
        // Stalled peer downloads are dropped.
        let stalled: Vec<BlockId> = self
            .fetching
            .iter()
            .filter(|(_, f)| matches!(f, Fetch::Peer { last_byte, .. } if now.since(*last_byte) > P2P_STALL_MS))
            .map(|(b, _)| *b)
            .collect();
        for block in stalled {
            if let Some(Fetch::Peer { peer, .. }) = self.fetching.remove(&block) {
                let count = self.layout.info(block).chunks;
                self.actions.push_back(Action::Send {
                    peer,
                    msg: PeerMessage::Cancel {
                        block,
                        first: 0,
                        count,
                    },
                });
            }
        }
        for &block in &window {
            let urgent = self.layout.deadline_time(block) < pos + HTTP_URGENT_MS;
            let by_peer = matches!(self.fetching.get(&block), Some(Fetch::Peer { .. }));
            if urgent && (!self.fetching.contains_key(&block) || by_peer) {
                // A peer download still running for an urgent segment is replaced
                // by HTTP, as the library's required-segment rule does.
                if !by_peer || !self.peer_nearly_done(block) {
                    self.http(block);
                }
            }
        }
        let mut p2p = self
            .fetching
            .values()
            .filter(|f| matches!(f, Fetch::Peer { .. }))
            .count();
        for &block in &window {
            if p2p >= SIMULTANEOUS_P2P {
                break;
            }
            if self.fetching.contains_key(&block) {
                continue;
            }
            let holders: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, bits)| bits.get(block.0 as usize))
                .map(|(p, _)| *p)
                .collect();
            if holders.is_empty() {
                continue;
            }
            let peer = holders[(self.random() % holders.len() as u64) as usize];
            let count = self.layout.info(block).chunks;
            self.fetching.insert(
                block,
                Fetch::Peer {
                    peer,
                    got: 0,
                    last_byte: now,
                },
            );
            self.actions.push_back(Action::Send {
                peer,
                msg: PeerMessage::Request {
                    block,
                    first: 0,
                    count,
                    deadline_ms: 0,
                    want_hashes: true,
                },
            });
            p2p += 1;
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK_MS;
            let idle: Vec<BlockId> = window
                .iter()
                .copied()
                .filter(|b| !self.fetching.contains_key(b))
                .collect();
            let roll = (self.random() % 1_000_000) as f64 / 1_000_000.0;
            if !idle.is_empty() && roll < HTTP_PROBABILITY {
                let pick = idle[(self.random() % idle.len() as u64) as usize];
                self.http(pick);
            }
        }
    }

    fn peer_nearly_done(&self, block: BlockId) -> bool {
        match self.fetching.get(&block) {
            Some(Fetch::Peer { got, .. }) => *got + 1 >= self.layout.info(block).chunks,
            _ => false,
        }
    }

    fn complete(&mut self, block: BlockId) {
        self.have[block.0 as usize] = true;
        self.fetching.remove(&block);
        self.actions.push_back(Action::Deliver { block });
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.actions.push_back(Action::Send {
                peer,
                msg: PeerMessage::Have(block),
            });
        }
    }

    fn serve(&mut self, now: Millis) {
        self.upload_wake = Millis::NEVER;
        if self.up_rate <= 0.0 {
            self.uploads.clear();
            return;
        }
        self.up_tokens =
            (self.up_tokens + now.since(self.up_at) as f64 * self.up_rate).min(CHUNK_SIZE as f64);
        self.up_at = now;
        while let Some(&(peer, block, chunk)) = self.uploads.front() {
            if self.up_tokens < 0.0 {
                self.upload_wake = now + ((-self.up_tokens / self.up_rate).ceil() as u64).max(1);
                return;
            }
            self.uploads.pop_front();
            if !self.peers.contains_key(&peer) {
                continue;
            }
            let len = telly_proto::wire::chunk_len(
                self.layout.info(block).entry.size,
                usize::from(chunk),
            );
            self.up_tokens -= len as f64;
            self.actions.push_back(Action::Send {
                peer,
                msg: PeerMessage::Chunk {
                    block,
                    index: chunk,
                    data: ModelledChunk {
                        len: len as u32,
                        genuine: true,
                    },
                },
            });
        }
    }
}

impl SimNode for Baseline {
    fn connected(&mut self, peer: PeerId, _now: Millis) {
        self.peers.insert(peer, Bitfield::new(self.layout.len()));
        let mut bits = Bitfield::new(self.layout.len());
        for (i, h) in self.have.iter().enumerate() {
            bits.set(i, *h);
        }
        self.actions.push_back(Action::Send {
            peer,
            msg: PeerMessage::HaveMap(bits),
        });
    }

    fn disconnected(&mut self, peer: PeerId, _now: Millis) {
        self.peers.remove(&peer);
        self.fetching
            .retain(|_, f| !matches!(f, Fetch::Peer { peer: p, .. } if *p == peer));
        self.uploads.retain(|u| u.0 != peer);
    }

    fn message(&mut self, peer: PeerId, msg: PeerMessage<Modelled>, now: Millis) {
        match msg {
            PeerMessage::HaveMap(bits) => {
                if bits.len() == self.layout.len() {
                    self.peers.insert(peer, bits);
                }
            }
            PeerMessage::Have(block) => {
                if let Some(bits) = self.peers.get_mut(&peer) {
                    bits.set(block.0 as usize, true);
                }
            }
            PeerMessage::Request {
                block,
                first,
                count,
                ..
            } => {
                if self.have.get(block.0 as usize) == Some(&true) {
                    for chunk in first..first.saturating_add(count) {
                        self.uploads.push_back((peer, block, chunk));
                    }
                    self.serve(now);
                } else {
                    self.actions.push_back(Action::Send {
                        peer,
                        msg: PeerMessage::Reject {
                            block,
                            first,
                            count,
                        },
                    });
                }
            }
            PeerMessage::Cancel { block, .. } => {
                self.uploads.retain(|u| !(u.0 == peer && u.1 == block));
            }
            PeerMessage::Reject { block, .. } => {
                if matches!(self.fetching.get(&block), Some(Fetch::Peer { peer: p, .. }) if *p == peer)
                {
                    self.fetching.remove(&block);
                }
            }
            PeerMessage::Chunk { block, .. } => {
                let chunks = self.layout.get(block).map_or(0, |b| b.chunks);
                let done = match self.fetching.get_mut(&block) {
                    Some(Fetch::Peer {
                        peer: p,
                        got,
                        last_byte,
                    }) if *p == peer => {
                        *got += 1;
                        *last_byte = now;
                        *got >= chunks
                    }
                    _ => false,
                };
                if done {
                    self.complete(block);
                }
            }
            PeerMessage::Goodbye(_) => self.disconnected(peer, now),
            PeerMessage::Handshake { .. }
            | PeerMessage::Hashes { .. }
            | PeerMessage::Choke
            | PeerMessage::Unchoke
            | PeerMessage::Coming { .. }
            | PeerMessage::Sending { .. } => {}
        }
        self.plan(now);
    }

    fn origin(&mut self, block: BlockId, _first: u16, _bytes: u64, now: Millis) {
        if !self.have[block.0 as usize] {
            self.complete(block);
        }
        self.plan(now);
    }

    fn loaded(&mut self, _block: BlockId, _bytes: u64, _now: Millis) {}

    fn playhead(&mut self, position_ms: u64, state: PlayState, now: Millis) {
        self.position_ms = position_ms;
        self.position_at = now;
        self.playing = state == PlayState::Playing;
        self.plan(now);
    }

    fn timeout(&mut self, now: Millis) {
        self.plan(now);
        self.serve(now);
    }

    fn poll_action(&mut self, _now: Millis) -> Option<Action<Modelled>> {
        self.actions.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Millis> {
        Some(self.next_tick.min(self.upload_wake))
    }

    fn check_invariants(&self) {}

    fn stats(&self, _now: Millis) -> Option<telly_swarm::Stats> {
        None
    }
}
