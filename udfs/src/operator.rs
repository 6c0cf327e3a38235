//! The operator scaffold: what every video operator shares, written once.
//!
//! An operator implements [`VideoOperator`]: its name, its arguments ([`Arg`]), its
//! result type, how it evaluates the rows of a batch, and, when it reads frames, what it
//! asks of the video's decode pass ([`Demand`]) and how it computes that from the frames
//! ([`VideoOperator::consumer`]). [`VideoUdf`] turns it into a DataFusion scalar UDF and
//! owns everything else:
//!
//! - **the signature, checked at planning**: a call with the wrong number of arguments or
//!   an argument of the wrong type is a one-line planning error that shows the function's
//!   arguments (`text_area_ratio(path VARCHAR, start_s DOUBLE, end_s DOUBLE): start_s must
//!   be a number, not Utf8`); paths and options are cast to strings, times to doubles;
//! - **argument parsing**: [`Batch`] gives each row's typed arguments;
//! - **the CPU pool**: rows are evaluated on the process's one pool
//!   (`framefusion_media::cpu`), never on an async I/O thread;
//! - **the one per-row failure rule**: a row with a null path or time is null; a
//!   transient failure (an I/O error, a store that does not answer) is retried
//!   ([`Batch::each_row`]), then fails the task, which the scheduler retries; a failure of
//!   the setup ([`UdfError::Setup`]: a missing library or model, an invalid setting or
//!   option) fails the query, also when it is met in a decode pass another operator
//!   started; any other failure is the row's own: the row's value is null, the failure is
//!   logged (warn) and reported to the run's failure ledger ([`report_failures`]), so the
//!   manifest accounts for the video however the query drops the null; where the operator
//!   returns a struct with an `error` field, the row is that struct with every other field
//!   null and `error` saying why ([`VideoOperator::failed`]);
//! - **never evaluated while planning**: every operator is volatile, so a call with
//!   literal arguments is not folded into a constant (that would decode and run models on
//!   the client or the scheduler, also for `EXPLAIN`);
//! - **one decode per video**: the planner rule of [`crate::plan`] gives every operator
//!   call of a query the query's demands ([`PassSpec`]), which the operators hand to
//!   [`crate::analysis`], so the first operator to read a video runs one pass computing
//!   what every operator of the query needs from it.
//!
//! - **models**: the models an operator declares ([`VideoOperator::models`], or per call
//!   from its settings and options, [`VideoOperator::models_for`]) are loaded once per
//!   call, before its rows ([`Batch::model`]) and its decode-pass consumers; a missing
//!   library or model file fails the query with the file's name; a call runs a model (and
//!   its stage goes to a cluster's GPU pool) when what it asks names one;
//! - **documentation**: the function's documentation ([`ScalarUDFImpl::documentation`])
//!   is made from what the operator declares: its description, its syntax as the SQL
//!   reference writes it ([`syntax`]) and its arguments.
//!
//! Adding an operator: a module with a type implementing [`VideoOperator`], one line in
//! [`crate::operators`], its `expr_fn` builder, its entry in docs/sql-reference.md
//! (checked against the registry by a unit test), a test.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Fields};
use datafusion::common::config::ConfigOptions;
use datafusion::common::scalar::ScalarStructBuilder;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

use framefusion_common::failures::Failure;
use framefusion_media::source::{Confinement, VideoSource};

use crate::UdfError;
pub use crate::analysis::FeatureConsumer;
use crate::analysis::{Demand, PassSpec};
pub use crate::args::{Arg, ArgKind, coerce_call, syntax, usage};
pub use crate::error::report_failures;
use crate::error::retry_transient;
use crate::models::{LoadedModel, Models, OnnxOptions};

/// What one row gives: its value, or why it failed.
pub type RowOutcome = std::result::Result<ScalarValue, UdfError>;

/// A video operator (see the module docs).
pub trait VideoOperator: Send + Sync + std::fmt::Debug + 'static {
    /// The SQL name.
    fn name(&self) -> &'static str;

    /// What a call returns, in a sentence: the function's documentation
    /// ([`ScalarUDFImpl::documentation`], `SHOW FUNCTIONS`) with its syntax and arguments
    /// (docs/sql-reference.md has the details).
    fn description(&self) -> &'static str;

    /// The arguments, in order.
    fn args(&self) -> &'static [Arg];

    /// The numbers of arguments a call may give (default: all of them).
    fn arities(&self) -> Vec<usize> {
        vec![self.args().len()]
    }

    /// The result type.
    fn return_type(&self) -> DataType;

    /// The result type of a call whose options are the literal `options` (`None`: not
    /// given, or not a literal): by default [`VideoOperator::return_type`]. An operator
    /// whose options fix the shape of its result (`embed_clip`'s `dim=N`, a fixed-size
    /// list) answers here.
    fn return_type_for(&self, _options: Option<&str>) -> DataType {
        self.return_type()
    }

    /// What a call with these (planned) arguments asks of its video's decode pass; none
    /// for an operator that reads no frames through the pass.
    fn demands(&self, _args: &[Expr], _config: &ConfigOptions) -> Vec<Demand> {
        Vec::new()
    }

    /// The consumer that computes `demand` (one of this operator's) during a pass, with
    /// the operator's models loaded.
    fn consumer(
        &self,
        demand: &Demand,
        _models: &Models,
        _config: &ConfigOptions,
    ) -> std::result::Result<Box<dyn FeatureConsumer>, UdfError> {
        Err(UdfError::Setup(format!(
            "{} computes no {} during a decode pass",
            self.name(),
            demand.need.kind()
        )))
    }

    /// A rewrite of the call (for operators that are views of another).
    fn simplify(&self, _args: Vec<Expr>, _pass: Option<&Arc<PassSpec>>) -> Option<Expr> {
        None
    }

    /// The models it runs (files in `onnx.model_dir`): the scaffold loads them before its
    /// rows are evaluated ([`Batch::model`]) and before its decode-pass consumers are made
    /// (a missing model or library fails the query once, with the file's name). None for
    /// an operator that runs no network.
    fn models(&self) -> &'static [&'static str] {
        &[]
    }

    /// The models a call runs, given its session's settings and its options (the text of
    /// the call's options argument, [`VideoOperator::options_arg`]; `None` when the call
    /// gives none): by default the operator's [`VideoOperator::models`]. An operator whose
    /// model or backend is chosen per call (an option naming the model file; a backend
    /// served by a remote server, which needs none here) answers here: the scaffold loads
    /// what the rows of a batch name, and a call whose literal options name none is not
    /// placed on a cluster's GPU pool.
    fn models_for(&self, _config: &ConfigOptions, _options: Option<&str>) -> Vec<String> {
        self.models().iter().map(|m| (*m).to_owned()).collect()
    }

    /// What a run records of a call with these options besides its arguments (in
    /// `_SUCCESS`, and in the job's fingerprint, so a resumed run cannot mix answers of
    /// two settings): a generative operator's backend, model, prompt and generation
    /// settings, never a key. By default nothing.
    fn provenance(&self, _config: &ConfigOptions, _options: Option<&str>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// A call's literal `options` rewritten with what the session's `registry` knows,
    /// while the query is planned on the client (`None`: unchanged): so that options may
    /// name a registered function (`embed_clip`'s `function=NAME`). By default unchanged.
    fn resolve_options(
        &self,
        _options: &str,
        _registry: &dyn datafusion::execution::FunctionRegistry,
    ) -> Result<Option<String>, UdfError> {
        Ok(None)
    }

    /// Which argument holds a call's options: by default its first text argument.
    fn options_arg(&self) -> Option<usize> {
        self.args().iter().position(|a| a.kind == ArgKind::Text)
    }

    /// For an operator over something else than a video (`translate`'s text): the
    /// position of a last argument no call gives, which the planner fills with the row's
    /// video (the `path` column its node's input has, [`crate::plan`]), so that a row's
    /// failure is its video's in a run's ledger. `None` (the default): argument 0 is the
    /// video.
    fn row_video_arg(&self) -> Option<usize> {
        None
    }

    /// Whether a call may run a neural network (ONNX Runtime) whatever its options: a
    /// cluster places the stages that call one on its GPU executor pool
    /// (`framefusion_engine::placement`) unless the call's literal options say it runs
    /// none ([`VideoUdf::call_runs_model`]). By default, whether it declares models.
    fn runs_model(&self) -> bool {
        !self.models().is_empty()
    }

    /// The value of a row that failed with `message` (default: null; see the module
    /// docs).
    fn failed(&self, _message: &str) -> Result<ScalarValue> {
        ScalarValue::try_from(self.return_type())
    }

    /// Computes the rows of one batch whose required arguments are all given, on the CPU
    /// pool: one outcome per row of [`Batch::rows`]. An error returned here fails the
    /// query (a model that cannot be loaded).
    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>>;
}

/// The arguments of one batch, cast to their kinds' types.
pub struct Batch<'a> {
    op: &'a dyn VideoOperator,
    columns: Vec<ArrayRef>,
    rows: Vec<usize>,
    /// The session's settings.
    pub config: &'a ConfigOptions,
    /// The query's demands on each video's decode pass (none when the planner rule did
    /// not run, for a plan built by hand).
    pub pass: Option<&'a Arc<PassSpec>>,
    models: Models,
    confinement: Confinement,
}

impl Batch<'_> {
    /// The operator's model `name` (one it declares, [`VideoOperator::models`]), loaded.
    pub fn model(&self, name: &str) -> Result<Arc<LoadedModel>> {
        self.models.get(name).map_err(UdfError::into_task_error)
    }

    /// The operator's models ([`VideoOperator::models`]), loaded.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// The rows to compute (those whose required arguments are all given).
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    /// Whether the call gave argument `i`.
    pub fn has(&self, i: usize) -> bool {
        i < self.columns.len()
    }

    fn column<T: 'static>(&self, i: usize) -> Option<&T> {
        self.columns.get(i)?.as_any().downcast_ref::<T>()
    }

    /// String argument `i` of `row` (`None`: not given or null).
    pub fn text(&self, i: usize, row: usize) -> Option<&str> {
        let c = self.column::<StringArray>(i)?;
        (!c.is_null(row)).then(|| c.value(row))
    }

    /// The path (argument 0) of `row`.
    pub fn path(&self, row: usize) -> &str {
        self.text(0, row).unwrap_or_default()
    }

    /// The video `row` belongs to: its path, or for an operator over something else the
    /// row's video the planner gave it ([`VideoOperator::row_video_arg`]; empty when the
    /// query has none).
    pub fn video(&self, row: usize) -> &str {
        match self.op.row_video_arg() {
            Some(i) => self.text(i, row).unwrap_or_default(),
            None => self.path(row),
        }
    }

    /// The video at the path of `row`, refused outside the session's allowed roots.
    pub fn source(&self, row: usize) -> Result<VideoSource, UdfError> {
        self.location(self.path(row))
    }

    /// The location `uri` (a video, a destination), refused outside the session's
    /// allowed roots.
    pub fn location(&self, uri: &str) -> Result<VideoSource, UdfError> {
        Ok(self.confinement.source(uri)?)
    }

    /// Number argument `i` of `row` (`None`: not given or null).
    pub fn number(&self, i: usize, row: usize) -> Option<f64> {
        let c = self.column::<Float64Array>(i)?;
        (!c.is_null(row)).then(|| c.value(row))
    }

    /// Integer argument `i` of `row` (`None`: not given or null).
    pub fn integer(&self, i: usize, row: usize) -> Option<i64> {
        let c = self.column::<Int64Array>(i)?;
        (!c.is_null(row)).then(|| c.value(row))
    }

    /// The `(start_s, end_s)` of `row` when the call gave arguments 1 and 2.
    pub fn range(&self, row: usize) -> Option<(f64, f64)> {
        Some((self.number(1, row)?, self.number(2, row)?))
    }

    /// Runs `f` for every row to compute, retrying transient failures
    /// ([`retry_transient`]); one outcome per row.
    pub fn each_row(&self, mut f: impl FnMut(usize) -> RowOutcome) -> Vec<RowOutcome> {
        self.rows
            .iter()
            .map(|&row| retry_transient(|| f(row)))
            .collect()
    }

    /// The operator's name (for messages).
    pub fn name(&self) -> &str {
        self.op.name()
    }
}

/// A [`VideoOperator`] as a DataFusion scalar UDF (see the module docs), with the query's
/// decode-pass demands once the planner rule has run.
#[derive(Debug, Clone)]
pub struct VideoUdf {
    op: Arc<dyn VideoOperator>,
    signature: Signature,
    documentation: Arc<Documentation>,
    pass: Option<Arc<PassSpec>>,
}

impl PartialEq for VideoUdf {
    fn eq(&self, other: &Self) -> bool {
        self.op.name() == other.op.name() && self.pass == other.pass
    }
}

impl Eq for VideoUdf {}

impl std::hash::Hash for VideoUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.op.name().hash(state);
        self.pass.hash(state);
    }
}

impl VideoUdf {
    /// The UDF of `op`.
    pub fn new(op: Arc<dyn VideoOperator>) -> Self {
        Self {
            // Every operator reads media (and some run models): volatile, so that DataFusion
            // never evaluates a call with literal arguments while planning (constant
            // folding would decode and run inference on the client or the scheduler,
            // also for EXPLAIN); calls run where the query's rows are computed.
            signature: Signature::user_defined(Volatility::Volatile),
            documentation: Arc::new(documentation(op.as_ref())),
            op,
            pass: None,
        }
    }

    /// The same UDF with the query's demands.
    pub fn with_pass(&self, pass: Option<Arc<PassSpec>>) -> Self {
        Self {
            pass,
            ..self.clone()
        }
    }

    /// The operator.
    pub fn operator(&self) -> &Arc<dyn VideoOperator> {
        &self.op
    }

    /// The query's demands, once the planner rule has run.
    pub fn pass(&self) -> Option<&Arc<PassSpec>> {
        self.pass.as_ref()
    }

    /// Whether a call runs a neural network: its operator does, or the decode pass the
    /// call may run computes a demand of one that does (`detect_shots` computing text
    /// coverage for the `text_area_ratio` calls of its query).
    pub fn runs_model(&self) -> bool {
        self.op.runs_model() || self.pass_runs_model()
    }

    /// Whether the decode pass a call may run computes a demand of an operator that runs a
    /// network.
    fn pass_runs_model(&self) -> bool {
        self.pass.as_ref().is_some_and(|pass| {
            pass.demands
                .iter()
                .any(|d| crate::operator_runs_model(d.operator()))
        })
    }

    /// Whether a call with these arguments (`literals[i]`: the value of argument `i` when
    /// it is a literal, `None` when it is not) runs a network in `config`'s session: what
    /// its literal options ask ([`VideoOperator::models_for`]), or, when its options are
    /// not a literal, whether any call may ([`VideoUdf::runs_model`]).
    pub fn call_runs_model(
        &self,
        literals: &[Option<ScalarValue>],
        config: &ConfigOptions,
    ) -> bool {
        let op = self.op.as_ref();
        let own = match op.options_arg().map(|i| literals.get(i)) {
            // no options argument, or the call does not give it
            None | Some(None) => !op.models_for(config, None).is_empty(),
            Some(Some(value)) => match value.as_ref().and_then(literal_text) {
                Some(text) => !op.models_for(config, text).is_empty(),
                // options from a column: any row may
                None => op.runs_model(),
            },
        };
        own || self.pass_runs_model()
    }

    /// The numbers of arguments a call may have once planned: those a user may give, and
    /// with the row's video the planner adds ([`VideoOperator::row_video_arg`]).
    pub fn planned_arities(op: &dyn VideoOperator) -> Vec<usize> {
        let mut arities = op.arities();
        if let Some(i) = op.row_video_arg() {
            arities.push(i + 1);
        }
        arities
    }

    /// The call's usage, `name(arg TYPE, ...)`, for messages.
    pub fn usage(op: &dyn VideoOperator) -> String {
        usage(op.name(), op.args(), &op.arities())
    }

    /// This UDF as a `ScalarUDF`.
    pub fn into_udf(self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(self))
    }
}

/// The documentation section of framefusion's functions.
pub const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "framefusion video operators",
    description: Some("Functions over videos: see docs/sql-reference.md"),
};

/// `op`'s documentation, from what it declares: its description, its syntax
/// ([`syntax`]) and its arguments.
fn documentation(op: &dyn VideoOperator) -> Documentation {
    let mut doc = Documentation::builder(
        DOC_SECTION,
        op.description(),
        syntax(op.name(), op.args(), &op.arities()),
    );
    let given = op.arities().into_iter().max().unwrap_or(0);
    for arg in &op.args()[..given.min(op.args().len())] {
        doc = doc.with_argument(arg.name, arg.kind.what());
    }
    doc.build()
}

/// Checks a call's argument types against `op`'s arguments and returns the types to
/// cast them to (see the module docs).
pub fn coerce_args(op: &dyn VideoOperator, given: &[DataType]) -> Result<Vec<DataType>> {
    if op.row_video_arg().is_some_and(|i| given.len() == i + 1) {
        // a planned call, with the row's video the planner added
        return coerce_call(op.name(), op.args(), &[given.len()], given);
    }
    coerce_call(op.name(), op.args(), &op.arities(), given)
}

impl ScalarUDFImpl for VideoUdf {
    fn name(&self) -> &str {
        self.op.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.documentation)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_args(self.op.as_ref(), arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.op.return_type())
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        let op = self.op.as_ref();
        let options = op
            .options_arg()
            .and_then(|i| args.scalar_arguments.get(i).copied().flatten())
            .and_then(literal_text)
            .flatten();
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(
            op.name(),
            op.return_type_for(options),
            true,
        )))
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(match self.op.simplify(args.clone(), self.pass.as_ref()) {
            Some(expr) => ExprSimplifyResult::Simplified(expr),
            None => ExprSimplifyResult::Original(args),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let op = self.op.as_ref();
        if !VideoUdf::planned_arities(op).contains(&args.args.len()) {
            return exec_err!("{} takes {:?} arguments", VideoUdf::usage(op), op.arities());
        }
        let mut columns = Vec::with_capacity(args.args.len());
        for (value, arg) in args.args.iter().zip(op.args()) {
            let target = match arg.kind {
                ArgKind::Path | ArgKind::Text => DataType::Utf8,
                ArgKind::Seconds | ArgKind::Number => DataType::Float64,
                ArgKind::Integer => DataType::Int64,
            };
            columns.push(datafusion::arrow::compute::cast(
                &value.to_array(n)?,
                &target,
            )?);
        }
        let rows: Vec<usize> = (0..n)
            .filter(|&row| {
                columns
                    .iter()
                    .zip(op.args())
                    .all(|(c, arg)| !arg.required || !c.is_null(row))
            })
            .collect();
        // the models the rows ask for, once per call (a missing one fails the query with
        // its name): each distinct options text of the batch names its own
        let models = if rows.is_empty() {
            Models::default()
        } else {
            let texts = op.options_arg().and_then(|i| columns.get(i)).map(|c| {
                let texts = c.as_any().downcast_ref::<StringArray>();
                rows.iter()
                    .map(|&row| texts.filter(|t| !t.is_null(row)).map(|t| t.value(row)))
                    .collect::<std::collections::BTreeSet<_>>()
            });
            let mut names: Vec<String> = Vec::new();
            for text in texts.unwrap_or_else(|| [None].into()) {
                for name in op.models_for(&args.config_options, text) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            let options = OnnxOptions::from_config(&args.config_options);
            Models::load(&names, &options).map_err(UdfError::into_task_error)?
        };
        let batch = Batch {
            op,
            columns,
            rows,
            config: &args.config_options,
            pass: self.pass.as_ref(),
            models,
            confinement: crate::error::session_confinement(&args.config_options)
                .map_err(UdfError::into_task_error)?,
        };
        let outcomes = if batch.rows.is_empty() {
            Vec::new()
        } else {
            framefusion_media::cpu::budget().run(|| op.evaluate(&batch))?
        };
        if outcomes.len() != batch.rows.len() {
            return exec_err!(
                "{}: {} results for {} rows",
                op.name(),
                outcomes.len(),
                batch.rows.len()
            );
        }
        let returns = args.return_field.data_type().clone();
        let null = ScalarValue::try_from(&returns)?;
        let mut values = vec![null.clone(); n];
        let mut failures = Vec::new();
        let mut setup: Option<UdfError> = None;
        for (&row, outcome) in batch.rows.iter().zip(outcomes) {
            match outcome {
                Ok(value) => values[row] = value,
                Err(e) if e.is_transient() => return Err(e.into_task_error()),
                Err(e) => {
                    let failure = Failure::of(batch.video(row), op.name(), &e);
                    if e.fails_the_query() {
                        // one report says why the query failed (a run on a cluster reads
                        // its code there); the rows do not matter any more
                        if setup.is_none() {
                            failures.push(failure);
                            setup = Some(e);
                        }
                        continue;
                    }
                    log::warn!("{}: {e}", op.name());
                    let failed = op.failed(&failure.message)?;
                    values[row] = if failed.data_type() == returns {
                        failed
                    } else {
                        null.clone()
                    };
                    failures.push(failure);
                }
            }
        }
        report_failures(&args.config_options, failures)?;
        if let Some(e) = setup {
            return Err(e.into_task_error());
        }
        to_array(values, &returns)
    }
}

/// The text of a string literal (`Some(None)` for a null one; `None` for another value):
/// a call's literal options as its operator reads them.
pub fn literal_text(value: &ScalarValue) -> Option<Option<&str>> {
    match value {
        ScalarValue::Utf8(text) | ScalarValue::LargeUtf8(text) | ScalarValue::Utf8View(text) => {
            Some(text.as_deref())
        }
        _ => None,
    }
}

/// One column from row values (an empty array for no rows).
pub(crate) fn to_array(values: Vec<ScalarValue>, data_type: &DataType) -> Result<ColumnarValue> {
    if values.is_empty() {
        return Ok(ColumnarValue::Array(
            datafusion::arrow::array::new_empty_array(data_type),
        ));
    }
    Ok(ColumnarValue::Array(ScalarValue::iter_to_array(values)?))
}

/// A struct value of `fields` from `values`, in order.
pub fn struct_value(fields: &Fields, values: Vec<ScalarValue>) -> Result<ScalarValue> {
    let mut builder = ScalarStructBuilder::new();
    for (field, value) in fields.iter().zip(values) {
        builder = builder.with_scalar(field.as_ref().clone(), value);
    }
    builder.build()
}

/// The value of a failed row for operators returning a struct whose last field is
/// `error`: every other field null, `error` set to `message`.
pub fn error_struct(fields: &Fields, message: &str) -> Result<ScalarValue> {
    let mut values: Vec<ScalarValue> = fields
        .iter()
        .map(|f| ScalarValue::try_from(f.data_type()))
        .collect::<Result<_>>()?;
    if let Some(last) = values.last_mut() {
        *last = ScalarValue::Utf8(Some(message.to_owned()));
    }
    struct_value(fields, values)
}

/// A list value of `values` of type `item`.
pub fn list_value(values: Vec<ScalarValue>, item: &DataType) -> ScalarValue {
    ScalarValue::List(ScalarValue::new_list(&values, item, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Clip;

    impl VideoOperator for Clip {
        fn name(&self) -> &'static str {
            "clip_thing"
        }
        fn description(&self) -> &'static str {
            "A test operator."
        }

        fn args(&self) -> &'static [Arg] {
            const ARGS: &[Arg] = &[
                Arg::path(),
                Arg::seconds("start_s"),
                Arg::seconds("end_s"),
                Arg::options("options"),
            ];
            ARGS
        }
        fn arities(&self) -> Vec<usize> {
            vec![3, 4]
        }
        fn return_type(&self) -> DataType {
            DataType::Float64
        }
        fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
            Ok(batch.each_row(|row| {
                let (s, e) = batch.range(row).unwrap_or_default();
                if batch.path(row) == "bad" {
                    return Err(UdfError::Option("bad video".to_owned()));
                }
                Ok(ScalarValue::Float64(Some(e - s)))
            }))
        }
    }

    #[test]
    fn arguments_are_checked_with_the_usage() {
        let op = Clip;
        assert_eq!(
            VideoUdf::usage(&op),
            "clip_thing(path VARCHAR, start_s DOUBLE, end_s DOUBLE [, options VARCHAR])"
        );
        let ok = coerce_args(
            &op,
            &[DataType::Utf8View, DataType::Int32, DataType::Float32],
        );
        assert_eq!(
            ok.ok(),
            Some(vec![DataType::Utf8, DataType::Float64, DataType::Float64])
        );
        let bad = coerce_args(&op, &[DataType::Utf8, DataType::Utf8, DataType::Float64]);
        let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("start_s must be a number of seconds, not Utf8"),
            "{message}"
        );
        let few = coerce_args(&op, &[DataType::Utf8]);
        let message = few.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("takes 3 or 4 arguments, not 1"),
            "{message}"
        );
    }

    #[test]
    fn rows_follow_the_failure_rule() {
        use datafusion::arrow::datatypes::Field;
        let udf = VideoUdf::new(Arc::new(Clip));
        let paths: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("bad")]));
        let starts: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 1.0, 1.0]));
        let ends: ArrayRef = Arc::new(Float64Array::from(vec![3.5, 2.0, 2.0]));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(paths),
                ColumnarValue::Array(starts),
                ColumnarValue::Array(ends),
            ],
            arg_fields: vec![
                Arc::new(Field::new("p", DataType::Utf8, true)),
                Arc::new(Field::new("s", DataType::Float64, true)),
                Arc::new(Field::new("e", DataType::Float64, true)),
            ],
            number_rows: 3,
            return_field: Arc::new(Field::new("r", DataType::Float64, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let out = udf.invoke_with_args(args).and_then(|c| c.to_array(3));
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        let out = out.as_any().downcast_ref::<Float64Array>().cloned();
        let out = out.unwrap_or_else(|| panic!("not doubles"));
        assert_eq!(out.value(0), 2.5);
        assert!(out.is_null(1), "a null path is a null row");
        assert!(out.is_null(2), "a failed row is null");
    }
}
