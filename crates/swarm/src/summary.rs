//! What an engine holds, in title time, as the tracker reads it: the spans where
//! every track's blocks are held (a browser tab announces it, the simulator's
//! tracker reads it the same way).

use telly_proto::signal::{HaveSummary, MAX_HAVE_SPANS, Span};
use telly_proto::wire::{BlockId, GoodbyeReason};

use crate::engine::{Engine, PlayState};
use crate::peer::{Peer, PeerId, Phase};
use crate::time::Millis;
use crate::trust::Trust;

/// The size of a host's peer list: the sources it looks for, and the most
/// links it keeps (those others dialled are capped by the host at
/// `max - target`, keeping places for sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    pub target: usize,
    pub max: usize,
}

/// How far ahead of the playhead a block nobody of ours holds sends us
/// looking for more peers, even with sources enough for the rest.
const UNCOVERED_WINDOW_MS: u64 = 20_000;

/// Peers asked for at a time for such a block.
const WIDEN_BY: usize = 2;

/// How long a peer must have asked nothing of us before it may be let go for
/// another ([`Engine::make_room`]). Counting fresh links as idle, each new
/// link pushed out one made a moment before, whose viewer then asked for
/// another: on demand, 1,000 viewers, the origin sent 19 times the title
/// instead of 6.6.
const IDLE_MS: u64 = 10_000;

impl<T: Trust> Engine<T> {
    /// The held spans of title time, at most [`MAX_HAVE_SPANS`] (the longest,
    /// in time order), with the player's position when it is playing.
    pub fn have_summary(&self, playhead_ms: Option<u64>) -> HaveSummary {
        let layout = self.layout();
        let mut per_track: Vec<Vec<Span>> = vec![Vec::new(); layout.track_count()];
        for id in layout.by_time() {
            let info = layout.info(*id);
            if info.is_init || !self.has_block(*id) {
                continue;
            }
            let span = Span {
                start_ms: info.entry.start_ms,
                end_ms: info.entry.start_ms + info.entry.duration_ms,
            };
            let spans = &mut per_track[usize::from(info.track)];
            match spans.last_mut() {
                Some(last) if last.end_ms >= span.start_ms => {
                    last.end_ms = last.end_ms.max(span.end_ms)
                }
                _ => spans.push(span),
            }
        }
        let mut tracks = per_track.into_iter();
        let mut spans = tracks.next().unwrap_or_default();
        for other in tracks {
            spans = intersect(&spans, &other);
        }
        if spans.len() > MAX_HAVE_SPANS {
            spans.sort_by_key(|s| std::cmp::Reverse(s.len_ms()));
            spans.truncate(MAX_HAVE_SPANS);
            spans.sort_by_key(|s| s.start_ms);
        }
        HaveSummary { playhead_ms, spans }
    }

    /// Connected peers holding a block of the window ahead (playhead to
    /// horizon) that we lack: those we can fetch from; `None` when the engine
    /// is not downloading. Hosts size their lists by these (see
    /// [`Engine::peers_to_find`]), not by how many peers are connected.
    pub fn sources(&self, now: Millis) -> Option<usize> {
        if !self.config.download {
            return None;
        }
        Some(self.sources_among(&self.lacking_ahead(now)).unwrap_or(0))
    }

    /// How many peers the host should ask its tracker for now, having let
    /// followers go where the list is full and sources are short. `links` is
    /// the host's link count before this call; the shed peers' `Disconnect`
    /// actions are queued, so the host may not have closed them yet.
    ///
    /// A viewer far into a title fills its peer list with followers that
    /// fetch from it while its own sources, further along, finish and leave;
    /// with the list full it can take no new source and falls back to the
    /// origin for the rest of the title (on demand, 2,000 viewers: two thirds
    /// of the origin's chunks for blocks no peer held went to viewers with a
    /// full list and no source). A follower that loses us finds another
    /// source the way we do. A viewer that lacks nothing ahead sheds nobody:
    /// the peers ahead of it are its sources for later.
    ///
    /// Sources a few seconds ahead count as sources while holding none of
    /// the blocks after theirs: a block due within `UNCOVERED_WINDOW_MS` that
    /// no peer of ours holds has us ask for `WIDEN_BY` more while the list
    /// has room (no follower is let go for it).
    pub fn peers_to_find(&mut self, links: usize, limits: PeerLimits, now: Millis) -> usize {
        let lacking = self.lacking_ahead(now);
        let missing = match self.sources_among(&lacking) {
            Some(sources) => limits.target.saturating_sub(sources),
            None => 0,
        };
        let crowded = (links + missing).saturating_sub(limits.max);
        let shed = self.shed_followers_of(missing.min(crowded), &lacking, now);
        let links = links - shed.min(links);
        // Sources for blocks long past the ones nobody here holds are no
        // help for those: look for holders while the list has room.
        let widen = if self.uncovered_soon(&lacking, now) {
            WIDEN_BY
        } else {
            0
        };
        missing
            .max(widen)
            .max(limits.target.saturating_sub(links))
            .min(limits.max.saturating_sub(links))
    }

    /// Disconnects up to `count` ready peers that hold nothing we lack ahead,
    /// those we serve least first (idle ones before any we are sending to),
    /// with a `TooManyPeers` goodbye. Returns how many went.
    pub fn shed_followers(&mut self, count: usize, now: Millis) -> usize {
        let lacking = self.lacking_ahead(now);
        self.shed_followers_of(count, &lacking, now)
    }

    /// Whether we play, or wait to play on, with no source for anything we
    /// lack ahead: every peer we have is behind us, as for a viewer that
    /// jumped past everyone else, or that just jumped at all (its peers are
    /// where it was). A host says so when it dials, and a peer with every
    /// place taken then lets an idle peer go to take us
    /// ([`Engine::make_room`]). Counted only while playing, a jumper asked
    /// the tracker as it jumped and was offered only viewers with a free
    /// place, which in a grown audience are newcomers at the title's start
    /// (on demand, 2,500 viewers over an hour: in 206 answers within 10 s of
    /// a jump, 1.3 of 23 offered held any of its next minute; answers open
    /// to full holders offered 10-37).
    pub fn stranded(&self, now: Millis) -> bool {
        matches!(self.play, PlayState::Playing | PlayState::Stalled) && self.sources(now) == Some(0)
    }

    /// Whether a peer we neither serve nor fetch from is connected: the kind
    /// [`Engine::make_room`] lets go. Cheap, for a tracker's first look.
    pub fn has_idle_peer(&self, now: Millis) -> bool {
        self.peers.values().any(|p| is_idle(p, now))
    }

    /// Lets one peer go to take a new one with every place taken: the least
    /// served of those idle (no slot, nothing queued or in flight, nothing
    /// asked of us for `IDLE_MS`) that hold nothing we lack ahead, with a
    /// `TooManyPeers` goodbye. Returns whether one went.
    ///
    /// A peer the tracker sends our way asked for us because we hold what
    /// it lacks. Viewers that jumped ahead of everyone else are each the
    /// only source of the next minute for the others near them; full of
    /// followers they had stopped serving, each refused the others, and
    /// each took the rest of the title from the origin (on demand, 1,000
    /// viewers: three such viewers 21 % of the origin's bytes).
    pub fn make_room(&mut self, now: Millis) -> bool {
        let lacking = self.lacking_ahead(now);
        let idlest = self
            .peers
            .iter()
            .filter(|(_, p)| is_idle(p, now) && !is_source(p, &lacking))
            .map(|(id, p)| (p.recent_up_by(now) as u64, *id))
            .min();
        let Some((_, id)) = idlest else {
            return false;
        };
        self.drop_peer(id, GoodbyeReason::TooManyPeers);
        true
    }

    fn shed_followers_of(&mut self, count: usize, lacking: &[usize], now: Millis) -> usize {
        if count == 0 || lacking.is_empty() {
            return 0;
        }
        let mut followers: Vec<(bool, u64, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.phase == Phase::Ready && !is_source(p, lacking))
            .map(|(id, p)| {
                let served = p.unchoked || !p.queue.is_empty();
                (served, p.recent_up_by(now) as u64, *id)
            })
            .collect();
        followers.sort_unstable();
        let shed = followers.len().min(count);
        for &(_, _, id) in &followers[..shed] {
            self.drop_peer(id, GoodbyeReason::TooManyPeers);
        }
        shed
    }

    /// Whether a block of `lacking` (in time order) within
    /// `UNCOVERED_WINDOW_MS` of the playhead is announced by none of our peers.
    fn uncovered_soon(&self, lacking: &[usize], now: Millis) -> bool {
        let until = self.position(now) + UNCOVERED_WINDOW_MS;
        let layout = self.layout();
        lacking
            .iter()
            .take_while(|&&b| layout.deadline_time(BlockId(b as u32)) < until)
            .any(|&b| self.avail[b] == 0)
    }

    /// Sources among the peers, when there is something `lacking` ahead.
    fn sources_among(&self, lacking: &[usize]) -> Option<usize> {
        if lacking.is_empty() {
            return None;
        }
        Some(
            self.peers
                .values()
                .filter(|p| is_source(p, lacking))
                .count(),
        )
    }

    /// Blocks of the window ahead (playhead to horizon) that we lack; none
    /// when the engine only shares, since it will fetch nothing.
    fn lacking_ahead(&self, now: Millis) -> Vec<usize> {
        if !self.config.download {
            return Vec::new();
        }
        let layout = self.layout();
        let window = &layout.by_time()[layout.window(self.position(now), self.config.horizon_ms)];
        window
            .iter()
            .filter(|b| !self.has_block(**b))
            .map(|b| b.0 as usize)
            .collect()
    }
}

/// Neither served nor asked: no slot or wait for one, nothing queued or in flight, and
/// nothing asked of us for `IDLE_MS` (a new link counts from its start).
fn is_idle(peer: &Peer, now: Millis) -> bool {
    peer.phase == Phase::Ready
        && !peer.unchoked
        && peer.refused.is_none()
        && peer.queue.is_empty()
        && peer.inflight.is_empty()
        && now.since(peer.last_request) >= IDLE_MS
}

fn is_source(peer: &Peer, lacking: &[usize]) -> bool {
    peer.phase == Phase::Ready && lacking.iter().any(|&b| peer.have.get(b))
}

/// The parts of title time covered by both lists (each sorted and disjoint).
fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let start_ms = a[i].start_ms.max(b[j].start_ms);
        let end_ms = a[i].end_ms.min(b[j].end_ms);
        if start_ms < end_ms {
            out.push(Span { start_ms, end_ms });
        }
        if a[i].end_ms < b[j].end_ms {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Span, intersect};

    fn spans(list: &[(u64, u64)]) -> Vec<Span> {
        list.iter()
            .map(|&(start_ms, end_ms)| Span { start_ms, end_ms })
            .collect()
    }

    #[test]
    fn a_span_counts_only_where_every_track_is_held() {
        let video = spans(&[(0, 4_000), (6_000, 10_000)]);
        let audio = spans(&[(0, 2_000), (3_000, 8_000)]);
        assert_eq!(
            intersect(&video, &audio),
            spans(&[(0, 2_000), (3_000, 4_000), (6_000, 8_000)])
        );
        assert_eq!(intersect(&video, &[]), Vec::new());
        assert_eq!(intersect(&video, &spans(&[(4_000, 6_000)])), Vec::new());
    }
}
