//! Typed reads of the report database, for `exchange-cli report` and for tests.
//!
//! Readers open the file read-only; with the write-ahead log they see the last committed
//! write and never block the reporter that may be writing at the same time.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params_from_iter, Connection, OpenFlags, Row};
use serde::Serialize;

use super::schema::{self, Found, BUSY_TIMEOUT_MS};
use super::{from_sql_int, sql_int, Context, ReportError};

/// Opens a report database for reading; refuses a file that is missing, empty, not a report
/// database, or of another schema version.
pub fn open_read_only(path: &Path) -> Result<Connection, ReportError> {
    let cannot_open = |reason: String| ReportError::Open {
        path: path.to_path_buf(),
        reason,
    };
    // Checked first because SQLite's own message ("unable to open database file") does not
    // say why.
    std::fs::metadata(path).map_err(|e| cannot_open(e.to_string()))?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| cannot_open(e.to_string()))?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
        .context("setting the busy timeout")?;
    match schema::inspect(&conn, path)? {
        Found::Current => Ok(conn),
        Found::Empty => Err(ReportError::NotAReportDb {
            path: path.to_path_buf(),
            reason: "it is empty (no reporter has written it)".into(),
        }),
    }
}

/// Which rows to list. Every field is optional; `None` does not filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Rows about this account (a trade: either side of it).
    pub account: Option<u64>,
    /// Rows on this symbol (not applied to balance changes, which have none).
    pub symbol: Option<u32>,
    /// Balance changes of this asset (applied to balance changes only).
    pub asset: Option<u32>,
    /// Rows at or after this time (nanoseconds since the epoch).
    pub from_ns: Option<u64>,
    /// Rows before this time.
    pub to_ns: Option<u64>,
    /// At most this many rows, oldest first; `None` for all.
    pub limit: Option<u64>,
}

/// A row type that prints as a table or CSV: its column names (equal to its serde field names)
/// and its cells in that order, `None` for NULL.
/// What the database calls its symbols and assets: (name, price decimals, base asset) per
/// symbol and (name, decimals) per asset, for tables people read.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub symbols: std::collections::HashMap<i64, (String, u8, i64)>,
    pub assets: std::collections::HashMap<i64, (String, u8)>,
}

/// The names the reporter recorded (`instruments` and `assets`).
pub fn names(conn: &Connection) -> Result<Names, ReportError> {
    let mut names = Names::default();
    let mut symbols = conn
        .prepare("SELECT symbol, name, price_decimals, base FROM instruments")
        .context("reading instruments")?;
    let rows = symbols
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .context("reading instruments")?;
    for row in rows {
        let (id, value) = row.context("reading an instrument")?;
        names.symbols.insert(id, value);
    }
    let mut assets = conn
        .prepare("SELECT asset, name, decimals FROM assets")
        .context("reading assets")?;
    let rows = assets
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .context("reading assets")?;
    for row in rows {
        let (id, value) = row.context("reading an asset")?;
        names.assets.insert(id, value);
    }
    Ok(names)
}

pub trait Tabular: Serialize {
    const COLUMNS: &'static [&'static str];
    fn cells(&self) -> Vec<Option<String>>;
}

macro_rules! tabular {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        pub struct $name { $(pub $field: $ty),+ }

        impl Tabular for $name {
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];
            fn cells(&self) -> Vec<Option<String>> {
                vec![$(Cell::cell(&self.$field)),+]
            }
        }
    };
}

/// One value as a table cell.
trait Cell {
    fn cell(&self) -> Option<String>;
}

macro_rules! cell_display {
    ($($ty:ty),+) => {
        $(impl Cell for $ty {
            fn cell(&self) -> Option<String> {
                Some(self.to_string())
            }
        })+
    };
}
cell_display!(u64, i64, u32, bool, String);

impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> Option<String> {
        self.as_ref().and_then(Cell::cell)
    }
}

tabular!(
    /// One match: the taker's side is the aggressor's.
    TradeRow {
        trade_id: u64,
        timestamp_ns: u64,
        symbol: u32,
        price: i64,
        qty: i64,
        aggressor_side: String,
        taker_order_id: u64,
        taker_account: u64,
        maker_order_id: u64,
        maker_account: u64,
        seq: u64,
        log_index: u64,
    }
);

tabular!(
    /// One accepted order as it stands now.
    OrderRow {
        order_id: u64,
        account: u64,
        symbol: u32,
        client_order_id: u64,
        side: String,
        order_type: String,
        time_in_force: String,
        price: i64,
        qty: i64,
        filled_qty: i64,
        leaves_qty: i64,
        status: String,
        created_ns: u64,
        updated_ns: u64,
    }
);

tabular!(
    /// One side of one match.
    ExecutionRow {
        exec_id: u64,
        timestamp_ns: u64,
        trade_id: u64,
        order_id: u64,
        account: u64,
        symbol: u32,
        client_order_id: u64,
        side: String,
        price: i64,
        qty: i64,
        leaves_qty: i64,
        liquidity: String,
        counter_order_id: u64,
        seq: u64,
        n: u32,
        log_index: u64,
    }
);

tabular!(
    /// A deposit, a withdrawal, or another change of a balance the engine reported.
    BalanceRow {
        seq: u64,
        n: u32,
        timestamp_ns: u64,
        account: u64,
        asset: u32,
        delta: i64,
        available: i64,
        held: i64,
        log_index: u64,
    }
);

tabular!(
    /// One order event (accepted, rejected, cancelled, replaced, and the refusals).
    OrderEventRow {
        seq: u64,
        n: u32,
        log_index: u64,
        timestamp_ns: u64,
        kind: String,
        account: u64,
        symbol: Option<u32>,
        order_id: Option<u64>,
        client_order_id: Option<u64>,
        side: Option<String>,
        price: Option<i64>,
        qty: Option<i64>,
        leaves_qty: Option<i64>,
        reason: Option<String>,
        count: Option<u32>,
        priority_kept: Option<bool>,
    }
);

tabular!(
    /// Entries `from_index..=to_index` were never reported (the node installed a snapshot).
    GapRow {
        from_index: u64,
        to_index: u64,
        recorded_at_index: u64,
    }
);

tabular!(
    /// Where the reporter is, and how many rows each table holds.
    Counts {
        cursor: u64,
        last_timestamp_ns: u64,
        order_events: u64,
        orders: u64,
        executions: u64,
        trades: u64,
        balance_changes: u64,
        gaps: u64,
    }
);

/// The columns a table is filtered on.
struct Columns {
    table: &'static str,
    select: &'static str,
    /// Any of them equal to the account.
    account: &'static [&'static str],
    symbol: Option<&'static str>,
    asset: Option<&'static str>,
    time: &'static str,
    order_by: &'static str,
}

fn list<T>(
    conn: &Connection,
    columns: &Columns,
    filter: &Filter,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, ReportError> {
    // Only the filters given go into the SQL, so the planner can pick the matching index.
    let mut sql = format!("SELECT {} FROM {} WHERE 1", columns.select, columns.table);
    let mut values: Vec<i64> = Vec::new();
    if let Some(account) = filter.account {
        values.push(sql_int(account));
        let n = values.len();
        let any: Vec<String> = columns
            .account
            .iter()
            .map(|c| format!("{c} = ?{n}"))
            .collect();
        sql += &format!(" AND ({})", any.join(" OR "));
    }
    for (column, value) in [
        (columns.symbol, filter.symbol),
        (columns.asset, filter.asset),
    ] {
        if let (Some(column), Some(value)) = (column, value) {
            values.push(i64::from(value));
            sql += &format!(" AND {column} = ?{}", values.len());
        }
    }
    // Times are stored as signed; a bound past i64::MAX is beyond every stored time.
    let time = |ns: u64| i64::try_from(ns).unwrap_or(i64::MAX);
    if let Some(from) = filter.from_ns {
        values.push(time(from));
        sql += &format!(" AND {} >= ?{}", columns.time, values.len());
    }
    if let Some(to) = filter.to_ns {
        values.push(time(to));
        sql += &format!(" AND {} < ?{}", columns.time, values.len());
    }
    values.push(filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(-1)));
    sql += &format!(" ORDER BY {} LIMIT ?{}", columns.order_by, values.len());
    let mut statement = conn.prepare(&sql).context("preparing a query")?;
    let rows = statement
        .query_map(params_from_iter(values), read)
        .context("querying")?;
    rows.collect::<rusqlite::Result<Vec<T>>>()
        .context("reading a row")
}

fn id(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    row.get::<_, i64>(i).map(from_sql_int)
}

fn opt_id(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    row.get::<_, Option<i64>>(i).map(|v| v.map(from_sql_int))
}

/// Trades, oldest first.
pub fn trades(conn: &Connection, filter: &Filter) -> Result<Vec<TradeRow>, ReportError> {
    let columns = Columns {
        table: "trades",
        select: "trade_id, timestamp_ns, symbol, price, qty, aggressor_side, taker_order_id, \
                 taker_account, maker_order_id, maker_account, seq, log_index",
        account: &["taker_account", "maker_account"],
        symbol: Some("symbol"),
        asset: None,
        time: "timestamp_ns",
        order_by: "timestamp_ns, trade_id",
    };
    list(conn, &columns, filter, |r| {
        Ok(TradeRow {
            trade_id: id(r, 0)?,
            timestamp_ns: id(r, 1)?,
            symbol: r.get(2)?,
            price: r.get(3)?,
            qty: r.get(4)?,
            aggressor_side: r.get(5)?,
            taker_order_id: id(r, 6)?,
            taker_account: id(r, 7)?,
            maker_order_id: id(r, 8)?,
            maker_account: id(r, 9)?,
            seq: id(r, 10)?,
            log_index: id(r, 11)?,
        })
    })
}

/// Orders by creation time (the time filters apply to it).
pub fn orders(conn: &Connection, filter: &Filter) -> Result<Vec<OrderRow>, ReportError> {
    let columns = Columns {
        table: "orders",
        select: "order_id, account, symbol, client_order_id, side, order_type, time_in_force, \
                 price, qty, filled_qty, leaves_qty, status, created_ns, updated_ns",
        account: &["account"],
        symbol: Some("symbol"),
        asset: None,
        time: "created_ns",
        order_by: "created_ns, order_id",
    };
    list(conn, &columns, filter, |r| {
        Ok(OrderRow {
            order_id: id(r, 0)?,
            account: id(r, 1)?,
            symbol: r.get(2)?,
            client_order_id: id(r, 3)?,
            side: r.get(4)?,
            order_type: r.get(5)?,
            time_in_force: r.get(6)?,
            price: r.get(7)?,
            qty: r.get(8)?,
            filled_qty: r.get(9)?,
            leaves_qty: r.get(10)?,
            status: r.get(11)?,
            created_ns: id(r, 12)?,
            updated_ns: id(r, 13)?,
        })
    })
}

/// Executions, oldest first.
pub fn executions(conn: &Connection, filter: &Filter) -> Result<Vec<ExecutionRow>, ReportError> {
    let columns = Columns {
        table: "executions",
        select: "exec_id, timestamp_ns, trade_id, order_id, account, symbol, client_order_id, \
                 side, price, qty, leaves_qty, liquidity, counter_order_id, seq, n, log_index",
        account: &["account"],
        symbol: Some("symbol"),
        asset: None,
        time: "timestamp_ns",
        order_by: "timestamp_ns, exec_id",
    };
    list(conn, &columns, filter, |r| {
        Ok(ExecutionRow {
            exec_id: id(r, 0)?,
            timestamp_ns: id(r, 1)?,
            trade_id: id(r, 2)?,
            order_id: id(r, 3)?,
            account: id(r, 4)?,
            symbol: r.get(5)?,
            client_order_id: id(r, 6)?,
            side: r.get(7)?,
            price: r.get(8)?,
            qty: r.get(9)?,
            leaves_qty: r.get(10)?,
            liquidity: r.get(11)?,
            counter_order_id: id(r, 12)?,
            seq: id(r, 13)?,
            n: r.get(14)?,
            log_index: id(r, 15)?,
        })
    })
}

/// Balance changes, oldest first.
pub fn balance_changes(conn: &Connection, filter: &Filter) -> Result<Vec<BalanceRow>, ReportError> {
    let columns = Columns {
        table: "balance_changes",
        select: "seq, n, timestamp_ns, account, asset, delta, available, held, log_index",
        account: &["account"],
        symbol: None,
        asset: Some("asset"),
        time: "timestamp_ns",
        order_by: "timestamp_ns, seq, n",
    };
    list(conn, &columns, filter, |r| {
        Ok(BalanceRow {
            seq: id(r, 0)?,
            n: r.get(1)?,
            timestamp_ns: id(r, 2)?,
            account: id(r, 3)?,
            asset: r.get(4)?,
            delta: r.get(5)?,
            available: r.get(6)?,
            held: r.get(7)?,
            log_index: id(r, 8)?,
        })
    })
}

/// Order events, oldest first.
pub fn order_events(conn: &Connection, filter: &Filter) -> Result<Vec<OrderEventRow>, ReportError> {
    let columns = Columns {
        table: "order_events",
        select: "seq, n, log_index, timestamp_ns, kind, account, symbol, order_id, \
                 client_order_id, side, price, qty, leaves_qty, reason, count, priority_kept",
        account: &["account"],
        symbol: Some("symbol"),
        asset: None,
        time: "timestamp_ns",
        order_by: "timestamp_ns, seq, n",
    };
    list(conn, &columns, filter, |r| {
        Ok(OrderEventRow {
            seq: id(r, 0)?,
            n: r.get(1)?,
            log_index: id(r, 2)?,
            timestamp_ns: id(r, 3)?,
            kind: r.get(4)?,
            account: id(r, 5)?,
            symbol: r.get(6)?,
            order_id: opt_id(r, 7)?,
            client_order_id: opt_id(r, 8)?,
            side: r.get(9)?,
            price: r.get(10)?,
            qty: r.get(11)?,
            leaves_qty: r.get(12)?,
            reason: r.get(13)?,
            count: r.get(14)?,
            priority_kept: r.get(15)?,
        })
    })
}

/// The gaps, in log order.
pub fn gaps(conn: &Connection) -> Result<Vec<GapRow>, ReportError> {
    let mut statement = conn
        .prepare("SELECT from_index, to_index, recorded_at_index FROM gaps ORDER BY from_index")
        .context("preparing a query")?;
    let rows = statement
        .query_map([], |r| {
            Ok(GapRow {
                from_index: id(r, 0)?,
                to_index: id(r, 1)?,
                recorded_at_index: id(r, 2)?,
            })
        })
        .context("querying the gaps")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("reading a gap")
}

/// The cursor and the row count of every table, read in one snapshot of the database.
pub fn counts(conn: &Connection) -> Result<Counts, ReportError> {
    conn.query_row(
        "SELECT c.last_index, c.last_timestamp_ns, \
            (SELECT count(*) FROM order_events), (SELECT count(*) FROM orders), \
            (SELECT count(*) FROM executions), (SELECT count(*) FROM trades), \
            (SELECT count(*) FROM balance_changes), (SELECT count(*) FROM gaps) \
         FROM cursor c WHERE c.id = 0",
        [],
        |r| {
            Ok(Counts {
                cursor: id(r, 0)?,
                last_timestamp_ns: id(r, 1)?,
                order_events: id(r, 2)?,
                orders: id(r, 3)?,
                executions: id(r, 4)?,
                trades: id(r, 5)?,
                balance_changes: id(r, 6)?,
                gaps: id(r, 7)?,
            })
        },
    )
    .context("counting rows")
}

impl Counts {
    /// An empty database's counts.
    pub fn zero() -> Counts {
        Counts {
            cursor: 0,
            last_timestamp_ns: 0,
            order_events: 0,
            orders: 0,
            executions: 0,
            trades: 0,
            balance_changes: 0,
            gaps: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::*;
    use crate::report::ReportDb;

    /// A database of the busy scenario, closed (readers open it themselves).
    fn busy_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, path) = temp_db();
        ReportDb::open(&path)
            .and_then(|mut db| db.write(&Scenario::busy(300).entries))
            .expect("write");
        (dir, path)
    }

    #[test]
    fn filters_narrow_every_list() {
        let (_dir, path) = busy_db();
        let conn = open_read_only(&path).expect("open");
        let all = Filter::default();
        let every_trade = trades(&conn, &all).expect("trades");
        assert!(every_trade.len() > 50, "{}", every_trade.len());

        // By account: a trade is either side's.
        let alice = Filter {
            account: Some(ALICE.0),
            ..all
        };
        assert_eq!(
            trades(&conn, &alice).expect("trades").len(),
            every_trade.len()
        );
        let nobody = Filter {
            account: Some(12345),
            ..all
        };
        assert!(trades(&conn, &nobody).expect("trades").is_empty());
        let bob_orders = orders(
            &conn,
            &Filter {
                account: Some(BOB.0),
                ..all
            },
        )
        .expect("orders");
        assert!(!bob_orders.is_empty());
        assert!(bob_orders.iter().all(|o| o.account == BOB.0));

        // By symbol.
        let other_symbol = Filter {
            symbol: Some(SYM.0 + 1),
            ..all
        };
        assert!(executions(&conn, &other_symbol)
            .expect("executions")
            .is_empty());
        let on_sym = Filter {
            symbol: Some(SYM.0),
            ..all
        };
        assert_eq!(
            executions(&conn, &on_sym).expect("executions").len(),
            2 * every_trade.len()
        );

        // By time: from inclusive, to exclusive; and a limit, oldest first.
        let (from, to) = (every_trade[10].timestamp_ns, every_trade[20].timestamp_ns);
        let window = trades(
            &conn,
            &Filter {
                from_ns: Some(from),
                to_ns: Some(to),
                ..all
            },
        )
        .expect("trades");
        let expected: Vec<_> = every_trade
            .iter()
            .filter(|t| t.timestamp_ns >= from && t.timestamp_ns < to)
            .cloned()
            .collect();
        assert!(expected.len() >= 5, "{}", expected.len());
        assert_eq!(window, expected);
        let first = trades(
            &conn,
            &Filter {
                limit: Some(3),
                ..all
            },
        )
        .expect("trades");
        assert_eq!(first, every_trade[..3].to_vec());

        // Balances by asset.
        let usd = balance_changes(
            &conn,
            &Filter {
                asset: Some(USD.0),
                ..all
            },
        )
        .expect("balances");
        assert_eq!(usd.len(), 2);
        assert!(usd.iter().all(|b| b.asset == USD.0));
        let events = order_events(&conn, &alice).expect("events");
        assert!(events.iter().all(|e| e.account == ALICE.0));
        assert!(events.iter().any(|e| e.kind == "cancelled"));
    }

    #[test]
    fn reading_while_the_writer_has_the_file_open() {
        let (_dir, path) = temp_db();
        let s = Scenario::busy(100);
        let mut db = ReportDb::open(&path).expect("open");
        db.write(&s.entries[..20]).expect("write");
        let conn = open_read_only(&path).expect("open read-only");
        assert_eq!(counts(&conn).expect("counts").cursor, 20);
        db.write(&s.entries).expect("write");
        let c = counts(&conn).expect("counts");
        assert_eq!(c.cursor, s.entries.len() as u64);
        assert!(
            conn.execute_batch("DELETE FROM trades").is_err(),
            "read-only"
        );
    }

    /// The table and CSV columns are the JSON keys, in the struct's order.
    #[test]
    fn columns_are_the_serde_field_names() {
        fn check<T: Tabular>(row: T) {
            let value = serde_json::to_value(&row).expect("json");
            let object = value.as_object().expect("an object");
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut columns = T::COLUMNS.to_vec();
            keys.sort_unstable();
            columns.sort_unstable();
            assert_eq!(keys, columns);
            assert_eq!(row.cells().len(), T::COLUMNS.len());
        }
        let (_dir, path) = busy_db();
        let conn = open_read_only(&path).expect("open");
        let all = Filter::default();
        check(trades(&conn, &all).expect("rows").remove(0));
        check(orders(&conn, &all).expect("rows").remove(0));
        check(executions(&conn, &all).expect("rows").remove(0));
        check(balance_changes(&conn, &all).expect("rows").remove(0));
        check(order_events(&conn, &all).expect("rows").remove(0));
        check(counts(&conn).expect("counts"));
        check(GapRow {
            from_index: 1,
            to_index: 2,
            recorded_at_index: 0,
        });
    }
}
