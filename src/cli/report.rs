//! `exchange-cli report`: what the reporter wrote (trades, orders, executions, balance changes,
//! order events) and where it stands, from its SQLite database.
//!
//! The database is opened read-only, so a node may be writing it at the same time.

use std::io::Write;
use std::path::PathBuf;

use rusqlite::Connection;

use crate::report::query::{self, Filter, Tabular};
use crate::report::ReportError;

/// List what the reporter wrote into its database (it may be in use by a running node).
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub what: ReportWhat,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportWhat {
    /// Trades, one row per match: price, quantity, aggressor side, taker and maker (oldest first).
    Trades(ListArgs),
    /// Orders as they stand now: status, filled and open quantity (by creation time).
    Orders(ListArgs),
    /// Executions, both sides of every match (oldest first).
    Executions(ListArgs),
    /// Balance changes: deposits and withdrawals, with the balance after each (oldest first).
    Balances(ListArgs),
    /// Order events: accepted, rejected, cancelled, replaced, refused cancels and replaces,
    /// mass cancels, duplicate orders (oldest first). Rejected orders appear only here.
    Events(ListArgs),
    /// The reporter's cursor (last log index written), the rows in each table, and the gaps
    /// (log ranges skipped when the node installed a snapshot).
    Summary(SummaryArgs),
}

/// Which rows to list and how to print them.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The report database file (the node's --report-db).
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    /// Only rows about this account (trades: the taker's or the maker's).
    #[arg(long, value_name = "N")]
    pub account: Option<u64>,
    /// Only rows on this symbol, by name or number (not for balances).
    #[arg(long, value_name = "SYMBOL")]
    pub symbol: Option<String>,
    /// Only balance changes of this asset, by name or number (balances only).
    #[arg(long, value_name = "ASSET")]
    pub asset: Option<String>,
    /// Only rows at or after this time, in nanoseconds since the Unix epoch (orders: their
    /// creation time).
    #[arg(long, value_name = "NS")]
    pub from: Option<u64>,
    /// Only rows before this time, in nanoseconds since the Unix epoch.
    #[arg(long, value_name = "NS")]
    pub to: Option<u64>,
    /// At most this many rows, the oldest first (use --from to page on); 0 for all.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
    #[command(flatten)]
    pub format: Format,
}

#[derive(clap::Args, Debug)]
pub struct SummaryArgs {
    /// The report database file (the node's --report-db).
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    #[command(flatten)]
    pub format: Format,
}

/// How to print: an aligned table with a header by default.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct Format {
    /// One JSON object per line.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV: a header line, then one line per row (summary: the counts only).
    #[arg(long)]
    pub csv: bool,
}

/// Runs `exchange-cli report ...`, printing to `out`.
pub fn run(args: &ReportArgs, out: &mut dyn Write) -> Result<(), String> {
    match &args.what {
        ReportWhat::Trades(list) => print_list(list, out, false, query::trades),
        ReportWhat::Orders(list) => print_list(list, out, false, query::orders),
        ReportWhat::Executions(list) => print_list(list, out, false, query::executions),
        ReportWhat::Balances(list) => print_list(list, out, true, query::balance_changes),
        ReportWhat::Events(list) => print_list(list, out, false, query::order_events),
        ReportWhat::Summary(summary) => print_summary(summary, out),
    }
}

type Query<T> = fn(&Connection, &Filter) -> Result<Vec<T>, ReportError>;

fn print_list<T: Tabular>(
    args: &ListArgs,
    out: &mut dyn Write,
    balances: bool,
    query: Query<T>,
) -> Result<(), String> {
    if balances && args.symbol.is_some() {
        return Err("--symbol does not apply to balances (they are per asset: use --asset)".into());
    }
    if !balances && args.asset.is_some() {
        return Err("--asset applies to balances only".into());
    }
    let conn = query::open_read_only(&args.db).map_err(|e| e.to_string())?;
    let names = query::names(&conn).map_err(|e| e.to_string())?;
    // A name, or a number (named or not).
    let id = |text: &str, named: Vec<(&i64, &String)>, what: &str| {
        text.parse::<u32>().or_else(|_| {
            named
                .into_iter()
                .find(|(_, name)| name.as_str() == text)
                .map(|(id, _)| *id as u32)
                .ok_or_else(|| format!("no {what} is called {text:?} in this database"))
        })
    };
    let filter = Filter {
        account: args.account,
        symbol: args
            .symbol
            .as_deref()
            .map(|s| {
                id(
                    s,
                    names.symbols.iter().map(|(i, v)| (i, &v.0)).collect(),
                    "symbol",
                )
            })
            .transpose()?,
        asset: args
            .asset
            .as_deref()
            .map(|a| {
                id(
                    a,
                    names.assets.iter().map(|(i, v)| (i, &v.0)).collect(),
                    "asset",
                )
            })
            .transpose()?,
        from_ns: args.from,
        to_ns: args.to,
        limit: (args.limit > 0).then_some(args.limit),
    };
    let rows = query(&conn, &filter).map_err(|e| e.to_string())?;
    if args.format.json || args.format.csv {
        return print_rows(&rows, args.format, out);
    }
    let header: Vec<String> = T::COLUMNS.iter().map(|c| for_people(c)).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            readable(T::COLUMNS, row.cells(), &names)
                .into_iter()
                .map(|c| c.unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect();
    write_table(&header, &cells, out)
}

/// A column's heading in a table people read: times lose their `_ns`.
fn for_people(column: &str) -> String {
    column.strip_suffix("_ns").unwrap_or(column).to_string()
}

/// One row as people read it: symbols and assets by name, prices, quantities and amounts as
/// decimals on their scales, times in RFC 3339. Ids nobody named stay numbers.
fn readable(
    columns: &[&str],
    cells: Vec<Option<String>>,
    names: &query::Names,
) -> Vec<Option<String>> {
    let id = |column: &str| {
        columns
            .iter()
            .position(|c| *c == column)
            .and_then(|i| cells[i].as_deref())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let symbol = id("symbol").and_then(|s| names.symbols.get(&s));
    let asset = id("asset").and_then(|a| names.assets.get(&a));
    let qty_decimals = symbol
        .and_then(|(_, _, base)| names.assets.get(base))
        .map_or(0, |(_, d)| *d);
    columns
        .iter()
        .zip(cells.iter())
        .map(|(column, cell)| {
            let cell = cell.as_ref()?;
            let Ok(value) = cell.parse::<i64>() else {
                return Some(cell.clone());
            };
            let decimal = |decimals| exchange_domain::format_decimal(value, decimals);
            Some(match *column {
                "symbol" => symbol.map_or(cell.clone(), |(name, _, _)| name.clone()),
                "asset" => asset.map_or(cell.clone(), |(name, _)| name.clone()),
                "price" => decimal(symbol.map_or(0, |(_, d, _)| *d)),
                "qty" | "filled_qty" | "leaves_qty" => decimal(qty_decimals),
                "delta" | "available" | "held" => decimal(asset.map_or(0, |(_, d)| *d)),
                c if c.ends_with("_ns") => {
                    u64::try_from(value).map_or(cell.clone(), crate::cli::catalog::rfc3339)
                }
                _ => cell.clone(),
            })
        })
        .collect()
}

/// The summary as JSON: the counts and the gaps in one object.
#[derive(serde::Serialize)]
struct Summary {
    #[serde(flatten)]
    counts: query::Counts,
    gap_list: Vec<query::GapRow>,
}

fn print_summary(args: &SummaryArgs, out: &mut dyn Write) -> Result<(), String> {
    let conn = query::open_read_only(&args.db).map_err(|e| e.to_string())?;
    let counts = query::counts(&conn).map_err(|e| e.to_string())?;
    let gaps = query::gaps(&conn).map_err(|e| e.to_string())?;
    if args.format.json {
        let summary = Summary {
            counts,
            gap_list: gaps,
        };
        return json_line(&summary, out);
    }
    if args.format.csv {
        return print_rows(&[counts], args.format, out);
    }
    let cells = counts.cells();
    let width = query::Counts::COLUMNS
        .iter()
        .map(|c| c.len())
        .max()
        .unwrap_or(0);
    for (name, value) in query::Counts::COLUMNS.iter().zip(cells) {
        writeln!(out, "{name:<width$}  {}", value.unwrap_or_default()).map_err(write_error)?;
    }
    if !gaps.is_empty() {
        writeln!(out).map_err(write_error)?;
        print_rows(&gaps, Format::default(), out)?;
    }
    Ok(())
}

fn print_rows<T: Tabular>(rows: &[T], format: Format, out: &mut dyn Write) -> Result<(), String> {
    if format.json {
        for row in rows {
            json_line(row, out)?;
        }
        return Ok(());
    }
    if format.csv {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(T::COLUMNS).map_err(csv_error)?;
        for row in rows {
            let cells = row.cells();
            writer
                .write_record(cells.iter().map(|c| c.as_deref().unwrap_or("")))
                .map_err(csv_error)?;
        }
        return writer.flush().map_err(write_error);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.cells()
                .into_iter()
                .map(|c| c.unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect();
    write_table(T::COLUMNS, &cells, out)
}

/// An aligned table: numbers right-aligned, text left-aligned, two spaces between columns.
fn write_table(header: &[&str], rows: &[Vec<String>], out: &mut dyn Write) -> Result<(), String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    // A column is numeric when it holds a number and nothing else but absent values.
    let mut numbers = vec![0usize; header.len()];
    let mut others = vec![0usize; header.len()];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
            if cell.parse::<i128>().is_ok() {
                numbers[i] += 1;
            } else if cell != "-" {
                others[i] += 1;
            }
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| numbers[i] > 0 && others[i] == 0)
        .collect();
    let mut line = String::new();
    let mut write_line = |cells: &mut dyn Iterator<Item = &str>| {
        line.clear();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                line += "  ";
            }
            if numeric[i] {
                line += &format!("{cell:>width$}", width = widths[i]);
            } else {
                line += &format!("{cell:<width$}", width = widths[i]);
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(write_error)
    };
    write_line(&mut header.iter().copied())?;
    for row in rows {
        write_line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

fn json_line<T: serde::Serialize>(value: &T, out: &mut dyn Write) -> Result<(), String> {
    serde_json::to_writer(&mut *out, value).map_err(|e| format!("writing JSON: {e}"))?;
    writeln!(out).map_err(write_error)
}

fn write_error(e: std::io::Error) -> String {
    format!("writing the output: {e}")
}

fn csv_error(e: csv::Error) -> String {
    format!("writing CSV: {e}")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::report::testing::{temp_db, Scenario, ALICE, BOB, SYM};
    use crate::report::ReportDb;

    /// `report` as exchange-cli mounts it.
    #[derive(Parser)]
    #[command(name = "exchange-cli")]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Report(ReportArgs),
    }

    fn run_cli(args: &[&str]) -> Result<String, String> {
        let cli = Cli::try_parse_from(["exchange-cli", "report"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Top::Report(report) = cli.command;
        let mut out = Vec::new();
        run(&report, &mut out)?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    /// A database with trades, cancels, deposits; and its path as text.
    fn busy_db() -> (tempfile::TempDir, String) {
        let (dir, path) = temp_db();
        ReportDb::open(&path)
            .and_then(|mut db| db.write(&Scenario::busy(60).entries))
            .expect("write");
        let text = path.to_str().expect("utf-8 temp path").to_owned();
        (dir, text)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_list_prints_as_a_table_json_and_csv_with_the_same_rows() {
        let (_dir, db) = busy_db();
        let conn = query::open_read_only(db.as_ref()).expect("open");
        let all = Filter::default();
        let expected = [
            ("trades", query::trades(&conn, &all).map(|r| r.len())),
            ("orders", query::orders(&conn, &all).map(|r| r.len())),
            (
                "executions",
                query::executions(&conn, &all).map(|r| r.len()),
            ),
            (
                "balances",
                query::balance_changes(&conn, &all).map(|r| r.len()),
            ),
            ("events", query::order_events(&conn, &all).map(|r| r.len())),
        ];
        for (what, rows) in expected {
            let rows = rows.expect("rows");
            assert!(rows > 0, "{what}");
            let table = run_cli(&[what, "--db", &db, "--limit", "0"]).expect("table");
            let lines: Vec<&str> = table.lines().collect();
            assert_eq!(lines.len(), rows + 1, "{what}:\n{table}");
            assert!(
                lines[0].split_whitespace().count() > 5,
                "{what}: {}",
                lines[0]
            );

            let json = run_cli(&[what, "--db", &db, "--limit", "0", "--json"]).expect("json");
            let objects: Vec<serde_json::Value> = json
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
                .collect();
            assert_eq!(objects.len(), rows, "{what}");
            assert!(objects.iter().all(serde_json::Value::is_object));

            let csv = run_cli(&[what, "--db", &db, "--limit", "0", "--csv"]).expect("csv");
            let mut reader = csv::Reader::from_reader(csv.as_bytes());
            let header = reader.headers().expect("header").clone();
            let records: Vec<csv::StringRecord> =
                reader.records().collect::<Result<_, _>>().expect("records");
            assert_eq!(records.len(), rows, "{what}");
            // The CSV header is the table's (whose times, in RFC 3339, lose their `_ns`), and
            // the JSON keys.
            let first_line: Vec<&str> = lines[0].split_whitespace().collect();
            assert_eq!(
                header.iter().map(for_people).collect::<Vec<_>>(),
                first_line,
                "{what}"
            );
            for key in header.iter() {
                assert!(objects[0].get(key).is_some(), "{what}: {key}");
            }
        }
    }

    #[test]
    fn tables_show_names_decimals_and_times() {
        let mut names = query::Names::default();
        names.symbols.insert(1, ("AAPL".into(), 2, 1));
        names.assets.insert(1, ("AAPL".into(), 0));
        names.assets.insert(2, ("USD".into(), 2));
        let cells = |values: &[&str]| values.iter().map(|v| Some(v.to_string())).collect();
        assert_eq!(
            readable(
                &["symbol", "price", "qty", "timestamp_ns"],
                cells(&["1", "10050", "200", "1500000000123456789"]),
                &names
            ),
            cells(&["AAPL", "100.50", "200", "2017-07-14T02:40:00.123456Z"])
        );
        assert_eq!(
            readable(
                &["asset", "delta", "held"],
                cells(&["2", "-150", "5"]),
                &names
            ),
            cells(&["USD", "-1.50", "0.05"])
        );
        assert_eq!(
            readable(&["symbol", "price"], cells(&["9", "10050"]), &names),
            cells(&["9", "10050"]),
            "a symbol nobody named stays a number, its prices integers"
        );
    }

    #[test]
    fn trades_show_both_accounts_and_filters_apply() {
        let (_dir, db) = busy_db();
        let json = run_cli(&["trades", "--db", &db, "--json", "--limit", "2"]).expect("json");
        let trades: Vec<query::TradeRow> = json
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                query::TradeRow {
                    trade_id: v["trade_id"].as_u64().unwrap_or_default(),
                    timestamp_ns: v["timestamp_ns"].as_u64().unwrap_or_default(),
                    symbol: v["symbol"].as_u64().unwrap_or_default() as u32,
                    price: v["price"].as_i64().unwrap_or_default(),
                    qty: v["qty"].as_i64().unwrap_or_default(),
                    aggressor_side: v["aggressor_side"].as_str().unwrap_or_default().into(),
                    taker_order_id: v["taker_order_id"].as_u64().unwrap_or_default(),
                    taker_account: v["taker_account"].as_u64().unwrap_or_default(),
                    maker_order_id: v["maker_order_id"].as_u64().unwrap_or_default(),
                    maker_account: v["maker_account"].as_u64().unwrap_or_default(),
                    seq: v["seq"].as_u64().unwrap_or_default(),
                    log_index: v["log_index"].as_u64().unwrap_or_default(),
                }
            })
            .collect();
        assert_eq!(trades.len(), 2);
        let conn = query::open_read_only(db.as_ref()).expect("open");
        let limit_2 = Filter {
            limit: Some(2),
            ..Filter::default()
        };
        assert_eq!(query::trades(&conn, &limit_2).expect("trades"), trades);
        assert_eq!(
            (trades[0].taker_account, trades[0].maker_account),
            (BOB.0, ALICE.0)
        );

        // The time window and the account: BOB's executions are the taker's.
        let (from_ns, to_ns) = (trades[0].timestamp_ns, trades[1].timestamp_ns + 1);
        let in_window = query::trades(&conn, &Filter::default())
            .expect("trades")
            .iter()
            .filter(|t| t.timestamp_ns >= from_ns && t.timestamp_ns < to_ns)
            .count();
        assert!(in_window >= 2);
        let (from, to) = (from_ns.to_string(), to_ns.to_string());
        let bob = BOB.0.to_string();
        let csv = run_cli(&[
            "executions",
            "--db",
            &db,
            "--csv",
            "--account",
            &bob,
            "--from",
            &from,
            "--to",
            &to,
        ])
        .expect("csv");
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let records: Vec<csv::StringRecord> =
            reader.records().collect::<Result<_, _>>().expect("records");
        assert_eq!(records.len(), in_window, "{csv}");
        assert!(
            records.iter().all(|r| r.get(4) == Some(bob.as_str())),
            "{csv}"
        );
        assert!(records.iter().all(|r| r.get(11) == Some("taker")), "{csv}");

        let other = (SYM.0 + 1).to_string();
        let none = run_cli(&["trades", "--db", &db, "--symbol", &other]).expect("table");
        assert_eq!(none.lines().count(), 1, "only the header: {none}");
        let none = run_cli(&["trades", "--db", &db, "--symbol", &other, "--csv"]).expect("csv");
        assert!(none.starts_with("trade_id,timestamp_ns,symbol,"), "{none}");
    }

    #[test]
    fn the_table_aligns_numbers_right_and_text_left() {
        let (_dir, db) = busy_db();
        let table = run_cli(&["orders", "--db", &db, "--limit", "3"]).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        // The side column starts at the same place on every line; the order ids end together.
        let side_at = lines[0].find("side").expect("side column");
        for line in &lines[1..] {
            let cell = &line[side_at..side_at + 4];
            assert!(cell == "sell" || cell == "buy ", "{line}");
        }
        let id_end = "order_id".len();
        for line in &lines[1..] {
            assert!(line[..id_end].trim_start().parse::<u64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn summary_shows_the_cursor_counts_and_gaps() {
        let (dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        db.write(&Scenario::busy(10).entries).expect("write");
        let cursor = db.cursor();
        db.record_gap(cursor + 5).expect("gap");
        drop(db);
        let db = path.to_str().expect("utf-8").to_owned();

        let table = run_cli(&["summary", "--db", &db]).expect("table");
        let value = |name: &str| {
            table
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|rest| rest.trim().to_owned()))
                .unwrap_or_default()
        };
        assert_eq!(value("cursor "), (cursor + 5).to_string(), "{table}");
        assert_eq!(value("balance_changes "), "4", "{table}");
        assert!(table.contains("from_index"), "{table}");

        let json = run_cli(&["summary", "--db", &db, "--json"]).expect("json");
        let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one object");
        assert_eq!(v["cursor"].as_u64(), Some(cursor + 5));
        assert_eq!(v["gaps"].as_u64(), Some(1));
        assert_eq!(v["gap_list"][0]["from_index"].as_u64(), Some(cursor + 1));

        let csv = run_cli(&["summary", "--db", &db, "--csv"]).expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2, "{csv}");
        assert!(
            lines[0].starts_with("cursor,last_timestamp_ns,order_events"),
            "{csv}"
        );
        drop(dir);
    }

    #[test]
    fn mistakes_are_explained() {
        let (dir, db) = busy_db();
        let missing = dir.path().join("nope.db");
        let missing = missing.to_str().expect("utf-8");
        let error = run_cli(&["trades", "--db", missing]).expect_err("missing file");
        assert!(
            error.contains("cannot open") && error.contains("nope.db"),
            "{error}"
        );
        assert!(
            !dir.path().join("nope.db").exists(),
            "a reader creates nothing"
        );

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, [0xAB; 1000]).expect("write");
        let garbage = garbage.to_str().expect("utf-8");
        let error = run_cli(&["summary", "--db", garbage]).expect_err("garbage");
        assert!(error.contains("not a report database"), "{error}");

        let error = run_cli(&["balances", "--db", &db, "--symbol", "1"]).expect_err("symbol");
        assert!(error.contains("--asset"), "{error}");
        let error = run_cli(&["trades", "--db", &db, "--asset", "1"]).expect_err("asset");
        assert!(error.contains("balances only"), "{error}");
        let error = run_cli(&["trades", "--db", &db, "--json", "--csv"]).expect_err("both");
        assert!(error.contains("cannot be used with"), "{error}");
        let error = run_cli(&["trades"]).expect_err("no --db");
        assert!(error.contains("--db"), "{error}");
    }
}
