//! The player's decisions as plain functions of its inputs: which blocks to get
//! next, which buffered media to drop, and how block sets map to time ranges.
//! No browser types here, so it is tested natively.

use telly_proto::{BlockEntry, Manifest};

/// A half-open time range in milliseconds.
pub type MsRange = (u64, u64);

/// How far ahead of the playhead blocks are fetched.
pub const AHEAD_MS: u64 = 30_000;
/// Media further than this behind the playhead is removed from the buffers.
pub const KEEP_BEHIND_S: f64 = 60.0;
/// Media further than this ahead of the playhead (left over from an earlier
/// position) is removed from the buffers.
pub const KEEP_AHEAD_S: f64 = 90.0;
/// Removing less than this is not worth a SourceBuffer operation.
pub const MIN_EVICTION_S: f64 = 2.0;

/// One block the player should get next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub track: usize,
    pub index: usize,
    pub start_ms: u64,
}

/// The blocks to fetch next, earliest deadline first across tracks: those of
/// every track that overlap `[playhead_ms, playhead_ms + ahead_ms)` and for which
/// `needed(track, index)` holds, at most `limit` of them.
pub fn next_wants(
    manifest: &Manifest,
    playhead_ms: u64,
    ahead_ms: u64,
    limit: usize,
    needed: impl Fn(usize, usize) -> bool,
) -> Vec<Want> {
    if limit == 0 {
        return Vec::new();
    }
    let horizon = playhead_ms.saturating_add(ahead_ms);
    let mut wants = Vec::new();
    for (track, t) in manifest.tracks.iter().enumerate() {
        let Some(first) = manifest.block_at(track, playhead_ms) else {
            continue;
        };
        for (index, block) in t.blocks.iter().enumerate().skip(first) {
            if block.start_ms >= horizon && index != first {
                break;
            }
            if needed(track, index) {
                wants.push(Want {
                    track,
                    index,
                    start_ms: block.start_ms,
                });
            }
        }
    }
    wants.sort_by_key(|w| (w.start_ms, w.track, w.index));
    wants.truncate(limit);
    wants
}

/// Whether a block starting at `start_ms` is worth keeping in memory for a
/// playhead at `playhead_ms` (a little behind, up to the fetch horizon and a bit).
pub fn in_keep_window(block: &BlockEntry, playhead_ms: u64) -> bool {
    let end = block.start_ms + block.duration_ms;
    end + 2_000 > playhead_ms && block.start_ms < playhead_ms + AHEAD_MS + 10_000
}

/// Ranges of buffered media to remove for a playhead at `playhead_s`: what lies
/// more than [`KEEP_BEHIND_S`] behind it or [`KEEP_AHEAD_S`] ahead of it.
/// `buffered` is sorted and disjoint, in seconds.
pub fn evictions(buffered: &[(f64, f64)], playhead_s: f64) -> Vec<(f64, f64)> {
    evictions_with(buffered, playhead_s, KEEP_BEHIND_S, KEEP_AHEAD_S)
}

pub fn evictions_with(
    buffered: &[(f64, f64)],
    playhead_s: f64,
    keep_behind_s: f64,
    keep_ahead_s: f64,
) -> Vec<(f64, f64)> {
    let behind = playhead_s - keep_behind_s;
    let ahead = playhead_s + keep_ahead_s;
    let mut out = Vec::new();
    for &(start, end) in buffered {
        if start < behind {
            let cut_end = end.min(behind);
            if cut_end - start >= MIN_EVICTION_S {
                out.push((start, cut_end));
            }
        }
        if end > ahead {
            let cut_start = start.max(ahead);
            if end - cut_start >= MIN_EVICTION_S {
                out.push((cut_start, end));
            }
        }
    }
    out
}

/// How long the playhead may stand still while the element plays with media
/// under and ahead of it before the player restarts decoding there.
pub const STUCK_RESEEK_MS: f64 = 2_000.0;
/// Media the element must hold past the playhead for a re-seek: a stall with
/// less is a wait for data, which only the data ends.
const RESEEK_MIN_AHEAD_S: f64 = 1.0;
/// How far behind the playhead a refused block keeps it where it is.
const REFUSED_LOOKBACK_MS: u64 = 6_000;

/// Whether to seek a playhead that has stood still at `playhead_s` for
/// `still_ms` while playing, in place. Chromium's audio clock plays on for up
/// to 3 s when only video runs dry, so the playhead can pass a video block
/// that came late; the video decoder then waits at that hole for good, though
/// the element holds media at the playhead. A seek to where the playhead is
/// restarts decoding at the keyframe before it: nothing ahead is skipped.
/// Not when a block the player refused (a corrupt copy) lies just behind:
/// playback stops at content the provider cannot serve intact.
pub fn reseek_in_place(
    buffered: &[(f64, f64)],
    playhead_s: f64,
    still_ms: f64,
    refused_behind: impl Fn(MsRange) -> bool,
) -> bool {
    if still_ms < STUCK_RESEEK_MS {
        return false;
    }
    let under_and_ahead = buffered
        .iter()
        .any(|&(start, end)| start <= playhead_s && end - playhead_s >= RESEEK_MIN_AHEAD_S);
    let playhead_ms = (playhead_s * 1000.0) as u64;
    under_and_ahead
        && !refused_behind((
            playhead_ms.saturating_sub(REFUSED_LOOKBACK_MS),
            playhead_ms + 1,
        ))
}

/// Media a waiting player wants ahead of its playhead before it plays on, as
/// Shaka Player's `rebufferingGoal`: the element resumes at its first frame
/// past the playhead, and after a jump just before a block's end it stalled
/// again as soon as that block ran out. The swarm engine is told the same
/// (`telly_swarm::Config::resume_goal_ms`) and fetches what it covers together.
pub const RESUME_GOAL_S: f64 = 1.0;
/// How long the player holds playback for its goal at most: a goal never
/// reached (a buffer the browser keeps full, a gap at a fragment edge) must
/// not keep it from playing what it has.
pub const MAX_HOLD_MS: f64 = 5_000.0;

/// Whether a player waiting at `playhead_s` may play on: it holds
/// [`RESUME_GOAL_S`] of media ahead, or everything up to the title's end
/// (less a frame's slack: the last range may end a little short of it).
pub fn holds_resume_goal(buffered: &[(f64, f64)], playhead_s: f64, duration_s: f64) -> bool {
    let to_end = (duration_s - playhead_s - 0.1).max(0.0);
    ahead_of(buffered, playhead_s) >= RESUME_GOAL_S.min(to_end)
}

/// Whether time `t` (seconds) lies in one of `ranges`.
pub fn covers(ranges: &[(f64, f64)], t: f64) -> bool {
    ranges.iter().any(|&(s, e)| s <= t && t < e)
}

/// Seconds of media in `ranges` from `t` on without a gap; a playhead a
/// frame short of a range's start (0.1 s) is at it.
pub fn ahead_of(ranges: &[(f64, f64)], t: f64) -> f64 {
    ranges
        .iter()
        .find(|&&(start, end)| start <= t + 0.1 && t < end)
        .map_or(0.0, |&(_, end)| end - t)
}

/// Whether a block's media is in `buffered`: its middle is, which tolerates the
/// small gaps at fragment edges that audio frame boundaries leave.
pub fn block_buffered(block: &BlockEntry, buffered: &[(f64, f64)]) -> bool {
    let mid = (block.start_ms as f64 + block.duration_ms as f64 / 2.0) / 1000.0;
    covers(buffered, mid)
}

/// The time ranges covered by the blocks of `blocks` for which `held` holds,
/// contiguous blocks merged.
pub fn held_ranges(blocks: &[BlockEntry], held: impl Fn(&BlockEntry) -> bool) -> Vec<MsRange> {
    let mut out: Vec<MsRange> = Vec::new();
    for block in blocks.iter().filter(|b| held(b)) {
        let (start, end) = (block.start_ms, block.start_ms + block.duration_ms);
        match out.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// The intersection of two sorted lists of disjoint ranges.
pub fn intersect(a: &[MsRange], b: &[MsRange]) -> Vec<MsRange> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if start < end {
            out.push((start, end));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Where every track's blocks are held: the time a viewer can play from storage.
pub fn held_ranges_all_tracks(
    manifest: &Manifest,
    held: impl Fn(&BlockEntry) -> bool,
) -> Vec<MsRange> {
    let mut tracks = manifest.tracks.iter();
    let Some(first) = tracks.next() else {
        return Vec::new();
    };
    let mut acc = held_ranges(&first.blocks, &held);
    for track in tracks {
        acc = intersect(&acc, &held_ranges(&track.blocks, &held));
    }
    acc
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_player_plays_on_with_a_second_ahead_or_the_rest_of_the_title() {
        let duration = 60.0;
        // A jump to 0.2 s before the end of the only block held.
        assert!(!holds_resume_goal(&[(20.0, 22.0)], 21.8, duration));
        assert!(holds_resume_goal(&[(20.0, 24.0)], 21.8, duration));
        assert!(holds_resume_goal(&[(20.0, 22.0)], 20.5, duration));
        assert!(!holds_resume_goal(&[], 20.5, duration));
        // Near the end, what is left is enough, though it ends a frame short.
        assert!(holds_resume_goal(&[(58.0, 59.96)], 59.5, duration));
        assert!(!holds_resume_goal(&[(58.0, 59.6)], 59.5, duration));
    }

    #[test]
    fn media_ahead_runs_to_the_first_gap() {
        let ranges = [(0.0, 4.0), (6.0, 10.0)];
        assert_eq!(ahead_of(&ranges, 1.0), 3.0);
        assert_eq!(ahead_of(&ranges, 4.0), 0.0);
        assert_eq!(ahead_of(&ranges, 5.95), 4.05);
        assert_eq!(ahead_of(&[], 1.0), 0.0);
    }
    use telly_proto::manifest::MANIFEST_VERSION;
    use telly_proto::{KeyId, Sha256Hash, Track, TrackKind};

    fn blocks(durations: &[u64], salt: u8) -> Vec<BlockEntry> {
        let mut start = 0;
        durations
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let b = BlockEntry {
                    start_ms: start,
                    duration_ms: d,
                    size: 1000,
                    sha256: Sha256Hash::of(&[salt, i as u8]),
                    piece_root: Sha256Hash::of(&[salt, i as u8, 1]),
                };
                start += d;
                b
            })
            .collect()
    }

    fn track(kind: TrackKind, durations: &[u64], salt: u8) -> Track {
        Track {
            kind,
            codec: "x".into(),
            mime: "video/mp4".into(),
            bandwidth: 1,
            width: None,
            height: None,
            init: blocks(&[0], salt + 100)[0].clone(),
            blocks: blocks(durations, salt),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            title_id: "t".into(),
            title: "t".into(),
            duration_ms: 60_000,
            key_id: KeyId([0; 16]),
            tracks: vec![
                track(TrackKind::Video, &[2000; 30], 1),
                track(TrackKind::Audio, &[3000; 20], 2),
            ],
            published_at: 0,
        }
    }

    #[test]
    fn wants_cover_the_window_earliest_first_across_tracks() {
        let m = manifest();
        let wants = next_wants(&m, 0, 6_000, 100, |_, _| true);
        let got: Vec<_> = wants.iter().map(|w| (w.track, w.index)).collect();
        assert_eq!(got, vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]);
    }

    #[test]
    fn wants_skip_held_blocks_and_respect_the_limit() {
        let m = manifest();
        let wants = next_wants(&m, 10_500, 30_000, 3, |t, i| !(t == 0 && i == 5));
        let got: Vec<_> = wants.iter().map(|w| (w.track, w.index)).collect();
        // Video block 5 (10–12 s) is held; audio block 3 (9–12 s) covers the playhead.
        assert_eq!(got, vec![(1, 3), (0, 6), (1, 4)]);
        assert!(next_wants(&m, 0, 30_000, 0, |_, _| true).is_empty());
    }

    #[test]
    fn wants_after_a_seek_start_at_the_new_position() {
        let m = manifest();
        let wants = next_wants(&m, 50_000, 4_000, 10, |_, _| true);
        assert!(wants.iter().all(|w| w.start_ms + 3_000 > 50_000));
        assert_eq!(wants[0].start_ms, 48_000);
        // Past the end: the last block of each track.
        let wants = next_wants(&m, 99_000, 4_000, 10, |_, _| true);
        let got: Vec<_> = wants.iter().map(|w| (w.track, w.index)).collect();
        assert_eq!(got, vec![(1, 19), (0, 29)]);
    }

    #[test]
    fn evictions_trim_far_behind_and_far_ahead() {
        assert!(evictions(&[(0.0, 100.0)], 50.0).is_empty());
        assert_eq!(evictions(&[(0.0, 100.0)], 90.0), vec![(0.0, 30.0)]);
        assert_eq!(
            evictions(&[(0.0, 10.0), (200.0, 300.0)], 20.0),
            vec![(200.0, 300.0)]
        );
        // A sliver is not worth a remove.
        assert!(evictions(&[(29.5, 100.0)], 90.0).is_empty());
    }

    #[test]
    fn a_playhead_stuck_with_media_under_it_is_reseeked_and_one_waiting_for_data_is_not() {
        let buffered = [(0.0, 10.0), (12.0, 42.0)];
        let nothing_refused = |_: MsRange| false;
        // Playing normally, or not stuck for long: nothing.
        assert!(!reseek_in_place(&buffered, 12.07, 500.0, nothing_refused));
        // Stuck with media under and ahead of it: restart decoding there.
        assert!(reseek_in_place(&buffered, 12.07, 2_500.0, nothing_refused));
        // Waiting for data (in a hole, or little ahead): no.
        assert!(!reseek_in_place(&buffered, 10.5, 10_000.0, nothing_refused));
        assert!(!reseek_in_place(
            &[(0.0, 10.3)],
            10.0,
            10_000.0,
            nothing_refused
        ));
        // A refused block just behind keeps it where it is; one long past does not.
        let refused_at = |block: MsRange| move |(from, to): MsRange| block.0 < to && from < block.1;
        assert!(!reseek_in_place(
            &buffered,
            12.07,
            9_000.0,
            refused_at((10_000, 12_000))
        ));
        assert!(reseek_in_place(
            &buffered,
            30.0,
            9_000.0,
            refused_at((10_000, 12_000))
        ));
    }

    #[test]
    fn buffered_means_the_middle_is_buffered() {
        let b = &blocks(&[2000, 2000], 1)[1]; // 2–4 s
        assert!(block_buffered(b, &[(2.05, 3.98)]));
        assert!(!block_buffered(b, &[(0.0, 2.9)]));
        assert!(!block_buffered(b, &[]));
    }

    #[test]
    fn held_ranges_merge_and_intersect_across_tracks() {
        let m = manifest();
        // Video holds 0–10 s and 20–24 s; audio holds 0–6 s and 18–30 s.
        let held = |b: &BlockEntry| {
            let s = b.start_ms;
            let video = b.duration_ms == 2000 && (s < 10_000 || (20_000..24_000).contains(&s));
            let audio = b.duration_ms == 3000 && (s < 6_000 || (18_000..30_000).contains(&s));
            video || audio
        };
        assert_eq!(
            held_ranges(&m.tracks[0].blocks, held),
            vec![(0, 10_000), (20_000, 24_000)]
        );
        assert_eq!(
            held_ranges_all_tracks(&m, held),
            vec![(0, 6_000), (20_000, 24_000)]
        );
        assert!(held_ranges_all_tracks(&m, |_| false).is_empty());
    }

    #[test]
    fn intersect_handles_touching_and_nested_ranges() {
        assert_eq!(intersect(&[(0, 10)], &[(10, 20)]), vec![]);
        assert_eq!(
            intersect(&[(0, 100)], &[(10, 20), (30, 40)]),
            vec![(10, 20), (30, 40)]
        );
        assert_eq!(
            intersect(&[(0, 15), (25, 35)], &[(10, 30)]),
            vec![(10, 15), (25, 30)]
        );
    }
}
