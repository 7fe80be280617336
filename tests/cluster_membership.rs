//! Replacing a dead node online: a new node joins as a learner, catches up from a snapshot,
//! and is promoted in the dead one's place.

mod support;

use std::time::Duration;

use exchange::domain::Side;
use exchange::gateway::protocol::{Reply, Request};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_a_new_one() {
    let mut cluster =
        Cluster::start_with_spares("membership", 3, 1, 25_600, &["--snapshot-every", "20"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    for i in 0..60 {
        accepted(
            &submit(
                &mut client,
                limit(1, Side::Buy, 1_000 - i, 1),
                Duration::from_secs(5),
            )
            .await,
        );
    }
    let dead = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.kill(dead);

    cluster.start_spare(4);
    let reply = client
        .request_leader(&Request::AddLearner {
            id: 4,
            raft: cluster.raft_addr(4).to_string(),
            broker: cluster.broker(4).to_string(),
        })
        .await
        .expect("add learner");
    assert!(
        matches!(&reply, Reply::Membership { learners, .. } if learners.contains(&4)),
        "{reply:?}"
    );
    let voters: Vec<u64> = (1..=3).filter(|id| *id != dead).chain([4]).collect();
    let reply = client
        .request_leader(&Request::SetVoters {
            voters: voters.clone(),
        })
        .await
        .expect("set voters");
    assert!(
        matches!(&reply, Reply::Membership { voters: now, .. } if *now == voters),
        "{reply:?}"
    );

    for i in 0..20 {
        accepted(
            &submit(
                &mut client,
                limit(1, Side::Sell, 2_000 + i, 1),
                Duration::from_secs(5),
            )
            .await,
        );
    }
    cluster.assert_converged(Duration::from_secs(15)).await;
    let log = std::fs::read_to_string(cluster.dir.join("node-4.log")).expect("node 4 log");
    assert!(
        log.contains("installed a snapshot from the leader"),
        "node 4 should catch up from a snapshot"
    );

    // Node 4 is a real voter: with the other old follower gone too, the leader and node 4 still
    // form a majority.
    let other = (1..=3)
        .find(|id| *id != leader && *id != dead)
        .expect("the other follower");
    cluster.kill(other);
    accepted(
        &submit(
            &mut client,
            limit(1, Side::Buy, 10, 1),
            Duration::from_secs(10),
        )
        .await,
    );
}
