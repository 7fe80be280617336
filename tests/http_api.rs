//! The HTTP API (`--http-listen`) on a real cluster: every endpoint answers with names and
//! decimal strings, every node serves the same market data, bad requests are refused with a
//! reason; and a WebSocket client on a follower, subscribed to the book and the trades across
//! a leader kill, sees every sequence number once, in order, and ends with the book that
//! `GET /api/v1/book` shows; and candles and trades are the same after a restart of every
//! node, each node's history file holding what the API showed.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use exchange::domain::Side;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BASE_PORT: u16 = 28_800;

/// A plain HTTP/1.1 GET: the status code and the body.
async fn get(port: u16, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} on port {port}: no answer in 10 s"));
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

async fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Waits until `check` holds for the JSON at `path` on every node in `ports`.
async fn until_all(ports: &[u16], path: &str, check: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut answers = Vec::new();
        for &port in ports {
            answers.push(get_json(port, path).await);
        }
        if answers.iter().all(&check) {
            return answers;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never satisfied the check: {answers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Account 1 rests a sell of `resting` at `price`; account 2 buys `taking` of it.
async fn cross(
    client: &mut exchange::gateway::client::Client,
    price: i64,
    resting: i64,
    taking: i64,
) {
    accepted(
        &submit(
            client,
            limit(1, Side::Sell, price, resting),
            Duration::from_secs(10),
        )
        .await,
    );
    submit(
        client,
        limit(2, Side::Buy, price, taking),
        Duration::from_secs(10),
    )
    .await;
}

fn levels(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| {
            (
                l["price"].as_str().expect("price").to_string(),
                l["qty"].as_str().expect("qty").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_market_data_and_the_cluster_over_http() {
    let cluster = Cluster::start(
        "http-api",
        3,
        BASE_PORT,
        &["--http-listen", "127.0.0.1:{http}"],
    );
    let ports: Vec<u16> = (1..=3).map(|id| cluster.http_port(id)).collect();
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;
    let symbol = "SYM1";

    for &port in &ports {
        assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_string()));
    }
    until_all(&ports, "/readyz", |r| r["ready"] == json!(true)).await;

    // Two resting levels a side, then a buy that takes 1 of the best ask.
    for (side, price, qty) in [
        (Side::Buy, 100, 2),
        (Side::Buy, 99, 4),
        (Side::Sell, 105, 3),
        (Side::Sell, 107, 1),
    ] {
        accepted(
            &submit(
                &mut client,
                limit(1, side, price, qty),
                Duration::from_secs(5),
            )
            .await,
        );
    }
    submit(
        &mut client,
        limit(2, Side::Buy, 105, 1),
        Duration::from_secs(5),
    )
    .await;

    let instruments = get_json(ports[0], "/api/v1/instruments").await;
    let listed: Vec<&str> = instruments["instruments"]
        .as_array()
        .expect("instruments")
        .iter()
        .filter_map(|i| i["symbol"].as_str())
        .collect();
    assert_eq!(listed, [symbol]);

    // The same book on every node, followers included.
    let books = until_all(&ports, &format!("/api/v1/book/{symbol}"), |b| {
        levels(&b["asks"]).first().map(|(_, q)| q.as_str()) == Some("2")
    })
    .await;
    for book in &books {
        assert_eq!(
            levels(&book["bids"]),
            [("100".into(), "2".into()), ("99".into(), "4".into())]
        );
        assert_eq!(
            levels(&book["asks"]),
            [("105".into(), "2".into()), ("107".into(), "1".into())]
        );
        assert_eq!(book["seq"], books[0]["seq"], "{books:#?}");
    }
    let top = get_json(ports[1], &format!("/api/v1/book/{symbol}?depth=1")).await;
    assert_eq!(levels(&top["bids"]).len(), 1);

    let trades = get_json(ports[2], &format!("/api/v1/trades/{symbol}?limit=10")).await;
    let trades = trades["trades"].as_array().expect("trades").clone();
    assert_eq!(trades.len(), 1, "{trades:?}");
    assert_eq!(trades[0]["price"], "105");
    assert_eq!(trades[0]["qty"], "1");
    assert_eq!(trades[0]["aggressor"], "buy");

    for interval in ["1s", "1m"] {
        let candles = get_json(
            ports[0],
            &format!("/api/v1/candles/{symbol}?interval={interval}"),
        )
        .await;
        let candles = candles["candles"].as_array().expect("candles").clone();
        assert_eq!(candles.len(), 1, "{interval}: {candles:?}");
        let candle = &candles[0];
        assert_eq!(
            (&candle["open"], &candle["close"], &candle["volume"]),
            (&json!("105"), &json!("105"), &json!("1"))
        );
        // Bounded by time: a window that ends before the candle leaves it out.
        let start_ms = candle["start_ms"].as_u64().expect("start");
        let before = get_json(
            ports[0],
            &format!(
                "/api/v1/candles/{symbol}?interval={interval}&to={}",
                start_ms - 1
            ),
        )
        .await;
        assert_eq!(before["candles"], json!([]));
        let from = candle["start"].as_str().expect("start time");
        let within = get_json(
            ports[0],
            &format!("/api/v1/candles/{symbol}?interval={interval}&from={from}"),
        )
        .await;
        assert_eq!(within["candles"].as_array().map(Vec::len), Some(1));
    }

    // Refusals, each with its reason.
    for (path, code, says) in [
        ("/api/v1/book/NOPE", 404, "unknown symbol"),
        ("/api/v1/book/SYM1?depth=0", 400, "depth"),
        ("/api/v1/trades/SYM1?limit=100000", 400, "limit"),
        ("/api/v1/candles/SYM1?interval=5m", 400, "interval"),
        ("/api/v1/candles/SYM1?from=yesterday", 400, "from"),
        ("/api/v1/nothing", 404, ""),
    ] {
        let (status, body) = get(ports[0], path).await;
        assert_eq!(status, code, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }

    // The cluster as any node sees it: three nodes, one leader, the same hash once idle.
    let views = until_all(&ports, "/api/v1/cluster", |c| {
        let nodes = c["nodes"].as_array().expect("nodes");
        let hashes: std::collections::BTreeSet<String> = nodes
            .iter()
            .map(|n| n["status"]["output_hash"].to_string())
            .collect();
        nodes.len() == 3 && nodes.iter().all(|n| n["error"].is_null()) && hashes.len() == 1
    })
    .await;
    for view in &views {
        let leaders: Vec<&Value> = view["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["status"]["role"] == "leader")
            .map(|n| &n["id"])
            .collect();
        assert_eq!(leaders, [&json!(leader)], "{view:#?}");
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads what arrives for `how_long`: data into `streams`, errors into `errors`.
async fn read_for(
    socket: &mut Ws,
    how_long: Duration,
    streams: &mut BTreeMap<String, Followed>,
    errors: &mut Vec<Value>,
) {
    let until = tokio::time::Instant::now() + how_long;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, socket.next()).await {
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
            if value["type"] == "error" {
                errors.push(value);
            } else {
                apply(streams, &value);
            }
        }
    }
}

/// A WebSocket client's view of one stream.
#[derive(Default)]
struct Followed {
    seqs: Vec<u64>,
    snapshots: usize,
    bids: BTreeMap<String, String>,
    asks: BTreeMap<String, String>,
}

fn apply(streams: &mut BTreeMap<String, Followed>, message: &Value) {
    let kind = message["type"].as_str().expect("type");
    if kind != "snapshot" && kind != "update" {
        assert!(kind == "subscribed", "unexpected: {message}");
        return;
    }
    let channel = message["channel"].as_str().expect("channel").to_string();
    let stream = streams.entry(channel).or_default();
    let seq = message["seq"].as_u64().expect("seq");
    if kind == "snapshot" {
        stream.snapshots += 1;
        stream.bids.clear();
        stream.asks.clear();
        for (side, levels) in [
            (&mut stream.bids, &message["bids"]),
            (&mut stream.asks, &message["asks"]),
        ] {
            for level in levels.as_array().into_iter().flatten() {
                side.insert(
                    level["price"].as_str().expect("price").into(),
                    level["qty"].as_str().expect("qty").into(),
                );
            }
        }
    } else {
        let last = stream
            .seqs
            .last()
            .copied()
            .expect("an update before any snapshot");
        assert_eq!(seq, last + 1, "a gap or a duplicate: {message}");
        for change in message["changes"].as_array().into_iter().flatten() {
            let side = match change["side"].as_str() {
                Some("buy") => &mut stream.bids,
                _ => &mut stream.asks,
            };
            let (price, qty) = (
                change["price"].as_str().expect("price"),
                change["qty"].as_str().expect("qty"),
            );
            if qty == "0" {
                side.remove(price);
            } else {
                side.insert(price.into(), qty.into());
            }
        }
    }
    stream.seqs.push(seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_sees_every_message_once_across_a_leader_kill() {
    let mut cluster = Cluster::start(
        "http-ws",
        3,
        BASE_PORT + 50,
        &["--http-listen", "127.0.0.1:{http}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;
    accepted(
        &submit(
            &mut client,
            limit(1, Side::Buy, 90, 1),
            Duration::from_secs(5),
        )
        .await,
    );
    // A follower's WebSocket: it stays up while the leader dies.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let port = cluster.http_port(follower);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/v1/ws"))
            .await
            .expect("WebSocket");
    for channel in ["book", "trades"] {
        let subscribe = json!({"op": "subscribe", "channel": channel, "symbol": "SYM1"});
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .expect("subscribe");
    }
    // A bad request is answered, and the connection stays.
    socket
        .send(Message::Text(
            r#"{"op": "subscribe", "channel": "book", "symbol": "NOPE"}"#.into(),
        ))
        .await
        .expect("send");

    let mut streams: BTreeMap<String, Followed> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut price = 100;
    for round in 0..2 {
        for _ in 0..20 {
            price += 1;
            cross(&mut client, price, 2, 1).await;
        }
        read_for(
            &mut socket,
            Duration::from_millis(300),
            &mut streams,
            &mut errors,
        )
        .await;
        if round == 0 {
            cluster.kill(leader);
            cluster.wait_for_leader(Duration::from_secs(10)).await;
        }
    }
    read_for(
        &mut socket,
        Duration::from_millis(500),
        &mut streams,
        &mut errors,
    )
    .await;

    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("unknown symbol")));
    let book = &streams["book"];
    let trades = &streams["trades"];
    assert_eq!(book.snapshots, 1, "one snapshot, then only updates");
    assert_eq!(trades.snapshots, 1);
    // A snapshot and a message per trade (at least one a crossing buy; a buy resent after
    // the kill may trade once more, never less).
    assert!(trades.seqs.len() > 40, "{:?}", trades.seqs);
    // The book it built equals what the same node answers over REST.
    let rest = get_json(port, "/api/v1/book/SYM1").await;
    let as_map = |levels: &Value| -> BTreeMap<String, String> {
        levels
            .as_array()
            .expect("levels")
            .iter()
            .map(|l| {
                (
                    l["price"].as_str().unwrap().into(),
                    l["qty"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(book.bids, as_map(&rest["bids"]));
    assert_eq!(book.asks, as_map(&rest["asks"]));
    assert_eq!(book.seqs.last().copied(), rest["seq"].as_u64());
    // And the follower saw the leader change, with the time it was without a leader.
    let view = get_json(port, "/api/v1/cluster").await;
    let changes = view["leader_changes"].as_array().expect("changes");
    let change = changes
        .iter()
        .find(|c| c["leader"] != json!(leader) && c["term"].as_u64() > Some(1))
        .unwrap_or_else(|| panic!("no leader change: {view:#?}"));
    // From the dead leader's last heartbeat to the new leader: its lease at least (relaxed
    // test timeouts: 250 ms and more).
    let no_leader = change["no_leader_ms"].as_f64().expect("no_leader_ms");
    assert!(no_leader > 100.0 && no_leader < 10_000.0, "{change}");
}

/// A node's candles of one interval, and its trades, as `GET` answers them.
async fn history_of(port: u16) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let candles = |interval: &'static str| async move {
        let answer = get_json(port, &format!("/api/v1/candles/SYM1?interval={interval}")).await;
        assert_eq!(answer["history"], json!(true), "{answer}");
        answer["candles"].as_array().expect("candles").clone()
    };
    let trades = get_json(port, "/api/v1/trades/SYM1?limit=1000").await;
    (
        candles("1s").await,
        candles("1m").await,
        trades["trades"].as_array().expect("trades").clone(),
    )
}

/// `after` holds every candle of `before`, the same but for `closed`, which may only have
/// turned true (time moved on).
fn assert_same_candles(node: u64, before: &[Value], after: &[Value]) {
    assert_eq!(
        before.len(),
        after.len(),
        "node {node}: {before:#?} {after:#?}"
    );
    for (b, a) in before.iter().zip(after) {
        let mut b = b.clone();
        if b["closed"] == json!(false) {
            b["closed"] = a["closed"].clone();
        }
        assert_eq!(&b, a, "node {node}: a candle changed across the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candles_and_trades_are_the_same_after_a_restart_of_every_node() {
    let mut cluster = Cluster::start(
        "http-history",
        3,
        29_500,
        &[
            "--http-listen",
            "127.0.0.1:{http}",
            "--metrics-listen",
            "127.0.0.1:{metrics}",
        ],
    );
    let ports: Vec<u16> = (1..=3).map(|id| cluster.http_port(id)).collect();
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;

    // Trades over three seconds at moving prices: several 1 s candles, each with its own
    // open, high, low and close.
    let started = Instant::now();
    let mut trades = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let price = 100 + (trades % 7) * 3 - (trades % 3);
        cross(&mut client, price, 2, 2).await;
        trades += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An entry in the next second closes the last 1 s candle.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    accepted(
        &submit(
            &mut client,
            limit(1, Side::Buy, 50, 1),
            Duration::from_secs(10),
        )
        .await,
    );
    let trades = trades as usize;
    until_all(&ports, "/api/v1/trades/SYM1?limit=1000", |t| {
        t["trades"].as_array().map(Vec::len) == Some(trades)
    })
    .await;
    let mut before = BTreeMap::new();
    for (id, &port) in (1..=3).zip(&ports) {
        before.insert(id, history_of(port).await);
    }
    let (seconds, minutes, _) = &before[&1];
    assert!(
        seconds
            .iter()
            .filter(|c| c["closed"] == json!(true))
            .count()
            >= 3,
        "{seconds:#?}"
    );
    assert!(!minutes.is_empty());
    for id in 2..=3 {
        assert_eq!(before[&id], before[&1], "node {id} and node 1 differ");
    }

    // Every closed candle and every trade is in each node's history file, as the API showed it.
    let stored_candles = |id: u64| -> Vec<(i64, i64, i64, i64, i64, i64, i64)> {
        let db = rusqlite::Connection::open_with_flags(
            cluster.data_dir(id).join("market-history.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the node's history");
        let mut statement = db
            .prepare(
                "SELECT start_ns / 1000000, open, high, low, close, volume, trades FROM candles
                 WHERE interval_s = 1 ORDER BY start_ns",
            )
            .expect("query");
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .expect("rows");
        rows.map(|r| r.expect("row")).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 1..=3 {
        // Engine units here: the test market's prices and lots are whole numbers.
        let shown: Vec<(i64, i64, i64, i64, i64, i64, i64)> = before[&id]
            .0
            .iter()
            .filter(|c| c["closed"] == json!(true))
            .map(|c| {
                let n = |k: &str| c[k].as_str().unwrap().parse::<i64>().unwrap();
                (
                    c["start_ms"].as_i64().unwrap(),
                    n("open"),
                    n("high"),
                    n("low"),
                    n("close"),
                    n("volume"),
                    c["trades"].as_i64().unwrap(),
                )
            })
            .collect();
        while stored_candles(id) != shown {
            assert!(
                Instant::now() < deadline,
                "node {id}: the history holds {:?}, the API showed {shown:?}",
                stored_candles(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every node stops (SIGKILL) and starts again.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    until_all(&ports, "/readyz", |r| r["ready"] == json!(true)).await;
    until_all(&ports, "/api/v1/trades/SYM1?limit=1000", |t| {
        t["trades"].as_array().map(Vec::len) == Some(trades)
    })
    .await;
    for (id, &port) in (1..=3).zip(&ports) {
        let (seconds, minutes, trades_after) = history_of(port).await;
        let (seconds_before, minutes_before, trades_before) = &before[&id];
        assert_same_candles(id, seconds_before, &seconds);
        assert_same_candles(id, minutes_before, &minutes);
        assert_eq!(
            &trades_after, trades_before,
            "node {id}: the trades changed"
        );
        // The history says what it wrote and that it lost nothing.
        let page = cluster.scrape_metrics(id);
        let count = |name: &str| metric_sample(&page, name);
        assert!(
            count("exchange_md_history_batches_written_total").is_some_and(|n| n > 0.0),
            "node {id}: {page}"
        );
        assert_eq!(
            count("exchange_md_history_batches_dropped_total"),
            Some(0.0)
        );
        assert_eq!(count("exchange_md_history_writes_failed_total"), Some(0.0));
    }
}
