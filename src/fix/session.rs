//! What a FIX session keeps between its connections on this node: the sequence numbers both
//! ways, the application messages sent (for ResendRequest), where its execution reports
//! stand in the broker's report journal, and its orders. What a new leader needs of it to go
//! on is replicated as the session's mark ([`FixSessionMark`], docs/fix.md).

use std::collections::{BTreeMap, VecDeque};

use exchange_domain::{BrokerId, FixSessionMark};

use super::codec::{Builder, Header};
use super::orders::Application;

/// Application messages kept for resending, per session; older ones are gap-filled on a
/// ResendRequest (the broker is told so in the log).
pub const STORED_MESSAGES_MAX: usize = 100_000;

/// Messages that arrived ahead of a gap, kept until the gap is filled; past this the session
/// asks for them again instead.
pub const QUEUED_INBOUND_MAX: usize = 10_000;

/// Outbound numbers reserved at a time by a replicated mark: a leader numbers messages only
/// below a committed reservation, so a new leader that starts at the reservation never
/// reuses a number the old one sent. Another block is asked for when half is used.
pub const NUMBERS_RESERVED_AHEAD: u64 = 10_000;

/// A sent application message, as a resend writes it again.
pub struct Stored {
    pub msg_type: &'static str,
    pub body: Vec<u8>,
    pub sending_time: String,
    pub poss_resend: bool,
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
    /// Numbers below this are reserved by a committed mark: `next_out` may not pass it.
    pub out_reserved: u64,
    /// The reservation asked for and not yet committed (equal to `out_reserved`: none).
    pub out_reserving: u64,
    /// Every message below this MsgSeqNum had its commands queued for sequencing: a mark
    /// taken now may say so.
    pub in_sequenced: u64,
    /// The report journal's position up to which the broker confirmed receipt.
    pub reports_received: u64,
    /// A TestRequest asking the broker to confirm receipt: its TestReqID, the journal
    /// position its answer confirms, and when it was sent (one unanswered for long is asked
    /// again).
    pub receipt_asked: Option<(String, u64, std::time::Instant)>,
    /// Reports up to this journal position may have reached the broker from an earlier
    /// leader: they go out marked PossResend(97).
    pub poss_resend_through: u64,
    /// The last mark proposed, so an unchanged session is not marked again.
    pub marked: Option<FixSessionMark>,
    /// Bumped by a reset: a reservation asked for before it no longer counts.
    pub epoch: u64,
    /// The broker's numbers a leader before this one may or may not have sequenced (from the
    /// mark's `next_in` to the Logon that resumed the session here): a cancel, replace or
    /// mass cancel resent from there is not run again.
    pub uncertain_in: std::ops::Range<u64>,
    /// Replaced by a later term's state (another leader may have gone on with the session):
    /// nothing numbers, reserves or marks through this one any more.
    pub retired: bool,
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
            out_reserved: 1,
            out_reserving: 1,
            in_sequenced: 1,
            reports_received: report_cursor,
            receipt_asked: None,
            poss_resend_through: 0,
            marked: None,
            epoch: 0,
            uncertain_in: 0..0,
            retired: false,
        }
    }

    /// Goes on from a mark an earlier leader made: its numbers, and its reports from where the
    /// broker last confirmed them (those after are sent again, marked PossResend, since this
    /// node cannot know which the broker got).
    pub fn resume(&mut self, mark: FixSessionMark) {
        self.next_in = u64::from(mark.next_in);
        self.in_sequenced = self.next_in;
        self.next_out = u64::from(mark.next_out);
        self.out_reserved = self.next_out;
        self.out_reserving = self.next_out;
        self.report_cursor = mark.reports_received;
        self.reports_received = mark.reports_received;
        self.marked = Some(mark);
    }

    /// The mark that says where the session stands now, with outbound numbers reserved up to
    /// `next_out` (the larger of what is reserved and what is being asked for).
    pub fn mark(&self) -> FixSessionMark {
        let number = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        FixSessionMark {
            next_in: number(self.in_sequenced),
            next_out: number(self.out_reserved.max(self.out_reserving)),
            reports_received: self.reports_received,
        }
    }

    /// How many more numbers may be used before a reservation commits.
    pub fn numbers_left(&self) -> u64 {
        self.out_reserved.saturating_sub(self.next_out)
    }

    /// Both directions start again at 1 (ResetSeqNumFlag).
    pub fn reset(&mut self) {
        self.next_out = 1;
        self.next_in = 1;
        self.in_sequenced = 1;
        self.out_reserved = 1;
        self.out_reserving = 1;
        self.stored.clear();
        self.queued.clear();
        self.resend_pending_to = 0;
        self.receipt_asked = None;
        self.epoch += 1;
    }

    /// The next message's bytes and number; an application message is kept for resends.
    pub fn number(&mut self, message: &Builder, sending_time: &str, admin: bool) -> Vec<u8> {
        let seq = self.next_out;
        // The callers reserve first (`Connection::reserve`, the logon): a number past the
        // reservation could be one a new leader also sends.
        assert!(
            seq < self.out_reserved,
            "FIX session {}: number {seq} used past the reservation {}",
            self.comp_id,
            self.out_reserved
        );
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
                    poss_resend: message.is_poss_resend(),
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
            let message =
                Builder::with_body(stored.msg_type, stored.body.clone(), stored.poss_resend);
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
        state.out_reserved = 100;
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
