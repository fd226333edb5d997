//! How a join is named in the message that refuses it: its kind, the tables on each side
//! (by the names the query gave them), its keys.

use std::sync::Arc;

use polars::prelude::*;
use polars_plan::dsl::ScanSources;
use polars_plan::plans::expr_ir::ExprIR;
use polars_plan::plans::{AExpr, IR, IRPlan};
use polars_plan::prelude::{JoinTypeOptionsIR, Node};

use super::*;

/// The tables a SQL context registered, recognised in a plan by the frames and files they read.
#[derive(Debug, Default)]
pub(super) struct TableNames {
    /// In-memory frames by address.
    pub(super) frames: Vec<(usize, String)>,
    /// Scanned files by path.
    pub(super) paths: Vec<(String, String)>,
}

impl TableNames {
    pub(super) fn of(tables: &[(&str, &LazyFrame)]) -> Self {
        let mut names = TableNames::default();
        for (name, frame) in tables {
            for node in frame.logical_plan.into_iter().take(DSL_NODES_READ) {
                match node {
                    DslPlan::DataFrameScan { df, .. } => names
                        .frames
                        .push((Arc::as_ptr(df) as usize, (*name).to_owned())),
                    DslPlan::Scan {
                        sources: ScanSources::Paths(paths),
                        ..
                    } => {
                        for path in paths.iter() {
                            names.paths.push((path.to_string(), (*name).to_owned()));
                        }
                    }
                    _ => {}
                }
            }
        }
        names
    }

    /// How a leaf of the plan is named in a message.
    pub(super) fn leaf(&self, ir: &IR) -> Option<String> {
        match ir {
            IR::DataFrameScan { df, .. } => {
                let address = Arc::as_ptr(df) as usize;
                Some(match self.frames.iter().find(|(a, _)| *a == address) {
                    Some((_, name)) => name.clone(),
                    None if df.width() == 0 => "values".to_owned(),
                    None => format!("a table of ({})", excerpt_names(df.get_column_names())),
                })
            }
            IR::Scan { sources, .. } => {
                let first = sources.first_path().map(|p| p.to_string());
                Some(
                    match first
                        .as_ref()
                        .and_then(|p| self.paths.iter().find(|(path, _)| path == p))
                    {
                        Some((_, name)) => name.clone(),
                        None => format!("`{}`", first.unwrap_or_else(|| "a scan".to_owned())),
                    },
                )
            }
            _ => None,
        }
    }
}

pub(super) fn excerpt_names<'a>(names: impl IntoIterator<Item = &'a PlSmallStr>) -> String {
    const SHOWN: usize = 4;
    let names: Vec<&str> = names.into_iter().map(PlSmallStr::as_str).collect();
    let mut text = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(", …");
    }
    text
}

/// "inner join of events and users on user_id = id": the join's kind, the tables each side
/// reads, its keys.
pub(super) fn describe_join(plan: &IRPlan, node: Node, names: &TableNames) -> String {
    let IR::Join {
        input_left,
        input_right,
        left_on,
        right_on,
        options,
        ..
    } = plan.lp_arena.get(node)
    else {
        return "join".to_owned();
    };
    let kind = match (&options.args.how, &options.options) {
        (JoinType::Cross, None) => "cross join",
        (JoinType::Cross, Some(JoinTypeOptionsIR::CrossAndFilter { .. })) => "filtered cross join",
        (JoinType::Inner, _) => "inner join",
        (JoinType::Left, _) => "left join",
        (JoinType::Right, _) => "right join",
        (JoinType::Full, _) => "full join",
        (JoinType::Semi, _) => "semi join",
        (JoinType::Anti, _) => "anti join",
        (JoinType::IEJoin | JoinType::Range, _) => "inequality join",
        _ => "join",
    };
    let mut text = format!(
        "{kind} of {} and {}",
        describe_side(plan, *input_left, names),
        describe_side(plan, *input_right, names)
    );
    let key = |e: &ExprIR| match plan.expr_arena.get(e.node()) {
        AExpr::Column(name) => name.to_string(),
        _ => e.display(&plan.expr_arena).to_string(),
    };
    let pairs: Vec<String> = left_on
        .iter()
        .zip(right_on)
        .map(|(l, r)| format!("{} = {}", key(l), key(r)))
        .collect();
    if !pairs.is_empty() && !matches!(options.args.how, JoinType::IEJoin | JoinType::Range) {
        text.push_str(" on ");
        text.push_str(&pairs.join(" and "));
    }
    text
}

/// The tables one side of a join reads, first found first, each once.
pub(super) fn describe_side(plan: &IRPlan, side: Node, names: &TableNames) -> String {
    const SHOWN: usize = 3;
    let mut labels: Vec<String> = Vec::new();
    let mut seen = vec![false; plan.lp_arena.len()];
    let mut stack = vec![side];
    while let Some(node) = stack.pop() {
        if seen.get(node.0).copied().unwrap_or(true) {
            continue;
        }
        seen[node.0] = true;
        let ir = plan.lp_arena.get(node);
        if let Some(label) = names.leaf(ir)
            && !labels.contains(&label)
        {
            labels.push(label);
        }
        // Reversed, so the left-most input is described first.
        let inputs: Vec<Node> = ir.inputs().collect();
        stack.extend(inputs.into_iter().rev());
    }
    match labels.len() {
        0 => "a derived table".to_owned(),
        n if n <= SHOWN => labels.join(", "),
        n => format!("{} and {} more", labels[..SHOWN].join(", "), n - SHOWN),
    }
}
