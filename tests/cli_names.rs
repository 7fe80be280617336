//! `exchange-cli` for people, on a real cluster: instruments and assets by name, decimal prices
//! typed and read back, execution-report lines by default and the engine's full form with
//! `--json`, for every command that talks to a cluster (besides `bench`, which
//! tests/bench_cli.rs runs, and the membership changes that add nodes, which
//! tests/cluster_membership.rs makes).

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Runs the CLI until it exits 0 (the leader opens the brokers' accounts when it takes office,
/// so the first deposit may have to wait for it).
fn cli_until_done(cluster: &Cluster, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, out) = cluster.cli(args);
        if code == Some(0) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "exchange-cli {args:?} exited {code:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the CLI, expecting `code`; returns stdout.
fn expect(cluster: &Cluster, code: i32, args: &[&str]) -> String {
    let (got, out) = cluster.cli(args);
    assert_eq!(got, Some(code), "exchange-cli {args:?}: {out}");
    out
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}): {out}"))
}

/// The number after `word` in a line: "ord 524288" gives 524288.
fn number_after(line: &str, word: &str) -> u64 {
    let mut words = line.split_whitespace();
    words
        .position(|w| w == word)
        .and_then(|_| words.next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_speaks_names_and_decimal_prices() {
    let cluster = Cluster::start("cli-names", 3, 28_000, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let brokers_file = cluster.dir.join("brokers.toml");
    let brokers_file = brokers_file.to_str().expect("a UTF-8 path").to_string();
    let admin = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            "--admin".into(),
            "--brokers-file".into(),
            brokers_file.clone(),
        ]);
        all
    };
    let run_admin = |code: i32, args: &[&str]| {
        let all = admin(args);
        expect(
            &cluster,
            code,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let broker = |n: usize, args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--api-key".into(), BROKERS[n].1.into()]);
        all
    };
    let run_broker = |code: i32, n: usize, args: &[&str]| {
        let all = broker(n, args);
        expect(
            &cluster,
            code,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };

    // Assets and a symbol, by name. AAPL the symbol trades AAPL the asset.
    let out = run_admin(0, &["admin", "add-asset", "--asset", "1", "--name", "AAPL"]);
    assert_eq!(out.trim(), "ASSET ADDED AAPL (asset 1) decimals 0");
    let out = run_admin(
        0,
        &[
            "admin",
            "add-asset",
            "--asset",
            "2",
            "--name",
            "USD",
            "--decimals",
            "2",
            "--json",
        ],
    );
    assert_eq!(
        json(&out)[0]["event"]["asset_added"]["name"],
        "USD",
        "{out}"
    );
    let out = run_admin(
        1,
        &[
            "admin",
            "add-symbol",
            "--symbol",
            "1",
            "--name",
            "AAPL",
            "--base",
            "AAPL",
            "--quote",
            "USD",
            "--price-decimals",
            "4",
        ],
    );
    assert_eq!(
        out.trim(),
        "REJECTED: invalid symbol spec (504)",
        "USD has 2 decimals and AAPL 0: prices have 2"
    );
    let out = run_admin(
        0,
        &[
            "admin",
            "add-symbol",
            "--symbol",
            "1",
            "--name",
            "AAPL",
            "--base",
            "AAPL",
            "--quote",
            "USD",
            "--price-decimals",
            "2",
            "--tick-size",
            "0.01",
        ],
    );
    assert_eq!(
        out.trim(),
        "SYMBOL ADDED AAPL (symbol 1) AAPL/USD tick 0.01 lot 1 price decimals 2"
    );
    let out = run_admin(0, &["instruments"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("AAPL") && l.contains("USD") && l.contains("0.01")),
        "{out}"
    );
    let out = run_admin(0, &["instruments", "--json"]);
    let listed = json(&out);
    assert_eq!(listed["symbols"][0]["name"], "AAPL");
    assert_eq!(listed["symbols"][0]["price_decimals"], 2);
    assert_eq!(listed["assets"][1]["name"], "USD");

    // Funds in decimal amounts of named assets.
    for account in ["1001", "2001"] {
        let all = admin(&[
            "admin",
            "deposit",
            "--account",
            account,
            "--asset",
            "USD",
            "--amount",
            "100000.00",
        ]);
        let out = cli_until_done(
            &cluster,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            out.trim(),
            format!("BALANCE account {account} USD +100000.00 available 100000.00 held 0.00")
        );
        run_admin(
            0,
            &[
                "admin",
                "deposit",
                "--account",
                account,
                "--asset",
                "AAPL",
                "--amount",
                "1000",
            ],
        );
    }

    // A decimal price goes in, reaches the engine as an integer, and comes back as typed.
    let out = run_broker(
        0,
        0,
        &[
            "order",
            "new",
            "--account",
            "1001",
            "--symbol",
            "AAPL",
            "--side",
            "sell",
            "--price",
            "100.50",
            "--qty",
            "300",
            "--client-order-id",
            "1",
        ],
    );
    let accepted = out.trim();
    assert!(
        accepted.starts_with("ACCEPTED sell 300 AAPL @ 100.50 limit gtc ord ")
            && accepted.ends_with("clord 1 account 1001"),
        "{out}"
    );
    let resting = number_after(accepted, "ord");
    let out = run_broker(0, 0, &["orders", "--account", "1001", "--json"]);
    let orders = json(&out);
    assert_eq!(orders["orders"][0]["order_id"], resting);
    assert_eq!(
        orders["orders"][0]["price"], 10_050,
        "the engine holds the integer"
    );

    let out = run_broker(
        0,
        1,
        &[
            "order",
            "new",
            "--account",
            "2001",
            "--symbol",
            "AAPL",
            "--side",
            "buy",
            "--price",
            "100.5",
            "--qty",
            "200",
            "--tif",
            "ioc",
            "--client-order-id",
            "8",
        ],
    );
    let fill = out
        .lines()
        .find(|l| l.starts_with("FILLED"))
        .unwrap_or_else(|| panic!("no fill: {out}"));
    assert!(
        fill.starts_with("FILLED 200 AAPL @ 100.50 buy ord ")
            && fill.contains(&format!(" clord 8 leaves 0 maker ord {resting} trade ")),
        "{fill}"
    );

    // Reads, each as lines and as JSON.
    let out = run_broker(0, 0, &["orders", "--account", "1001"]);
    assert_eq!(
        out.trim(),
        format!("OPEN ord {resting} clord 1 sell 100 AAPL @ 100.50")
    );
    let out = run_broker(
        0,
        0,
        &["order", "status", "--order-id", &resting.to_string()],
    );
    assert_eq!(
        out.trim(),
        format!("OPEN ord {resting} account 1001 sell 100 AAPL @ 100.50 leaves 100")
    );
    let out = run_broker(
        0,
        0,
        &[
            "order",
            "status",
            "--order-id",
            &resting.to_string(),
            "--json",
        ],
    );
    assert_eq!(json(&out)["open"]["price"], 10_050);
    let out = run_broker(0, 1, &["balances", "--account", "2001"]);
    let usd = out
        .lines()
        .find(|l| l.starts_with("USD"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        usd.split_whitespace().collect::<Vec<_>>(),
        ["USD", "79900.00", "0.00"],
        "100,000.00 less 200 at 100.50"
    );
    let out = run_broker(0, 1, &["balances", "--account", "2001", "--json"]);
    let balances = json(&out);
    assert!(
        balances["balances"]
            .as_array()
            .expect("a list")
            .iter()
            .any(|b| b["name"] == "USD" && b["available"] == 7_990_000),
        "{out}"
    );
    let out = run_broker(0, 1, &["reports", "--seconds", "1"]);
    let report = out
        .lines()
        .find(|l| l.contains("FILLED 200 AAPL @ 100.50 buy"))
        .unwrap_or_else(|| panic!("no fill among the reports: {out}"));
    // RFC 3339, UTC: 2026-12-02T13:45:01.123456Z seq ...
    let time = report.split_whitespace().next().expect("a time");
    assert!(
        time.len() == 27 && time.ends_with('Z') && &time[10..11] == "T",
        "{report}"
    );
    let out = run_broker(0, 1, &["reports", "--seconds", "1", "--json"]);
    assert!(
        out.lines()
            .map(json)
            .any(|o| o["event"]["execution"]["price"] == 10_050),
        "{out}"
    );
    let out = run_broker(0, 1, &["watch", "trades", "AAPL", "--seconds", "0.5"]);
    assert!(
        out.lines()
            .any(|l| l.contains("TRADE 200 AAPL @ 100.50  buy aggressor")),
        "{out}"
    );
    let out = run_broker(0, 1, &["watch", "book", "AAPL", "--seconds", "0.5"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ask", "100.50", "100"]),
        "{out}"
    );
    let out = run_broker(0, 1, &["candles", "AAPL", "--interval", "1s"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().skip(1).take(4).all(|p| p == "100.50")),
        "{out}"
    );
    let out = run_broker(0, 1, &["candles", "AAPL", "--interval", "1s", "--json"]);
    assert!(out.lines().map(json).any(|c| c["close"] == 10_050), "{out}");

    // Changes to the resting order, in decimals.
    let id = resting.to_string();
    let out = run_broker(
        0,
        0,
        &[
            "order",
            "replace",
            "--account",
            "1001",
            "--order-id",
            &id,
            "--price",
            "100.60",
            "--qty",
            "50",
        ],
    );
    assert_eq!(
        out.trim(),
        format!("REPLACED ord {resting} AAPL now 50 @ 100.60 (queue place lost)")
    );
    let out = run_broker(
        0,
        0,
        &[
            "order",
            "cancel",
            "--account",
            "1001",
            "--order-id",
            &id,
            "--json",
        ],
    );
    assert_eq!(
        json(&out)[0]["event"]["cancelled"]["leaves_qty"],
        50,
        "{out}"
    );
    let out = run_broker(
        1,
        0,
        &["order", "cancel", "--account", "1001", "--order-id", &id],
    );
    assert_eq!(
        out.trim(),
        format!("CANCEL REJECTED ord {resting}: unknown order (102)")
    );
    let out = run_broker(
        0,
        0,
        &[
            "order",
            "mass-cancel",
            "--account",
            "1001",
            "--symbol",
            "AAPL",
        ],
    );
    assert_eq!(
        out.trim(),
        "MASS CANCELLED 0 orders of account 1001 on AAPL"
    );
    let out = run_admin(0, &["admin", "halt", "--symbol", "AAPL"]);
    assert_eq!(out.trim(), "HALTED AAPL");
    let out = run_admin(0, &["admin", "resume", "--symbol", "AAPL", "--json"]);
    assert_eq!(json(&out)[0]["event"]["trading_status"]["halted"], false);

    // The rest of the operator's commands, as lines and as JSON.
    let out = run_admin(
        0,
        &[
            "admin",
            "create-account",
            "--account",
            "3001",
            "--owner",
            "2",
        ],
    );
    assert_eq!(out.trim(), "ACCOUNT CREATED 3001");
    let out = run_admin(
        0,
        &[
            "admin",
            "create-account",
            "--account",
            "3002",
            "--owner",
            "2",
            "--json",
        ],
    );
    assert_eq!(json(&out)[0]["event"]["account_created"]["account"], 3002);
    let out = run_admin(
        0,
        &[
            "admin",
            "withdraw",
            "--account",
            "2001",
            "--asset",
            "USD",
            "--amount",
            "100.00",
        ],
    );
    assert_eq!(
        out.trim(),
        "BALANCE account 2001 USD -100.00 available 79800.00 held 0.00"
    );
    let out = run_admin(
        0,
        &[
            "admin",
            "set-risk-limits",
            "--account",
            "3001",
            "--max-order-qty",
            "1000",
            "--max-order-notional",
            "100000000",
            "--max-open-orders",
            "10",
        ],
    );
    assert_eq!(
        out.trim(),
        "RISK LIMITS account 3001 max order qty 1000 max order notional 100000000 max open orders 10"
    );
    let out = run_admin(
        0,
        &[
            "admin",
            "set-price-band",
            "--symbol",
            "AAPL",
            "--band-bps",
            "500",
            "--reference-price",
            "100.00",
        ],
    );
    assert_eq!(out.trim(), "PRICE BAND AAPL 500 bps around 100.00");
    let out = run_admin(
        0,
        &[
            "admin",
            "set-broker-key",
            "--broker",
            "9",
            "--key",
            "test-broker-9-key-0123456789",
        ],
    );
    assert_eq!(out.trim(), "BROKER KEY SET broker 9");
    let out = run_admin(
        0,
        &[
            "admin",
            "set-broker-key",
            "--broker",
            "9",
            "--key",
            "",
            "--json",
        ],
    );
    assert_eq!(json(&out)[0]["event"]["broker_key_set"]["broker"], 9);
    let out = run_admin(0, &["cluster", "set-voters", "--voters", "1,2,3"]);
    assert_eq!(out.trim(), "voters [1, 2, 3], learners []");
    let out = run_admin(0, &["cluster", "set-voters", "--voters", "1,2,3", "--json"]);
    assert_eq!(json(&out)["voters"], serde_json::json!([1, 2, 3]));
    let out = run_admin(0, &["status"]);
    assert!(
        out.lines()
            .skip(1)
            .all(|l| l.contains(" leader ") || l.contains(" follower ")),
        "{out}"
    );
    let out = run_admin(0, &["status", "--json"]);
    assert_eq!(json(&out).as_array().map(Vec::len), Some(3), "{out}");

    // What a person gets wrong is a usage error (2) that says what is wrong, with nothing sent.
    let (code, _) = cluster.cli(
        &broker(
            0,
            &[
                "order",
                "new",
                "--account",
                "1001",
                "--symbol",
                "AAPL",
                "--side",
                "sell",
                "--price",
                "100.505",
                "--qty",
                "1",
            ],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(2), "a price finer than the symbol's decimals");
    let (code, _) = cluster.cli(
        &broker(
            0,
            &[
                "order",
                "new",
                "--account",
                "1001",
                "--symbol",
                "MSFT",
                "--side",
                "sell",
                "--price",
                "1",
                "--qty",
                "1",
            ],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(2), "a symbol nobody named");
    let out = run_broker(
        1,
        1,
        &[
            "order",
            "new",
            "--account",
            "1001",
            "--symbol",
            "AAPL",
            "--side",
            "buy",
            "--price",
            "100",
            "--qty",
            "1",
            "--client-order-id",
            "9",
        ],
    );
    assert_eq!(
        out.trim(),
        "REJECTED clord 9 account 1001 AAPL: not permitted (207)"
    );
}
