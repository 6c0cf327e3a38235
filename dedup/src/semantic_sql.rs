//! Semantic dedup in SQL, in three steps a query chains (see the SQL reference):
//!
//! - `kmeans_centroids(id, embedding [, per_cluster])` (aggregate): K-means centroids of
//!   the embeddings ([`crate::semantic::fit`]), `ceil(rows / per_cluster)` of them (default
//!   1,000 rows a cluster, so a cluster's pairwise work stays bounded as the corpus grows),
//!   fitted on a sample of at most [`SAMPLE`] rows: those whose id hashes lowest, the same
//!   whatever order or partitions the rows come in. The centroids packed in one binary
//!   value (`k` and the dimension as two little-endian u32, then the `k x dim` f32 values;
//!   a `BinaryView`, so a scalar subquery joining it to every row shares its bytes instead
//!   of copying them per row).
//! - `nearest_centroid(embedding, centroids)` (scalar): the index of the embedding's
//!   nearest centroid, its cluster.
//! - `semantic_dedup(id, embedding, eps, rank)` (aggregate, grouped by cluster): each
//!   member's verdict ([`crate::semantic::dedup_cluster`]): ranked by `rank` (smaller
//!   first: kept first; ties by id), a member is a duplicate when its highest cosine
//!   similarity to a member ranked above it is at least `1 - eps`. A list of `{id,
//!   duplicate_of, similarity, keep}` (`duplicate_of` null and `keep` true for a kept
//!   member; `similarity` its highest to one ranked above, 0 for the first).
//!
//! Embeddings are lists of numbers (`REAL[]`, `DOUBLE[]`, `embed_clip`'s fixed-size
//! lists), L2-normalised here; rows with a null id or embedding take no part, and an
//! embedding of another length than the group's first fails the query naming both lengths.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float32Builder, Int32Array, ListArray, ListBuilder,
    StringBuilder, StructBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float32Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use ndarray::{Array2, ArrayView2};

use crate::semantic::{assign, dedup_cluster, fit, normalise, sample_key};

/// The most rows the centroids are fitted on.
pub const SAMPLE: usize = 65_536;
/// Rows a cluster when the call does not say.
pub const PER_CLUSTER: i64 = 1_000;
/// Lloyd's iterations at most.
const ITERATIONS: usize = 20;

fn float_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
}

fn centroids_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(float_list(), true)))
}

/// The type an embedding argument is cast to, or why it cannot be.
fn embedding_type(function: &str, given: &DataType) -> Result<DataType> {
    match given {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if f.data_type().is_numeric() =>
        {
            Ok(float_list())
        }
        DataType::Null => Ok(float_list()),
        other => {
            plan_err!("{function}: the embedding must be a list of numbers (REAL[]), not {other}")
        }
    }
}

/// Row `row` of a `List<Float32>` column, L2-normalised (`None`: null).
fn embedding(column: &ArrayRef, row: usize) -> Option<Vec<f32>> {
    let lists = column.as_list_opt::<i32>()?;
    if lists.is_null(row) {
        return None;
    }
    let values = lists.value(row);
    let values = values.as_primitive::<Float32Type>();
    let mut v: Vec<f32> = values.iter().map(|x| x.unwrap_or(0.0)).collect();
    normalise(&mut v);
    Some(v)
}

/// Rows of one length, side by side.
#[derive(Debug, Default)]
struct Rows {
    dim: Option<usize>,
    data: Vec<f32>,
}

impl Rows {
    fn push(&mut self, function: &str, v: &[f32]) -> Result<()> {
        match self.dim {
            None => self.dim = Some(v.len()),
            Some(d) if d != v.len() => {
                return exec_err!(
                    "{function}: embeddings of {d} and of {} values in one group; give embeddings of one length",
                    v.len()
                );
            }
            Some(_) => {}
        }
        self.data.extend_from_slice(v);
        Ok(())
    }

    fn view(&self) -> Result<ArrayView2<'_, f32>> {
        let dim = self.dim.unwrap_or(0).max(1);
        ArrayView2::from_shape((self.data.len() / dim, dim), &self.data)
            .map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))
    }
}

/// A list of `Float32` lists from rows of `dim` values.
fn lists_of(data: &[f32], dim: usize) -> ScalarValue {
    let mut b = ListBuilder::new(ListBuilder::new(Float32Builder::new()));
    for row in data.chunks(dim.max(1)) {
        b.values().values().append_slice(row);
        b.values().append(true);
    }
    b.append(true);
    ScalarValue::List(Arc::new(b.finish()))
}

/// `kmeans_centroids(id, embedding [, per_cluster])`: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KmeansCentroids {
    signature: Signature,
}

impl Default for KmeansCentroids {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for KmeansCentroids {
    fn name(&self) -> &str {
        "kmeans_centroids"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!(
                "kmeans_centroids(id, embedding REAL[] [, per_cluster BIGINT]) takes 2 or 3 arguments"
            );
        }
        let mut out = vec![DataType::Utf8, embedding_type(self.name(), &arg_types[1])?];
        if arg_types.len() == 3 {
            out.push(DataType::Int64);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::BinaryView)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let field = |name: &str, t: DataType| {
            Arc::new(Field::new(format!("{}[{name}]", args.name), t, true))
        };
        Ok(vec![
            field(
                "ids",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            ),
            field("sample", centroids_type()),
            field("rows", DataType::Int64),
            field("per_cluster", DataType::Int64),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(KmeansAccumulator::default()))
    }
}

/// The sample so far (the rows whose ids hash lowest), and the rows seen.
#[derive(Debug, Default)]
struct KmeansAccumulator {
    sample: Vec<(u64, String, Vec<f32>)>,
    rows: i64,
    per_cluster: Option<i64>,
}

impl KmeansAccumulator {
    fn offer(&mut self, id: &str, v: Vec<f32>) {
        self.sample.push((sample_key(id), id.to_owned(), v));
        if self.sample.len() >= 2 * SAMPLE {
            self.prune();
        }
    }

    /// Keeps the [`SAMPLE`] rows whose keys are lowest (ties: by id).
    fn prune(&mut self) {
        if self.sample.len() > SAMPLE {
            self.sample
                .select_nth_unstable_by(SAMPLE, |a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            self.sample.truncate(SAMPLE);
        }
    }

    fn settle(&mut self, value: Option<i64>) -> Result<()> {
        match (self.per_cluster, value) {
            (_, None) => Ok(()),
            (None, Some(v)) => {
                self.per_cluster = Some(v);
                Ok(())
            }
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => {
                exec_err!("kmeans_centroids: per_cluster must be one value, not {a} and {b}")
            }
        }
    }
}

impl Accumulator for KmeansAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ids = values[0].as_string::<i32>();
        if let Some(per) = values.get(2) {
            self.settle(per.as_primitive::<Int64Type>().iter().flatten().next())?;
        }
        for row in 0..ids.len() {
            if ids.is_null(row) {
                continue;
            }
            if let Some(v) = embedding(&values[1], row) {
                self.rows += 1;
                self.offer(ids.value(row), v);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let ids = states[0].as_list::<i32>();
        let samples = states[1].as_list::<i32>();
        let rows = states[2].as_primitive::<Int64Type>();
        self.settle(
            states[3]
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .next(),
        )?;
        for r in 0..ids.len() {
            if ids.is_null(r) || samples.is_null(r) {
                continue;
            }
            self.rows += rows.value(r);
            let these = ids.value(r);
            let these = these.as_string::<i32>();
            let vectors: ArrayRef = samples.value(r);
            for i in 0..these.len() {
                if let Some(v) = embedding(&vectors, i) {
                    self.offer(these.value(i), v);
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.prune();
        let mut ids = ListBuilder::new(StringBuilder::new());
        let mut data = Vec::new();
        let dim = self.sample.first().map_or(0, |s| s.2.len());
        for (_, id, v) in &self.sample {
            ids.values().append_value(id);
            data.extend_from_slice(v);
        }
        ids.append(true);
        let ids: ListArray = ids.finish();
        Ok(vec![
            ScalarValue::List(Arc::new(ids)),
            lists_of(&data, dim),
            ScalarValue::Int64(Some(self.rows)),
            ScalarValue::Int64(self.per_cluster),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.prune();
        let per = self.per_cluster.unwrap_or(PER_CLUSTER);
        if per < 1 {
            return exec_err!(
                "kmeans_centroids: per_cluster {per}: give a positive number of rows a cluster"
            );
        }
        // the sample in key order: its first rows seed the clusters
        self.sample.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut rows = Rows::default();
        for (_, _, v) in &self.sample {
            rows.push(self.name(), v)?;
        }
        let k = usize::try_from((self.rows + per - 1) / per)
            .unwrap_or(1)
            .max(1);
        let view = rows.view()?;
        let centroids = framefusion_common::cpu::budget().run(|| fit(view, k, ITERATIONS));
        Ok(ScalarValue::BinaryView(Some(pack(
            centroids.nrows(),
            centroids.ncols(),
            centroids.as_slice().unwrap_or_default(),
        ))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .sample
                .iter()
                .map(|(_, id, v)| 48 + id.len() + v.len() * 4)
                .sum::<usize>()
    }
}

impl KmeansAccumulator {
    fn name(&self) -> &'static str {
        "kmeans_centroids"
    }
}

/// Centroids as `kmeans_centroids` returns them: `k`, `dim`, the values.
fn pack(k: usize, dim: usize, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + values.len() * 4);
    out.extend_from_slice(&(k as u32).to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The centroids `pack` made, or why these bytes are not such.
fn unpack(bytes: &[u8]) -> Result<Array2<f32>> {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map(u32::from_le_bytes)
    };
    let (Some(k), Some(dim)) = (word(0), word(4)) else {
        return exec_err!("nearest_centroid: the centroids are not kmeans_centroids' value");
    };
    let (k, dim) = (k as usize, dim as usize);
    if bytes.len() != 8 + k * dim * 4 {
        return exec_err!("nearest_centroid: the centroids are not kmeans_centroids' value");
    }
    let values: Vec<f32> = bytes[8..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Array2::from_shape_vec((k, dim), values)
        .map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))
}

/// `nearest_centroid(embedding, centroids)`: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NearestCentroid {
    signature: Signature,
}

impl Default for NearestCentroid {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for NearestCentroid {
    fn name(&self) -> &str {
        "nearest_centroid"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [e, c] => {
                let c = match c {
                    DataType::BinaryView | DataType::Binary | DataType::LargeBinary => {
                        DataType::BinaryView
                    }
                    DataType::Null => DataType::BinaryView,
                    other => {
                        return plan_err!(
                            "nearest_centroid: centroids must be kmeans_centroids' value, not {other}"
                        );
                    }
                };
                Ok(vec![embedding_type(self.name(), e)?, c])
            }
            _ => plan_err!("nearest_centroid(embedding REAL[], centroids) takes 2 arguments"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let embeddings = args.args[0].to_array(n)?;
        let centroids = args.args[1].to_array(n)?;
        let packed = centroids.as_binary_view();
        // the centroids of the first row that has them (one value for the whole query)
        let Some(first) = (0..packed.len()).find(|&r| packed.is_valid(r)) else {
            return Ok(ColumnarValue::Array(Arc::new(Int32Array::new_null(n))));
        };
        let matrix = unpack(packed.value(first))?;
        let centroids = matrix.view();
        let mut present = Vec::with_capacity(n);
        let mut data = Rows::default();
        for row in 0..n {
            match embedding(&embeddings, row) {
                Some(v) if v.len() == centroids.ncols() => {
                    data.push(self.name(), &v)?;
                    present.push(true);
                }
                Some(v) => {
                    return exec_err!(
                        "nearest_centroid: an embedding of {} values, centroids of {}",
                        v.len(),
                        centroids.ncols()
                    );
                }
                None => present.push(false),
            }
        }
        let labels = if data.data.is_empty() {
            Vec::new()
        } else {
            let view = data.view()?;
            framefusion_common::cpu::budget().run(|| assign(view, centroids))
        };
        let mut labels = labels.into_iter();
        let out: Int32Array = present
            .into_iter()
            .map(|p| {
                if p {
                    labels.next().map(|(c, _)| c as i32)
                } else {
                    None
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The fields of one verdict.
pub fn verdict_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("duplicate_of", DataType::Utf8, true),
        Field::new("similarity", DataType::Float32, false),
        Field::new("keep", DataType::Boolean, false),
    ])
}

/// `semantic_dedup(id, embedding, eps, rank)`: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SemanticDedup {
    signature: Signature,
}

impl Default for SemanticDedup {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SemanticDedup {
    fn name(&self) -> &str {
        "semantic_dedup"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [_, e, eps, rank]
                if (eps.is_numeric() || eps.is_null()) && (rank.is_numeric() || rank.is_null()) =>
            {
                Ok(vec![
                    DataType::Utf8,
                    embedding_type(self.name(), e)?,
                    DataType::Float64,
                    DataType::Float64,
                ])
            }
            _ => plan_err!(
                "semantic_dedup(id, embedding REAL[], eps DOUBLE, rank DOUBLE) takes 4 arguments, eps and rank numbers"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(verdict_fields()),
            true,
        ))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let field = |name: &str, t: DataType| {
            Arc::new(Field::new(format!("{}[{name}]", args.name), t, true))
        };
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        Ok(vec![
            field("ids", list(DataType::Utf8)),
            field("embeddings", centroids_type()),
            field("ranks", list(DataType::Float64)),
            field("eps", DataType::Float64),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(DedupAccumulator::default()))
    }
}

/// A cluster's members.
#[derive(Debug, Default)]
struct DedupAccumulator {
    members: Vec<(f64, String, Vec<f32>)>,
    eps: Option<f64>,
}

impl DedupAccumulator {
    fn settle(&mut self, value: Option<f64>) -> Result<()> {
        match (self.eps, value) {
            (_, None) => Ok(()),
            (None, Some(v)) => {
                self.eps = Some(v);
                Ok(())
            }
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => {
                exec_err!("semantic_dedup: eps must be one value, not {a} and {b}")
            }
        }
    }
}

impl Accumulator for DedupAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ids = values[0].as_string::<i32>();
        let eps = values[2].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let ranks = values[3].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        self.settle(eps.iter().flatten().next())?;
        for row in 0..ids.len() {
            if ids.is_null(row) {
                continue;
            }
            if let Some(v) = embedding(&values[1], row) {
                let rank = if ranks.is_null(row) {
                    f64::INFINITY
                } else {
                    ranks.value(row)
                };
                self.members.push((rank, ids.value(row).to_owned(), v));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let ids = states[0].as_list::<i32>();
        let vectors = states[1].as_list::<i32>();
        let ranks = states[2].as_list::<i32>();
        self.settle(
            states[3]
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .iter()
                .flatten()
                .next(),
        )?;
        for r in 0..ids.len() {
            if ids.is_null(r) {
                continue;
            }
            let these = ids.value(r);
            let these = these.as_string::<i32>();
            let vs: ArrayRef = vectors.value(r);
            let rs = ranks.value(r);
            let rs = rs.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            for i in 0..these.len() {
                if let Some(v) = embedding(&vs, i) {
                    self.members
                        .push((rs.value(i), these.value(i).to_owned(), v));
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut ids = ListBuilder::new(StringBuilder::new());
        let mut ranks = ListBuilder::new(datafusion::arrow::array::Float64Builder::new());
        let mut data = Vec::new();
        let dim = self.members.first().map_or(0, |m| m.2.len());
        for (rank, id, v) in &self.members {
            ids.values().append_value(id);
            ranks.values().append_value(*rank);
            data.extend_from_slice(v);
        }
        ids.append(true);
        ranks.append(true);
        Ok(vec![
            ScalarValue::List(Arc::new(ids.finish())),
            lists_of(&data, dim),
            ScalarValue::List(Arc::new(ranks.finish())),
            ScalarValue::Float64(self.eps),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let eps = self.eps.unwrap_or(0.0);
        if !(0.0..=2.0).contains(&eps) {
            return exec_err!(
                "semantic_dedup: eps {eps}: give 0 to 2 (1 - the cosine similarity of duplicates)"
            );
        }
        self.members
            .sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut rows = Rows::default();
        for (_, _, v) in &self.members {
            rows.push("semantic_dedup", v)?;
        }
        let verdicts = if self.members.is_empty() {
            Vec::new()
        } else {
            let view = rows.view()?;
            framefusion_common::cpu::budget().run(|| dedup_cluster(view, eps as f32))
        };
        let fields = verdict_fields();
        let mut list = ListBuilder::new(StructBuilder::from_fields(fields.clone(), verdicts.len()))
            .with_field(Arc::new(Field::new_list_field(
                DataType::Struct(fields),
                true,
            )));
        {
            let items = list.values();
            for ((_, id, _), v) in self.members.iter().zip(&verdicts) {
                if let Some(f) = items.field_builder::<StringBuilder>(0) {
                    f.append_value(id);
                }
                if let Some(f) = items.field_builder::<StringBuilder>(1) {
                    match v.nearest_above.filter(|_| v.duplicate) {
                        Some(j) => f.append_value(&self.members[j].1),
                        None => f.append_null(),
                    }
                }
                if let Some(f) = items.field_builder::<Float32Builder>(2) {
                    f.append_value(v.similarity);
                }
                if let Some(f) = items.field_builder::<BooleanBuilder>(3) {
                    f.append_value(!v.duplicate);
                }
                items.append(true);
            }
        }
        list.append(true);
        Ok(ScalarValue::List(Arc::new(list.finish())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .members
                .iter()
                .map(|(_, id, v)| 56 + id.len() + v.len() * 4)
                .sum::<usize>()
    }
}
