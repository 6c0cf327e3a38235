//! # framefusion-dedup
//!
//! Near-duplicates at corpus scale, without comparing every pair.
//!
//! - [`hashes`]: every pair of 64-bit perceptual hashes within a Hamming radius, found by
//!   multi-index hashing (the hash cut into bands, each band's neighbours within the
//!   radius divided among the bands probed in a per-band index), exactly: the pairs a
//!   brute-force comparison finds, no more, no fewer.
//! - [`udaf`]: the search as a DataFusion aggregate function, `hash_pairs(id, hash,
//!   radius)`, so it runs where a query's rows are (embedded or on a Ballista cluster)
//!   with its state counted in the session's memory pool.
//! - [`semantic`]: semantic dedup as NeMo Curator does it: K-means of the embeddings, then
//!   cosine similarities only inside a cluster, items in ranking order.
//! - [`semantic_sql`]: its three SQL steps, `kmeans_centroids`, `nearest_centroid` and
//!   `semantic_dedup` (grouped by cluster, so a cluster's work runs where its rows are).
//! - [`register_all`]: registers this crate's functions on a DataFusion function registry.

pub mod hashes;
pub mod semantic;
pub mod semantic_sql;
pub mod udaf;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

/// Every aggregate function of this crate.
pub fn aggregate_udfs() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(udaf::HashPairs::default())),
        Arc::new(AggregateUDF::from(semantic_sql::KmeansCentroids::default())),
        Arc::new(AggregateUDF::from(semantic_sql::SemanticDedup::default())),
    ]
}

/// Every scalar function of this crate.
pub fn scalar_udfs() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(
        semantic_sql::NearestCentroid::default(),
    ))]
}

/// Registers every function of this crate on `registry` (a `SessionContext`, a
/// `SessionState`, or a Ballista executor's function registry).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    for udaf in aggregate_udfs() {
        registry.register_udaf(udaf)?;
    }
    for udf in scalar_udfs() {
        registry.register_udf(udf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// docs/sql-reference.md heads every function of this crate.
    #[test]
    fn the_sql_reference_documents_every_function() {
        let reference = include_str!("../../docs/sql-reference.md");
        let names = super::aggregate_udfs()
            .iter()
            .map(|u| u.name().to_owned())
            .chain(super::scalar_udfs().iter().map(|u| u.name().to_owned()))
            .collect::<Vec<_>>();
        for name in names {
            assert!(
                reference.contains(&format!("### `{name}(")),
                "docs/sql-reference.md does not document {name}"
            );
        }
    }
}
