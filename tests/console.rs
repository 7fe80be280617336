//! The web console in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`), driven over the DevTools protocol. A cluster trades; the console, opened on the
//! leader's HTTP address, shows the resting levels on its ladder, the trade on its tape, the
//! candle on its chart and every node in its cluster panel. Then its node is killed: the page
//! moves to another node by itself, says so, and shows the new leader within 2 s; the ladder
//! goes on updating there. Screenshots go to target/console-screenshots/.
//!
//! Ignored by plain `cargo test` (it needs Chromium); `scripts/test.sh` runs it with
//! `--ignored`, and it fails, saying why, where Chromium is missing.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use exchange::domain::Side;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BASE_PORT: u16 = 28_900;
const DEVTOOLS_PORT: u16 = 29_390;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium showing one page, killed (with its profile removed) on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    page: Ws,
    next_id: u64,
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in ["/usr/bin", "/usr/local/bin", "/snap/bin"] {
            let path = Path::new(dir).join(name);
            if path.exists() {
                return path;
            }
        }
    }
    panic!("no Chromium found (looked for chromium, chromium-browser, google-chrome): install Debian's chromium package, as .ci/run does");
}

/// A GET to Chromium's DevTools server, which keeps connections open whatever the request
/// says: the body is read by its Content-Length, and the whole exchange bounded.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        // Chromium builds the WebSocket addresses it lists from the Host header.
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&received).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return Some(body[..length].to_string());
                }
            }
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            received.extend_from_slice(&chunk[..read]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("exchange-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut command = Command::new(chromium());
        // Debian's `chromium` is a script that starts the browser as its child: the whole
        // process group is killed on drop, and the browser dies with the test process.
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child being created.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1400,900",
                "--remote-allow-origins=*",
                &format!("--remote-debugging-port={DEVTOOLS_PORT}"),
                &format!("--user-data-dir={}", profile.display()),
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        let page_url = loop {
            if let Some(list) = http_get(DEVTOOLS_PORT, "/json/list").await {
                let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
                let page = targets
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["type"] == "page");
                if let Some(ws) = page.and_then(|p| p["webSocketDebuggerUrl"].as_str()) {
                    break ws.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "Chromium's DevTools did not come up in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (page, _) = tokio_tungstenite::connect_async(page_url)
            .await
            .expect("DevTools WebSocket");
        Browser {
            child,
            profile,
            page,
            next_id: 0,
        }
    }

    /// One DevTools call; events that arrive meanwhile are skipped.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let answer = self.answer(method, params).await;
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// One DevTools call's whole answer, its error included.
    async fn answer(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.page
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("DevTools send");
        loop {
            let next = tokio::time::timeout(Duration::from_secs(20), self.page.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no DevTools answer in 20 s"));
            let Some(Ok(Message::Text(text))) = next else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["id"] == json!(id) {
                return answer;
            }
        }
    }

    /// The value of a JavaScript expression in the page; `None` while the page has no script
    /// context yet (it is still loading).
    async fn eval(&mut self, expression: &str) -> Option<Value> {
        let answer = self
            .answer(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("execution context"))
        {
            return None;
        }
        assert!(answer["error"].is_null(), "{expression}: {answer}");
        let result = &answer["result"];
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        Some(result["result"]["value"].clone())
    }

    /// Waits until `expression` is true in the page; returns how long it took.
    async fn until(&mut self, expression: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(expression).await == Some(json!(true)) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "not true within {within:?}: {expression}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) with the negated id of the group this child leads.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The ladder's rows on one side, as "price:qty", top to bottom.
fn ladder(side: &str) -> String {
    format!("[...document.querySelectorAll('#{side} tr')].map(r => r.dataset.price + ':' + r.dataset.qty).join(',')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
async fn the_console_shows_the_market_and_follows_a_failover() {
    // The node's own timeouts: the 2 s bound below includes an election.
    let mut cluster = Cluster::start_with_default_timeouts(
        "console",
        3,
        BASE_PORT,
        &["--http-listen", "127.0.0.1:{http}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;
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

    let url = format!("http://127.0.0.1:{}/", cluster.http_port(leader));
    let mut browser = Browser::open(&url).await;
    // The ladder: asks above (highest first), bids below (best first).
    let expected = format!(
        "{} === '107:1,105:2' && {} === '100:2,99:4'",
        ladder("asks"),
        ladder("bids")
    );
    browser.until(&expected, Duration::from_secs(15)).await;
    browser
        .until(
            "document.querySelectorAll('#trades tr').length === 1",
            Duration::from_secs(5),
        )
        .await;
    browser
        .until(
            "+document.getElementById('chart').dataset.candles >= 1",
            Duration::from_secs(5),
        )
        .await;
    let panel = format!(
        "document.querySelectorAll('#nodes tr').length === 3 && \
         document.querySelector('#nodes tr[data-role=leader]')?.dataset.nodeId === '{leader}'"
    );
    browser.until(&panel, Duration::from_secs(5)).await;
    assert_eq!(
        browser
            .eval("document.getElementById('connection').dataset.node")
            .await,
        Some(json!(leader.to_string()))
    );
    browser.screenshot("1-market.png").await;

    // The page's node dies.
    cluster.kill(leader);
    let killed = Instant::now();
    let moved = format!(
        "document.getElementById('connection').dataset.node !== '' && \
         document.getElementById('connection').dataset.node !== '{leader}' && \
         document.getElementById('switches').dataset.to !== undefined && \
         (document.querySelector('#nodes tr[data-role=leader]')?.dataset.nodeId ?? '{leader}') !== '{leader}'"
    );
    browser.until(&moved, Duration::from_secs(2)).await;
    let shown_after = killed.elapsed();
    eprintln!("the console showed the new leader {shown_after:?} after its node was killed");
    assert!(shown_after < Duration::from_secs(2), "{shown_after:?}");
    let switched = browser
        .eval("document.getElementById('switches').textContent")
        .await
        .expect("the page is loaded");
    assert!(
        switched
            .as_str()
            .is_some_and(|s| s.contains(&format!("from node {leader}"))),
        "{switched}"
    );

    // Live on the new node: a new bid appears on the ladder.
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    accepted(
        &submit(
            &mut client,
            limit(1, Side::Buy, 98, 5),
            Duration::from_secs(10),
        )
        .await,
    );
    browser
        .until(
            &format!("{} === '100:2,99:4,98:5'", ladder("bids")),
            Duration::from_secs(5),
        )
        .await;
    browser.screenshot("2-after-failover.png").await;
}
