//! Turns the vendored o200k vocabulary (`vocab/o200k_base.tiktoken`: a base64
//! token and its rank per line) into the compact arrays the tokenizer embeds.
//! See `src/llm/vocabulary_layout.rs` for the format.

use std::{env, fs, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};

#[path = "src/llm/vocabulary_layout.rs"]
mod vocabulary_layout;

use vocabulary_layout::{EMPTY, SLOT_COUNT, slot_of};

const VOCABULARY: &str = "vocab/o200k_base.tiktoken";

fn main() {
    println!("cargo::rerun-if-changed={VOCABULARY}");
    println!("cargo::rerun-if-changed=src/llm/vocabulary_layout.rs");
    let text = fs::read_to_string(VOCABULARY).expect("reading the o200k vocabulary");

    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for (expected_rank, line) in text.lines().enumerate() {
        let (token, rank) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("line {expected_rank}: no rank"));
        // Ranks run 0, 1, 2, … in the file, so a rank is its line's index.
        assert_eq!(rank.parse::<usize>().ok(), Some(expected_rank), "{line}");
        bytes.extend(STANDARD.decode(token).expect("a base64 token"));
        ends.push(u32::try_from(bytes.len()).expect("under 4 GiB of tokens"));
    }

    let mut slots = vec![EMPTY; SLOT_COUNT];
    let mut start = 0;
    for (rank, &end) in ends.iter().enumerate() {
        let token = &bytes[start..end as usize];
        let mut slot = slot_of(token);
        while slots[slot] != EMPTY {
            slot = (slot + 1) % SLOT_COUNT;
        }
        slots[slot] = u32::try_from(rank).expect("ranks fit a u32");
        start = end as usize;
    }

    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let write = |name: &str, data: &[u8]| {
        fs::write(Path::new(&out).join(name), data).expect("writing to OUT_DIR");
    };
    let little_endian =
        |words: &[u32]| -> Vec<u8> { words.iter().flat_map(|word| word.to_le_bytes()).collect() };
    write("o200k_bytes.bin", &bytes);
    write("o200k_ends.bin", &little_endian(&ends));
    write("o200k_slots.bin", &little_endian(&slots));
}
