//! `framefusion sql` without SQL: an interactive shell, as datafusion-cli, duckdb and psql
//! open.
//!
//! - Statements end with `;` and may span lines (the prompt turns to `...>` until the
//!   `;`); several on one line run in order.
//! - Tab completes SQL keywords and the names of the session's tables, every function
//!   (framefusion's and DataFusion's) and the columns of the tables queried so far.
//! - History is kept in `$FRAMEFUSION_HOME/history.txt` across sessions (arrow keys,
//!   Ctrl-R).
//! - `\d` lists the tables, `\d NAME` describes one, `\?` helps, `\q` (or Ctrl-D) quits.
//! - Ctrl-C while a query runs cancels that query (its stream is dropped: decoding and
//!   inference stop) and the shell stays; at the prompt it clears the line being typed.
//! - A spinner with the elapsed time shows on stderr while a statement runs (a terminal
//!   only); results use the `--format` given, and `--cluster` runs them on the cluster.
//! - Without a terminal (`framefusion sql < script.sql`) the statements of standard input
//!   run in turn, without the banner.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config, Context, Editor, Helper, Highlighter, Hinter, Validator};

use crate::CliError;
use crate::output::Format;

/// Keywords offered by completion besides the session's names.
const KEYWORDS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "JOIN", "LEFT",
    "RIGHT", "INNER", "OUTER", "ON", "USING", "AS", "AND", "OR", "NOT", "NULL", "IS", "IN",
    "BETWEEN", "LIKE", "DISTINCT", "UNION", "ALL", "WITH", "CASE", "WHEN", "THEN", "ELSE", "END",
    "CREATE", "EXTERNAL", "TABLE", "VIEW", "STORED", "LOCATION", "OPTIONS", "VIDEO", "PARQUET",
    "CSV", "JSON", "COPY", "TO", "INSERT", "INTO", "VALUES", "DROP", "SHOW", "TABLES", "COLUMNS",
    "DESCRIBE", "EXPLAIN", "ANALYZE", "SET", "UNNEST", "TRUE", "FALSE",
];

/// What Tab completes: keywords and the session's names, refreshed after each statement.
#[derive(Helper, Hinter, Highlighter, Validator)]
struct ShellHelper {
    names: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = before[start..].to_lowercase();
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let candidates = names
            .iter()
            .map(String::as_str)
            .chain(KEYWORDS.iter().copied())
            .filter(|name| name.to_lowercase().starts_with(&word))
            .map(|name| Pair {
                display: name.to_owned(),
                replacement: name.to_owned(),
            })
            .collect();
        Ok((start, candidates))
    }
}

/// The names of `ctx`'s tables (bare and qualified) and functions, with `columns`,
/// sorted, without repeats. Tables are not opened for this (a catalog's remote tables
/// would be listed or probed at every prompt): their columns come from the statements
/// run ([`columns_of`]).
fn session_names(ctx: &SessionContext, columns: &BTreeSet<String>) -> Vec<String> {
    let mut names: Vec<String> = columns.iter().cloned().collect();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                names.push(format!("{schema_name}.{table}"));
                names.push(table);
            }
        }
    }
    let state = ctx.state();
    names.extend(state.scalar_functions().keys().cloned());
    names.extend(state.aggregate_functions().keys().cloned());
    names.extend(state.window_functions().keys().cloned());
    names.extend(state.table_functions().keys().cloned());
    names.sort();
    names.dedup();
    names
}

/// Adds to `columns` the columns of the tables `statements` named (open already: the
/// statements ran).
async fn columns_of(ctx: &SessionContext, statements: &str, columns: &mut BTreeSet<String>) {
    let Ok(parsed) = ctx.parse_script(statements) else {
        return;
    };
    let state = ctx.state();
    for statement in &parsed {
        for table in state
            .resolve_table_references(statement)
            .unwrap_or_default()
        {
            if let Ok(provider) = ctx.table_provider(table).await {
                columns.extend(provider.schema().fields().iter().map(|f| f.name().clone()));
            }
        }
    }
}

/// Whether `buffer` holds complete statements: it ends with `;` (outside a comment).
fn complete(buffer: &str) -> bool {
    buffer
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .ends_with(';')
}

const HELP: &str = "statements end with ';' and may span lines; Tab completes names; \\d lists tables, \\d NAME describes one, \\q quits; Ctrl-C cancels a running query";

/// Runs the shell on `ctx` until `\q` or end of input.
pub async fn run(ctx: &SessionContext, format: Format) -> Result<(), CliError> {
    let readline_error = |e: ReadlineError| CliError::Io {
        context: "the shell cannot read its input".to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(10_000)
        .map_err(readline_error)?
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::with_config(config).map_err(readline_error)?;
    let mut columns = BTreeSet::new();
    let names = Arc::new(Mutex::new(session_names(ctx, &columns)));
    editor.set_helper(Some(ShellHelper {
        names: Arc::clone(&names),
    }));
    let history = framefusion_engine::framefusion_home().join("history.txt");
    if history.is_file()
        && let Err(e) = editor.load_history(&history)
    {
        eprintln!(
            "warning: cannot read the history in {}: {e}",
            history.display()
        );
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        println!(
            "framefusion {} SQL shell: {HELP}",
            env!("CARGO_PKG_VERSION")
        );
    }
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "framefusion> "
        } else {
            "        ...> "
        };
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(readline_error(e)),
        };
        if buffer.is_empty() && line.trim_start().starts_with('\\') {
            remember(&mut editor, &history, line.trim());
            match command(line.trim()) {
                Command::Quit => break,
                Command::Help => println!("{HELP}"),
                Command::Sql(sql) => execute(ctx, &sql, format).await,
                Command::Unknown => eprintln!("error: unknown command '{}'; {HELP}", line.trim()),
            }
            continue;
        }
        if buffer.is_empty() && line.trim().is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !complete(&buffer) {
            continue;
        }
        let statements = std::mem::take(&mut buffer);
        remember(&mut editor, &history, statements.trim_end());
        execute(ctx, &statements, format).await;
        columns_of(ctx, &statements, &mut columns).await;
        let fresh = session_names(ctx, &columns);
        *names.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
    Ok(())
}

/// Adds `entry` to the history and appends it to the history file at once, so that a
/// killed shell loses nothing.
fn remember(editor: &mut Editor<ShellHelper, FileHistory>, file: &std::path::Path, entry: &str) {
    if editor.add_history_entry(entry).unwrap_or(false)
        && let Err(e) = editor.append_history(file)
    {
        log::warn!("cannot write the history to {}: {e}", file.display());
    }
}

/// A backslash command.
enum Command {
    Quit,
    Help,
    Sql(String),
    Unknown,
}

fn command(text: &str) -> Command {
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q"), None) => Command::Quit,
        (Some("\\?" | "\\h"), None) => Command::Help,
        (Some("\\d" | "\\dt"), None) => Command::Sql("SHOW TABLES;".to_owned()),
        (Some("\\d"), Some(table)) => Command::Sql(format!("DESCRIBE {table};")),
        _ => Command::Unknown,
    }
}

/// Runs `statements`, printing their results or one error line; Ctrl-C cancels them.
async fn execute(ctx: &SessionContext, statements: &str, format: Format) {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} running {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(200));
    let work = crate::output::run_script(ctx, statements, format, None, Some(&spinner));
    tokio::select! {
        outcome = work => {
            spinner.finish_and_clear();
            if let Err(e) = outcome {
                eprintln!("error: {e}");
            }
        }
        _ = tokio::signal::ctrl_c() => {
            spinner.finish_and_clear();
            eprintln!("cancelled");
        }
    }
}
