//! The broker protocol (version 2), documented in docs/protocol.md: postcard-encoded frames,
//! each behind a 4-byte little-endian length, on QUIC bidirectional streams; one reply per
//! request, in order. A connection is a session: it logs on once (on any stream) and may then
//! open more streams to pipeline.

use exchange_domain::{Command, Output};

use crate::feed::{Channel, Level, MdMessage};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u16 = 2;
/// The largest request or reply frame. A request is one command; a reply is one command's
/// outputs (a mass cancel of a full account is the largest).
pub const BROKER_FRAME_BYTES_MAX: usize = 1 << 20;
/// Commands in one `SubmitBatch`.
pub const SUBMIT_BATCH_COMMANDS_MAX: usize = 4_096;
/// How long the leader waits for a learner being added to catch up (`AddLearner`); a client
/// waits this long for the answer, and more.
pub const LEARNER_CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What became of one command of a `SubmitBatch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandAnswer {
    /// Committed and applied: everything the engine said about it that the session may see.
    Outputs(Vec<Output>),
    /// Not sequenced (the reason): it did not happen, and sending it again is safe.
    NotSequenced(String),
    /// Proposed, but the leader failed or lost its majority before it was committed (the
    /// reason): it may or may not have happened. A broker's new order resent with the same
    /// client order id is answered with its original outcome.
    OutcomeUnknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens the session: the broker's API key, or the admin key for the operator. Must come
    /// before any command; a refused logon closes the connection.
    Logon {
        protocol_version: u16,
        api_key: String,
    },
    /// Keeps an idle session visibly alive; answered with `Heartbeat`.
    Heartbeat,
    /// Sequence a command; the reply is its outputs.
    Submit(Command),
    /// Sequence several commands at once (at most `SUBMIT_BATCH_COMMANDS_MAX`), in order; the
    /// reply has one result per command. They usually share one Raft entry.
    SubmitBatch(Vec<Command>),
    /// This node's view of the cluster.
    Status,
    /// Membership (leader only): add a node as a learner and wait until it has caught up
    /// (from the log, or from a snapshot when the log behind it was purged).
    AddLearner {
        id: u64,
        raft: String,
        broker: String,
    },
    /// Membership (leader only): make exactly these nodes the voters. Learners named here are
    /// promoted; voters not named are removed.
    SetVoters { voters: Vec<u64> },
    /// Subscribes this stream to the session's broker's reports: every event about its
    /// accounts with a sequence number above `since_seq`, then each new one as it happens.
    /// The leader answers with `Reports` frames (the first at once, maybe empty) until the
    /// stream or session ends, or until it stops leading (then `NotLeader`).
    Reports { since_seq: u64 },
    /// Leader only: whether an order of one of the session's accounts rests in the book, and
    /// how much of it is open. An order that is not open (filled, cancelled, never existed)
    /// is `open: None`; its history is in the broker's reports.
    OrderStatus { order_id: u64 },
    /// Any node in touch with the leader (the leader, or a follower that knows it and is at
    /// most 1,000 entries behind): subscribes this stream to one market data stream. With
    /// `since`, resumes after that message (on any node: numbers come from the log) if the
    /// node still keeps what follows, else starts from a snapshot; without, starts from a
    /// snapshot. The node answers `Market` frames until the stream ends or it may serve it no
    /// longer (then `NotLeader`).
    /// A subscriber that falls behind is sent a fresh snapshot and goes on from it.
    Subscribe {
        symbol: u32,
        channel: Channel,
        since: Option<u64>,
    },
    /// One market data stream's state now, as one snapshot message (any node: followers
    /// build the same market data, they only do not stream it).
    MarketSnapshot { symbol: u32, channel: Channel },
    /// The engine's own book now, `levels` per side at most (any node): what market data is
    /// checked against.
    Depth { symbol: u32, levels: u32 },
    /// Leader only: an account's balances of these assets (at most 64; none: every asset the
    /// account holds): a broker, of its own accounts only.
    Balances { account: u64, assets: Vec<u32> },
    /// Every symbol and every named asset, with names and decimals (any node): what a client
    /// needs to show names and decimal prices and to accept them.
    Instruments,
    /// Leader only: an account's open orders, oldest first: a broker, of its own accounts only.
    OpenOrders { account: u64 },
    /// Operator only (leader): registers a broker or gives it a new API key (an empty key
    /// revokes it). The node digests the key with the cluster's salt, so the key is sent and
    /// never its digest; the reply is the command's outputs, as for `Submit`.
    SetBrokerKey { broker: u32, key: String },
}

/// Reports in one `Reports` frame, at most.
pub const REPORTS_PER_FRAME_MAX: usize = 4_096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The session is open, acting as `broker` (0: the operator).
    LoggedOn {
        broker: u32,
    },
    Heartbeat,
    /// The session is over its rate or in-flight limit: nothing was sequenced; try again
    /// after `retry_after_ms`.
    Throttled {
        reason: String,
        retry_after_ms: u64,
    },
    /// The command was committed and applied: everything the engine said about it.
    Outputs(Vec<Output>),
    /// Per command of a `SubmitBatch`, in order: what became of it.
    BatchOutputs(Vec<CommandAnswer>),
    /// Ask the leader instead. `broker` is its broker address, when known.
    NotLeader {
        leader_id: Option<u64>,
        broker: Option<String>,
    },
    /// Boxed: the largest reply by far, and a rare one.
    Status(Box<NodeStatus>),
    /// A membership change took effect: the voters now.
    Membership {
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
    /// The request could not be served (malformed, not permitted, node stopping, ...). After a
    /// malformed frame, a refused logon or a protocol violation the node closes the session.
    Error(String),
    /// Reports for the subscribed broker, oldest first, each once.
    Reports(Vec<Output>),
    OrderStatus {
        order_id: u64,
        open: Option<OpenOrderStatus>,
    },
    /// Market data messages, oldest first: a snapshot, or the stream's next messages.
    Market(Vec<MdMessage>),
    /// The engine's book after log index `index`, best first.
    Depth {
        index: u64,
        bids: Vec<Level>,
        asks: Vec<Level>,
    },
    /// The command was proposed but neither committed nor refused (the leader lost its
    /// majority): it may still take effect. A broker resends a new order with the same client
    /// order id to the new leader (exactly once); other commands are for the sender to check.
    OutcomeUnknown(String),
    /// Per asset asked: (asset, available, held); none for an asset the account never held.
    /// An unknown account, or another broker's, has no balances.
    Balances {
        account: u64,
        balances: Vec<(u32, i64, i64)>,
    },
    /// The symbols, in the order they were added, and the named assets.
    Instruments {
        symbols: Vec<InstrumentInfo>,
        assets: Vec<AssetInfo>,
    },
    /// An account's open orders, oldest first; none for an unknown account or another
    /// broker's.
    OpenOrders {
        account: u64,
        orders: Vec<AccountOrderInfo>,
    },
}

/// A symbol as `Instruments` describes it. Prices (tick, reference) are integers in quote
/// units per base unit; `price_decimals` says how people write them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentInfo {
    pub symbol: u32,
    pub name: String,
    pub base: u32,
    pub quote: u32,
    pub tick_size: i64,
    pub lot_size: i64,
    pub price_decimals: u8,
    pub halted: bool,
    pub price_band_bps: u32,
    pub reference_price: i64,
}

/// A named asset: its amounts are integers, written with `decimals` decimals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetInfo {
    pub asset: u32,
    pub name: String,
    pub decimals: u8,
}

/// One open order of an account, as `OpenOrders` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOrderInfo {
    pub order_id: u64,
    pub client_order_id: u64,
    pub symbol: u32,
    pub side: exchange_domain::Side,
    pub price: i64,
    pub leaves_qty: i64,
}

/// Open orders one `OpenOrders` answer lists, at most.
pub const OPEN_ORDERS_PER_REPLY_MAX: usize = 10_000;

/// Assets one `Balances` request may ask for.
pub const BALANCE_ASSETS_MAX: usize = 64;

/// Market data messages in one `Market` frame, at most.
pub const MARKET_MESSAGES_PER_FRAME_MAX: usize = 512;
/// Levels per side a `Depth` answer carries, at most.
pub const DEPTH_LEVELS_MAX: u32 = 1_000;

/// A resting order, as `OrderStatus` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenOrderStatus {
    pub account: u64,
    pub symbol: u32,
    pub side: exchange_domain::Side,
    pub price: i64,
    pub leaves_qty: i64,
}

/// One node's view, as `exchange-cli status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The last index this node knows committed.
    pub commit_index: u64,
    pub applied_index: u64,
    /// The engine's output hash after the applied index, as 16 hex digits.
    pub output_hash: String,
    pub voters: Vec<u64>,
    /// The first difference found between this node's output hash and a peer's at the same
    /// index. Always `None` in a healthy cluster.
    pub divergence: Option<String>,
    /// Per peer, the last log index at which this node compared output hashes and found them
    /// equal: (peer id, index).
    pub hashes_checked: Vec<(u64, u64)>,
    /// A development node (`--dev`): it accepts the public development keys.
    pub development: bool,
    /// Where the node serves its HTTP API (`--http-listen`), if it does: the web console
    /// finds the other nodes here when its own dies.
    pub http: Option<String>,
    /// Where the node accepts FIX sessions (`--fix-listen`), if it does: a follower's Logout
    /// names the leader's.
    #[serde(default)]
    pub fix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_domain::{AccountId, ClientOrderId, NewOrder, OrderType, Price, Qty};
    use exchange_domain::{SelfTradePrevention, Side, SymbolId, TimeInForce};
    use proptest::prelude::*;

    fn valid_frames() -> Vec<Vec<u8>> {
        let order = Command::NewOrder(NewOrder {
            account: AccountId(1001),
            symbol: SymbolId(1),
            client_order_id: ClientOrderId(7),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Price(100),
            qty: Qty(5),
            self_trade_prevention: SelfTradePrevention::None,
        });
        [
            Request::Logon {
                protocol_version: PROTOCOL_VERSION,
                api_key: "dev-broker-1-key-not-secret".into(),
            },
            Request::Submit(order),
            Request::SubmitBatch(vec![order; 3]),
            Request::Reports { since_seq: 99 },
            Request::SetVoters {
                voters: vec![1, 2, 3],
            },
        ]
        .iter()
        .map(|r| postcard::to_allocvec(r).expect("encode"))
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any bytes at all decode to a request or to an error: never a panic, and never an
        /// allocation the bytes do not pay for (postcard bounds lengths by the input).
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = postcard::from_bytes::<Request>(&bytes);
            let _ = postcard::from_bytes::<Reply>(&bytes);
        }

        /// Valid frames with bytes flipped, cut short or extended decode or fail cleanly; a
        /// frame that still decodes re-encodes to a request of its own.
        #[test]
        fn mutated_frames_never_panic_the_decoder(
            which in 0usize..5,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut frame = valid_frames()[which].clone();
            for (at, byte) in flips {
                let at = at.index(frame.len());
                frame[at] ^= byte;
            }
            frame.truncate(cut.index(frame.len() + 1));
            frame.extend_from_slice(&tail);
            if let Ok(request) = postcard::from_bytes::<Request>(&frame) {
                let again = postcard::to_allocvec(&request).expect("re-encode");
                prop_assert_eq!(postcard::from_bytes::<Request>(&again).ok(), Some(request));
            }
        }
    }

    #[test]
    fn every_valid_frame_round_trips() {
        for frame in valid_frames() {
            let request = postcard::from_bytes::<Request>(&frame).expect("decode");
            assert_eq!(postcard::to_allocvec(&request).expect("encode"), frame);
        }
    }
}

#[cfg(test)]
mod test_vectors {
    use super::*;
    use exchange_domain::{AccountId, ClientOrderId, NewOrder, OrderType, Price, Qty};
    use exchange_domain::{SelfTradePrevention, Side, SymbolId, TimeInForce};

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The frame (length prefix and postcard body) of a request.
    fn frame(request: &Request) -> String {
        let body = postcard::to_allocvec(request).expect("encode");
        let mut framed = (body.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&body);
        hex(&framed)
    }

    /// The test vectors docs/protocol.md gives, byte for byte: a change here is a change of
    /// the protocol.
    #[test]
    fn the_documented_test_vectors_hold() {
        let logon = Request::Logon {
            protocol_version: PROTOCOL_VERSION,
            api_key: "dev-broker-1-key-not-secret".into(),
        };
        assert_eq!(
            frame(&logon),
            "1e 00 00 00 00 02 1b 64 65 76 2d 62 72 6f 6b 65 72 2d 31 2d 6b 65 79 2d 6e 6f 74 \
             2d 73 65 63 72 65 74"
        );
        let order = Request::Submit(Command::NewOrder(NewOrder {
            account: AccountId(1001),
            symbol: SymbolId(1),
            client_order_id: ClientOrderId(7),
            side: Side::Sell,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Price(10050),
            qty: Qty(300),
            self_trade_prevention: SelfTradePrevention::None,
        }));
        assert_eq!(
            frame(&order),
            "0f 00 00 00 02 00 e9 07 01 07 01 00 00 84 9d 01 d8 04 00"
        );
    }
}
