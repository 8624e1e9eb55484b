//! Piece-level verification of a sealed block: a binary Merkle tree over its
//! 16 KiB pieces, as BitTorrent v2 (BEP 52) does for files.
//!
//! The signed manifest commits to each block's root, so a peer can check a piece
//! with its proof (the sibling hashes up the tree) and pass it on before the rest
//! of the block has arrived. Leaves and nodes are hashed with distinct prefixes
//! (0x00 and 0x01, as RFC 6962) so that a node can never pass for a leaf. A layer
//! with an odd count is padded with all-zero hashes up to the next power of two.

use sha2::{Digest, Sha256};

use crate::hash::Sha256Hash;

/// Bytes of a piece; the last piece of a block may be shorter.
pub const PIECE_SIZE: usize = 16 * 1024;

const PAD: Sha256Hash = Sha256Hash([0; 32]);

pub fn piece_count(block_len: usize) -> usize {
    block_len.div_ceil(PIECE_SIZE).max(1)
}

pub fn leaf_hash(piece: &[u8]) -> Sha256Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(piece);
    Sha256Hash(h.finalize().into())
}

fn node_hash(left: &Sha256Hash, right: &Sha256Hash) -> Sha256Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Sha256Hash(h.finalize().into())
}

/// The leaves of a block, one per piece (an empty block has one empty piece).
pub fn leaves(block: &[u8]) -> Vec<Sha256Hash> {
    if block.is_empty() {
        return vec![leaf_hash(&[])];
    }
    block.chunks(PIECE_SIZE).map(leaf_hash).collect()
}

/// All layers from the leaves (padded to a power of two) up to the root.
fn layers(leaves: Vec<Sha256Hash>) -> Vec<Vec<Sha256Hash>> {
    let width = leaves.len().next_power_of_two();
    let mut layer = leaves;
    layer.resize(width, PAD);
    let mut out = vec![layer];
    while out.last().map_or(0, Vec::len) > 1 {
        let next = out
            .last()
            .expect("at least one layer")
            .chunks(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
        out.push(next);
    }
    out
}

pub fn root_of_leaves(leaves: Vec<Sha256Hash>) -> Sha256Hash {
    layers(leaves)
        .last()
        .and_then(|top| top.first().copied())
        .expect("a tree has a root")
}

pub fn root(block: &[u8]) -> Sha256Hash {
    root_of_leaves(leaves(block))
}

/// Sibling hashes from the leaf of `piece` up to (not including) the root.
pub fn proof(block: &[u8], piece: usize) -> Option<Vec<Sha256Hash>> {
    let all = layers(leaves(block));
    if piece >= piece_count(block.len()) {
        return None;
    }
    let mut index = piece;
    let mut out = Vec::with_capacity(all.len() - 1);
    for layer in &all[..all.len() - 1] {
        out.push(layer[index ^ 1]);
        index /= 2;
    }
    Some(out)
}

/// True when `data` is piece `piece` of a block of `block_len` bytes whose root is `root`.
pub fn verify_piece(
    root: &Sha256Hash,
    block_len: usize,
    piece: usize,
    data: &[u8],
    proof: &[Sha256Hash],
) -> bool {
    let count = piece_count(block_len);
    if piece >= count {
        return false;
    }
    let expected_len = if piece + 1 == count {
        block_len - piece * PIECE_SIZE
    } else {
        PIECE_SIZE
    };
    let depth = count.next_power_of_two().trailing_zeros() as usize;
    if data.len() != expected_len || proof.len() != depth {
        return false;
    }
    let mut index = piece;
    let mut hash = leaf_hash(data);
    for sibling in proof {
        hash = if index.is_multiple_of(2) {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
        index /= 2;
    }
    &hash == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_piece_root_is_its_leaf() {
        assert_eq!(root(b"hello"), leaf_hash(b"hello"));
        assert_eq!(piece_count(0), 1);
        assert_eq!(piece_count(PIECE_SIZE), 1);
        assert_eq!(piece_count(PIECE_SIZE + 1), 2);
    }

    #[test]
    fn a_flipped_byte_fails_its_piece() {
        let block: Vec<u8> = (0..PIECE_SIZE * 5 + 77)
            .map(|i| (i / PIECE_SIZE * 7 + i * 31) as u8)
            .collect();
        let r = root(&block);
        let p = proof(&block, 3).unwrap();
        let piece = &block[3 * PIECE_SIZE..4 * PIECE_SIZE];
        assert!(verify_piece(&r, block.len(), 3, piece, &p));
        let mut bad = piece.to_vec();
        bad[100] ^= 1;
        assert!(!verify_piece(&r, block.len(), 3, &bad, &p));
        assert!(!verify_piece(&r, block.len(), 2, piece, &p));
        assert!(!verify_piece(&r, block.len(), 9, piece, &p));
    }

    proptest! {
        #[test]
        fn every_piece_verifies(len in 0usize..(PIECE_SIZE * 9), seed in any::<u8>()) {
            let block: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let r = root(&block);
            for i in 0..piece_count(len) {
                let start = i * PIECE_SIZE;
                let end = (start + PIECE_SIZE).min(len);
                let p = proof(&block, i).unwrap();
                prop_assert!(verify_piece(&r, len, i, &block[start..end], &p));
            }
        }
    }
}
