//! Which journal rows the controller has committed: events carry a per-session sequence number
//! and the controller acks cumulatively, so an ack of event `n` covers every journal row sent in
//! an event up to `n`. Sans-IO; one per session.

use std::collections::VecDeque;

/// Journal bookkeeping of one session.
#[derive(Debug, Default)]
pub struct JournalAcks {
    /// (event seq, journal seq) of batches sent and not yet acked, in send order.
    in_flight: VecDeque<(u64, u64)>,
    /// Highest journal seq sent in this session.
    sent_through: u64,
}

impl JournalAcks {
    /// Journal rows after this one still need sending.
    pub fn sent_through(&self) -> u64 {
        self.sent_through
    }

    /// Journal row `journal_seq` went out as event `event_seq`.
    pub fn sent(&mut self, event_seq: u64, journal_seq: u64) {
        self.in_flight.push_back((event_seq, journal_seq));
        self.sent_through = self.sent_through.max(journal_seq);
    }

    /// The controller committed every event up to `event_seq`. Returns the journal seq through
    /// which rows can now be deleted, if the ack covered any.
    pub fn acked(&mut self, event_seq: u64) -> Option<u64> {
        let mut through = None;
        while let Some(&(e, j)) = self.in_flight.front() {
            if e > event_seq {
                break;
            }
            through = Some(j);
            self.in_flight.pop_front();
        }
        through
    }

    /// Batches sent and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_acks_release_rows_in_order() {
        let mut a = JournalAcks::default();
        assert_eq!(a.acked(5), None, "an ack of metrics events only releases nothing");
        a.sent(6, 100);
        a.sent(7, 101);
        a.sent(9, 102);
        assert_eq!(a.sent_through(), 102);
        assert_eq!(a.acked(6), Some(100));
        assert_eq!(a.acked(8), Some(101), "ack of 8 covers event 7");
        assert_eq!(a.in_flight(), 1);
        assert_eq!(a.acked(8), None, "a repeated ack releases nothing new");
        assert_eq!(a.acked(20), Some(102));
        assert_eq!(a.in_flight(), 0);
    }
}
