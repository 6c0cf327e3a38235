//! Semantic dedup as NeMo Curator does it: cluster the embeddings with K-means, then
//! compare pairs only inside a cluster.
//!
//! - [`fit`]: K-means (Lloyd's iterations) of L2-normalised embeddings, on a sample: the
//!   rows whose id hashes lowest ([`sample_key`]: the same sample whatever order the rows
//!   come in, embedded or on a cluster), initialised with the first `k` of the sample.
//! - [`assign`]: each embedding's nearest centroid (the largest `x . c - |c|^2 / 2`).
//! - [`dedup_cluster`]: inside one cluster, items in ranking order; an item is a duplicate
//!   when its highest cosine similarity to an item ranked above it is at least `1 - eps`,
//!   and its `duplicate_of` is that item (chains are not merged further).
//!
//! The numeric work is matrix products (ndarray's, on matrixmultiply's kernels), in
//! blocks of rows, in parallel on the current rayon pool; sums are taken in a fixed order,
//! so the same rows give the same clusters and answers on any number of threads.

use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

/// Rows multiplied at once (bounds the memory of a block of products).
const BLOCK: usize = 2048;

/// An embedding's L2 norm made 1 (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
}

/// The key that orders rows for the fit's sample: FNV-1a 64 of the id.
pub fn sample_key(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// For each row of `rows`, the index of its nearest centroid and the row's dot product
/// with it.
pub fn assign(rows: ArrayView2<'_, f32>, centroids: ArrayView2<'_, f32>) -> Vec<(u32, f32)> {
    let half_norms: Vec<f32> = centroids
        .axis_iter(Axis(0))
        .map(|c| c.dot(&c) / 2.0)
        .collect();
    let blocks: Vec<Vec<(u32, f32)>> = (0..rows.nrows())
        .into_par_iter()
        .step_by(BLOCK)
        .map(|start| {
            let end = (start + BLOCK).min(rows.nrows());
            let products = rows.slice(s![start..end, ..]).dot(&centroids.t());
            products
                .axis_iter(Axis(0))
                .map(|p| {
                    let mut best = (0u32, f32::NEG_INFINITY, 0f32);
                    for (c, (&dot, &half)) in p.iter().zip(&half_norms).enumerate() {
                        let score = dot - half;
                        if score > best.1 {
                            best = (c as u32, score, dot);
                        }
                    }
                    (best.0, best.2)
                })
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

/// K-means of `sample`'s rows into `k` clusters (fewer when the sample has fewer rows):
/// initialised with its first `k` rows, `iterations` of Lloyd's (fewer when no row moves).
/// A cluster left empty keeps its centroid.
pub fn fit(sample: ArrayView2<'_, f32>, k: usize, iterations: usize) -> Array2<f32> {
    let k = k.min(sample.nrows()).max(1);
    let dim = sample.ncols();
    if sample.nrows() == 0 {
        return Array2::zeros((0, dim));
    }
    let mut centroids = sample.slice(s![..k, ..]).to_owned();
    let mut previous: Vec<u32> = Vec::new();
    for _ in 0..iterations {
        let labels: Vec<u32> = assign(sample, centroids.view())
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        if labels == previous {
            break;
        }
        // each cluster's members, in sample order, summed in that order
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (i, &c) in labels.iter().enumerate() {
            members[c as usize].push(i);
        }
        let means: Vec<Option<Vec<f32>>> = members
            .par_iter()
            .map(|rows| {
                if rows.is_empty() {
                    return None;
                }
                let mut sum = vec![0f64; dim];
                for &i in rows {
                    for (s, x) in sum.iter_mut().zip(sample.row(i)) {
                        *s += f64::from(*x);
                    }
                }
                let n = rows.len() as f64;
                Some(sum.into_iter().map(|s| (s / n) as f32).collect())
            })
            .collect();
        for (c, mean) in means.into_iter().enumerate() {
            if let Some(mean) = mean {
                centroids
                    .row_mut(c)
                    .iter_mut()
                    .zip(mean)
                    .for_each(|(x, m)| *x = m);
            }
        }
        previous = labels;
    }
    centroids
}

/// One item's verdict inside its cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The item ranked above it that it is most similar to (none for the first).
    pub nearest_above: Option<usize>,
    /// That similarity (cosine; 0 for the first item).
    pub similarity: f32,
    /// Whether it is a duplicate (`similarity >= 1 - eps`).
    pub duplicate: bool,
}

/// The verdict of each row of `ranked` (one cluster's L2-normalised embeddings, in
/// ranking order: the first is kept first).
pub fn dedup_cluster(ranked: ArrayView2<'_, f32>, eps: f32) -> Vec<Verdict> {
    let n = ranked.nrows();
    let blocks: Vec<Vec<Verdict>> = (0..n)
        .into_par_iter()
        .step_by(BLOCK)
        .map(|start| {
            let end = (start + BLOCK).min(n);
            // similarities of this block's rows to every row ranked above the block's last
            let sims = ranked
                .slice(s![start..end, ..])
                .dot(&ranked.slice(s![..end, ..]).t());
            (start..end)
                .map(|i| {
                    let row = sims.row(i - start);
                    let mut best: Option<(usize, f32)> = None;
                    for (j, &sim) in row.iter().enumerate().take(i) {
                        if best.is_none_or(|(_, b)| sim > b) {
                            best = Some((j, sim));
                        }
                    }
                    match best {
                        Some((j, sim)) => Verdict {
                            nearest_above: Some(j),
                            similarity: sim,
                            duplicate: sim >= 1.0 - eps,
                        },
                        None => Verdict {
                            nearest_above: None,
                            similarity: 0.0,
                            duplicate: false,
                        },
                    }
                })
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_found_and_duplicates_named_by_rank() {
        // three well separated directions, four noisy members each
        let mut rows = Vec::new();
        for c in 0..3 {
            for m in 0..4 {
                let mut v = vec![0.01 * m as f32; 8];
                v[c] = 1.0;
                normalise(&mut v);
                rows.extend(v);
            }
        }
        let data = Array2::from_shape_vec((12, 8), rows).unwrap_or_else(|e| panic!("{e}"));
        // the sample's first rows seed the clusters: one of each direction first
        let order = [0usize, 4, 8, 1, 2, 3, 5, 6, 7, 9, 10, 11];
        let sample = data.select(Axis(0), &order);
        let centroids = fit(sample.view(), 3, 10);
        let labels: Vec<u32> = assign(data.view(), centroids.view())
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        for c in 0..3 {
            let group = &labels[c * 4..c * 4 + 4];
            assert!(group.iter().all(|l| *l == group[0]), "{labels:?}");
        }
        assert_ne!(labels[0], labels[4]);
        let verdicts = dedup_cluster(data.slice(s![0..4, ..]), 0.001);
        assert_eq!(verdicts[0].nearest_above, None);
        assert!(verdicts[1].duplicate && verdicts[1].nearest_above == Some(0));
        assert!(verdicts[3].nearest_above == Some(2), "{verdicts:?}");
        let strict = dedup_cluster(data.slice(s![0..4, ..]), 0.0);
        assert!(!strict[1].duplicate);
    }
}
