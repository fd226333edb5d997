//! Checks of single expressions, wherever they stand in a query or fragment: values polars
//! would panic on, and calls that can make a result far larger than what the query reads.
//!
//! Growth: one polars string kernel (`LPAD`, `REPLACE`, a concatenation) writes its whole
//! output at once and cannot be stopped, so what a row may grow by is bounded here, where the
//! text is still small: a pad length at most [`MAX_PAD_LENGTH`], a replacement string at most
//! [`MAX_GROWTH_LITERAL`] bytes, [`MAX_CONCAT_ARGUMENTS`] pieces to a concatenation, and no
//! string literal over [`MAX_STRING_LITERAL`] bytes. `COLUMNS('regex')` is compiled first:
//! polars unwraps the compilation and a bad pattern panicked the request's thread.

use std::ops::ControlFlow;

use polars::prelude::Duration;
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Value, ValueWithSpan,
};

use super::{SqlRejection, excerpt};

/// The longest `LPAD`/`RPAD` length: padding is for aligning short codes, and a pad to 2^63
/// characters grew the server by 200 MB a second until the host ran out.
pub const MAX_PAD_LENGTH: u64 = 256;

/// The longest replacement string of `REPLACE`, in bytes: each match grows by it.
pub const MAX_GROWTH_LITERAL: usize = 256;

/// The most pieces one `CONCAT`/`CONCAT_WS` joins.
pub const MAX_CONCAT_ARGUMENTS: usize = 64;

/// The longest string literal, in bytes: a literal joined to every row is repeated as often.
pub const MAX_STRING_LITERAL: usize = 4096;

/// Every check of one expression.
pub(super) fn check_expr(expr: &Expr) -> ControlFlow<SqlRejection> {
    check_interval(expr)?;
    check_string_literal(expr)?;
    match expr {
        Expr::Function(function) => check_call(function),
        _ => ControlFlow::Continue(()),
    }
}

fn check_string_literal(expr: &Expr) -> ControlFlow<SqlRejection> {
    if let Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(text) | Value::DoubleQuotedString(text),
        ..
    }) = expr
        && text.len() > MAX_STRING_LITERAL
    {
        return ControlFlow::Break(SqlRejection::Growth(format!(
            "a string literal of {} bytes (`{}`): the limit is {MAX_STRING_LITERAL}",
            text.len(),
            excerpt(text)
        )));
    }
    ControlFlow::Continue(())
}

/// The plain arguments of a call (`f(a, b)`), or `None` for other forms.
fn arguments(function: &Function) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr),
            _ => None,
        })
        .collect()
}

fn integer_literal(expr: &Expr) -> Option<u64> {
    match expr {
        Expr::Value(ValueWithSpan {
            value: Value::Number(text, _),
            ..
        }) => text.parse().ok(),
        Expr::Nested(inner) => integer_literal(inner),
        _ => None,
    }
}

fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(text),
            ..
        }) => Some(text),
        _ => None,
    }
}

fn check_call(function: &Function) -> ControlFlow<SqlRejection> {
    let name = function.name.to_string().to_ascii_lowercase();
    let growth = |problem: String| ControlFlow::Break(SqlRejection::Growth(problem));
    match name.as_str() {
        "lpad" | "rpad" => {
            let length = arguments(function).and_then(|args| args.get(1).copied());
            match length.and_then(integer_literal) {
                Some(length) if length <= MAX_PAD_LENGTH => ControlFlow::Continue(()),
                Some(length) => growth(format!(
                    "{} pads to {length} characters: the limit is {MAX_PAD_LENGTH}",
                    name.to_ascii_uppercase()
                )),
                None => growth(format!(
                    "{} needs its length as a whole number written in the query, at most \
                     {MAX_PAD_LENGTH}",
                    name.to_ascii_uppercase()
                )),
            }
        }
        "replace" => {
            let replacement = arguments(function).and_then(|args| args.get(2).copied());
            match replacement.and_then(string_literal) {
                Some(text) if text.len() <= MAX_GROWTH_LITERAL => ControlFlow::Continue(()),
                Some(text) => growth(format!(
                    "REPLACE with a replacement of {} bytes: the limit is {MAX_GROWTH_LITERAL}",
                    text.len()
                )),
                // polars itself wants literals there; a call it cannot run is its to refuse.
                None => ControlFlow::Continue(()),
            }
        }
        "concat" | "concat_ws" => match &function.args {
            FunctionArguments::List(list) if list.args.len() > MAX_CONCAT_ARGUMENTS => {
                growth(format!(
                    "{} of {} pieces: the limit is {MAX_CONCAT_ARGUMENTS}",
                    name.to_ascii_uppercase(),
                    list.args.len()
                ))
            }
            _ => ControlFlow::Continue(()),
        },
        "columns" => {
            let pattern = arguments(function)
                .and_then(|args| args.first().copied())
                .and_then(string_literal);
            match pattern {
                Some(pattern) => check_columns_pattern(pattern),
                None => ControlFlow::Continue(()),
            }
        }
        _ => ControlFlow::Continue(()),
    }
}

/// `COLUMNS('…')`: the pattern as polars anchors it must compile.
fn check_columns_pattern(pattern: &str) -> ControlFlow<SqlRejection> {
    if pattern == "*" {
        return ControlFlow::Continue(());
    }
    let anchored = match pattern {
        _ if pattern.starts_with('^') && pattern.ends_with('$') => pattern.to_owned(),
        _ if pattern.starts_with('^') => format!("{pattern}.*$"),
        _ if pattern.ends_with('$') => format!("^.*{pattern}"),
        _ => format!("^.*{pattern}.*$"),
    };
    match regex::Regex::new(&anchored) {
        Ok(_) => ControlFlow::Continue(()),
        Err(error) => ControlFlow::Break(SqlRejection::Pattern {
            pattern: excerpt(pattern),
            problem: error
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }),
    }
}

/// polars-sql reads the string of `INTERVAL '…'` with a parser that panics on what it cannot
/// read (`INTERVAL 'abc'`, found by `tests/integration/fuzz.rs`) and, in a debug build, on
/// numbers that overflow; a duration past 64-bit nanoseconds overflows later, where it is used.
/// Each string polars would parse is read here first by polars' own non-panicking parser, and
/// refused when it cannot be read or does not fit.
fn check_interval(expr: &Expr) -> ControlFlow<SqlRejection> {
    let Expr::Interval(interval) = expr else {
        return ControlFlow::Continue(());
    };
    // polars refuses these itself, before it reads the string.
    if interval.leading_field.is_some()
        || interval.last_field.is_some()
        || interval.leading_precision.is_some()
        || interval.fractional_seconds_precision.is_some()
    {
        return ControlFlow::Continue(());
    }
    let Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(text),
        ..
    }) = interval.value.as_ref()
    else {
        return ControlFlow::Continue(());
    };
    if text.contains('-') {
        return ControlFlow::Continue(());
    }
    if !interval_fits(text) {
        return ControlFlow::Break(SqlRejection::Interval {
            text: excerpt(text),
            problem: "its numbers are too large".to_owned(),
        });
    }
    // `interval_fits` keeps polars' multiplications in range; the catch is for anything else.
    let parsed = std::panic::catch_unwind(|| Duration::try_parse_interval(text));
    let problem = match parsed {
        Ok(Ok(duration)) => {
            const NS_DAY: i128 = 86_400_000_000_000;
            // A month counted as 31 days: an upper bound of what it can add.
            let nanoseconds = i128::from(duration.months()) * 31 * NS_DAY
                + i128::from(duration.weeks()) * 7 * NS_DAY
                + i128::from(duration.days()) * NS_DAY
                + i128::from(duration.nanoseconds());
            if nanoseconds.abs() <= i128::from(i64::MAX) {
                return ControlFlow::Continue(());
            }
            "it is longer than 292 years".to_owned()
        }
        Ok(Err(error)) => error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        Err(_) => "its numbers are too large".to_owned(),
    };
    ControlFlow::Break(SqlRejection::Interval {
        text: excerpt(text),
        problem,
    })
}

/// Whether the number-unit pairs of an interval string, read as polars reads them
/// (`Duration::try_parse_interval`), stay within 64 bits at every step: polars multiplies
/// with plain arithmetic, which panics in a debug build and wraps in an optimised one. Reading
/// stops where polars would stop with an error.
fn interval_fits(text: &str) -> bool {
    const LIMIT: i128 = i64::MAX as i128;
    let text = text.to_ascii_lowercase();
    let bytes = text.trim_start().as_bytes();
    let mut pos = usize::from(matches!(bytes.first(), Some(b'+')));
    // (nanoseconds, days, weeks, months), each summed as polars sums it.
    let mut totals = [0i128; 4];
    let skip = |pos: &mut usize, also_comma: bool| {
        while *pos < bytes.len() && (bytes[*pos] == b' ' || (also_comma && bytes[*pos] == b',')) {
            *pos += 1;
        }
    };
    skip(&mut pos, false);
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        let mut n: i128 = 0;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            n = n * 10 + i128::from(bytes[pos] - b'0');
            if n > LIMIT {
                return false;
            }
            pos += 1;
        }
        skip(&mut pos, true);
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let (slot, factor): (usize, i128) = match &bytes[start..pos] {
            b"ns" | b"i" | b"nanosecond" | b"nanoseconds" => (0, 1),
            b"us" | b"microsecond" | b"microseconds" => (0, 1_000),
            b"ms" | b"millisecond" | b"milliseconds" => (0, 1_000_000),
            b"s" | b"sec" | b"secs" | b"second" | b"seconds" => (0, 1_000_000_000),
            b"m" | b"min" | b"mins" | b"minute" | b"minutes" => (0, 60_000_000_000),
            b"h" | b"hour" | b"hours" => (0, 3_600_000_000_000),
            b"d" | b"day" | b"days" => (1, 1),
            b"w" | b"week" | b"weeks" => (2, 1),
            b"mo" | b"mon" | b"mons" | b"month" | b"months" => (3, 1),
            b"q" | b"quarter" | b"quarters" => (3, 3),
            b"y" | b"year" | b"years" => (3, 12),
            // polars stops here with an error, before multiplying.
            _ => return true,
        };
        totals[slot] += n * factor;
        if n * factor > LIMIT || totals[slot] > LIMIT {
            return false;
        }
        skip(&mut pos, true);
    }
    true
}
