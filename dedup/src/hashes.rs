//! Every pair of 64-bit hashes within a Hamming radius, by multi-index hashing (Norouzi,
//! Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index Hashing").
//!
//! The 64 bits are cut into [`BANDS`] bands of 16 bits. Two hashes at most `r` bits apart
//! differ in at least one band by at most `r / BANDS` bits (rounded down; the pigeonhole
//! principle), so for each band an index of the hashes by their band's value is built
//! (a counting sort: one offset per band value, the hashes of a value side by side), and
//! each hash probes, in each band, every value within `r / BANDS` bits of its own (137
//! values at radius 10: 1 + 16 + 120). A candidate is kept when its whole distance is at
//! most `r`, and reported by the first band that finds it (the first whose band distance
//! is at most `r / BANDS`), so each pair comes once. The result is exactly a brute-force
//! comparison's; its cost is the probes plus the candidates, not the pairs.
//!
//! The hashes are searched in parallel (rayon, on the current pool: the process's CPU
//! budget when called from framefusion's operators).

use rayon::prelude::*;

/// Bands the hash is cut into.
pub const BANDS: usize = 4;
/// Bits of a band.
const BAND_BITS: u32 = 64 / BANDS as u32;
/// Values of a band.
const BAND_VALUES: usize = 1 << BAND_BITS;
/// The largest radius searched: beyond it a band's probes (every value within
/// `radius / BANDS` of 16 bits) cost more than comparing all pairs of a corpus.
pub const MAX_RADIUS: u32 = 15;

/// One pair: the indices of its two hashes (`a < b`) and their distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pair {
    /// The first hash's index.
    pub a: u32,
    /// The second hash's index.
    pub b: u32,
    /// Bits that differ.
    pub distance: u32,
}

fn band(hash: u64, b: usize) -> usize {
    ((hash >> (b as u32 * BAND_BITS)) & (BAND_VALUES as u64 - 1)) as usize
}

/// The band values within `radius` bits of 0 (XOR masks), by weight.
fn masks(radius: u32) -> Vec<u16> {
    let mut out: Vec<u16> = (0..=u16::MAX)
        .filter(|m| m.count_ones() <= radius)
        .collect();
    out.sort_by_key(|m| (m.count_ones(), *m));
    out
}

/// One band's index: the hashes (and their indices) ordered by the band's value, and
/// where each value's run starts.
struct BandIndex {
    starts: Vec<u32>,
    hashes: Vec<u64>,
    ids: Vec<u32>,
}

impl BandIndex {
    fn new(hashes: &[u64], b: usize) -> Self {
        let mut starts = vec![0u32; BAND_VALUES + 1];
        for &h in hashes {
            starts[band(h, b) + 1] += 1;
        }
        for v in 0..BAND_VALUES {
            starts[v + 1] += starts[v];
        }
        let mut next = starts.clone();
        let mut sorted = vec![0u64; hashes.len()];
        let mut ids = vec![0u32; hashes.len()];
        for (i, &h) in hashes.iter().enumerate() {
            let slot = &mut next[band(h, b)];
            sorted[*slot as usize] = h;
            ids[*slot as usize] = i as u32;
            *slot += 1;
        }
        Self {
            starts,
            hashes: sorted,
            ids,
        }
    }

    fn run(&self, value: usize) -> (&[u64], &[u32]) {
        let (s, e) = (self.starts[value] as usize, self.starts[value + 1] as usize);
        (&self.hashes[s..e], &self.ids[s..e])
    }
}

/// The first band in which `x` (two hashes XORed) has at most `t` bits set.
fn first_band(x: u64, t: u32) -> usize {
    (0..BANDS)
        .find(|&b| (band(x, b) as u16).count_ones() <= t)
        .unwrap_or(BANDS)
}

/// Every pair of `hashes` at most `radius` bits apart (`radius` at most [`MAX_RADIUS`]),
/// each once, ordered by `(a, b)`. `only_band`: only the pairs the given band reports
/// (their first band within `radius / BANDS`), so that the bands' work may be split.
///
/// Each band's index is walked bucket by bucket: a bucket's hashes against each other,
/// then against each bucket whose value is within `radius / BANDS` bits and larger (each
/// pair of buckets once), two short contiguous runs at a time, so the comparisons read
/// memory in order instead of one random bucket per probe.
pub fn pairs_within(hashes: &[u64], radius: u32, only_band: Option<usize>) -> Vec<Pair> {
    let radius = radius.min(MAX_RADIUS);
    let t = radius / BANDS as u32;
    let masks: Vec<usize> = masks(t).into_iter().skip(1).map(usize::from).collect();
    let bands: Vec<usize> = match only_band {
        Some(b) if b < BANDS => vec![b],
        Some(_) => return Vec::new(),
        None => (0..BANDS).collect(),
    };
    let mut pairs: Vec<Pair> = Vec::new();
    let popcnt = has_popcnt();
    for b in bands {
        let index = BandIndex::new(hashes, b);
        let search = Search {
            index: &index,
            band: b,
            radius,
            t,
            masks: &masks,
        };
        let found: Vec<Pair> = (0..BAND_VALUES)
            .into_par_iter()
            .step_by(256)
            .map(|v| {
                let values = v..(v + 256).min(BAND_VALUES);
                if popcnt {
                    // SAFETY: the CPU has POPCNT (checked above)
                    unsafe { search.buckets_with_popcnt(values) }
                } else {
                    search.buckets(values)
                }
            })
            .flatten_iter()
            .collect();
        pairs.extend(found);
    }
    pairs.par_sort_unstable();
    pairs
}

/// One band's search.
struct Search<'a> {
    index: &'a BandIndex,
    band: usize,
    radius: u32,
    t: u32,
    masks: &'a [usize],
}

#[cfg(target_arch = "x86_64")]
fn has_popcnt() -> bool {
    std::is_x86_feature_detected!("popcnt")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_popcnt() -> bool {
    false
}

impl Search<'_> {
    /// The pairs the buckets of `values` report: each bucket's hashes against each other,
    /// then against each larger bucket value within `t` bits.
    #[inline(always)]
    fn buckets(&self, values: std::ops::Range<usize>) -> Vec<Pair> {
        let mut found = Vec::new();
        for v in values {
            let (run, ids) = self.index.run(v);
            if run.is_empty() {
                continue;
            }
            for (k, (&x, &i)) in run.iter().zip(ids).enumerate() {
                self.compare(x, i, &run[k + 1..], &ids[k + 1..], &mut found);
            }
            for &m in self.masks {
                let w = v ^ m;
                if w < v {
                    continue;
                }
                let (other, other_ids) = self.index.run(w);
                for (&x, &i) in run.iter().zip(ids) {
                    self.compare(x, i, other, other_ids, &mut found);
                }
            }
        }
        found
    }

    /// [`Search::buckets`] compiled with the POPCNT instruction (a distance is one
    /// instruction instead of a dozen).
    ///
    /// # Safety
    /// The CPU must have POPCNT.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn buckets_with_popcnt(&self, values: std::ops::Range<usize>) -> Vec<Pair> {
        self.buckets(values)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn buckets_with_popcnt(&self, values: std::ops::Range<usize>) -> Vec<Pair> {
        self.buckets(values)
    }

    /// `x` (hash `i`) against each of `others` (hashes `ids`).
    #[inline(always)]
    fn compare(&self, x: u64, i: u32, others: &[u64], ids: &[u32], found: &mut Vec<Pair>) {
        for (&y, &j) in others.iter().zip(ids) {
            let d = x ^ y;
            let distance = d.count_ones();
            if distance <= self.radius && first_band(d, self.t) == self.band {
                let (a, b) = if i < j { (i, j) } else { (j, i) };
                found.push(Pair { a, b, distance });
            }
        }
    }
}

/// Every pair at most `radius` apart by comparing all pairs: the reference the index is
/// checked against (quadratic; for tests).
pub fn brute_force(hashes: &[u64], radius: u32) -> Vec<Pair> {
    let mut out = Vec::new();
    for (i, &a) in hashes.iter().enumerate() {
        for (j, &b) in hashes.iter().enumerate().skip(i + 1) {
            let distance = (a ^ b).count_ones();
            if distance <= radius {
                out.push(Pair {
                    a: i as u32,
                    b: j as u32,
                    distance,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence (splitmix64).
    pub(super) fn random_hashes(n: usize, seed: u64) -> Vec<u64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    #[test]
    fn the_index_finds_exactly_the_pairs_brute_force_finds() {
        let mut hashes = random_hashes(3000, 1);
        // planted neighbours at every distance up to 12, flipping random bits
        let flips = random_hashes(3000, 2);
        for k in 0..600 {
            let d = (k % 13) as u32;
            let mut h = hashes[k];
            let mut f = flips[k];
            let mut flipped = 0;
            while flipped < d {
                let bit = f % 64;
                f = f.rotate_left(7) ^ 0x5555;
                if (h ^ hashes[k]) >> bit & 1 == 0 {
                    h ^= 1 << bit;
                    flipped += 1;
                }
            }
            hashes.push(h);
        }
        // exact copies and a cluster of near copies
        hashes.extend_from_within(..50);
        for radius in [0, 3, 7, 10, 12] {
            let want = brute_force(&hashes, radius);
            assert_eq!(pairs_within(&hashes, radius, None), want, "radius {radius}");
            let mut split: Vec<Pair> = (0..BANDS)
                .flat_map(|b| pairs_within(&hashes, radius, Some(b)))
                .collect();
            split.sort_unstable();
            assert_eq!(split, want, "radius {radius}, bands apart");
            assert!(radius == 0 || want.len() > 200, "{}", want.len());
        }
    }
}

#[cfg(test)]
mod timing {
    /// `cargo test -p framefusion-dedup --release -- --ignored --nocapture timing`
    #[test]
    #[ignore = "a timing, not a check"]
    fn timing_of_a_million() {
        let hashes = super::tests::random_hashes(1_000_000, 3);
        for n in [100_000, 1_000_000] {
            let started = std::time::Instant::now();
            let pairs = super::pairs_within(&hashes[..n], 10, None);
            println!("{n}: {:?}, {} pairs", started.elapsed(), pairs.len());
        }
    }
}
