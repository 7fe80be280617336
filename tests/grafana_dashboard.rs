//! The Grafana dashboard (`cluster/grafana/exchange.json`) reads only metrics that nodes
//! export: every metric named in a panel's query is on a real node's page, with samples, and
//! the metrics the dashboard was built for carry sensible values.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use exchange::domain::Side;
use support::*;

const DASHBOARD: &str = include_str!("../cluster/grafana/exchange.json");

/// The metric names in a PromQL expression: its identifiers that name the project's or the
/// process's metrics (labels, functions and `le` are neither).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        // A name inside quotes is a label value, not a metric.
        let quoted = rest[..start].matches('"').count() % 2 == 1;
        if !quoted && (word.starts_with("exchange_") || word.starts_with("process_")) {
            names.push(word.to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The value of the first sample of `name` whose labels contain `labels` ("" for any).
fn sample(page: &str, name: &str, labels: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']) && rest.contains(labels))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_only_metrics_the_nodes_export() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut wanted = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr}");
            wanted.extend(names);
        }
    }
    assert!(wanted.len() >= 25, "the dashboard shows {wanted:?}");

    let mut cluster = Cluster::start(
        "grafana",
        3,
        29_400,
        &["--metrics-listen", "127.0.0.1:{metrics}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    // A follower with a report database, for the reporter's metrics.
    let reporting = (1..=3).find(|&id| id != leader).expect("a follower");
    let db = cluster.dir.join("report.db");
    let db_flag = db.to_str().expect("utf-8 path").to_string();
    cluster.kill(reporting);
    cluster.start_node_with(reporting, &["--report-db", &db_flag]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let reporting = if reporting == leader {
        (1..=3).find(|&id| id != leader).expect("a follower")
    } else {
        reporting
    };
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;
    submit(
        &mut client,
        limit(1, Side::Sell, 101, 5),
        Duration::from_secs(5),
    )
    .await;
    submit(
        &mut client,
        limit(2, Side::Buy, 101, 2),
        Duration::from_secs(5),
    )
    .await;
    let index = cluster.assert_converged(Duration::from_secs(15)).await;

    let pages: Vec<(u64, String)> = (1..=3).map(|id| (id, cluster.scrape_metrics(id))).collect();
    for name in &wanted {
        assert!(
            pages
                .iter()
                .any(|(_, page)| sample(page, name, "").is_some()),
            "the dashboard reads {name}, which no node exports"
        );
    }

    let page = |id: u64| &pages[id as usize - 1].1;
    let leader_page = page(leader);
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        sample(leader_page, "exchange_build_info", &version),
        Some(1.0)
    );
    assert_eq!(sample(leader_page, "exchange_divergence", ""), Some(0.0));
    assert!(
        sample(leader_page, "exchange_gateway_sessions", "").is_some_and(|n| n >= 1.0),
        "the test's session is logged on to the leader"
    );
    for follower in (1..=3).filter(|&id| id != leader) {
        let peer = format!("peer=\"{follower}\"");
        let lag = sample(leader_page, "exchange_replication_lag", &peer);
        assert!(lag.is_some(), "the leader shows node {follower}'s lag");
        let matched = sample(leader_page, "exchange_replication_matched_index", &peer)
            .expect("matched index");
        assert!(
            matched >= index as f64,
            "node {follower} holds {index}: {matched}"
        );
        assert!(
            sample(page(follower), "exchange_replication_lag", "").is_none(),
            "only the leader knows its followers' lag"
        );
    }
    let reporter_page = page(reporting);
    assert!(sample(reporter_page, "exchange_reporter_lag", "").is_some());
    assert_eq!(
        sample(reporter_page, "exchange_reporter_failed", ""),
        Some(0.0)
    );
    assert!(
        sample(leader_page, "exchange_reporter_lag", "").is_none(),
        "a node without a report database shows no reporter"
    );
    assert!(sample(leader_page, "process_resident_memory_bytes", "").is_some_and(|b| b > 1e6));
    assert!(sample(leader_page, "process_open_fds", "").is_some_and(|n| n >= 3.0));
    assert!(sample(leader_page, "process_threads", "").is_some_and(|n| n >= 2.0));
    assert!(sample(leader_page, "process_cpu_seconds_total", "").is_some_and(|s| s > 0.0));
    assert!(sample(leader_page, "process_start_time_seconds", "").is_some_and(|s| s > 1.7e9));
}

#[test]
fn metric_names_skip_labels_functions_and_quoted_values() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, instance) (rate(exchange_order_ack_seconds_bucket{job=~"exchange_x"}[1m])))"#
        ),
        vec!["exchange_order_ack_seconds_bucket"]
    );
    assert_eq!(
        metric_names("rate(process_cpu_seconds_total[1m])"),
        vec!["process_cpu_seconds_total"]
    );
}
