//! Administration of the cluster: membership changes, for the operator only.

use super::*;

impl Gateway {
    pub(super) fn membership(&self) -> Reply {
        let view = self.leadership.view();
        Reply::Membership {
            voters: view.voters,
            learners: view.learners,
        }
    }

    /// Adds a node as a learner and waits (at most `LEARNER_CATCH_UP_TIMEOUT`) until it has
    /// caught up.
    pub(super) async fn add_learner(
        &self,
        session: &Session,
        id: u64,
        raft: String,
        broker: String,
    ) -> Reply {
        if raft.parse::<std::net::SocketAddr>().is_err()
            || broker.parse::<std::net::SocketAddr>().is_err()
        {
            return Reply::Error(format!(
                "node {id}: addresses must be ip:port, got {raft} and {broker}"
            ));
        }
        let node = crate::replication::types::NodeAddr { raft, broker };
        match tokio::time::timeout(LEARNER_CATCH_UP_TIMEOUT, self.leadership.add_learner(id, node))
            .await
        {
            Ok(Ok(())) => {
                tracing::info!(target: "audit", event = "membership", learner = id, remote = %session.remote, "node added as a learner");
                self.membership()
            }
            Ok(Err(LeadershipError::NotLeader)) => self.not_leader(),
            Ok(Err(e)) => Reply::Error(format!("adding node {id}: {e}")),
            Err(_) => Reply::Error(format!(
                "node {id} was added as a learner but did not catch up within {LEARNER_CATCH_UP_TIMEOUT:?}; it is not a voter"
            )),
        }
    }

    /// Makes exactly these nodes the voters.
    pub(super) async fn set_voters(&self, session: &Session, voters: Vec<u64>) -> Reply {
        let voters: std::collections::BTreeSet<u64> = voters.into_iter().collect();
        if voters.is_empty() {
            return Reply::Error("a cluster needs at least one voter".into());
        }
        match self.leadership.set_voters(voters.clone()).await {
            Ok(()) => {
                tracing::info!(target: "audit", event = "membership", voters = ?voters, remote = %session.remote, "voters changed");
                self.membership()
            }
            Err(LeadershipError::NotLeader) => self.not_leader(),
            Err(e) => Reply::Error(format!("changing the voters: {e}")),
        }
    }
}
