//! What a FIX session keeps between its connections on this node: the sequence numbers both
//! ways, the application messages sent (for ResendRequest), where its execution reports
//! stand in the broker's report journal, and its orders.

use std::collections::{BTreeMap, VecDeque};

use exchange_domain::BrokerId;

use super::codec::{Builder, Header};
use super::orders::Application;

/// Application messages kept for resending, per session; older ones are gap-filled on a
/// ResendRequest (the broker is told so in the log).
pub const STORED_MESSAGES_MAX: usize = 100_000;

/// Messages that arrived ahead of a gap, kept until the gap is filled; past this the session
/// asks for them again instead.
pub const QUEUED_INBOUND_MAX: usize = 10_000;

/// A sent application message, as a resend writes it again.
pub struct Stored {
    pub msg_type: &'static str,
    pub body: Vec<u8>,
    pub sending_time: String,
}

/// One session's state on this node.
pub struct SessionState {
    pub broker: BrokerId,
    pub comp_id: String,
    /// MsgSeqNum of the next message the exchange sends.
    pub next_out: u64,
    /// MsgSeqNum the exchange expects next from the broker.
    pub next_in: u64,
    stored: VecDeque<(u64, Stored)>,
    /// The report journal's sequence number up to which reports were sent.
    pub report_cursor: u64,
    pub application: Application,
    /// Messages with a MsgSeqNum past a gap, by number.
    pub queued: BTreeMap<u64, super::codec::Message>,
    /// The highest MsgSeqNum a ResendRequest now outstanding asked up to (0: none).
    pub resend_pending_to: u64,
}

impl SessionState {
    pub fn new(broker: BrokerId, comp_id: String, report_cursor: u64) -> Self {
        SessionState {
            broker,
            comp_id,
            next_out: 1,
            next_in: 1,
            stored: VecDeque::new(),
            report_cursor,
            application: Application::default(),
            queued: BTreeMap::new(),
            resend_pending_to: 0,
        }
    }

    /// Both directions start again at 1 (ResetSeqNumFlag).
    pub fn reset(&mut self) {
        self.next_out = 1;
        self.next_in = 1;
        self.stored.clear();
        self.queued.clear();
        self.resend_pending_to = 0;
    }

    /// The next message's bytes and number; an application message is kept for resends.
    pub fn number(&mut self, message: &Builder, sending_time: &str, admin: bool) -> Vec<u8> {
        let seq = self.next_out;
        self.next_out += 1;
        let bytes = message.finish(&Header {
            sender: super::EXCHANGE_COMP_ID,
            target: &self.comp_id,
            seq,
            sending_time,
            poss_dup: false,
            orig_sending_time: None,
        });
        if !admin {
            if self.stored.len() == STORED_MESSAGES_MAX {
                self.stored.pop_front();
            }
            self.stored.push_back((
                seq,
                Stored {
                    msg_type: message.msg_type(),
                    body: message.body().to_vec(),
                    sending_time: sending_time.to_string(),
                },
            ));
        }
        bytes
    }

    /// What answers a ResendRequest for `begin..=end`: each stored application message again
    /// (PossDupFlag, OrigSendingTime), and one SequenceReset-GapFill for each run of numbers
    /// that were session messages or are no longer kept.
    pub fn resend(&self, begin: u64, end: u64, sending_time: &str) -> Vec<Vec<u8>> {
        let last = self.next_out - 1;
        let end = if end == 0 || end > last { last } else { end };
        let mut out = Vec::new();
        if begin == 0 || begin > end {
            return out;
        }
        let first_kept = self.stored.partition_point(|(seq, _)| *seq < begin);
        let mut next = begin;
        for (seq, stored) in self.stored.range(first_kept..) {
            if *seq > end {
                break;
            }
            if *seq > next {
                out.push(self.gap_fill(next, *seq, sending_time));
            }
            let message = Builder::with_body(stored.msg_type, stored.body.clone());
            out.push(message.finish(&Header {
                sender: super::EXCHANGE_COMP_ID,
                target: &self.comp_id,
                seq: *seq,
                sending_time,
                poss_dup: true,
                orig_sending_time: Some(&stored.sending_time),
            }));
            next = seq + 1;
        }
        if next <= end {
            out.push(self.gap_fill(next, end + 1, sending_time));
        }
        out
    }

    fn gap_fill(&self, seq: u64, new_seq: u64, sending_time: &str) -> Vec<u8> {
        Builder::new("4")
            .field(super::codec::tag::GAP_FILL_FLAG, "Y")
            .field(super::codec::tag::NEW_SEQ_NO, new_seq)
            .finish(&Header {
                sender: super::EXCHANGE_COMP_ID,
                target: &self.comp_id,
                seq,
                sending_time,
                poss_dup: true,
                orig_sending_time: Some(sending_time),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{tag, Message};
    use super::*;

    #[test]
    fn a_resend_repeats_application_messages_and_gap_fills_the_rest() {
        let mut state = SessionState::new(BrokerId(1), "BROKER1".into(), 0);
        let t = "20261203-09:31:03.123";
        state.number(&Builder::new("A"), t, true); // 1
        state.number(&Builder::new("8").field(tag::CL_ORD_ID, "a"), t, false); // 2
        state.number(&Builder::new("0"), t, true); // 3
        state.number(&Builder::new("0"), t, true); // 4
        state.number(&Builder::new("8").field(tag::CL_ORD_ID, "b"), t, false); // 5
        let resent: Vec<Message> = state
            .resend(1, 0, "20261203-09:32:00.000")
            .into_iter()
            .map(|b| Message::parse(b).unwrap())
            .collect();
        let shape: Vec<(String, u64, Option<u64>)> = resent
            .iter()
            .map(|m| {
                (
                    m.msg_type().to_string(),
                    m.get_u64(tag::MSG_SEQ_NUM).unwrap().unwrap(),
                    m.get_u64(tag::NEW_SEQ_NO).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("4".into(), 1, Some(2)),
                ("8".into(), 2, None),
                ("4".into(), 3, Some(5)),
                ("8".into(), 5, None)
            ]
        );
        assert!(resent
            .iter()
            .all(|m| m.get_flag(tag::POSS_DUP_FLAG) == Ok(true)));
        assert_eq!(resent[1].get(tag::ORIG_SENDING_TIME), Some(t));
        assert_eq!(resent[3].get(tag::CL_ORD_ID), Some("b"));
        // A range inside, and one past what was sent.
        assert_eq!(state.resend(3, 4, t).len(), 1);
        assert!(state.resend(9, 0, t).is_empty());
        assert_eq!(state.next_out, 6, "a resend numbers nothing new");
    }
}
