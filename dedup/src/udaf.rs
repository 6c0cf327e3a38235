//! `hash_pairs(id, hash, radius [, band])`: every pair of a group's rows whose 64-bit
//! hashes are at most `radius` bits apart, as an aggregate function.
//!
//! Returns a list of `{a, b, distance}` structs (`a` and `b` the rows' ids as text, `a <
//! b`, ordered by `a` then `b`), so `unnest` makes them rows:
//!
//! ```sql
//! SELECT p['a'] AS a, p['b'] AS b, p['distance'] AS distance
//! FROM (SELECT unnest(hash_pairs(clip_id, phash, 10)) AS p FROM clip_hashes);
//! ```
//!
//! Rows with a null id or hash take no part. The search is [`crate::hashes::pairs_within`]
//! (multi-index hashing: the pairs a brute-force comparison finds, each once); it runs
//! when the group's rows are all in, on the process's CPU pool. Each partition gathers
//! its rows (the ids and hashes, counted in the session's memory pool) and the final
//! step searches them, so the answer is the same embedded and on a cluster. With `band`
//! (0 to 3) a group reports only the pairs that band of the index finds: grouping a
//! table crossed with the four bands by `band` splits the search four ways, across a
//! cluster's executors, with the same pairs in all.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Builder, Int64Array, ListArray, ListBuilder, StringBuilder,
    StructBuilder, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::hashes::{BANDS, MAX_RADIUS, pairs_within};

/// `hash_pairs`: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashPairs {
    signature: Signature,
}

impl Default for HashPairs {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The fields of one pair.
pub fn pair_fields() -> Fields {
    Fields::from(vec![
        Field::new("a", DataType::Utf8, false),
        Field::new("b", DataType::Utf8, false),
        Field::new("distance", DataType::Int32, false),
    ])
}

fn pair_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(pair_fields()),
        true,
    )))
}

impl AggregateUDFImpl for HashPairs {
    fn name(&self) -> &str {
        "hash_pairs"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(3..=4).contains(&arg_types.len()) {
            return plan_err!(
                "hash_pairs(id, hash BIGINT, radius BIGINT [, band BIGINT]) takes 3 or 4 arguments, not {}",
                arg_types.len()
            );
        }
        let hash = match &arg_types[1] {
            DataType::UInt64 => DataType::UInt64,
            t if t.is_integer() || t.is_null() => DataType::Int64,
            t => {
                return plan_err!(
                    "hash_pairs: hash must be a 64-bit integer (clip_phash), not {t}"
                );
            }
        };
        let mut out = vec![DataType::Utf8, hash, DataType::Int64];
        if arg_types.len() == 4 {
            out.push(DataType::Int64);
        }
        for (i, t) in arg_types.iter().enumerate().skip(2) {
            if !(t.is_integer() || t.is_null()) {
                return plan_err!(
                    "hash_pairs: argument {} must be a whole number, not {t}",
                    i + 1
                );
            }
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(pair_list_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, t: DataType| {
            Arc::new(Field::new(
                format!("{}[{name}]", args.name),
                DataType::List(Arc::new(Field::new_list_field(t, true))),
                true,
            ))
        };
        Ok(vec![
            list("ids", DataType::Utf8),
            list("hashes", DataType::Int64),
            Arc::new(Field::new(
                format!("{}[radius]", args.name),
                DataType::Int64,
                true,
            )),
            Arc::new(Field::new(
                format!("{}[band]", args.name),
                DataType::Int64,
                true,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(HashPairsAccumulator::default()))
    }
}

/// A group's ids and hashes, gathered.
#[derive(Debug, Default)]
struct HashPairsAccumulator {
    ids: Vec<String>,
    hashes: Vec<u64>,
    id_bytes: usize,
    radius: Option<i64>,
    band: Option<i64>,
}

/// The first non-null value of an integer column.
fn first_value(column: &ArrayRef) -> Option<i64> {
    let column = column.as_any().downcast_ref::<Int64Array>()?;
    column.iter().flatten().next()
}

impl HashPairsAccumulator {
    fn settle(slot: &mut Option<i64>, value: Option<i64>, what: &str) -> Result<()> {
        match (*slot, value) {
            (_, None) => Ok(()),
            (None, Some(v)) => {
                *slot = Some(v);
                Ok(())
            }
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => {
                exec_err!("hash_pairs: the {what} must be the same for every row, not {a} and {b}")
            }
        }
    }

    fn push(&mut self, id: &str, hash: u64) {
        self.id_bytes += id.len();
        self.ids.push(id.to_owned());
        self.hashes.push(hash);
    }
}

impl Accumulator for HashPairsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ids = values[0].as_string::<i32>();
        let hashes: Vec<Option<u64>> = match values[1].data_type() {
            DataType::UInt64 => values[1]
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => values[1]
                .as_primitive::<Int64Type>()
                .iter()
                .map(|h| h.map(|h| h as u64))
                .collect(),
        };
        Self::settle(&mut self.radius, first_value(&values[2]), "radius")?;
        if let Some(band) = values.get(3) {
            Self::settle(&mut self.band, first_value(band), "band")?;
        }
        for (row, hash) in hashes.into_iter().enumerate() {
            if let (false, Some(hash)) = (ids.is_null(row), hash) {
                self.push(ids.value(row), hash);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let ids = states[0].as_list::<i32>();
        let hashes = states[1].as_list::<i32>();
        Self::settle(&mut self.radius, first_value(&states[2]), "radius")?;
        Self::settle(&mut self.band, first_value(&states[3]), "band")?;
        for row in 0..ids.len() {
            if ids.is_null(row) || hashes.is_null(row) {
                continue;
            }
            let these = ids.value(row);
            let these = these.as_string::<i32>();
            let values = hashes.value(row);
            let values = values.as_primitive::<Int64Type>();
            for i in 0..these.len() {
                self.push(these.value(i), values.value(i) as u64);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut ids = ListBuilder::new(StringBuilder::new());
        for id in &self.ids {
            ids.values().append_value(id);
        }
        ids.append(true);
        let mut hashes = ListBuilder::new(datafusion::arrow::array::Int64Builder::new());
        hashes
            .values()
            .append_slice(&self.hashes.iter().map(|&h| h as i64).collect::<Vec<_>>());
        hashes.append(true);
        let ids: ListArray = ids.finish();
        let hashes: ListArray = hashes.finish();
        Ok(vec![
            ScalarValue::List(Arc::new(ids)),
            ScalarValue::List(Arc::new(hashes)),
            ScalarValue::Int64(self.radius),
            ScalarValue::Int64(self.band),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let radius = match self.radius {
            None => 0,
            Some(r) if (0..=i64::from(MAX_RADIUS)).contains(&r) => r as u32,
            Some(r) => {
                return exec_err!(
                    "hash_pairs: radius {r}: give 0 to {MAX_RADIUS} bits (64-bit hashes)"
                );
            }
        };
        let band = match self.band {
            None => None,
            Some(b) if (0..BANDS as i64).contains(&b) => Some(b as usize),
            Some(b) => return exec_err!("hash_pairs: band {b}: give 0 to {}", BANDS - 1),
        };
        let hashes = &self.hashes;
        let found = framefusion_common::cpu::budget().run(|| pairs_within(hashes, radius, band));
        // ordered by the ids, the smaller first: the same answer whatever order rows came in
        let mut pairs: Vec<(&str, &str, u32)> = found
            .iter()
            .map(|p| {
                let (a, b) = (
                    self.ids[p.a as usize].as_str(),
                    self.ids[p.b as usize].as_str(),
                );
                if a <= b {
                    (a, b, p.distance)
                } else {
                    (b, a, p.distance)
                }
            })
            .collect();
        pairs.sort_unstable();
        let mut list =
            ListBuilder::new(StructBuilder::from_fields(pair_fields(), pairs.len())).with_field(
                Arc::new(Field::new_list_field(DataType::Struct(pair_fields()), true)),
            );
        {
            let items = list.values();
            for (a, b, d) in &pairs {
                if let Some(f) = items.field_builder::<StringBuilder>(0) {
                    f.append_value(a);
                }
                if let Some(f) = items.field_builder::<StringBuilder>(1) {
                    f.append_value(b);
                }
                if let Some(f) = items.field_builder::<Int32Builder>(2) {
                    f.append_value(*d as i32);
                }
                items.append(true);
            }
        }
        list.append(true);
        Ok(ScalarValue::List(Arc::new(list.finish())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.ids.capacity() * std::mem::size_of::<String>()
            + self.id_bytes
            + self.hashes.capacity() * 8
    }
}
