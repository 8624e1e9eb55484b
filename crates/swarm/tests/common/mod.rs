//! A deterministic test network for engines with real content: signed grants,
//! Merkle-checked chunks, every message through the wire encoder and decoder, a
//! latency and a serialization rate per sender, and an origin with its own delay.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use telly_proto::manifest::{
    BlockEntry, MANIFEST_VERSION, Manifest, SignedManifest, Track, TrackKind,
};
use telly_proto::wire::{self, BlockId, GoodbyeReason};
use telly_proto::{Grant, KeyId, ProviderPublicKey, Sha256Hash, SignedGrant, merkle};
use telly_swarm::{
    Action, Config, Engine, Fetched, Layout, Millis, PeerId, PeerMessage, PlayState, Signed,
    TimeoutReason,
};

pub const UNIX_AT_ZERO_MS: u64 = 1_700_000_000_000;

/// The rules tests' network: nine blocks of 150 KB (3 chunks each) plus an
/// init segment.
pub fn net() -> Net {
    Net::new(title(9, 150_000))
}

pub struct Title {
    pub manifest: Manifest,
    pub swarm_id: Sha256Hash,
    pub key: SigningKey,
    pub layout: Arc<Layout>,
    /// Sealed bytes of each block in wire order.
    pub bytes: Vec<Vec<u8>>,
}

/// A one-track title: an init segment and `blocks` blocks of 2 s and `size` bytes.
pub fn title(blocks: usize, size: usize) -> Title {
    let key = SigningKey::from_bytes(&[7; 32]);
    let make = |seed: usize, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 97) ^ (i >> 9)) as u8)
            .collect()
    };
    let entry = |bytes: &[u8], start_ms: u64, duration_ms: u64| BlockEntry {
        start_ms,
        duration_ms,
        size: bytes.len() as u64,
        sha256: Sha256Hash::of(bytes),
        piece_root: merkle::root(bytes),
    };
    let init = make(999, 1200);
    let media: Vec<Vec<u8>> = (0..blocks).map(|i| make(i, size)).collect();
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        title_id: "t".into(),
        title: "Test".into(),
        duration_ms: 2000 * blocks as u64,
        key_id: KeyId([1; 16]),
        tracks: vec![Track {
            kind: TrackKind::Video,
            codec: "avc1.64001F".into(),
            mime: "video/mp4".into(),
            bandwidth: 1_000_000,
            width: None,
            height: None,
            init: entry(&init, 0, 0),
            blocks: media
                .iter()
                .enumerate()
                .map(|(i, b)| entry(b, 2000 * i as u64, 2000))
                .collect(),
        }],
        published_at: 0,
    };
    manifest.validate().unwrap();
    let swarm_id = SignedManifest::sign(&manifest, &key).swarm_id();
    let layout = Arc::new(Layout::new(&manifest).unwrap());
    let mut bytes = vec![init];
    bytes.extend(media);
    Title {
        manifest,
        swarm_id,
        key,
        layout,
        bytes,
    }
}

impl Title {
    pub fn grant(&self, name: &str, expires_at: u64, swarm_id: Sha256Hash) -> SignedGrant {
        SignedGrant::sign(
            &Grant {
                viewer: name.into(),
                peer_id: name.into(),
                title_id: "t".into(),
                swarm_id,
                expires_at,
            },
            &self.key,
        )
    }

    pub fn trust(&self) -> Signed {
        Signed {
            provider_key: ProviderPublicKey(self.key.verifying_key()),
            swarm_id: self.swarm_id,
        }
    }
}

pub enum Event {
    Message {
        to: usize,
        from: usize,
        frame: Vec<u8>,
    },
    Origin {
        to: usize,
        block: BlockId,
        first: u16,
        count: u16,
    },
    Closed {
        to: usize,
        from: usize,
    },
}

pub struct Node {
    pub engine: Engine<Signed>,
    pub store: HashMap<BlockId, Vec<u8>>,
    pub delivered: Vec<(Millis, BlockId)>,
    pub disconnects: Vec<(usize, GoodbyeReason)>,
    /// Flips a byte in every chunk it sends.
    pub corrupt: bool,
    /// Drops every request it receives without answering.
    pub mute: bool,
    /// Hands the engine the Merkle leaves of what it loads or fetches whole, as
    /// the browser does with WebCrypto (`telly_swarm::Fetched`).
    pub host_leaves: bool,
    pub up_free: Millis,
    pub origin_free: Millis,
    /// Bytes per ms this node's uplink serializes.
    pub up_rate: f64,
    /// Bytes per ms this node's downlink takes (0: unlimited): peers' frames
    /// and origin answers queue on it one after another.
    pub down_rate: f64,
    pub down_free: Millis,
    pub origin_log: Vec<(Millis, BlockId, u16, u16)>,
    pub sent: Vec<(Millis, usize, String)>,
    /// What it sent to scripted peers outside the net, logged like `sent`.
    pub sent_outside: Vec<(Millis, PeerId, String)>,
    /// Why the engine asked to be woken, at each wake-up.
    pub wakes: Vec<TimeoutReason>,
}

impl Node {
    /// When `bytes` reaching this node's downlink at `at` are all in.
    fn take_downlink(&mut self, at: Millis, bytes: usize) -> Millis {
        if self.down_rate <= 0.0 {
            return at;
        }
        self.down_free = self.down_free.max(at) + (bytes as f64 / self.down_rate) as u64;
        self.down_free
    }

    /// What this node's host hands the engine for `bytes` it read or fetched.
    pub fn fetched(&self, bytes: Vec<u8>) -> Fetched {
        let leaves = self.host_leaves.then(|| merkle::leaves(&bytes));
        Fetched { bytes, leaves }
    }
}

pub struct Net {
    pub title: Title,
    pub now: Millis,
    pub nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Millis, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    seq: u64,
    pub latency_ms: u64,
    pub origin_delay_ms: u64,
    /// Added to every other origin answer: an origin whose answer times vary.
    pub origin_jitter_ms: u64,
    pub origin_fetches: u64,
    /// The viewers' links from the origin in bytes per ms (0: unlimited):
    /// answers to one viewer come in one after another, as in the simulator.
    pub origin_link_rate: f64,
    pub origin_bytes: u64,
    pub trace: Vec<String>,
}

impl Net {
    pub fn new(title: Title) -> Self {
        Self {
            title,
            now: Millis(0),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            latency_ms: 20,
            origin_delay_ms: 60,
            origin_jitter_ms: 0,
            origin_fetches: 0,
            origin_link_rate: 0.0,
            origin_bytes: 0,
            trace: Vec::new(),
        }
    }

    pub fn config(seed: u64) -> Config {
        Config {
            seed,
            unix_ms_at_zero: UNIX_AT_ZERO_MS,
            upload_cap: 2_000_000,
            per_peer_upload_cap: 2_000_000,
            initial_peer_rate: 1_000_000,
            ..Config::default()
        }
    }

    pub fn add(&mut self, config: Config) -> usize {
        let id = self.nodes.len();
        let grant = self
            .title
            .grant(&format!("peer{id}"), 2_000_000_000, self.title.swarm_id);
        self.add_with_grant(config, grant)
    }

    pub fn add_with_grant(&mut self, config: Config, grant: SignedGrant) -> usize {
        let engine = Engine::new(
            config,
            self.title.layout.clone(),
            self.title.trust(),
            grant,
            self.title.swarm_id,
        );
        self.nodes.push(Node {
            engine,
            store: HashMap::new(),
            delivered: Vec::new(),
            disconnects: Vec::new(),
            corrupt: false,
            mute: false,
            host_leaves: false,
            up_free: Millis(0),
            origin_free: Millis(0),
            up_rate: 4_000.0,
            down_rate: 0.0,
            down_free: Millis(0),
            origin_log: Vec::new(),
            sent: Vec::new(),
            sent_outside: Vec::new(),
            wakes: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Gives `node` every block, as if it had played the title before.
    pub fn seed_all(&mut self, node: usize) {
        let all = self.all_blocks();
        self.seed_blocks(node, &all);
    }

    /// Adds a node whose upload, engine cap and link alike, is `bytes_per_s`.
    pub fn add_capped(&mut self, bytes_per_s: u64, config: Config) -> usize {
        let node = self.add(Config {
            upload_cap: bytes_per_s,
            per_peer_upload_cap: bytes_per_s,
            ..config
        });
        self.nodes[node].up_rate = bytes_per_s as f64 / 1000.0;
        node
    }

    /// Adds a node holding every block whose upload, engine cap and link alike,
    /// is `bytes_per_s`.
    pub fn add_capped_seed(&mut self, bytes_per_s: u64, config: Config) -> usize {
        let seed = self.add_capped(bytes_per_s, config);
        self.seed_all(seed);
        seed
    }

    /// Adds two peers holding the whole title, one that never answers a
    /// request and one whose uplink carries `up_rate` bytes per ms, and a
    /// viewer linked to both. Returns `(mute, answering, viewer)`.
    pub fn add_viewer_of_mute_and_answering_seeds(
        &mut self,
        up_rate: f64,
    ) -> (usize, usize, usize) {
        let mute = self.add(Net::config(1));
        self.seed_all(mute);
        self.nodes[mute].mute = true;
        let answering = self.add(Net::config(2));
        self.seed_all(answering);
        self.nodes[answering].up_rate = up_rate;
        let viewer = self.add(Net::config(3));
        self.connect(mute, viewer);
        self.connect(answering, viewer);
        (mute, answering, viewer)
    }

    /// Gives `node` these blocks, as if it had played them before.
    pub fn seed_blocks(&mut self, node: usize, blocks: &[BlockId]) {
        for &block in blocks {
            let bytes = self.title.bytes[block.0 as usize].clone();
            self.nodes[node].store.insert(block, bytes);
            self.nodes[node].engine.handle_held_block(block);
        }
    }

    pub fn connect(&mut self, a: usize, b: usize) {
        let now = self.now;
        self.nodes[a]
            .engine
            .handle_peer_connected(PeerId(b as u64), now);
        self.nodes[b]
            .engine
            .handle_peer_connected(PeerId(a as u64), now);
        self.pump_all();
    }

    /// Links every two of `nodes`.
    pub fn connect_all(&mut self, nodes: &[usize]) {
        for (i, &a) in nodes.iter().enumerate() {
            for &b in &nodes[i + 1..] {
                self.connect(a, b);
            }
        }
    }

    /// Links `node` to a peer the test scripts by hand (outside the net: what
    /// `node` sends it lands in `sent_outside`), which hands over a valid
    /// handshake granted to `name`.
    pub fn connect_scripted(&mut self, node: usize, peer: PeerId, name: &str) {
        let now = self.now;
        let grant = self.title.grant(name, 2_000_000_000, self.title.swarm_id);
        let handshake = PeerMessage::Handshake {
            version: wire::WIRE_VERSION,
            swarm_id: self.title.swarm_id,
            grant,
        };
        let engine = &mut self.nodes[node].engine;
        engine.handle_peer_connected(peer, now);
        engine.handle_message(peer, handshake, now);
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        let now = self.now;
        self.nodes[a]
            .engine
            .handle_peer_disconnected(PeerId(b as u64), now);
        self.nodes[b]
            .engine
            .handle_peer_disconnected(PeerId(a as u64), now);
        self.pump_all();
    }

    pub fn play(&mut self, node: usize, position_ms: u64, state: PlayState) {
        let now = self.now;
        self.nodes[node]
            .engine
            .handle_playhead(position_ms, state, now);
        self.pump(node);
    }

    /// Adds a viewer at `position_ms` in `state`, connected to `peer`.
    /// `node` starts at `position_ms` (one tenth of a second after now), has
    /// `starting_ms` to get its first blocks, then plays; returns when it did.
    pub fn start_then_play(&mut self, node: usize, position_ms: u64, starting_ms: u64) -> Millis {
        self.run_for(100);
        self.play(node, position_ms, PlayState::Starting);
        self.run_for(starting_ms);
        self.play(node, position_ms, PlayState::Playing);
        self.now
    }

    pub fn add_viewer(
        &mut self,
        config: Config,
        position_ms: u64,
        state: PlayState,
        peer: usize,
    ) -> usize {
        let node = self.add(config);
        self.play(node, position_ms, state);
        self.connect(peer, node);
        node
    }

    fn push(&mut self, at: Millis, event: Event) {
        self.seq += 1;
        let key = self.seq as usize;
        self.events.insert(key, event);
        self.queue.push(Reverse((at, self.seq, key)));
    }

    pub fn pump_all(&mut self) {
        for n in 0..self.nodes.len() {
            self.pump(n);
        }
    }

    /// Drains `node`'s actions and performs them.
    pub fn pump(&mut self, node: usize) {
        let now = self.now;
        while let Some(action) = self.nodes[node].engine.poll_action(now) {
            self.perform(node, action);
        }
        self.nodes[node].engine.check_invariants();
    }

    pub fn perform(&mut self, node: usize, action: Action<Signed>) {
        let now = self.now;
        match action {
            Action::Send { peer, msg } if peer.0 as usize >= self.nodes.len() => {
                // A scripted peer outside the net: the test answers, from this log.
                let logged = format!("{:?}", msg.to_wire()).chars().take(60).collect();
                self.nodes[node].sent_outside.push((now, peer, logged));
            }
            Action::Disconnect { peer, .. } if peer.0 as usize >= self.nodes.len() => {}
            Action::Send { peer, msg } => {
                let to = peer.0 as usize;
                let mut wire_msg = msg.to_wire();
                if self.nodes[node].corrupt
                    && let wire::Message::Chunk { data, .. } = &mut wire_msg
                {
                    data[0] ^= 0xFF;
                }
                self.nodes[node].sent.push((
                    now,
                    to,
                    format!("{wire_msg:?}").chars().take(60).collect(),
                ));
                self.trace
                    .push(format!("{} {node}->{to} {}", now.0, kind(&wire_msg)));
                let frame = wire::encode(&wire_msg).expect("engine messages fit the wire");
                let n = &mut self.nodes[node];
                let start = n.up_free.max(now);
                n.up_free = start + (frame.len() as f64 / n.up_rate) as u64;
                let sent_by = n.up_free;
                let at = self.nodes[to].take_downlink(sent_by + self.latency_ms, frame.len());
                self.push(
                    at,
                    Event::Message {
                        to,
                        from: node,
                        frame,
                    },
                );
            }
            Action::FetchFromOrigin {
                block,
                first,
                count,
            } => {
                self.nodes[node].origin_log.push((now, block, first, count));
                self.trace.push(format!(
                    "{} origin {node} {:?} {first}+{count}",
                    now.0, block
                ));
                self.origin_fetches += 1;
                let jitter = self.origin_jitter_ms * (self.origin_fetches % 2);
                let mut at = now + self.origin_delay_ms + jitter;
                let size = self.title.layout.info(block).entry.size;
                let bytes: usize = (first..first + count)
                    .map(|i| wire::chunk_len(size, usize::from(i)))
                    .sum();
                if self.origin_link_rate > 0.0 {
                    let n = &mut self.nodes[node];
                    let transfer = (bytes as f64 / self.origin_link_rate) as u64;
                    n.origin_free = n.origin_free.max(at) + transfer;
                    at = n.origin_free;
                }
                at = self.nodes[node].take_downlink(at, bytes);
                self.push(
                    at,
                    Event::Origin {
                        to: node,
                        block,
                        first,
                        count,
                    },
                );
            }
            Action::Load { block } => {
                let bytes = self.nodes[node].store.get(&block).cloned();
                match bytes {
                    Some(b) => {
                        let fetched = self.nodes[node].fetched(b);
                        self.nodes[node].engine.handle_loaded(block, fetched, now)
                    }
                    None => self.nodes[node].engine.handle_load_failed(block, now),
                }
            }
            Action::Store { block, chunks } => {
                let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
                self.nodes[node].store.insert(block, bytes);
            }
            Action::Deliver { block } => {
                let bytes = &self.nodes[node].store[&block];
                let expected = &self.title.layout.info(block).entry;
                assert_eq!(
                    Sha256Hash::of(bytes),
                    expected.sha256,
                    "delivered a bad block"
                );
                self.nodes[node].delivered.push((now, block));
            }
            Action::Disconnect { peer, why } => {
                self.nodes[node].disconnects.push((peer.0 as usize, why));
                let at = now + self.latency_ms;
                self.push(
                    at,
                    Event::Closed {
                        to: peer.0 as usize,
                        from: node,
                    },
                );
            }
        }
    }

    fn deliver(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Message { to, from, frame } => {
                let msg = wire::decode(&frame).expect("frames decode");
                if self.nodes[to].mute && matches!(msg, wire::Message::Request { .. }) {
                    return;
                }
                let msg = PeerMessage::from_wire(msg);
                self.nodes[to]
                    .engine
                    .handle_message(PeerId(from as u64), msg, now);
                self.pump(to);
            }
            Event::Origin {
                to,
                block,
                first,
                count,
            } => {
                let bytes = &self.title.bytes[block.0 as usize];
                let start = usize::from(first) * wire::CHUNK_SIZE;
                let end = (start + usize::from(count) * wire::CHUNK_SIZE).min(bytes.len());
                let data = bytes[start..end].to_vec();
                self.origin_bytes += data.len() as u64;
                let fetched = self.nodes[to].fetched(data);
                self.nodes[to]
                    .engine
                    .handle_origin_data(block, first, fetched, now);
                self.pump(to);
            }
            Event::Closed { to, from } => {
                self.nodes[to]
                    .engine
                    .handle_peer_disconnected(PeerId(from as u64), now);
                self.pump(to);
            }
        }
    }

    /// Runs events and timeouts until `until` (virtual time).
    pub fn run_until(&mut self, until: Millis) {
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 1_000_000, "livelock");
            self.pump_all();
            let next_event = self.queue.peek().map(|r| r.0.0);
            let next_timer = (0..self.nodes.len())
                .filter_map(|n| self.nodes[n].engine.poll_timeout().map(|t| (t, n)))
                .min();
            let next = [next_event, next_timer.map(|t| t.0)]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next else {
                self.now = until;
                return;
            };
            if at > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(at);
            if next_event == Some(at) {
                let Reverse((_, _, key)) = self.queue.pop().unwrap();
                let event = self.events.remove(&key).unwrap();
                self.deliver(event);
            } else if let Some((_, n)) = next_timer {
                let now = self.now;
                let why = self.nodes[n].engine.last_timeout_reason();
                self.nodes[n].wakes.push(why);
                self.nodes[n].engine.handle_timeout(now);
                self.pump(n);
            }
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// Media blocks `node` got after the player reached them, having started
    /// playing at `started`: `(block, ms late)`.
    pub fn late_deliveries(&self, node: usize, started: Millis) -> Vec<(BlockId, u64)> {
        let layout = &self.title.layout;
        self.nodes[node]
            .delivered
            .iter()
            .filter_map(|&(at, block)| {
                let due = started + layout.deadline_time(block);
                (at > due && !layout.info(block).is_init).then(|| (block, at.since(due)))
            })
            .collect()
    }

    pub fn delivered(&self, node: usize) -> Vec<BlockId> {
        let mut blocks: Vec<BlockId> = self.nodes[node].delivered.iter().map(|d| d.1).collect();
        blocks.sort();
        blocks
    }

    pub fn all_blocks(&self) -> Vec<BlockId> {
        (0..self.title.layout.len() as u32).map(BlockId).collect()
    }
}

fn kind(msg: &wire::Message) -> String {
    match msg {
        wire::Message::Chunk { block, index, .. } => format!("chunk {}/{index}", block.0),
        wire::Message::Request {
            block,
            first,
            count,
            deadline_ms,
            ..
        } => {
            format!("request {}/{first}+{count} by {deadline_ms}", block.0)
        }
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

/// `("Request" | "Cancel", block, first, count)` from a logged message.
pub fn request_or_cancel(logged: &str) -> Option<(&'static str, u32, u16, u16)> {
    let kind = ["Request", "Cancel"]
        .into_iter()
        .find(|k| logged.starts_with(&format!("{k} {{")))?;
    let number = |after: &str| -> Option<u64> {
        let rest = &logged[logged.find(after)? + after.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((
        kind,
        number("BlockId(")? as u32,
        number("first: ")? as u16,
        number("count: ")? as u16,
    ))
}
