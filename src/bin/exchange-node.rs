//! `exchange-node`: one node of the exchange cluster.
//!
//! The replicated node (Raft over the mmap log, the engine thread, the broker endpoint) is
//! being built; this binary documents its interface and refuses to start until then, saying so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "exchange-node",
    version,
    about = "One node of the exchange cluster",
    long_about = "One node of the exchange cluster. Every node runs the same deterministic matching \
engine over the command stream that the leader sequences and Raft replicates; the leader answers \
brokers and publishes, followers are hot standbys.\n\n\
Example: exchange-node --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir d1"
)]
struct Args {
    /// This node's id; must appear in --peers.
    #[arg(long)]
    id: u64,
    /// Every node of the cluster as id=address pairs, comma separated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Where this node keeps its log, vote and snapshots.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Address brokers connect to.
    #[arg(long)]
    broker_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "exchange-node {}: the replicated node is not available in this build yet (node {} in {} \
         was not started); run `exchange-cli engine-replay` or `exchange-cli engine-bench` to use \
         the matching engine",
        env!("CARGO_PKG_VERSION"),
        args.id,
        args.data_dir.display()
    );
    let _ = (args.peers, args.broker_listen);
    ExitCode::from(2)
}
