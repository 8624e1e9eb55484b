//! A shard: some of the viewers, their event queue, and what they do between
//! global events (messages, origin answers, timers, the player's block bounds).

use telly_swarm::{Action, Millis, PeerId, PeerMessage};

use super::queue::Queue;
use super::{Ev, Global, Shared, Viewer};
use crate::model::{Modelled, hashes_wire_len};

pub(super) struct Shard {
    /// The first viewer's id; the shard holds a run of consecutive ids.
    pub(super) base: u32,
    pub(super) viewers: Vec<Viewer>,
    pub(super) queue: Queue<Ev>,
    /// (when, sender, event) for viewers of shard `i` in `outbox[i]`, handed
    /// over between windows (to `inbox[this shard]` of shard `i`).
    pub(super) outbox: Vec<Vec<Mail>>,
    /// The earliest time in any outbox.
    pub(super) outbox_first: u64,
    /// What shard `i` sent this shard's viewers, in `inbox[i]`, queued as
    /// the next window begins.
    pub(super) inbox: Vec<Vec<Mail>>,
    /// The inboxes merged, in (time, sender) order.
    arrived: Vec<Mail>,
    /// This shard's next event when its last window ended.
    pub(super) next_at: Option<u64>,
    /// (when, raised by, event) for the global queue, run after this window.
    pub(super) raised: Vec<(u64, u32, Global)>,
    pub(super) now: u64,
    window_end: u64,
    pub(super) events: u64,
    pub(super) origin_bytes: u64,
}

/// An event for a viewer, from another: (when, sender, event).
pub(super) type Mail = (u64, u32, Ev);

impl Shard {
    pub(super) fn new(base: u32, viewers: Vec<Viewer>, shards: usize) -> Self {
        Self {
            base,
            viewers,
            queue: Queue::default(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            outbox_first: u64::MAX,
            inbox: (0..shards).map(|_| Vec::new()).collect(),
            arrived: Vec::new(),
            next_at: None,
            raised: Vec::new(),
            now: 0,
            window_end: 0,
            events: 0,
            origin_bytes: 0,
        }
    }

    pub(super) fn viewer(&self, id: u32) -> &Viewer {
        &self.viewers[(id - self.base) as usize]
    }

    pub(super) fn viewer_mut(&mut self, id: u32) -> &mut Viewer {
        &mut self.viewers[(id - self.base) as usize]
    }

    /// Queues what other viewers sent, then runs this shard's events
    /// before `end`.
    pub(super) fn run_window(&mut self, sh: &Shared, end: u64) {
        self.window_end = end;
        self.take_inbox();
        while let Some((at, ev)) = self.queue.pop_before(end) {
            self.now = at;
            self.events += 1;
            self.handle(sh, ev);
        }
        self.next_at = self.queue.next_at();
    }

    /// Queues the inboxes' events in (time, sender) order: one sender's
    /// events are all in one inbox, in the order sent, and the sort is
    /// stable, so the order is the same however the viewers are sharded.
    fn take_inbox(&mut self) {
        let mut arrived = std::mem::take(&mut self.arrived);
        for inbox in &mut self.inbox {
            arrived.append(inbox);
        }
        arrived.sort_by_key(|(at, from, _)| (*at, *from));
        for (at, _, ev) in arrived.drain(..) {
            self.queue.push(at, ev);
        }
        self.arrived = arrived;
    }

    /// Sends `ev` for viewer `to` at `at`, through the outbox.
    fn mail(&mut self, sh: &Shared, at: u64, from: u32, ev: Ev) {
        self.outbox_first = self.outbox_first.min(at);
        self.outbox[sh.shard_of(ev.viewer())].push((at, from, ev));
    }

    /// A global event for after this window (never within it: the window
    /// runs without one).
    pub(super) fn raise(&mut self, at: u64, by: u32, ev: Global) {
        self.raised.push((at.max(self.window_end), by, ev));
    }

    fn handle(&mut self, sh: &Shared, mut ev: Ev) {
        if let Some((to, bytes)) = ev.pass_downlink() {
            let at = self.take_in(to, bytes);
            return self.queue.push(at, ev);
        }
        let now = self.now;
        let t = Millis(now);
        match ev {
            Ev::Msg { to, from, msg, .. } => {
                if sh.trace.viewer(to) {
                    eprintln!(
                        "{now} v{to} gets from {from}: {}",
                        format!("{msg:?}").chars().take(150).collect::<String>()
                    );
                }
                let v = self.viewer_mut(to);
                if let Some(node) = v.node.as_mut() {
                    if let PeerMessage::Chunk { data, .. } = &msg {
                        v.record.from_peers += u64::from(data.len);
                    }
                    node.message(PeerId(u64::from(from)), msg, t);
                    self.drain(sh, to);
                }
            }
            Ev::Origin {
                to,
                block,
                first,
                bytes,
                ..
            } => {
                if sh.trace.viewer(to) {
                    eprintln!("{now} v{to} gets from the origin: {block:?} {first}.. {bytes} B");
                }
                if let Some(node) = self.viewer_mut(to).node.as_mut() {
                    node.origin(block, first, bytes, t);
                    self.drain(sh, to);
                }
            }
            Ev::Closed { to, from } => {
                let v = self.viewer_mut(to);
                if let Some(node) = v.node.as_mut() {
                    node.disconnected(PeerId(u64::from(from)), t);
                    v.forget(from);
                    self.drain(sh, to);
                    if self.viewer(to).peers.len() < sh.scenario.peers / 2 {
                        self.raise(now, to, Global::FindPeers(to));
                    }
                }
            }
            Ev::Timer { viewer, at } => {
                let v = self.viewer_mut(viewer);
                if v.timer_at != at {
                    return;
                }
                v.timer_at = u64::MAX;
                if let Some(node) = v.node.as_mut() {
                    node.timeout(t);
                    self.drain(sh, viewer);
                }
            }
            Ev::Boundary { viewer, generation } => self.boundary(sh, viewer, generation),
        }
    }

    /// When bytes reaching viewer `to`'s downlink now are in, after what it
    /// is already taking in.
    fn take_in(&mut self, to: u32, bytes: f64) -> u64 {
        let now = self.now as f64;
        let r = self.viewer_mut(to);
        let arrive = r.down_free.max(now) + bytes / r.down;
        r.down_free = arrive;
        arrive.ceil() as u64
    }

    /// Lets viewer `id` act on what it was just told.
    pub(super) fn drain(&mut self, sh: &Shared, id: u32) {
        let now = self.now;
        // A timer that fell due while this input was handled runs now, as a
        // tab's zero-delay timer would, not a millisecond late. Once: a timer
        // still due after it ran waits for the next millisecond.
        let mut ran_due_timer = false;
        let next_timeout = loop {
            loop {
                let Some(node) = self.viewer_mut(id).node.as_mut() else {
                    return;
                };
                let Some(action) = node.poll_action(Millis(now)) else {
                    break;
                };
                self.perform(sh, id, action);
            }
            let Some(node) = self.viewer_mut(id).node.as_mut() else {
                return;
            };
            match node.poll_timeout() {
                Some(at) if at.0 <= now && !ran_due_timer => {
                    ran_due_timer = true;
                    node.timeout(Millis(now));
                }
                // Nothing runs between here and arming the timer.
                next => break next,
            }
        };
        let check = sh.check_every > 0 && self.events.is_multiple_of(sh.check_every);
        let v = self.viewer_mut(id);
        let Some(node) = v.node.as_mut() else {
            return;
        };
        if check {
            node.check_invariants();
        }
        if let Some(at) = next_timeout {
            let at = at.0.max(now + 1);
            if at != v.timer_at {
                v.timer_at = at;
                self.queue.push(at, Ev::Timer { viewer: id, at });
            }
        }
    }

    fn perform(&mut self, sh: &Shared, id: u32, action: Action<Modelled>) {
        let now = self.now;
        if sh.trace.viewer(id) {
            eprintln!(
                "{now} v{id} does {}",
                format!("{action:?}").chars().take(150).collect::<String>()
            );
        }
        match action {
            Action::Send { peer, msg } => {
                let to = peer.0 as u32;
                if !sh.is_present(to) {
                    return;
                }
                let size = msg.wire_len(hashes_wire_len) as f64;
                let s = self.viewer_mut(id);
                if let PeerMessage::Chunk { data, .. } = &msg {
                    s.record.uploaded += u64::from(data.len);
                }
                let (depart, downlink) = if size >= 1024.0 {
                    let depart = s.up_free.max(now as f64) + size / s.up.max(1e-3);
                    s.up_free = depart;
                    (depart, size as u32)
                } else {
                    (now as f64, 0)
                };
                if sh.trace.uplink
                    && let PeerMessage::Chunk { block, index, .. } = &msg
                {
                    eprintln!(
                        "{now} uplink {id} -> {to}: {block:?} {index}, {size} B, last byte leaves {depart:.0}"
                    );
                }
                let at = sh.reach(id, to, depart, now);
                let msg = Ev::Msg {
                    to,
                    from: id,
                    msg,
                    downlink,
                };
                self.mail(sh, at, id, msg);
            }
            Action::FetchFromOrigin {
                block,
                first,
                count,
            } => {
                if sh.trace.origin
                    && let Some(node) = self.viewer(id).node.as_ref()
                {
                    eprintln!(
                        "{now} viewer {id} origin {first}+{count}: {} peers={} sources={:?}",
                        node.describe_block(block, Millis(now)),
                        self.viewer(id).peers.len(),
                        node.sources(Millis(now))
                    );
                }
                let size = sh.layout.info(block).entry.size;
                let bytes: u64 = (first..first + count)
                    .map(|i| telly_proto::wire::chunk_len(size, usize::from(i)) as u64)
                    .sum();
                self.origin_bytes += bytes;
                let origin_latency = sh.scenario.origin_latency_ms as f64;
                let v = self.viewer_mut(id);
                v.record.from_origin += bytes;
                let reach = now as f64 + 2.0 * origin_latency + v.latency;
                let origin = Ev::Origin {
                    to: id,
                    block,
                    first,
                    bytes,
                    through: false,
                };
                self.queue.push(reach.ceil() as u64, origin);
            }
            Action::Load { block } => {
                let size = sh.layout.info(block).entry.size;
                if let Some(node) = self.viewer_mut(id).node.as_mut() {
                    node.loaded(block, size, Millis(now));
                }
            }
            Action::Store { .. } => {}
            Action::Deliver { block } => self.delivered(sh, id, block),
            Action::Disconnect { peer, .. } => {
                let to = peer.0 as u32;
                self.viewer_mut(id).forget(to);
                let at = sh.reach(id, to, now as f64, now);
                self.mail(sh, at, id, Ev::Closed { to, from: id });
            }
        }
    }
}
