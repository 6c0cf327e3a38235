//! Near-duplicate search at scale: `hash_pairs` finds exactly the pairs of hashes within
//! the radius that comparing every pair finds, embedded and on a 2-executor cluster, as
//! one search or split by band across the cluster, under a memory limit.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use datafusion::prelude::SessionContext;
use framefusion_dedup::hashes::brute_force;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;

const RADIUS: u32 = 10;

/// 12,000 pseudo-random hashes, then 3,000 planted near copies of earlier ones at
/// distances 0 to 12 (some beyond the radius), ids `h00000`...
fn hashes() -> Vec<u64> {
    let mut state: u64 = 42;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out: Vec<u64> = (0..12_000).map(|_| next()).collect();
    for k in 0..3_000 {
        let source = out[(next() % 12_000) as usize];
        let distance = k % 13;
        let mut h = source;
        while (h ^ source).count_ones() < distance {
            h ^= 1 << (next() % 64);
        }
        out.push(h);
    }
    out
}

fn id(i: usize) -> String {
    format!("h{i:05}")
}

/// `batch` as the Parquet table `name`: `parts` files in `dir/name/`; the statement that
/// creates it.
async fn parquet_table(dir: &Path, name: &str, batch: &RecordBatch, parts: usize) -> String {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    let ctx = SessionContext::new();
    let rows = batch.num_rows() / parts;
    for part in 0..parts {
        let length = if part + 1 == parts {
            batch.num_rows() - part * rows
        } else {
            rows
        };
        ctx.read_batch(batch.slice(part * rows, length))
            .unwrap_or_else(|e| panic!("{e}"))
            .write_parquet(
                &folder
                    .join(format!("part{part}.parquet"))
                    .display()
                    .to_string(),
                datafusion::dataframe::DataFrameWriteOptions::new(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    format!(
        "CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{}/';",
        folder.display()
    )
}

/// The hashes as a Parquet table `hashes(id, phash)` in `dir`.
async fn table(dir: &Path, hashes: &[u64]) -> String {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("phash", DataType::Int64, false),
    ]));
    let ids: Vec<String> = (0..hashes.len()).map(id).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from(
                hashes.iter().map(|&h| h as i64).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // three files: three partitions gathered by the aggregate
    parquet_table(dir, "hashes", &batch, 3).await
}

/// The pairs of a query of `(a, b, distance)` rows.
async fn pairs(ctx: &SessionContext, sql: &str) -> BTreeSet<(String, String, i32)> {
    let batches = ctx
        .run_script(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = BTreeSet::new();
    for b in &batches {
        let (a, bb, d) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
            b.column(2).as_primitive::<Int32Type>(),
        );
        for r in 0..b.num_rows() {
            out.insert((a.value(r).to_owned(), bb.value(r).to_owned(), d.value(r)));
        }
    }
    out
}

const ONE_SEARCH: &str = "SELECT p['a'], p['b'], p['distance'] FROM (SELECT unnest(hash_pairs(id, phash, 10)) AS p FROM hashes)";
const BY_BAND: &str = "SELECT p['a'], p['b'], p['distance'] FROM (SELECT unnest(hash_pairs(id, phash, 10, band)) AS p FROM hashes CROSS JOIN (SELECT unnest(range(0, 4)) AS band) bands GROUP BY band)";

async fn agree(ctx: &SessionContext, dir: &Path) {
    let hashes = hashes();
    let want: BTreeSet<(String, String, i32)> = brute_force(&hashes, RADIUS)
        .into_iter()
        .map(|p| (id(p.a as usize), id(p.b as usize), p.distance as i32))
        .collect();
    assert!(want.len() > 2_000, "{} planted pairs", want.len());
    ctx.run_script(&table(dir, &hashes).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script("SET datafusion.runtime.memory_limit = '2G'")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pairs(ctx, ONE_SEARCH).await, want, "one search");
    assert_eq!(pairs(ctx, BY_BAND).await, want, "split by band");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_pairs_equal_a_brute_force_search_embedded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    agree(&ctx, dir.path()).await;
    // a radius the index does not search fails the query, saying why
    let error =
        framefusion_tests::query_error(&ctx, "SELECT hash_pairs(id, phash, 40) FROM hashes").await;
    assert!(error.contains("radius 40"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_pairs_on_a_cluster_equal_a_brute_force_search() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cluster = TestCluster::start(2, 1, 10).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    agree(&ctx, dir.path()).await;
}

/// A deterministic generator: uniform in [0, 1) and standard normal values.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

const DIM: usize = 32;
const EPS: f32 = 0.02;

/// 4,000 embeddings around 16 random directions, then 300 planted groups of 2 to 5 near
/// copies (within 1 - eps/2 of their first member), ranks a permutation; returns the
/// embeddings, ranks and the planted groups (indices).
fn embeddings() -> (Vec<Vec<f32>>, Vec<f64>, Vec<Vec<usize>>) {
    let mut rng = Random(7);
    let centres: Vec<Vec<f32>> = (0..16)
        .map(|_| {
            let mut c: Vec<f32> = (0..DIM).map(|_| rng.normal() as f32).collect();
            unit(&mut c);
            c
        })
        .collect();
    let mut rows: Vec<Vec<f32>> = (0..4_000)
        .map(|i| {
            let c = &centres[i % 16];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.12 * rng.normal() as f32).collect();
            unit(&mut v);
            v
        })
        .collect();
    let mut groups = Vec::new();
    for g in 0..300 {
        let base = (g * 13) % 4_000;
        let mut group = vec![base];
        for _ in 0..(1 + g % 4) {
            let mut v: Vec<f32> = rows[base]
                .iter()
                .map(|x| x + 0.02 * rng.normal() as f32 / (DIM as f32).sqrt())
                .collect();
            unit(&mut v);
            group.push(rows.len());
            rows.push(v);
        }
        groups.push(group);
    }
    let ranks: Vec<f64> = (0..rows.len())
        .map(|i| ((i * 7919) % rows.len()) as f64)
        .collect();
    (rows, ranks, groups)
}

fn eid(i: usize) -> String {
    format!("e{i:05}")
}

/// The embeddings as a Parquet table `items(id, embedding, rank)`.
async fn items_table(dir: &Path, rows: &[Vec<f32>], ranks: &[f64]) -> String {
    use datafusion::arrow::array::{Float32Builder, Float64Array, ListBuilder};
    let mut lists = ListBuilder::new(Float32Builder::new());
    for r in rows {
        lists.values().append_slice(r);
        lists.append(true);
    }
    let lists = lists.finish();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("embedding", lists.data_type().clone(), true),
        Field::new("rank", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(
                (0..rows.len()).map(eid).collect::<Vec<_>>(),
            )),
            Arc::new(lists),
            Arc::new(Float64Array::from(ranks.to_vec())),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    parquet_table(dir, "items", &batch, 2).await
}

const SEMANTIC: &str = "SELECT d['id'], d['duplicate_of'], cluster_id FROM (
  SELECT cluster_id, unnest(semantic_dedup(id, embedding, 0.02, rank)) AS d
  FROM (SELECT id, embedding, rank,
               nearest_centroid(embedding, (SELECT kmeans_centroids(id, embedding, 250) FROM items)) AS cluster_id
        FROM items)
  GROUP BY cluster_id)";

/// (id, duplicate_of) of every duplicate, and the number of clusters.
async fn verdicts(ctx: &SessionContext) -> (BTreeSet<(String, String)>, usize) {
    let batches = ctx
        .run_script(SEMANTIC)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{SEMANTIC}: {e}"));
    let mut pairs = BTreeSet::new();
    let mut clusters = BTreeSet::new();
    let mut rows = 0;
    for b in &batches {
        let (id, of) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        let cluster = b.column(2).as_primitive::<Int32Type>();
        for r in 0..b.num_rows() {
            rows += 1;
            clusters.insert(cluster.value(r));
            if of.is_valid(r) {
                pairs.insert((id.value(r).to_owned(), of.value(r).to_owned()));
            }
        }
    }
    assert_eq!(rows, 4_000 + 300 * 5 / 2, "every item has a verdict");
    (pairs, clusters.len())
}

/// The same verdicts without clusters: every item against every item ranked above it.
fn brute_force_verdicts(rows: &[Vec<f32>], ranks: &[f64]) -> BTreeSet<(String, String)> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| ranks[a].total_cmp(&ranks[b]).then(eid(a).cmp(&eid(b))));
    let mut out = BTreeSet::new();
    for (k, &i) in order.iter().enumerate() {
        let mut best: Option<(usize, f32)> = None;
        for &j in &order[..k] {
            let sim: f32 = rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum();
            if best.is_none_or(|(_, s)| sim > s) {
                best = Some((j, sim));
            }
        }
        if let Some((j, sim)) = best
            && sim >= 1.0 - EPS
        {
            out.insert((eid(i), eid(j)));
        }
    }
    out
}

async fn semantic_agree(ctx: &SessionContext, dir: &Path) -> BTreeSet<(String, String)> {
    let (rows, ranks, groups) = embeddings();
    ctx.run_script(&items_table(dir, &rows, &ranks).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script("SET datafusion.runtime.memory_limit = '2G'")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (found, clusters) = verdicts(ctx).await;
    assert!(
        (15..=19).contains(&clusters),
        "{clusters} clusters of 250 rows"
    );
    // every planted copy ranked below another of its group is its group's duplicate
    let mut planted = 0;
    let mut recalled = 0;
    for group in &groups {
        let top = group
            .iter()
            .min_by(|&&a, &&b| ranks[a].total_cmp(&ranks[b]))
            .copied()
            .unwrap_or_default();
        for &m in group.iter().filter(|&&m| m != top) {
            planted += 1;
            let names: BTreeSet<String> = group.iter().map(|&g| eid(g)).collect();
            if found.iter().any(|(a, b)| *a == eid(m) && names.contains(b)) {
                recalled += 1;
            }
        }
    }
    assert!(
        recalled * 100 >= planted * 99,
        "recall {recalled} of {planted} planted duplicates"
    );
    let want = brute_force_verdicts(&rows, &ranks);
    let differ = found.symmetric_difference(&want).count();
    assert!(
        differ * 100 <= want.len(),
        "{differ} of {} pairs differ from the brute-force search",
        want.len()
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_dedup_finds_the_planted_duplicates_embedded_and_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let embedded = semantic_agree(&ctx, dir.path()).await;
    let cluster = TestCluster::start(2, 1, 10).await;
    let remote = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(semantic_agree(&remote, other.path()).await, embedded);
}
