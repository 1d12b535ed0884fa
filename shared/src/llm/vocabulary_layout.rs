//! The compact form of the o200k vocabulary, as `build.rs` writes it and the
//! tokenizer reads it. Three little-endian arrays, embedded in the binary:
//! - `o200k_bytes.bin`: every token's bytes, in rank order, back to back;
//! - `o200k_ends.bin`: a `u32` per rank, where its bytes end (a rank starts
//!   where the one before ends);
//! - `o200k_slots.bin`: an open-addressing index from bytes to rank, a `u32`
//!   per slot, `EMPTY` where no token sits, probed linearly from `slot_of`.
//!
//! About 4 MB in all, read in place: no start-up parse, and only the pages
//! that lookups touch become resident.

/// 2^19 slots for 199,998 tokens: under 40% full, so probes stay short.
pub const SLOT_BITS: u32 = 19;
pub const SLOT_COUNT: usize = 1 << SLOT_BITS;
pub const EMPTY: u32 = u32::MAX;

/// The first slot to probe for a token: an Fx-style multiply-rotate hash over
/// 8-byte words, taking the well-mixed top bits of the last product.
pub fn slot_of(bytes: &[u8]) -> usize {
    const SEED: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    let mut hash = mix(0, bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word: [u8; 8] = word.try_into().expect("chunks_exact(8) yields 8 bytes");
        hash = mix(hash, u64::from_le_bytes(word));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        hash = mix(hash, u64::from_le_bytes(word));
    }
    (hash >> (64 - SLOT_BITS)) as usize
}
