//! What a host may change while the engine runs: whether it downloads, its
//! upload cap, the grant it presents, and a peer whose bytes could not be read.

use telly_proto::wire::{BlockId, GoodbyeReason};

use crate::engine::Engine;
use crate::peer::PeerId;
use crate::trust::Trust;

impl<T: Trust> Engine<T> {
    /// Starts or stops fetching. A tab that shares a title it is not watching
    /// serves what it holds and fetches nothing; opening the title turns
    /// fetching on. Chunks already asked for still arrive and are kept.
    pub fn set_downloading(&mut self, download: bool) {
        if self.config.download != download {
            self.config.download = download;
            self.dirty_plan = true;
        }
    }

    /// The viewer's upload cap (bytes/s) for this engine; one peer never gets
    /// more than the configured per-peer share of it.
    pub fn set_upload_cap(&mut self, bytes_per_second: u64) {
        self.config.upload_cap = bytes_per_second;
        self.dirty_upload = true;
    }

    /// The grant presented to peers from now on (a fresher one before expiry).
    /// Peers already admitted keep the connection.
    pub fn set_grant(&mut self, grant: T::Grant) {
        self.grant = grant;
    }

    /// The host could not decode what `peer` sent: a protocol violation, so the
    /// peer is dropped and banned like one that broke the protocol in a message.
    pub fn handle_undecodable(&mut self, peer: PeerId) {
        self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
    }
}

impl<T: Trust> Engine<T> {
    /// The chunks of a held block still kept in memory, if it is.
    pub fn resident_chunks(&self, block: BlockId) -> Option<&[T::Chunk]> {
        self.resident
            .get(&block)
            .map(|(_, chunks, _)| chunks.as_slice())
    }
}
