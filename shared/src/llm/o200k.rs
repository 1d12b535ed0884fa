//! OpenAI's `o200k_base` byte-pair encoding (GPT-4o and later), over the
//! compact vocabulary `build.rs` embeds. tiktoken-rs builds the same
//! vocabulary into three hash maps of owned byte strings: some 40 MB of heap
//! and 140 ms at start-up, where this reads 4 MB of static arrays in place.
//! A test checks it against tiktoken-rs token for token.

use std::{cmp::Reverse, collections::BinaryHeap, sync::LazyLock};

use fancy_regex::Regex;

use super::vocabulary_layout::{EMPTY, SLOT_COUNT, slot_of};

static TOKEN_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_bytes.bin"));
static TOKEN_ENDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_ends.bin"));
static SLOTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_slots.bin"));

/// How o200k splits text into pieces before merging bytes: words with their
/// leading space or mark and their contractions, numbers of up to three
/// digits, punctuation runs, line breaks, and whitespace.
const PIECES: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

static PIECE_PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(PIECES).expect("the o200k pattern compiles"));

/// Compiles the pattern now, so the first request does not wait for it.
pub fn warm_up() {
    LazyLock::force(&PIECE_PATTERN);
}

/// The token ranks of `text`, as tiktoken's `encode_ordinary` gives them
/// (special tokens such as `<|endoftext|>` are plain text here).
pub fn encode(text: &str) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(text.len() / 4 + 1);
    let mut encoded = 0;
    for piece in PIECE_PATTERN.find_iter(text) {
        // fancy-regex bounds its backtracking; should a piece hit that bound,
        // the rest of the text counts a token per byte: an over-estimate,
        // never a failure.
        let Ok(piece) = piece else {
            tokens.extend(
                text.as_bytes()[encoded..]
                    .iter()
                    .map(|&byte| byte_rank(byte)),
            );
            break;
        };
        encode_piece(piece.as_str().as_bytes(), &mut tokens);
        encoded = piece.end();
    }
    tokens
}

pub fn count(text: &str) -> usize {
    encode(text).len()
}

fn word(array: &[u8], index: usize) -> u32 {
    let at = index * 4;
    u32::from_le_bytes(array[at..at + 4].try_into().expect("4 bytes"))
}

fn token_bytes(rank: u32) -> &'static [u8] {
    let rank = rank as usize;
    let start = if rank == 0 {
        0
    } else {
        word(TOKEN_ENDS, rank - 1)
    };
    &TOKEN_BYTES[start as usize..word(TOKEN_ENDS, rank) as usize]
}

fn rank_of(bytes: &[u8]) -> Option<u32> {
    let mut slot = slot_of(bytes);
    loop {
        match word(SLOTS, slot) {
            EMPTY => return None,
            rank if token_bytes(rank) == bytes => return Some(rank),
            _ => slot = (slot + 1) % SLOT_COUNT,
        }
    }
}

/// Every single byte is a token of its own in a byte-level encoding.
fn byte_rank(byte: u8) -> u32 {
    rank_of(&[byte]).expect("every byte is a token")
}

/// Byte-pair merging: start from single bytes and merge the adjacent pair with
/// the lowest rank, the leftmost of equals, until no adjacent pair is a
/// token. A heap with lazy deletion makes this O(n log n), so a long piece
/// (a 256 KiB run of `=` is one piece) costs no more than its length.
fn encode_piece(piece: &[u8], tokens: &mut Vec<u32>) {
    if let Some(rank) = rank_of(piece) {
        tokens.push(rank);
        return;
    }
    let len = piece.len();
    // Parts are ranges of `piece`; `next[start]` is where the part starting at
    // `start` ends, and `REMOVED` once that start has been merged away.
    const REMOVED: usize = usize::MAX;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut previous: Vec<usize> = (0..len).map(|start| start.wrapping_sub(1)).collect();
    // Candidates: (rank, start, end) of two adjacent parts, lowest rank first,
    // then leftmost. One goes stale when either of its parts changes.
    let mut candidates = BinaryHeap::with_capacity(len);
    let offer = |candidates: &mut BinaryHeap<_>, start: usize, end: usize| {
        if let Some(rank) = rank_of(&piece[start..end]) {
            candidates.push(Reverse((rank, start, end)));
        }
    };
    for start in 0..len - 1 {
        offer(&mut candidates, start, start + 2);
    }
    while let Some(Reverse((_, start, end))) = candidates.pop() {
        let middle = next[start];
        let current = middle != REMOVED && middle < len && next[middle] == end;
        if !current {
            continue;
        }
        next[start] = end;
        next[middle] = REMOVED;
        if end < len {
            previous[end] = start;
            offer(&mut candidates, start, next[end]);
        }
        if start > 0 {
            offer(&mut candidates, previous[start], end);
        }
    }
    let mut start = 0;
    while start < len {
        let end = next[start];
        tokens.push(rank_of(&piece[start..end]).expect("every part is a token"));
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> Vec<u32> {
        tiktoken_rs::o200k_base_singleton().encode_ordinary(text)
    }

    fn assert_same_as_tiktoken(text: &str) {
        let ours = encode(text);
        let theirs = reference(text);
        assert!(
            ours == theirs,
            "{text:?}:\n ours {ours:?}\n tiktoken {theirs:?}"
        );
    }

    #[test]
    fn every_token_is_found_at_its_own_rank() {
        let count = TOKEN_ENDS.len() / 4;
        assert_eq!(count, 199_998);
        for rank in 0..count as u32 {
            assert_eq!(rank_of(token_bytes(rank)), Some(rank));
        }
        assert_eq!(rank_of(b"no such token, surely not"), None);
    }

    #[test]
    fn matches_tiktoken_on_written_text() {
        for text in [
            "",
            "Hello, world!",
            "What is a decorator? And how do I write one in Python with arguments?",
            "I'LL say it's what they'd've DONE; we're sure you've\tbeen 'there'.",
            "  leading, trailing and   inner   spaces   ",
            "line\nbreaks\r\n\r\nand \n \n  indented\n\tcode:\n    return 1\n",
            "numbers 1 12 123 1234 12345 3.14159 -42 1e10 0x1F 2026-11-28",
            "déjà vu, naïve façade, Straße, ĲSSELMEER, ΑΘΗΝΑ αθηνα",
            "日本語のテキストと中文文本，还有한국어 텍스트。",
            "emoji 👩‍💻🚀🎉 and flags 🇫🇷🇯🇵 and ✓ ✗ →",
            "مرحبا بالعالم — שלום עולם — नमस्ते दुनिया",
            "fn main() { println!(\"{}\", x.map(|v| v * 2)); } // <|endoftext|>",
            "https://example.com/path?q=1&r=two#frag user@example.org",
            "=====\n-----\n*****\n/////\n\\\\\\\\",
            "a\u{0301}\u{0302} e\u{0308} combining marks",
            "\u{00a0}non-breaking\u{2003}em\u{3000}ideographic spaces",
        ] {
            assert_same_as_tiktoken(text);
        }
        assert_same_as_tiktoken(include_str!("../../../README.md"));
        assert_same_as_tiktoken(include_str!("o200k.rs"));
    }

    #[test]
    fn matches_tiktoken_on_generated_text() {
        // Deterministic text from a small LCG over characters of every class
        // the pattern tells apart, so piece boundaries fall everywhere.
        const ALPHABET: &[char] = &[
            'a', 'e', 's', 't', 'Q', 'Z', 'é', 'É', 'ß', 'ж', 'Ж', '中', 'ア', '한', '🙂',
            '\u{301}', '0', '7', '٣', '½', ' ', ' ', ' ', '\t', '\n', '\r', '\u{a0}', '\'', '.',
            ',', '/', '-', '_', '(', '"', '$', '=', '*',
        ];
        let mut state: u64 = 20_261_128;
        for length in [1, 2, 3, 5, 8, 13, 40, 200, 1_000] {
            for _ in 0..200 {
                let text: String = (0..length)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        ALPHABET[(state >> 33) as usize % ALPHABET.len()]
                    })
                    .collect();
                assert_same_as_tiktoken(&text);
            }
        }
    }

    #[test]
    fn long_pieces_merge_like_tiktoken() {
        // One piece each, long enough for tiktoken's heap-based path.
        for text in [
            "=".repeat(5_000),
            "ab".repeat(3_000),
            "-=".repeat(2_500) + "\n",
            "🙂".repeat(700),
            "x".repeat(4_097),
        ] {
            assert_same_as_tiktoken(&text);
        }
    }

    #[test]
    fn a_body_sized_run_is_counted_without_failing() {
        // 256 KiB, the default body limit, of what makes the longest pieces.
        for text in ["=".repeat(256 * 1024), " ".repeat(256 * 1024) + "x"] {
            let tokens = count(&text);
            assert!((1..=text.len()).contains(&tokens), "{tokens}");
        }
    }
}
