//! The planner rule behind one decode per video per query.
//!
//! [`VideoPassRule`] runs last among the logical optimizer rules. It collects what every
//! video operator call of the plan (subqueries included) asks of its video's frames
//! ([`crate::operator::VideoOperator::demands`]), grouped by the call's video argument (a
//! column by its name, so `path` of a CTE and `path` of the table it selects from are one
//! video; a literal by its value), and gives every call of a group the group's
//! [`PassSpec`]. At execution, the first call that reads a video runs one pass computing
//! the whole spec ([`crate::analysis`]); the others read its results.
//!
//! It also gives a call of an operator over something else than a video (`translate`'s
//! text) the row's video, when the node it is in reads a `path` column: the call's last,
//! hidden argument ([`crate::VideoOperator::row_video_arg`]), so a row's failure is
//! recorded against its video in a run's ledger (the column keeps its name).
//!
//! The rule is idempotent (it recomputes the specs from the calls and changes nothing the
//! second time), so the client and the scheduler of a cluster may both run it; the specs
//! travel with the calls in the extension codecs to the executors.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use datafusion::common::ScalarValue;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction as Call;
use datafusion::logical_expr::expr_rewriter::NamePreserver;

use crate::analysis::{Demand, PassSpec};
use crate::operator::VideoUdf;

/// See the module docs.
#[derive(Debug, Default)]
pub struct VideoPassRule;

/// The video a call reads, as a key: a column by its name, a literal by its value.
fn video_key(arg: Option<&Expr>) -> String {
    match arg {
        Some(Expr::Column(c)) => format!("column {}", c.name),
        Some(Expr::Alias(a)) => video_key(Some(&a.expr)),
        Some(Expr::Cast(c)) => video_key(Some(&c.expr)),
        Some(Expr::TryCast(c)) => video_key(Some(&c.expr)),
        Some(Expr::Literal(v, _)) => format!("value {v}"),
        Some(e) => format!("expr {}", e.schema_name()),
        None => String::new(),
    }
}

fn as_video_udf(expr: &Expr) -> Option<(&VideoUdf, &ScalarFunction)> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    (f.func.inner().as_ref() as &dyn std::any::Any)
        .downcast_ref::<VideoUdf>()
        .map(|u| (u, f))
}

impl OptimizerRule for VideoPassRule {
    fn name(&self) -> &str {
        "framefusion_video_pass"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        None
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let videos = attach_row_videos(plan)?;
        let (plan, attached) = (videos.data, videos.transformed);
        // options that name a registered function become that function's own options
        let resolved = match config.function_registry() {
            Some(registry) => resolve_options(plan, registry)?,
            None => Transformed::no(plan),
        };
        let (plan, changed) = (resolved.data, resolved.transformed || attached);
        let options = config.options();
        let mut groups: HashMap<String, Vec<Demand>> = HashMap::new();
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Some((udf, call)) = as_video_udf(e) {
                        groups
                            .entry(video_key(call.args.first()))
                            .or_default()
                            .extend(udf.operator().demands(&call.args, &options));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        let specs: HashMap<String, Arc<PassSpec>> = groups
            .into_iter()
            .filter(|(_, demands)| !demands.is_empty())
            .map(|(key, demands)| (key, Arc::new(PassSpec::new(demands))))
            .collect();
        if specs.is_empty() {
            return Ok(Transformed::new_transformed(plan, changed));
        }
        let passed = plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform_up(|e| {
                    let Some((udf, call)) = as_video_udf(&e) else {
                        return Ok(Transformed::no(e));
                    };
                    let spec = specs.get(&video_key(call.args.first())).cloned();
                    if udf.pass() == spec.as_ref() {
                        return Ok(Transformed::no(e));
                    }
                    let func = udf.with_pass(spec).into_udf();
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(func, call.args.clone()),
                    )))
                })
            })
        })?;
        Ok(Transformed::new_transformed(
            passed.data,
            passed.transformed || changed,
        ))
    }
}

/// `plan` with the row's video (its node's input's `path` column) added to each call of an
/// operator over something else that has not got it yet (see the module docs); a node
/// without a `path` column leaves its calls as they are.
fn attach_row_videos(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up_with_subqueries(|node| {
        let path = node.inputs().iter().find_map(|input| {
            input
                .schema()
                .qualified_field_with_unqualified_name("path")
                .ok()
                .map(|(qualifier, field)| {
                    Expr::Column(datafusion::common::Column::new(
                        qualifier.cloned(),
                        field.name(),
                    ))
                })
        });
        let Some(path) = path else {
            return Ok(Transformed::no(node));
        };
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let saved = names.save(&expr);
            let out = expr.transform_up(|e| {
                let Some((udf, call)) = as_video_udf(&e) else {
                    return Ok(Transformed::no(e));
                };
                let Some(at) = udf.operator().row_video_arg() else {
                    return Ok(Transformed::no(e));
                };
                if call.args.len() > at {
                    return Ok(Transformed::no(e));
                }
                let mut args = call.args.clone();
                while args.len() < at {
                    args.push(Expr::Literal(ScalarValue::Utf8(None), None));
                }
                args.push(path.clone());
                Ok(Transformed::yes(Expr::ScalarFunction(Call::new_udf(
                    Arc::clone(&call.func),
                    args,
                ))))
            })?;
            Ok(if out.transformed {
                out.update_data(|e| saved.restore(e))
            } else {
                out
            })
        })
    })
}

/// `plan` with the literal options of each video operator call rewritten by the operator
/// ([`crate::VideoOperator::resolve_options`]: `embed_clip`'s `function=NAME` becomes the
/// registered function's model options), so that every node of a cluster sees options it
/// can evaluate without the client's registry.
fn resolve_options(
    plan: LogicalPlan,
    registry: &dyn FunctionRegistry,
) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|expr| {
            expr.transform_up(|e| {
                let Some((udf, call)) = as_video_udf(&e) else {
                    return Ok(Transformed::no(e));
                };
                let op = udf.operator();
                let Some(i) = op.options_arg() else {
                    return Ok(Transformed::no(e));
                };
                let Some(Expr::Literal(value, meta)) = call.args.get(i) else {
                    return Ok(Transformed::no(e));
                };
                let Some(Some(text)) = crate::operator::literal_text(value) else {
                    return Ok(Transformed::no(e));
                };
                let Some(resolved) = op
                    .resolve_options(text, registry)
                    .map_err(crate::UdfError::into_task_error)?
                else {
                    return Ok(Transformed::no(e));
                };
                let mut args = call.args.clone();
                args[i] = Expr::Literal(ScalarValue::Utf8(Some(resolved)), meta.clone());
                Ok(Transformed::yes(Expr::ScalarFunction(Call::new_udf(
                    Arc::clone(&call.func),
                    args,
                ))))
            })
        })
    })
}
