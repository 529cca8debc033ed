//! Office send rates (spec §2: "offices get configurable rate limits instead" of the citizen
//! quota): messages and recipients per hour per office mailbox, each a GCRA bucket
//! (governor) that allows the hour's whole amount as a burst and refills evenly.
//!
//! The buckets live in this process: with several gateway processes on one PostgreSQL each
//! counts on its own (docs/decisions.md). A bucket is rebuilt when the mailbox's limits
//! change, which forgets what it had counted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// An office's limits per hour; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Messages per hour.
    pub messages: u32,
    /// Recipients per hour, all messages together.
    pub recipients: u32,
}

/// Why a submission is over an office's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverRate {
    /// What to tell the sender.
    pub detail: String,
    /// When the same submission would pass.
    pub retry_after: Duration,
}

struct Buckets {
    rates: Rates,
    messages: Option<DefaultDirectRateLimiter>,
    recipients: Option<DefaultDirectRateLimiter>,
}

fn bucket(per_hour: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(per_hour).map(|n| RateLimiter::direct(Quota::per_hour(n)))
}

/// The buckets of every office that sent since the process started.
#[derive(Default)]
pub struct OfficeRates {
    buckets: Mutex<HashMap<i64, Buckets>>,
}

impl std::fmt::Debug for OfficeRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OfficeRates")
    }
}

impl OfficeRates {
    /// Counts one message to `recipients` recipients from `mailbox_id`, or says how long to
    /// wait. A submission refused for its recipients counts nothing; one refused for the
    /// message rate has counted its recipients (governor cannot look without taking).
    pub fn check(&self, mailbox_id: i64, rates: Rates, recipients: u32) -> Result<(), OverRate> {
        // A poisoned lock means a panic while counting; the counts are still usable.
        let mut all = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = all.entry(mailbox_id).or_insert_with(|| Buckets {
            rates,
            messages: bucket(rates.messages),
            recipients: bucket(rates.recipients),
        });
        if entry.rates != rates {
            *entry = Buckets {
                rates,
                messages: bucket(rates.messages),
                recipients: bucket(rates.recipients),
            };
        }
        let now = DefaultClock::default().now();
        let over = |what: &str, limit: u32, wait: Duration| OverRate {
            detail: format!(
                "rate limit reached: this office mailbox may send at most {limit} {what} per hour"
            ),
            retry_after: wait,
        };
        // Recipients first: a message refused for its recipients must not use up a message.
        let n = NonZeroU32::new(recipients).unwrap_or(NonZeroU32::MIN);
        if let Some(limiter) = &entry.recipients {
            match limiter.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(over(
                        "recipients",
                        rates.recipients,
                        not_until.wait_time_from(now),
                    ));
                }
                Err(_) => {
                    return Err(OverRate {
                        detail: format!(
                            "{recipients} recipients: more than this office mailbox may address \
                             in an hour ({})",
                            rates.recipients
                        ),
                        retry_after: Duration::from_secs(3600),
                    });
                }
            }
        }
        if let Some(limiter) = &entry.messages
            && let Err(not_until) = limiter.check()
        {
            return Err(over(
                "messages",
                rates.messages,
                not_until.wait_time_from(now),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hours_amount_passes_then_the_next_waits() {
        let rates = OfficeRates::default();
        let limit = Rates {
            messages: 3,
            recipients: 10,
        };
        for _ in 0..3 {
            rates.check(1, limit, 2).unwrap();
        }
        let over = rates.check(1, limit, 1).unwrap_err();
        assert!(
            over.detail.contains("at most 3 messages per hour"),
            "{over:?}"
        );
        // 3,600 s / 3 per refill, give or take the time since the first check.
        assert!(over.retry_after > Duration::from_secs(1000), "{over:?}");
        // Another office counts on its own; 0 is unlimited.
        rates.check(2, limit, 10).unwrap();
        let unlimited = Rates {
            messages: 0,
            recipients: 0,
        };
        for _ in 0..100 {
            rates.check(3, unlimited, 100).unwrap();
        }
    }

    #[test]
    fn recipients_are_counted_across_messages_and_a_refusal_for_them_costs_nothing() {
        let rates = OfficeRates::default();
        let limit = Rates {
            messages: 100,
            recipients: 5,
        };
        rates.check(1, limit, 4).unwrap();
        let over = rates.check(1, limit, 2).unwrap_err();
        assert!(over.detail.contains("5 recipients per hour"), "{over:?}");
        rates.check(1, limit, 1).unwrap();
        let too_many = rates.check(7, limit, 6).unwrap_err();
        assert!(
            too_many.detail.starts_with("6 recipients: more than"),
            "{too_many:?}"
        );
        // A changed limit starts afresh.
        let raised = Rates {
            messages: 100,
            recipients: 50,
        };
        rates.check(1, raised, 40).unwrap();
    }
}
