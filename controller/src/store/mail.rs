//! The e-mail outbox (`mail_outbox`): every mail is a row before anything tries to send it, so a
//! restart or a crash loses nothing. The mailer's worker claims due rows with a lease, sends them
//! and records how the attempt ended; [`Store::release_mail_claims`] at start makes the rows a
//! previous run was sending due again. Times are Unix milliseconds.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// State of a queued mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailState {
    /// Not sent yet; tried at `next_attempt_at`.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// Every attempt failed.
    Failed,
}

impl MailState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailState::Pending => "pending",
            MailState::Sent => "sent",
            MailState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<MailState, StoreError> {
        match s {
            "pending" => Ok(MailState::Pending),
            "sent" => Ok(MailState::Sent),
            "failed" => Ok(MailState::Failed),
            other => Err(StoreError::Corrupt(format!("mail state {other:?}"))),
        }
    }
}

/// A mail the worker took: what to send, and how many attempts came before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMail {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Attempts that ended before this one.
    pub attempts: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// The SMTP server took it.
    Sent,
    /// Failed; tried again at `next_at_ms`.
    Retry { next_at_ms: i64, error: String },
    /// Failed for the last time.
    Failed { error: String },
}

/// A queued mail as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRecord {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub state: MailState,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    /// Set while an attempt is under way.
    pub claimed_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub sent_at_ms: Option<i64>,
}

const MAIL_COLUMNS: &str =
    "id, recipient, subject, state, attempts, next_attempt_at, claimed_until, last_error, created_at, sent_at";

type RawMail = (i64, String, String, String, u32, i64, Option<i64>, Option<String>, i64, Option<i64>);

fn mail_record(raw: RawMail) -> Result<MailRecord, StoreError> {
    let (id, recipient, subject, state, attempts, next, claimed, last_error, created, sent) = raw;
    Ok(MailRecord {
        id,
        recipient,
        subject,
        state: MailState::parse(&state)?,
        attempts,
        next_attempt_at_ms: next,
        claimed_until_ms: claimed,
        last_error,
        created_at_ms: created,
        sent_at_ms: sent,
    })
}

impl Store {
    /// Queues a mail, due at once; returns its id.
    pub fn enqueue_mail(&self, recipient: &str, subject: &str, body: &str, now_ms: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO mail_outbox (recipient, subject, body, next_attempt_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![recipient, subject, body, now_ms],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Takes up to `limit` pending mails due at `now_ms`, oldest due first, leasing each for
    /// `lease_ms`: until the lease runs out (or [`Store::release_mail_claims`]) nothing else
    /// claims them. The lease must outlast an attempt.
    pub fn claim_due_mail(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<DueMail>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let due: Vec<DueMail> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, recipient, subject, body, attempts FROM mail_outbox \
                 WHERE state = 'pending' AND next_attempt_at <= ?1 \
                 AND (claimed_until IS NULL OR claimed_until <= ?1) \
                 ORDER BY next_attempt_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
                Ok(DueMail {
                    id: r.get(0)?,
                    recipient: r.get(1)?,
                    subject: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut claim = tx.prepare_cached("UPDATE mail_outbox SET claimed_until = ?2 WHERE id = ?1")?;
            for mail in &due {
                claim.execute(params![mail.id, now_ms.saturating_add(lease_ms)])?;
            }
        }
        tx.commit()?;
        Ok(due)
    }

    /// Records the end of an attempt of mail `id` (and lifts its claim). A mail no longer
    /// pending is left as it is.
    pub fn record_mail_attempt(&self, id: i64, outcome: &MailOutcome, now_ms: i64) -> Result<(), StoreError> {
        let conn = self.conn();
        match outcome {
            MailOutcome::Sent => conn.execute(
                "UPDATE mail_outbox SET state = 'sent', attempts = attempts + 1, claimed_until = NULL, \
                 sent_at = ?2 WHERE id = ?1 AND state = 'pending'",
                params![id, now_ms],
            )?,
            MailOutcome::Retry { next_at_ms, error } => conn.execute(
                "UPDATE mail_outbox SET attempts = attempts + 1, claimed_until = NULL, next_attempt_at = ?2, \
                 last_error = ?3 WHERE id = ?1 AND state = 'pending'",
                params![id, next_at_ms, error],
            )?,
            MailOutcome::Failed { error } => conn.execute(
                "UPDATE mail_outbox SET state = 'failed', attempts = attempts + 1, claimed_until = NULL, \
                 last_error = ?2 WHERE id = ?1 AND state = 'pending'",
                params![id, error],
            )?,
        };
        Ok(())
    }

    /// Lifts the claims of a previous run (it stopped mid-attempt), so those mails are due again
    /// at once. Returns how many. Call before the worker claims anything.
    pub fn release_mail_claims(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE mail_outbox SET claimed_until = NULL WHERE claimed_until IS NOT NULL AND state = 'pending'",
            [],
        )?)
    }

    /// When the next pending mail is due (Unix ms), a claimed one counting at its lease's end.
    pub fn next_mail_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn().query_row(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until, 0))) FROM mail_outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// How many mails wait to be sent (claimed ones included).
    pub fn pending_mail_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn().query_row("SELECT COUNT(*) FROM mail_outbox WHERE state = 'pending'", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// One queued mail by id.
    pub fn mail(&self, id: i64) -> Result<Option<MailRecord>, StoreError> {
        let raw: Option<RawMail> = self
            .conn()
            .query_row(&format!("SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE id = ?1"), params![id], |r| {
                RawMail::try_from(r)
            })
            .optional()?;
        raw.map(mail_record).transpose()
    }

    /// The newest `limit` mails, only those in `states` (all when empty).
    pub fn mails(&self, states: &[MailState], limit: usize) -> Result<Vec<MailRecord>, StoreError> {
        // The states are the enum's own names, never caller text.
        let filter = if states.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            format!("WHERE state IN ({})", names.join(", "))
        };
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {MAIL_COLUMNS} FROM mail_outbox {filter} ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map(params![limit as i64], |r| RawMail::try_from(r))?;
        rows.map(|raw| mail_record(raw?)).collect()
    }

    /// Deletes sent and failed mails created before `before_ms`; returns how many.
    pub fn prune_mail(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM mail_outbox WHERE created_at < ?1 AND state != 'pending'", params![before_ms])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn mails_are_claimed_when_due_and_leased_while_sent() {
        let (_d, store) = open();
        let a = store.enqueue_mail("a@example.com", "A", "body a", 1_000).unwrap();
        let b = store.enqueue_mail("b@example.com", "B", "body b", 2_000).unwrap();
        assert_eq!(store.pending_mail_count().unwrap(), 2);
        assert_eq!(store.next_mail_due().unwrap(), Some(1_000));
        assert!(store.claim_due_mail(999, 10, 60_000).unwrap().is_empty(), "not due yet");
        let due = store.claim_due_mail(1_500, 10, 60_000).unwrap();
        assert_eq!(
            due,
            vec![DueMail {
                id: a,
                recipient: "a@example.com".into(),
                subject: "A".into(),
                body: "body a".into(),
                attempts: 0
            }]
        );
        // Claimed: not taken again while the lease runs, and counted due at its end.
        let taken = store.claim_due_mail(2_000, 10, 60_000).unwrap();
        assert_eq!(taken.iter().map(|m| m.id).collect::<Vec<_>>(), vec![b]);
        assert!(store.claim_due_mail(30_000, 10, 60_000).unwrap().is_empty());
        assert_eq!(store.next_mail_due().unwrap(), Some(61_500));
        assert_eq!(store.mail(a).unwrap().unwrap().claimed_until_ms, Some(61_500));
        // A lease that ran out (the attempt never recorded) lets it be claimed again.
        assert_eq!(store.claim_due_mail(61_500, 1, 60_000).unwrap()[0].id, a);
        // The limit is honoured.
        let c = store.enqueue_mail("c@example.com", "C", "c", 3_000).unwrap();
        let d = store.enqueue_mail("d@example.com", "D", "d", 3_000).unwrap();
        let two = store.claim_due_mail(5_000, 1, 60_000).unwrap();
        assert_eq!(two.iter().map(|m| m.id).collect::<Vec<_>>(), vec![c]);
        assert_eq!(store.claim_due_mail(5_000, 5, 60_000).unwrap()[0].id, d);
    }

    #[test]
    fn attempts_are_recorded_until_sent_or_failed() {
        let (_d, store) = open();
        let id = store.enqueue_mail("a@example.com", "A", "a", 1_000).unwrap();
        let due = store.claim_due_mail(1_000, 10, 60_000).unwrap();
        assert_eq!(due.len(), 1);
        let retry = MailOutcome::Retry { next_at_ms: 3_000, error: "connection refused".into() };
        store.record_mail_attempt(id, &retry, 1_100).unwrap();
        let m = store.mail(id).unwrap().unwrap();
        assert_eq!(
            (m.state, m.attempts, m.next_attempt_at_ms, m.claimed_until_ms),
            (MailState::Pending, 1, 3_000, None)
        );
        assert_eq!(m.last_error.as_deref(), Some("connection refused"));
        assert!(store.claim_due_mail(2_999, 10, 60_000).unwrap().is_empty(), "waits for its retry");
        assert_eq!(store.claim_due_mail(3_000, 10, 60_000).unwrap()[0].attempts, 1);
        store.record_mail_attempt(id, &MailOutcome::Sent, 3_200).unwrap();
        let m = store.mail(id).unwrap().unwrap();
        assert_eq!((m.state, m.attempts, m.sent_at_ms, m.claimed_until_ms), (MailState::Sent, 2, Some(3_200), None));
        assert_eq!(store.pending_mail_count().unwrap(), 0);
        assert_eq!(store.next_mail_due().unwrap(), None);
        // A late record of a finished mail changes nothing.
        store.record_mail_attempt(id, &MailOutcome::Failed { error: "late".into() }, 4_000).unwrap();
        assert_eq!(store.mail(id).unwrap().unwrap().state, MailState::Sent);

        let gone = store.enqueue_mail("b@example.com", "B", "b", 5_000).unwrap();
        store.claim_due_mail(5_000, 10, 60_000).unwrap();
        store.record_mail_attempt(gone, &MailOutcome::Failed { error: "550 no such user".into() }, 5_100).unwrap();
        let m = store.mail(gone).unwrap().unwrap();
        assert_eq!((m.state, m.attempts, m.last_error.as_deref()), (MailState::Failed, 1, Some("550 no such user")));
        assert!(store.claim_due_mail(100_000, 10, 60_000).unwrap().is_empty(), "failed for good");
    }

    #[test]
    fn claims_of_a_stopped_run_are_released_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (sending, waiting) = {
            let store = Store::open(dir.path()).unwrap();
            let sending = store.enqueue_mail("a@example.com", "A", "a", 1_000).unwrap();
            let waiting = store.enqueue_mail("b@example.com", "B", "b", 1_000).unwrap();
            assert_eq!(store.claim_due_mail(1_000, 10, 600_000).unwrap().len(), 2);
            let retry = MailOutcome::Retry { next_at_ms: 9_000, error: "timeout".into() };
            store.record_mail_attempt(waiting, &retry, 1_500).unwrap();
            (sending, waiting)
            // The process dies here, with `sending` mid-attempt.
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pending_mail_count().unwrap(), 2, "nothing lost");
        assert_eq!(store.release_mail_claims().unwrap(), 1);
        let due = store.claim_due_mail(2_000, 10, 60_000).unwrap();
        assert_eq!(due.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(), vec![(sending, 0)]);
        assert_eq!(store.claim_due_mail(9_000, 10, 60_000).unwrap()[0].id, waiting, "keeps its retry time");
    }

    #[test]
    fn old_finished_mails_are_pruned_pending_ones_kept() {
        let (_d, store) = open();
        let sent = store.enqueue_mail("a@example.com", "A", "a", 1_000).unwrap();
        let failed = store.enqueue_mail("b@example.com", "B", "b", 1_000).unwrap();
        let pending = store.enqueue_mail("c@example.com", "C", "c", 1_000).unwrap();
        let recent = store.enqueue_mail("d@example.com", "D", "d", 50_000).unwrap();
        store.claim_due_mail(60_000, 10, 60_000).unwrap();
        store.record_mail_attempt(sent, &MailOutcome::Sent, 60_000).unwrap();
        store.record_mail_attempt(failed, &MailOutcome::Failed { error: "x".into() }, 60_000).unwrap();
        store.record_mail_attempt(recent, &MailOutcome::Sent, 60_000).unwrap();
        assert_eq!(store.prune_mail(10_000).unwrap(), 2);
        assert!(store.mail(sent).unwrap().is_none() && store.mail(failed).unwrap().is_none());
        assert!(store.mail(pending).unwrap().is_some() && store.mail(recent).unwrap().is_some());
    }

    #[test]
    fn mails_are_listed_newest_first_by_state() {
        let (_d, store) = open();
        let a = store.enqueue_mail("a@x.test", "one", "b", 1).unwrap();
        let b = store.enqueue_mail("b@x.test", "two", "b", 2).unwrap();
        let c = store.enqueue_mail("c@x.test", "three", "b", 3).unwrap();
        store.record_mail_attempt(a, &MailOutcome::Sent, 10).unwrap();
        store.record_mail_attempt(b, &MailOutcome::Failed { error: "refused".into() }, 10).unwrap();
        let ids = |states: &[MailState], limit| -> Vec<i64> {
            store.mails(states, limit).unwrap().iter().map(|m| m.id).collect()
        };
        assert_eq!(ids(&[], 10), [c, b, a]);
        assert_eq!(ids(&[MailState::Pending, MailState::Failed], 10), [c, b]);
        assert_eq!(ids(&[MailState::Failed], 10), [b]);
        assert_eq!(ids(&[], 2), [c, b]);
        assert_eq!(store.mails(&[MailState::Failed], 1).unwrap()[0].last_error.as_deref(), Some("refused"));
    }
}
