//! The Grafana dashboard (`cluster/grafana/exchange.json`) reads only metrics that nodes
//! export: every metric named in a panel's query is on a real node's page, with samples, and
//! the metrics the dashboard was built for carry sensible values.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use exchange::domain::Side;
use exchange::gateway::client::Client;
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

/// Every panel's queries: (panel title, PromQL), with the dashboard's `$job` variable set to
/// all jobs. Checks the panels' shape on the way.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title").to_string();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr").replace("$job", ".*");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

/// A cluster with metrics, every node writing a report database of its own, a market and a
/// trade; and the leader.
async fn trading_cluster(name: &str, base_port: u16) -> (Cluster, Client, u64) {
    let cluster = Cluster::start(
        name,
        3,
        base_port,
        &[
            "--metrics-listen",
            "127.0.0.1:{metrics}",
            "--report-db",
            "{dir}/report-{id}.db",
        ],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
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
    (cluster, client, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_only_metrics_the_nodes_export() {
    let mut wanted = BTreeSet::new();
    for (title, expr) in dashboard_queries() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "panel {title}: no metric in {expr}");
        wanted.extend(names);
    }
    assert!(wanted.len() >= 25, "the dashboard shows {wanted:?}");

    let (cluster, _client, leader) = trading_cluster("grafana", 29_400).await;
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
    for (id, page) in &pages {
        let written = sample(page, "exchange_reporter_index", "").expect("reporter index");
        assert!(written > 0.0, "node {id}'s reporter wrote nothing");
        assert!(sample(page, "exchange_reporter_lag", "").is_some());
        assert_eq!(sample(page, "exchange_reporter_failed", ""), Some(0.0));
    }
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

/// The dashboard on a real Prometheus: it scrapes a trading cluster's three nodes every
/// second, and each of the dashboard's queries, as Grafana would send it, returns data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus (apt-get install prometheus; .ci/run installs it): scripts/test.sh runs it"]
async fn every_dashboard_query_returns_data_on_a_real_prometheus() {
    const PROMETHEUS_PORT: u16 = 29_480;
    let (cluster, mut client, _leader) = trading_cluster("prometheus", 29_450).await;
    // Every node's metrics page answers before Prometheus starts: a node that is not up fails
    // here, with its log.
    for id in 1..=3 {
        let port = cluster.metrics_port(id);
        let up_by = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/metrics").is_none_or(|(status, _)| status != 200) {
            if Instant::now() >= up_by {
                let log = std::fs::read_to_string(cluster.dir.join(format!("node-{id}.log")));
                panic!(
                    "node {id}'s metrics page did not answer within 30 s; its log:\n{}",
                    log.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let targets: Vec<String> = (1..=3)
        .map(|id| format!("'127.0.0.1:{}'", cluster.metrics_port(id)))
        .collect();
    let config = cluster.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: exchange\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .expect("prometheus.yml");
    let log = std::fs::File::create(cluster.dir.join("prometheus.log")).expect("log file");
    let prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            cluster.dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run prometheus ({e}): apt-get install prometheus (.ci/run does)")
        });
    let _prometheus = KillOnDrop(prometheus);

    let ready = Instant::now() + Duration::from_secs(30);
    while http_get(PROMETHEUS_PORT, "/-/ready").is_none_or(|(status, _)| status != 200) {
        assert!(Instant::now() < ready, "Prometheus not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Trade while it scrapes, so that rates have something to show.
    let trading_until = Instant::now() + Duration::from_secs(6);
    let mut price = 100;
    while Instant::now() < trading_until {
        price = if price == 100 { 101 } else { 100 };
        submit(
            &mut client,
            limit(1, Side::Sell, price, 1),
            Duration::from_secs(5),
        )
        .await;
        submit(
            &mut client,
            limit(2, Side::Buy, price, 1),
            Duration::from_secs(5),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut queries = dashboard_queries();
    queries.push(("targets up".into(), "up{job=\"exchange\"} == 1".into()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            let path = format!("/api/v1/query?query={}", percent_encode(expr));
            let (status, body) = http_get(PROMETHEUS_PORT, &path).expect("Prometheus answers");
            assert_eq!(status, 200, "{title}: {expr}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
            let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
            if expr.starts_with("up{") {
                if series < 3 {
                    empty.push(format!("{title}: {series} of 3 nodes scraped"));
                }
            } else if series == 0 {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() {
            eprintln!(
                "{} dashboard queries each returned data from Prometheus scraping 3 nodes",
                queries.len() - 1
            );
            return;
        }
        if Instant::now() >= deadline {
            let targets = http_get(PROMETHEUS_PORT, "/api/v1/targets").map(|(_, body)| body);
            let log = std::fs::read_to_string(cluster.dir.join("prometheus.log"));
            panic!(
                "queries with no data after 20 s:\n{}\nPrometheus' targets: {targets:?}\nits log:\n{}",
                empty.join("\n"),
                log.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET over HTTP/1.0 (so the answer is not chunked): (status, body), or None when nothing
/// listens yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
