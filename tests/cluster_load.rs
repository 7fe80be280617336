//! Under a full closed-loop load and no fault, the tuned timeouts cause no leader change; the
//! test also prints the throughput and order-to-acknowledgement latency it saw.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::domain::Side;
use hdrhistogram::Histogram;
use support::*;

const CLIENTS: u64 = 16;
const LOAD: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_load_causes_no_leader_change() {
    let cluster = Cluster::start_with_default_timeouts("load", 3, 24_800, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, CLIENTS).await;
    let term_before = cluster.statuses().await[&leader]
        .as_ref()
        .expect("leader status")
        .term;

    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for account in 1..=CLIENTS {
        let stop = Arc::clone(&stop);
        let mut client = cluster.client();
        drivers.push(tokio::spawn(async move {
            let mut latencies =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                // Mostly resting orders on both sides, a crossing one now and then.
                let (side, price) = match i % 10 {
                    0 => (Side::Buy, 1_010),
                    n if n % 2 == 0 => (Side::Buy, 900 + (i % 50)),
                    _ => (Side::Sell, 1_050 + (i % 50)),
                };
                let sent = Instant::now();
                client
                    .submit(limit(account, side, price, 1))
                    .await
                    .expect("order acknowledged");
                latencies.saturating_record(sent.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    tokio::time::sleep(LOAD).await;
    stop.store(true, Ordering::Release);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for driver in drivers {
        all.add(driver.await.expect("driver")).expect("same bounds");
    }

    let statuses = cluster.statuses().await;
    for (id, status) in &statuses {
        let status = status
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} stopped answering"));
        assert_eq!(
            status.term, term_before,
            "node {id}: a leader change under load: {statuses:?}"
        );
        assert_eq!(
            status.leader,
            Some(leader),
            "node {id} follows another leader"
        );
    }
    eprintln!(
        "{} clients, {:.1} s: {} orders acknowledged, {:.0} orders/s; order-to-ack p50 {} us, p99 {} us, p99.9 {} us, max {} us; term unchanged ({term_before})",
        CLIENTS,
        LOAD.as_secs_f64(),
        all.len(),
        all.len() as f64 / LOAD.as_secs_f64(),
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max()
    );
    let index = cluster.assert_converged(Duration::from_secs(15)).await;
    cluster.assert_no_divergence(index).await;
}
