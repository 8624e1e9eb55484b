//! Benchmark: verify (SHA-256) then open (AES-256-GCM) sealed 512 KiB blocks,
//! natively, with the same code the provider and native peers use.
//!
//! `--write-fixture DIR` also writes the exact blocks measured (`key.hex`,
//! `blocks/NNN.bin`, `hashes.json` = the sealed blocks' SHA-256 in order,
//! `plain_hashes.json` = their plaintexts' SHA-256) so the browser benchmark
//! opens the same bytes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use telly_media::seal::{seal_block, verify_and_open};
use telly_proto::hash::Sha256Hash;

const BLOCK_BYTES: usize = 512 * 1024;

#[derive(Parser)]
struct Args {
    /// Where to write the result JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the sealed blocks and key here, for the browser benchmark.
    #[arg(long)]
    write_fixture: Option<PathBuf>,
    /// Number of sealed blocks.
    #[arg(long, default_value_t = 32)]
    blocks: usize,
    /// Keep measuring for at least this long.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seed of the deterministic key, nonces and contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.blocks > 0, "--blocks must be at least 1");
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let mut plain_hashes = Vec::with_capacity(args.blocks);
    let sealed: Vec<Vec<u8>> = (0..args.blocks)
        .map(|_| {
            let mut plain = vec![0u8; BLOCK_BYTES];
            rng.fill_bytes(&mut plain);
            let mut nonce = [0u8; 12];
            rng.fill_bytes(&mut nonce);
            plain_hashes.push(Sha256Hash::of(&plain));
            seal_block(&key, nonce, &plain)
        })
        .collect();
    let hashes: Vec<Sha256Hash> = sealed.iter().map(|b| Sha256Hash::of(b)).collect();

    if let Some(dir) = &args.write_fixture {
        write_fixture(dir, &key, &sealed, &hashes, &plain_hashes)?;
    }

    // One untimed pass that also checks every block opens to what was sealed.
    for (i, block) in sealed.iter().enumerate() {
        let plain = verify_and_open(&key, block, &hashes[i])?;
        ensure!(
            Sha256Hash::of(&plain) == plain_hashes[i],
            "block {i} opened wrong"
        );
    }
    let started = Instant::now();
    let mut passes = 0u64;
    let mut checksum = 0u64;
    while passes < 3 || started.elapsed().as_secs_f64() < args.seconds {
        for (block, hash) in sealed.iter().zip(&hashes) {
            let plain = verify_and_open(&key, block, hash)?;
            checksum = checksum.wrapping_add(u64::from(plain[plain.len() / 2]));
        }
        passes += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = (passes as usize * args.blocks * BLOCK_BYTES) as f64;
    let mb_s = bytes / elapsed / 1e6;
    println!(
        "native verify+open: {mb_s:.1} MB/s ({} blocks of {BLOCK_BYTES} bytes, {passes} passes in {elapsed:.2} s, checksum {checksum})",
        args.blocks
    );
    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "native_mb_s": (mb_s * 10.0).round() / 10.0,
            "block_bytes": BLOCK_BYTES,
            "blocks": args.blocks,
            "passes": passes,
            "seconds": elapsed,
            "mb": "10^6 bytes of plaintext",
        });
        std::fs::write(out, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn write_fixture(
    dir: &std::path::Path,
    key: &[u8; 32],
    sealed: &[Vec<u8>],
    hashes: &[Sha256Hash],
    plain_hashes: &[Sha256Hash],
) -> anyhow::Result<()> {
    let blocks_dir = dir.join("blocks");
    std::fs::create_dir_all(&blocks_dir)
        .with_context(|| format!("creating {}", blocks_dir.display()))?;
    std::fs::write(dir.join("key.hex"), hex::encode(key) + "\n")?;
    for (i, block) in sealed.iter().enumerate() {
        std::fs::write(blocks_dir.join(format!("{i:03}.bin")), block)?;
    }
    let hex_list = |hs: &[Sha256Hash]| hs.iter().map(Sha256Hash::to_hex).collect::<Vec<_>>();
    std::fs::write(
        dir.join("hashes.json"),
        serde_json::to_string_pretty(&hex_list(hashes))? + "\n",
    )?;
    std::fs::write(
        dir.join("plain_hashes.json"),
        serde_json::to_string_pretty(&hex_list(plain_hashes))? + "\n",
    )?;
    println!(
        "fixture: {} sealed blocks in {}",
        sealed.len(),
        dir.display()
    );
    Ok(())
}
