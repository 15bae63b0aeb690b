//! Byte search for short spans (SWAR: eight bytes per step in a `u64`, no `unsafe`).
//!
//! Header fields, components and segment prefixes are a few to a few dozen bytes long; at that
//! size a call into `memchr` (runtime CPU dispatch, vector setup) costs more than it saves, and
//! a byte-at-a-time loop costs about two cycles a byte. Invariant: every function returns
//! exactly what the naive byte loop returns (checked by the property tests below).

/// 0x01 in every byte.
const ONES: u64 = 0x0101_0101_0101_0101;
/// 0x7F in every byte.
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
/// 0x80 in every byte.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// 0x80 in each byte of `word` that equals the byte splatted in `splat`, 0 elsewhere. Exact
/// (no carries between bytes), so every set bit is a real match.
#[inline(always)]
fn equal_bytes(word: u64, splat: u64) -> u64 {
    let x = word ^ splat;
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// Index of the first byte of `haystack[from..]` equal to any of `needles`, as an index into
/// `haystack`; `None` when there is none (or `from` is past the end).
#[inline(always)]
pub(crate) fn find_any<const N: usize>(
    haystack: &[u8],
    from: usize,
    needles: [u8; N],
) -> Option<usize> {
    let splats = needles.map(|n| u64::from(n) * ONES);
    let rest = haystack.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut base = from;
    for chunk in chunks.by_ref() {
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        let mask = splats.iter().fold(0, |m, &s| m | equal_bytes(word, s));
        if mask != 0 {
            return Some(base + (mask.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|b| needles.contains(b))
        .map(|i| base + i)
}

/// Index of the first `needle` in `haystack[from..]` (an index into `haystack`).
#[inline(always)]
pub(crate) fn find(haystack: &[u8], from: usize, needle: u8) -> Option<usize> {
    find_any(haystack, from, [needle])
}

/// Index of the `k`-th (1-based) `needle` in `haystack`; `None` when there are fewer or `k`
/// is 0. Counts a whole word's matches at once, so runs of empty fields (`||||`) cost one
/// step per eight bytes instead of one step per separator.
#[inline(always)]
pub(crate) fn find_nth(haystack: &[u8], needle: u8, k: usize) -> Option<usize> {
    let mut remaining = k.checked_sub(1)?;
    let splat = u64::from(needle) * ONES;
    let mut chunks = haystack.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        let mut mask = equal_bytes(word, splat);
        let count = mask.count_ones() as usize;
        if remaining < count {
            for _ in 0..remaining {
                mask &= mask - 1;
            }
            return Some(base + (mask.trailing_zeros() / 8) as usize);
        }
        remaining -= count;
        base += 8;
    }
    let tail = chunks.remainder();
    let at = tail
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == needle)
        .nth(remaining)?
        .0;
    Some(base + at)
}

/// Calls `on_match` with the index of every `needle` in `haystack[from..]` before the first
/// byte equal to one of `stops`, and returns that stop's index (or `haystack.len()`). One pass
/// a word at a time: how MSH is split into fields and its end found together.
#[inline(always)]
pub(crate) fn for_each_until(
    haystack: &[u8],
    from: usize,
    needle: u8,
    stops: [u8; 2],
    mut on_match: impl FnMut(usize),
) -> usize {
    let Some(rest) = haystack.get(from..) else {
        return haystack.len();
    };
    let splat = u64::from(needle) * ONES;
    let stop_splats = stops.map(|s| u64::from(s) * ONES);
    let mut emit = |mut hits: u64, base: usize| {
        while hits != 0 {
            on_match(base + (hits.trailing_zeros() / 8) as usize);
            hits &= hits - 1;
        }
    };
    let mut chunks = rest.chunks_exact(8);
    let mut base = from;
    for chunk in chunks.by_ref() {
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        let hits = equal_bytes(word, splat);
        let stop = equal_bytes(word, stop_splats[0]) | equal_bytes(word, stop_splats[1]);
        if stop != 0 {
            // Keep only the hits in bytes below the first stop byte.
            let below = (stop & stop.wrapping_neg()) - 1;
            emit(hits & below & !stop, base);
            return base + (stop.trailing_zeros() / 8) as usize;
        }
        emit(hits, base);
        base += 8;
    }
    for (i, &byte) in chunks.remainder().iter().enumerate() {
        if stops.contains(&byte) {
            return base + i;
        }
        if byte == needle {
            on_match(base + i);
        }
    }
    haystack.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(haystack: &[u8], from: usize, needles: &[u8]) -> Option<usize> {
        haystack
            .get(from..)?
            .iter()
            .position(|b| needles.contains(b))
            .map(|i| from + i)
    }

    #[test]
    fn finds_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                let mut hay = vec![b'a'; len];
                hay[at] = b'|';
                for from in 0..=len + 1 {
                    assert_eq!(
                        find(&hay, from, b'|'),
                        naive(&hay, from, b"|"),
                        "{len} {at} {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn high_bytes_and_neighbours_do_not_false_match() {
        // 0x7C ('|') next to 0x7D, 0xFC, 0x00 and 0x80: a carry-based test would misfire.
        let hay = [0x7d, 0xfc, 0x00, 0x80, 0xff, 0x7b, 0x01, 0xfd, 0x7c];
        assert_eq!(find(&hay, 0, 0x7c), Some(8));
        assert_eq!(find_any(&hay, 0, [0x7c, 0x00]), Some(2));
        assert_eq!(find(&hay, 0, 0x02), None);
    }

    #[test]
    fn nth_counts_runs_of_separators() {
        let hay = b"PV1|1|I|4W^412^B^NG||||2231^OKAFOR^CHIDI|||MED||||7|||";
        let naive_nth = |k: usize| {
            hay.iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'|')
                .nth(k - 1)
                .map(|(i, _)| i)
        };
        for k in 1..=22 {
            assert_eq!(find_nth(hay, b'|', k), naive_nth(k), "k = {k}");
        }
        assert_eq!(find_nth(hay, b'|', 0), None);
    }

    proptest! {
        #[test]
        fn agrees_with_the_naive_loop(
            hay in proptest::collection::vec(prop::sample::select(vec![0u8, 1, 0x7c, 0x7d, 0x0d, 0x0a, 0x80, 0xfc, 0xff, b'a']), 0..70),
            from in 0usize..72,
            a in any::<u8>(),
            b in prop::sample::select(vec![0x0du8, 0x7c, 0x00]),
        ) {
            prop_assert_eq!(find(&hay, from, a), naive(&hay, from, &[a]));
            let nth = hay.iter().enumerate().filter(|&(_, &x)| x == a).nth(from.wrapping_sub(1)).map(|(i, _)| i);
            prop_assert_eq!(find_nth(&hay, a, from), nth);
            let mut hits = Vec::new();
            let end = for_each_until(&hay, from, a, [b, 0x0a], |i| hits.push(i));
            let naive_end = naive(&hay, from, &[b, 0x0a]).unwrap_or(hay.len());
            let naive_hits: Vec<usize> = (from..naive_end).filter(|&i| hay[i] == a).collect();
            prop_assert_eq!((end, hits), (naive_end, naive_hits));
            prop_assert_eq!(find_any(&hay, from, [a, b, 0x0a]), naive(&hay, from, &[a, b, 0x0a]));
        }
    }
}
