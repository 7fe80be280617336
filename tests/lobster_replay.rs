//! Real market data: LOBSTER's NASDAQ samples replayed through the engine, the visible levels
//! compared with LOBSTER's own book after every event.
//!
//! The data lives in `../shared/data/lobster` beside the checkout (or where `LOBSTER_DATA`
//! points). Without it this test fails and says where it looked.

use std::path::{Path, PathBuf};

use exchange::cli::lobster::{check, LobsterReport};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("LOBSTER_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/lobster"));
    assert!(
        dir.is_dir(),
        "LOBSTER sample data not found at {}: put the samples there or set LOBSTER_DATA",
        dir.display()
    );
    dir
}

fn replay(sample: &str, stem: &str, levels: usize) -> LobsterReport {
    let dir = data_dir().join(sample);
    let messages = dir.join(format!("{stem}_message_{levels}.csv"));
    let books = dir.join(format!("{stem}_orderbook_{levels}.csv"));
    let report = check(&messages, &books, levels).unwrap_or_else(|e| panic!("{sample}: {e}"));
    println!(
        "{sample}: {}",
        serde_json::to_string_pretty(&report).expect("json")
    );
    assert_eq!(report.rows_mismatched, 0, "{:?}", report.first_mismatches);
    assert_eq!(report.engine_rejects, 0);
    assert_eq!(
        report.rows,
        report.rows_matched + report.rows_matched_after_reveal
    );
    // Reconciling is only explained where a level came into or went out of view.
    assert!(
        report.rows_matched_after_reveal <= report.rows_levels_moved,
        "{} rows reconciled, yet the visible levels moved on only {}",
        report.rows_matched_after_reveal,
        report.rows_levels_moved
    );
    report
}

#[test]
fn aapl_ten_levels_match_row_by_row() {
    let report = replay(
        "LOBSTER_AAPL_2012-06-21_level10_first998",
        "AAPL_2012-06-21_34200000_57600000",
        10,
    );
    assert_eq!(report.rows, 999);
    // With ten visible levels every execution meets the order LOBSTER names, first in queue.
    assert_eq!(report.executions, 98);
    assert_eq!(report.executions_not_first, 0);
    // Only a level coming into view from beyond the tenth needs reconciling. The replay is
    // deterministic: the counts are exact.
    assert_eq!(
        (report.rows_matched, report.rows_matched_after_reveal),
        (985, 14)
    );
}

#[test]
fn amzn_full_day_level_one_matches_row_by_row() {
    let report = replay(
        "LOBSTER_SampleFile_AMZN_2012-06-21_1",
        "AMZN_2012-06-21_34200000_57600000",
        1,
    );
    assert_eq!(report.rows, 57_515);
    assert_eq!(report.executions, 8_974);
    assert_eq!(
        (report.rows_matched, report.rows_matched_after_reveal),
        (49_348, 8_167)
    );
    // With one visible level, which of several unseen orders an execution names is a guess.
    assert_eq!(report.executions_not_first, 1_134);
}
