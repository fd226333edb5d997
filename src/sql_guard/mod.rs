//! The one gate every SQL text passes before polars sees it: queries (`sql` jobs, `/query`)
//! and fragments (filters, metrics, aggregations), from pipeline files, uploads and requests.
//!
//! Two dangers, both checked here and nowhere else:
//!
//! - **Depth.** sqlparser builds a chain of `a OR b OR c …` iteratively, but polars converts,
//!   optimises, prints and drops the resulting tree recursively: 1,400 `OR`s in a 10 KB request
//!   overflowed a 2 MiB thread stack and aborted the whole server. [`nesting_bound`] bounds the
//!   depth of the tree a text can produce from its tokens alone, in one linear pass and before
//!   anything is parsed, so a deep text is refused without ever building its tree.
//! - **Reach.** polars' SQL has table functions (`read_csv('/etc/passwd')`, `read_parquet`,
//!   `read_ipc`, `read_json`) that read any file or URL, and statements that change the SQL
//!   context. A query may be one `SELECT` whose relations are plain table names (bound by Floe),
//!   subqueries, joins and `UNNEST`; nothing else. A fragment may not hold a subquery at all
//!   (polars would run it in a fresh context, table functions included). These rules look at
//!   the syntax tree, so they hold whatever the job's inputs are called.
//!
//! The limits are fixed, not settings: they protect the stacks of the threads SQL runs on, and
//! no real query comes near them (`docs/security.md`).
//!
//! A third danger, **size**, is only known once the query is planned over its tables: a join
//! can produce many times the rows it reads. Its limit, [`max_join_rows`], is a process-wide
//! setting (`limits.max_join_rows`) kept here beside the other SQL limits; the bound itself is
//! computed by [`crate::frames::join_bound`] and enforced in `Sql::run`.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlparser::ast::{Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserOptions};
use sqlparser::tokenizer::{Token, Tokenizer};

mod expressions;

use expressions::check_expr;
pub use expressions::{
    MAX_CONCAT_ARGUMENTS, MAX_GROWTH_LITERAL, MAX_PAD_LENGTH, MAX_STRING_LITERAL,
};

/// The deepest expression tree a SQL text may produce, counted as [`nesting_bound`] counts.
/// polars handled 1,000 levels on a 2 MiB stack in our tests and crashed at 1,400; this leaves
/// a wide margin for the other frames a thread holds.
pub const MAX_SQL_DEPTH: usize = 256;

/// The most tokens sqlparser may read beyond one pass over a text, as [`parse_work_bound`]
/// counts them: about 20 ms in a debug build, 2 ms optimised. A text that nests keyword calls
/// (`CAST(`, `SUBSTR(`, `POSITION(` …) so deeply that its reading could double level after
/// level is refused before any parser sees it; 30 such levels took sqlparser hours.
pub const MAX_SQL_PARSE_WORK: usize = 1 << 15;

/// The most relations (tables, subqueries, `UNNEST`s) one query may name. Each join is a level
/// of polars' plan, and a cross join multiplies rows: the cap bounds both.
pub const MAX_SQL_RELATIONS: usize = 32;

/// The default of [`max_join_rows`]: 50 million rows.
///
/// A join's output is built by one polars kernel that nothing interrupts, so this caps the
/// memory one kernel can take. Each output row costs the join's two row indices (8 bytes) and
/// then, when the columns are gathered, 8 to 16 bytes per column (16 for a string view, plus
/// its bytes when longer than 12); the 5-way cross join that took the server to 13.7 GB made
/// 60.5M rows, about 230 bytes a row. At that width 50M rows is about 11 GB; a join of 5 to 10
/// numeric columns is 2 to 5 GB. That fits a 16 GB host running one such query beside its
/// caches, and no report Floe serves needs more (its results are aggregates: a query that
/// joins this much should aggregate before joining). Hosts with less memory should lower it.
pub const DEFAULT_MAX_JOIN_ROWS: u64 = 50_000_000;

/// The process-wide join limit (see [`max_join_rows`]).
static MAX_JOIN_ROWS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_JOIN_ROWS);

/// The most rows any join of a SQL query may be able to produce (`limits.max_join_rows`); a
/// query whose join can produce more is refused before it runs. `u64::MAX` turns the check off.
pub fn max_join_rows() -> u64 {
    MAX_JOIN_ROWS.load(Ordering::Relaxed)
}

/// Sets [`max_join_rows`] for the whole process (the server's `limits.max_join_rows`).
pub fn set_max_join_rows(rows: u64) {
    MAX_JOIN_ROWS.store(rows, Ordering::Relaxed);
}

/// Free stack a thread must have to plan and run SQL as deep as [`MAX_SQL_DEPTH`], and the size
/// of the stack lent when it has less. polars needs about 1.5 KiB a level in an optimised build
/// (a 1,400-level tree overflowed 2 MiB); an unoptimised build needs about 40 KiB a level.
const SQL_STACK_RED_ZONE: usize = if cfg!(debug_assertions) {
    16 << 20
} else {
    1 << 20
};
const SQL_STACK_SIZE: usize = if cfg!(debug_assertions) {
    32 << 20
} else {
    8 << 20
};

/// Runs `f`, which parses, plans or runs SQL, with at least [`SQL_STACK_RED_ZONE`] of stack:
/// on the caller's own stack when it has that much free (a 2 MiB thread does, in an
/// optimised build), otherwise on a stack lent for the call.
pub fn with_sql_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(SQL_STACK_RED_ZONE, SQL_STACK_SIZE, f)
}

/// Why a SQL text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlRejection {
    #[error(
        "is nested too deeply: about {bound} levels of operators and parentheses, the limit is \
         {MAX_SQL_DEPTH} (split long OR/AND chains into IN (…) lists or several jobs)"
    )]
    TooDeep { bound: usize },
    #[error(
        "nests keyword calls (CAST, SUBSTR, CEIL, POSITION, …) too deeply to parse: reading it \
         could take about {work} more steps than one pass, the limit is {MAX_SQL_PARSE_WORK} \
         (nest fewer of them, or split the expression)"
    )]
    TooCostly { work: usize },
    #[error("names {count} relations; the limit is {MAX_SQL_RELATIONS} per query")]
    TooManyRelations { count: usize },
    #[error(
        "calls the table function `{name}`: a query reads only the tables Floe binds (the job's \
         inputs, named objects, results), never files or URLs"
    )]
    TableFunction { name: String },
    #[error("reads `{what}`, which is not allowed: a query reads only tables Floe binds")]
    Relation { what: String },
    #[error(
        "is a {what} statement: only a single SELECT query is allowed (no DDL, DML, EXPLAIN or \
         SHOW)"
    )]
    Statement { what: String },
    #[error("holds {count} statements: only one SELECT query is allowed")]
    Statements { count: usize },
    #[error(
        "holds a subquery: a filter or aggregation is one expression over the job's rows, \
         without SELECT"
    )]
    Subquery,
    #[error("cannot be parsed: {0}")]
    Syntax(String),
    #[error("holds the interval `{text}`, which cannot be read: {problem}")]
    Interval { text: String, problem: String },
    #[error("could grow its rows without bound: {0}")]
    Growth(String),
    #[error("holds COLUMNS('{pattern}'), which is not a valid regular expression: {problem}")]
    Pattern { pattern: String, problem: String },
}

/// What a checked query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryShape {
    /// The tables the query names (common table expressions excluded), first use first.
    pub tables: Vec<String>,
}

fn parser_for(text: &str) -> Result<Parser<'static>, SqlRejection> {
    // polars' own options, so a text accepted here parses the same way there.
    Parser::new(&GenericDialect)
        .with_options(ParserOptions {
            trailing_commas: true,
            ..Default::default()
        })
        .try_with_sql(text)
        .map_err(|e| SqlRejection::Syntax(e.to_string()))
}

/// Checks a whole query (a `sql` job, `/query`): depth, one `SELECT`, plain relations only.
pub fn check_query(text: &str) -> Result<QueryShape, SqlRejection> {
    check_depth(text)?;
    check_parse_work(text)?;
    // sqlparser recurses as deep as the text nests (a debug build overflowed a 2 MiB stack at
    // 12 nested `JOIN (`), and so do the walk and the drop of its tree: on a stack with room.
    with_sql_stack(|| query_shape(text))
}

fn query_shape(text: &str) -> Result<QueryShape, SqlRejection> {
    let statements = parser_for(text)?
        .parse_statements()
        .map_err(|e| SqlRejection::Syntax(e.to_string()))?;
    let [statement] = statements.as_slice() else {
        return Err(SqlRejection::Statements {
            count: statements.len(),
        });
    };
    let Statement::Query(query) = statement else {
        return Err(SqlRejection::Statement {
            what: statement_kind(statement),
        });
    };
    let mut walk = RelationWalk::default();
    if let ControlFlow::Break(rejection) = query.visit(&mut walk) {
        return Err(rejection);
    }
    let tables = walk
        .tables
        .into_iter()
        .filter(|table| !walk.ctes.contains(table))
        .collect();
    Ok(QueryShape { tables })
}

/// Checks an expression fragment (a filter, a metric, an aggregation): depth, no subquery.
/// A text sqlparser cannot read is left to polars, whose error names the field.
pub fn check_expression(text: &str) -> Result<(), SqlRejection> {
    check_depth(text)?;
    check_parse_work(text)?;
    with_sql_stack(|| check_fragment(text))
}

fn check_fragment(text: &str) -> Result<(), SqlRejection> {
    let Ok(item) = parser_for(text).and_then(|mut parser| {
        parser
            .parse_select_item()
            .map_err(|e| SqlRejection::Syntax(e.to_string()))
    }) else {
        return Ok(());
    };
    match item.visit(&mut FragmentWalk) {
        ControlFlow::Break(rejection) => Err(rejection),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The start of `text` for an error message: a refused text may be megabytes long.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 80;
    crate::error::first_chars(text.trim(), SHOWN)
}

fn check_depth(text: &str) -> Result<(), SqlRejection> {
    match nesting_bound(text) {
        Some(bound) if bound <= MAX_SQL_DEPTH => Ok(()),
        Some(bound) => Err(SqlRejection::TooDeep { bound }),
        // The tokenizer's own error (an unterminated string, say) is the parser's to report.
        None => Ok(()),
    }
}

/// The keywords sqlparser 0.62 reads in a form of their own at the start of an expression
/// (`parse_expr_prefix_by_reserved_word`) or as a data type before a string
/// (`parse_data_type`), and reads again as a plain call when that form fails. `IN (`, `OVER (`,
/// `JOIN (` and the like are read once.
const REREAD_KEYWORDS: &[Keyword] = &[
    Keyword::ARRAY,
    Keyword::BOX,
    Keyword::CASE,
    Keyword::CAST,
    Keyword::CEIL,
    Keyword::CIRCLE,
    Keyword::CONVERT,
    Keyword::CURRENT_CATALOG,
    Keyword::CURRENT_DATE,
    Keyword::CURRENT_TIME,
    Keyword::CURRENT_TIMESTAMP,
    Keyword::CURRENT_USER,
    Keyword::EXISTS,
    Keyword::EXTRACT,
    Keyword::FALSE,
    Keyword::FLOOR,
    Keyword::INTERVAL,
    Keyword::LAMBDA,
    Keyword::LINE,
    Keyword::LOCALTIME,
    Keyword::LOCALTIMESTAMP,
    Keyword::LOWCARDINALITY,
    Keyword::LSEG,
    Keyword::MAP,
    Keyword::MATCH,
    Keyword::NESTED,
    Keyword::NOT,
    Keyword::NULL,
    Keyword::NULLABLE,
    Keyword::OVERLAY,
    Keyword::PATH,
    Keyword::POINT,
    Keyword::POLYGON,
    Keyword::POSITION,
    Keyword::PRIOR,
    Keyword::SAFE_CAST,
    Keyword::SESSION_USER,
    Keyword::STRUCT,
    Keyword::SUBSTR,
    Keyword::SUBSTRING,
    Keyword::TABLE,
    Keyword::TRIM,
    Keyword::TRUE,
    Keyword::TRY_CAST,
    Keyword::TRY_CONVERT,
    Keyword::TUPLE,
    Keyword::UNION,
    Keyword::USER,
];

fn check_parse_work(text: &str) -> Result<(), SqlRejection> {
    match parse_work_bound(text) {
        Some(work) if work > MAX_SQL_PARSE_WORK => Err(SqlRejection::TooCostly { work }),
        // Within the limit, or a tokenizer error the parser will report.
        _ => Ok(()),
    }
}

/// An upper bound on the tokens sqlparser reads beyond one pass over `text` (`None` when it
/// does not tokenize). Linear in the text, with no recursion.
///
/// sqlparser (0.62, the version polars parses with) reads a keyword that has a form of its own
/// (`CAST(x AS t)`, `SUBSTR(x FROM 1)`, `CEIL(x TO DAY)`, `CURRENT_DATE`, `NOT (…)`, a type such
/// as `MAP(…)` before a string, …) by trying that form and, when it fails, reading the same
/// tokens again as a plain function call. Each such call that encloses an error doubles the
/// reading of everything it encloses, and `POSITION(` triples it: 20 nested `SUBSTR(` before an
/// unclosed parenthesis took seconds, 127 would never end. So each token counts the product of
/// the factors of the calls open around it, less the one pass every token costs. Every
/// [`REREAD_KEYWORDS`] before `(`, `[` or `{` is counted as such a call, which over-estimates
/// (a call that parses costs one pass) but never under-estimates.
pub fn parse_work_bound(text: &str) -> Option<usize> {
    let tokens = Tokenizer::new(&GenericDialect, text).tokenize().ok()?;
    // The reading factor outside each open bracket, innermost last.
    let mut outer = Vec::new();
    let mut factor: usize = 1;
    let mut work: usize = 0;
    let mut keyword_before = Keyword::NoKeyword;
    for token in &tokens {
        match token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket | Token::LBrace => {
                let call = match keyword_before {
                    Keyword::POSITION => 3,
                    keyword if REREAD_KEYWORDS.contains(&keyword) => 2,
                    _ => 1,
                };
                outer.push(factor);
                factor = factor.saturating_mul(call);
                work = work.saturating_add(factor - 1);
            }
            // The closing bracket is read with what it closes.
            Token::RParen | Token::RBracket | Token::RBrace => {
                work = work.saturating_add(factor - 1);
                factor = outer.pop().unwrap_or(1);
            }
            _ => work = work.saturating_add(factor - 1),
        }
        keyword_before = match token {
            Token::Word(word) => word.keyword,
            _ => Keyword::NoKeyword,
        };
    }
    Some(work)
}

/// An upper bound on the depth of the syntax tree `text` can parse to, from its tokens alone
/// (`None` when it does not tokenize). Linear in the text, with no recursion.
///
/// Within one group (the text, or what a pair of parentheses, brackets or `CASE … END`
/// encloses), each comma-separated part is one expression. Its tree can be no deeper than the
/// operators it holds plus the deepest group inside it, plus one for the group itself: every
/// operator, and every group opened, is counted as a level. Counting so coarsely over-estimates
/// (`a + b * c` counts 2) but never under-estimates, which is what a limit needs.
pub fn nesting_bound(text: &str) -> Option<usize> {
    #[derive(Default)]
    struct Group {
        case: bool,
        /// Levels of the part being read: operators and groups opened in it.
        levels: usize,
        /// The deepest group closed within the part being read.
        deepest_inner: usize,
        /// The deepest part read so far.
        deepest_part: usize,
        /// Branches of a CASE: polars nests each WHEN inside the previous one's otherwise.
        branches: usize,
    }
    impl Group {
        fn end_part(&mut self) {
            self.deepest_part = self.deepest_part.max(self.levels + self.deepest_inner);
            self.levels = 0;
            self.deepest_inner = 0;
        }
        fn bound(mut self) -> usize {
            self.end_part();
            self.deepest_part + self.branches + 1
        }
    }
    let tokens = Tokenizer::new(&GenericDialect, text).tokenize().ok()?;
    let mut groups = vec![Group::default()];
    for token in &tokens {
        let in_case = groups.last().is_some_and(|g| g.case);
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => open(&mut groups, false),
            Token::Word(word) if word.keyword == Keyword::CASE => open(&mut groups, true),
            Token::RParen | Token::RBracket | Token::RBrace => close(&mut groups),
            Token::Word(word) if word.keyword == Keyword::END && in_case => close(&mut groups),
            Token::Comma | Token::SemiColon => end_part(&mut groups),
            Token::Word(word)
                if in_case
                    && matches!(word.keyword, Keyword::WHEN | Keyword::THEN | Keyword::ELSE) =>
            {
                end_part(&mut groups);
                if word.keyword == Keyword::WHEN
                    && let Some(group) = groups.last_mut()
                {
                    group.branches += 1;
                }
            }
            token if is_level(token) => {
                if let Some(group) = groups.last_mut() {
                    group.levels += 1;
                }
            }
            _ => {}
        }
    }
    fn open(groups: &mut Vec<Group>, case: bool) {
        if let Some(outer) = groups.last_mut() {
            outer.levels += 1;
        }
        groups.push(Group {
            case,
            ..Group::default()
        });
    }
    fn close(groups: &mut Vec<Group>) {
        if groups.len() > 1
            && let Some(group) = groups.pop()
            && let Some(outer) = groups.last_mut()
        {
            outer.deepest_inner = outer.deepest_inner.max(group.bound());
        }
    }
    fn end_part(groups: &mut [Group]) {
        if let Some(group) = groups.last_mut() {
            group.end_part();
        }
    }
    // Unclosed groups (a syntax error the parser will report) still count.
    while groups.len() > 1 {
        close(&mut groups);
    }
    groups.pop().map(Group::bound)
}

/// Whether a token can add a level to the tree: operators and operator keywords. Names,
/// literals, punctuation and whitespace cannot; anything unknown is counted.
fn is_level(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(
            word.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::XOR
                | Keyword::IS
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::REGEXP
                | Keyword::RLIKE
                | Keyword::BETWEEN
                | Keyword::OVERLAPS
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::DIV
                | Keyword::ANY
                | Keyword::ALL
                | Keyword::SOME
                | Keyword::EXISTS
                | Keyword::INTERVAL
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::MINUS
                | Keyword::JOIN
        ),
        Token::EOF
        | Token::Number(..)
        | Token::Whitespace(_)
        | Token::Comma
        | Token::Period
        | Token::SemiColon
        | Token::Colon
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::Placeholder(_) => false,
        _ => true,
    }
}

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_ascii_uppercase()
}

/// Collects a query's tables and refuses any relation that is not a plain table name, a
/// subquery, a join or `UNNEST`.
#[derive(Default)]
struct RelationWalk {
    tables: Vec<String>,
    ctes: Vec<String>,
    relations: usize,
}

impl Visitor for RelationWalk {
    type Break = SqlRejection;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<SqlRejection> {
        check_expr(expr)
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<SqlRejection> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.push(cte.alias.name.value.clone());
            }
        }
        // Set operations and VALUES are plain SELECTs underneath; anything else (a TABLE
        // statement, an INSERT in a CTE) is refused.
        check_set_expr(&query.body)
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<SqlRejection> {
        self.relations += 1;
        if self.relations > MAX_SQL_RELATIONS {
            return ControlFlow::Break(SqlRejection::TooManyRelations {
                count: self.relations,
            });
        }
        match factor {
            TableFactor::Table { name, args, .. } => {
                if args.is_some() {
                    return ControlFlow::Break(SqlRejection::TableFunction {
                        name: name.to_string(),
                    });
                }
                let table = name
                    .0
                    .last()
                    .and_then(|part| part.as_ident())
                    .map(|ident| ident.value.clone())
                    .unwrap_or_else(|| name.to_string());
                if !self.tables.contains(&table) {
                    self.tables.push(table);
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. } => ControlFlow::Continue(()),
            TableFactor::TableFunction { expr, .. } => {
                ControlFlow::Break(SqlRejection::TableFunction {
                    name: expr.to_string(),
                })
            }
            TableFactor::Function { name, .. } => ControlFlow::Break(SqlRejection::TableFunction {
                name: name.to_string(),
            }),
            other => ControlFlow::Break(SqlRejection::Relation {
                what: other.to_string().chars().take(60).collect(),
            }),
        }
    }
}

fn check_set_expr(body: &SetExpr) -> ControlFlow<SqlRejection> {
    let mut pending = vec![body];
    while let Some(expr) = pending.pop() {
        match expr {
            SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => {}
            SetExpr::SetOperation { left, right, .. } => {
                pending.push(left);
                pending.push(right);
            }
            other => {
                return ControlFlow::Break(SqlRejection::Statement {
                    what: other
                        .to_string()
                        .split_whitespace()
                        .next()
                        .unwrap_or("unknown")
                        .to_ascii_uppercase(),
                });
            }
        }
    }
    ControlFlow::Continue(())
}

/// Refuses subqueries (and so every relation) inside an expression fragment.
struct FragmentWalk;

impl Visitor for FragmentWalk {
    type Break = SqlRejection;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<SqlRejection> {
        match expr {
            Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                ControlFlow::Break(SqlRejection::Subquery)
            }
            _ => check_expr(expr),
        }
    }

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<SqlRejection> {
        ControlFlow::Break(SqlRejection::Subquery)
    }
}

#[cfg(test)]
mod tests;
