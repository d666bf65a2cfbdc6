//! What the bot sells, without IO: an order's quantities, its price from the panel's `prices`
//! setting, and what approving it does to the buyer's WireGuard client (quota and expiry).

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::store::{BotTransaction, PurchaseType};

/// Bytes in the GB the panel sells (GiB, as CandyPanel counts).
pub const GIB: u64 = 1 << 30;
/// Quota a time plan gives (1 TiB).
pub const MONTH_PLAN_QUOTA: u64 = 1024 * GIB;
/// Days a traffic plan extends the expiry by.
pub const GB_PLAN_DAYS: i64 = 365;
/// Days in a sold month.
pub const DAYS_PER_MONTH: f64 = 30.0;
/// Largest traffic one order may buy (1 PiB).
pub const MAX_GB: f64 = 1_048_576.0;
/// Longest time one order may buy (100 years).
pub const MAX_MONTHS: f64 = 1200.0;

/// What an order buys; quantities are checked (finite, in range, something bought).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Gb(f64),
    Month(f64),
    Custom { months: f64, gb: f64 },
}

/// Why an order or its price is refused. The texts are what the bot shows (it looks for "Price
/// per … not configured" and "Price for … not configured").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("Missing quantity for GB purchase")]
    MissingGb,
    #[error("Missing quantity for Month purchase")]
    MissingMonth,
    #[error("Missing time_quantity or traffic_quantity for custom purchase")]
    MissingCustom,
    #[error("Quantity must be greater than 0.")]
    NotPositive,
    #[error("time_quantity and traffic_quantity must not be negative.")]
    Negative,
    #[error("Quantity is too large: at most {MAX_GB} GB and {MAX_MONTHS} months per order.")]
    TooLarge,
    #[error("Price per GB not configured. Please contact support.")]
    GbPriceMissing,
    #[error("Price per Month not configured. Please contact support.")]
    MonthPriceMissing,
    #[error("Price for the custom plan (1GB and 1Month) not configured. Please contact support.")]
    CustomPriceMissing,
    #[error("The new expiry date is out of range.")]
    ExpiryOutOfRange,
}

impl PlanError {
    /// Whether the panel's configuration is at fault, not the caller.
    pub fn is_configuration(&self) -> bool {
        matches!(self, PlanError::GbPriceMissing | PlanError::MonthPriceMissing | PlanError::CustomPriceMissing)
    }
}

fn checked(value: f64, max: f64) -> Result<f64, PlanError> {
    if value.is_nan() {
        return Err(PlanError::NotPositive);
    }
    if value < 0.0 {
        return Err(PlanError::Negative);
    }
    if value > max {
        return Err(PlanError::TooLarge);
    }
    Ok(value)
}

impl Order {
    /// An order from the bot's fields: `quantity` for `gb` and `month`, `time_quantity` (months)
    /// and `traffic_quantity` (GB) for `custom`, where a missing one counts as 0.
    pub fn new(
        kind: PurchaseType,
        quantity: Option<f64>,
        time_quantity: Option<f64>,
        traffic_quantity: Option<f64>,
    ) -> Result<Order, PlanError> {
        let positive = |q: f64, max: f64| if q > 0.0 { checked(q, max) } else { Err(PlanError::NotPositive) };
        match kind {
            PurchaseType::Gb => Ok(Order::Gb(positive(quantity.ok_or(PlanError::MissingGb)?, MAX_GB)?)),
            PurchaseType::Month => Ok(Order::Month(positive(quantity.ok_or(PlanError::MissingMonth)?, MAX_MONTHS)?)),
            PurchaseType::Custom => {
                let months = checked(time_quantity.unwrap_or(0.0), MAX_MONTHS)?;
                let gb = checked(traffic_quantity.unwrap_or(0.0), MAX_GB)?;
                if time_quantity.is_none() && traffic_quantity.is_none() {
                    return Err(PlanError::MissingCustom);
                }
                if months == 0.0 && gb == 0.0 {
                    return Err(PlanError::NotPositive);
                }
                Ok(Order::Custom { months, gb })
            }
        }
    }

    /// The order a stored transaction holds.
    pub fn of(t: &BotTransaction) -> Result<Order, PlanError> {
        match t.purchase_type {
            PurchaseType::Gb | PurchaseType::Month => Order::new(t.purchase_type, Some(t.quantity), None, None),
            PurchaseType::Custom => Order::new(t.purchase_type, None, Some(t.time_quantity), Some(t.traffic_quantity)),
        }
    }

    pub fn purchase_type(&self) -> PurchaseType {
        match self {
            Order::Gb(_) => PurchaseType::Gb,
            Order::Month(_) => PurchaseType::Month,
            Order::Custom { .. } => PurchaseType::Custom,
        }
    }

    /// The stored columns `(quantity, time_quantity, traffic_quantity)`; unused ones are 0.
    pub fn columns(&self) -> (f64, f64, f64) {
        match *self {
            Order::Gb(q) | Order::Month(q) => (q, 0.0, 0.0),
            Order::Custom { months, gb } => (0.0, months, gb),
        }
    }

    /// What approving it adds.
    pub fn grant(&self) -> Grant {
        // `as` truncates, like the panel's int().
        let days = |months: f64| (months * DAYS_PER_MONTH) as i64;
        let bytes = |gb: f64| (gb * GIB as f64) as u64;
        match *self {
            Order::Gb(gb) => Grant { bytes: bytes(gb), extend_days: GB_PLAN_DAYS, traffic_gb: gb, time_days: 0 },
            Order::Month(months) => {
                Grant { bytes: MONTH_PLAN_QUOTA, extend_days: days(months), traffic_gb: 0.0, time_days: days(months) }
            }
            // Traffic alone extends like a traffic plan: 0 days would leave a new client expired.
            Order::Custom { months, gb } => Grant {
                bytes: bytes(gb),
                extend_days: if days(months) > 0 { days(months) } else { GB_PLAN_DAYS },
                traffic_gb: gb,
                time_days: days(months),
            },
        }
    }
}

/// What an approved order adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    /// Quota bought.
    pub bytes: u64,
    /// Days the expiry moves by.
    pub extend_days: i64,
    /// Booked on the user (`traffic_bought_gb`) and told to them.
    pub traffic_gb: f64,
    /// Booked on the user (`time_bought_days`) and told to them.
    pub time_days: i64,
}

/// The buyer's client before the approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// 0: unlimited.
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub expires_ms: i64,
}

/// The client's quota after the approval (0: unlimited):
/// - a new client gets what was bought (a custom plan without traffic: unlimited);
/// - traffic (a GB plan, or a custom plan with traffic) adds to the previous quota;
/// - a time plan sets 1 TiB; a custom plan without traffic sets unlimited;
/// - a limited quota below what is used already becomes used + bought.
pub fn new_quota(order: &Order, grant: &Grant, current: Option<&Current>) -> u64 {
    let Some(current) = current else { return grant.bytes };
    let quota = match order {
        Order::Gb(_) => grant.bytes.saturating_add(current.quota_bytes),
        Order::Custom { gb, .. } if *gb > 0.0 => grant.bytes.saturating_add(current.quota_bytes),
        Order::Custom { .. } => 0,
        Order::Month(_) => MONTH_PLAN_QUOTA,
    };
    if quota != 0 && quota < current.used_bytes {
        current.used_bytes.saturating_add(grant.bytes)
    } else {
        quota
    }
}

/// The client's expiry after the approval: the later of now and its current expiry, plus the
/// days bought.
pub fn new_expiry(now: OffsetDateTime, current: Option<&Current>, days: i64) -> Result<OffsetDateTime, PlanError> {
    let mut from = now;
    if let Some(c) = current {
        let at = OffsetDateTime::from_unix_timestamp_nanos(c.expires_ms as i128 * 1_000_000)
            .map_err(|_| PlanError::ExpiryOutOfRange)?;
        from = from.max(at);
    }
    from.checked_add(duration_days(days)?).ok_or(PlanError::ExpiryOutOfRange)
}

/// `days` as a duration, refusing spans no date can be moved by (and `Duration::days` would
/// overflow on).
fn duration_days(days: i64) -> Result<time::Duration, PlanError> {
    const MAX_DAYS: u64 = 10_000 * 366;
    if days.unsigned_abs() > MAX_DAYS {
        return Err(PlanError::ExpiryOutOfRange);
    }
    Ok(time::Duration::days(days))
}

/// Moves an expiry by `days` (an admin's correction of the time bought).
pub fn shift_expiry(expires_ms: i64, days: i64) -> Result<OffsetDateTime, PlanError> {
    let span = duration_days(days)?;
    OffsetDateTime::from_unix_timestamp_nanos(expires_ms as i128 * 1_000_000)
        .ok()
        .and_then(|at| at.checked_add(span))
        .ok_or(PlanError::ExpiryOutOfRange)
}

/// The panel's `prices` setting: a JSON object; `1GB` and `1Month` are the prices used, other
/// keys are only shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    /// The object as stored (`{}` when the setting is not a JSON object).
    pub listed: Map<String, Value>,
    per_gb: Option<f64>,
    per_month: Option<f64>,
}

impl Prices {
    /// Reads the setting. Prices may be numbers or numeric strings; a missing, zero, negative or
    /// unreadable price is "not configured".
    pub fn parse(setting: &str) -> Prices {
        let listed = match serde_json::from_str::<Value>(setting) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let price = |key: &str| {
            let value = match listed.get(key)? {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            (value.is_finite() && value > 0.0).then_some(value)
        };
        let (per_gb, per_month) = (price("1GB"), price("1Month"));
        Prices { listed, per_gb, per_month }
    }

    /// What an order costs, rounded to 2 decimals.
    pub fn price(&self, order: &Order) -> Result<f64, PlanError> {
        let amount = match *order {
            Order::Gb(gb) => self.per_gb.ok_or(PlanError::GbPriceMissing)? * gb,
            Order::Month(months) => self.per_month.ok_or(PlanError::MonthPriceMissing)? * months,
            Order::Custom { months, gb } => {
                let (Some(per_gb), Some(per_month)) = (self.per_gb, self.per_month) else {
                    return Err(PlanError::CustomPriceMissing);
                };
                per_gb * gb + per_month * months
            }
        };
        Ok((amount * 100.0).round() / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW_MS / 1000).unwrap()
    }

    fn day_ms(days: i64) -> i64 {
        days * 86_400_000
    }

    #[test]
    fn orders_are_read_and_checked() {
        use PurchaseType::*;
        assert_eq!(Order::new(Gb, Some(10.0), None, None), Ok(Order::Gb(10.0)));
        assert_eq!(Order::new(Month, Some(1.5), Some(9.0), None), Ok(Order::Month(1.5)), "other fields ignored");
        assert_eq!(Order::new(Custom, None, Some(2.0), None), Ok(Order::Custom { months: 2.0, gb: 0.0 }));
        assert_eq!(Order::new(Custom, Some(5.0), Some(1.0), Some(10.0)), Ok(Order::Custom { months: 1.0, gb: 10.0 }));
        assert_eq!(Order::new(Gb, None, Some(1.0), None), Err(PlanError::MissingGb));
        assert_eq!(Order::new(Month, None, None, None), Err(PlanError::MissingMonth));
        assert_eq!(Order::new(Custom, Some(3.0), None, None), Err(PlanError::MissingCustom));
        assert_eq!(Order::new(Gb, Some(0.0), None, None), Err(PlanError::NotPositive));
        assert_eq!(Order::new(Month, Some(-1.0), None, None), Err(PlanError::NotPositive));
        assert_eq!(Order::new(Custom, None, Some(0.0), Some(0.0)), Err(PlanError::NotPositive));
        assert_eq!(Order::new(Custom, None, Some(-1.0), Some(5.0)), Err(PlanError::Negative));
        assert_eq!(Order::new(Gb, Some(f64::NAN), None, None), Err(PlanError::NotPositive));
        assert_eq!(Order::new(Gb, Some(f64::INFINITY), None, None), Err(PlanError::TooLarge));
        assert_eq!(Order::new(Gb, Some(MAX_GB + 1.0), None, None), Err(PlanError::TooLarge));
        assert_eq!(Order::new(Month, Some(MAX_MONTHS + 1.0), None, None), Err(PlanError::TooLarge));
        assert_eq!(Order::Custom { months: 2.0, gb: 3.0 }.columns(), (0.0, 2.0, 3.0));
        assert_eq!(Order::Month(2.0).columns(), (2.0, 0.0, 0.0));
        assert_eq!(Order::Custom { months: 2.0, gb: 3.0 }.purchase_type(), Custom);
    }

    #[test]
    fn prices_come_from_the_setting() {
        let prices = Prices::parse(r#"{"1GB": 4000, "1Month": "75000", "note": "cash only"}"#);
        assert_eq!(prices.listed.len(), 3, "every entry is shown");
        assert_eq!(prices.price(&Order::Gb(10.0)), Ok(40000.0));
        assert_eq!(prices.price(&Order::Gb(0.1)), Ok(400.0), "rounded to cents");
        assert_eq!(prices.price(&Order::Month(2.0)), Ok(150000.0), "numeric strings count");
        assert_eq!(prices.price(&Order::Custom { months: 1.0, gb: 10.0 }), Ok(115000.0));

        let gb_only = Prices::parse(r#"{"1GB": 4000, "1Month": 0}"#);
        assert_eq!(gb_only.price(&Order::Gb(1.0)), Ok(4000.0));
        assert_eq!(gb_only.price(&Order::Month(1.0)), Err(PlanError::MonthPriceMissing));
        assert_eq!(gb_only.price(&Order::Custom { months: 0.0, gb: 1.0 }), Err(PlanError::CustomPriceMissing));
        let none = Prices::parse("not json");
        assert!(none.listed.is_empty());
        assert_eq!(none.price(&Order::Gb(1.0)), Err(PlanError::GbPriceMissing));
        assert_eq!(
            Prices::parse(r#"{"1GB": "cheap", "1Month": -5}"#),
            Prices {
                listed: serde_json::from_str(r#"{"1GB": "cheap", "1Month": -5}"#).unwrap(),
                per_gb: None,
                per_month: None,
            }
        );

        // The bot matches these substrings to show its "price not configured" text.
        for (e, phrase) in [
            (PlanError::GbPriceMissing, "Price per"),
            (PlanError::MonthPriceMissing, "Price per"),
            (PlanError::CustomPriceMissing, "Price for"),
        ] {
            let text = e.to_string();
            assert!(text.contains(phrase) && text.contains("not configured"), "{text}");
            assert!(e.is_configuration());
        }
        assert!(!PlanError::NotPositive.is_configuration());
    }

    #[test]
    fn grants_follow_the_plan() {
        assert_eq!(
            Order::Gb(10.0).grant(),
            Grant { bytes: 10 * GIB, extend_days: 365, traffic_gb: 10.0, time_days: 0 }
        );
        assert_eq!(Order::Gb(0.5).grant().bytes, GIB / 2);
        assert_eq!(
            Order::Month(1.5).grant(),
            Grant { bytes: MONTH_PLAN_QUOTA, extend_days: 45, traffic_gb: 0.0, time_days: 45 }
        );
        assert_eq!(Order::Month(0.01).grant().extend_days, 0, "int(0.3) days, as the panel truncates");
        assert_eq!(
            Order::Custom { months: 2.0, gb: 20.0 }.grant(),
            Grant { bytes: 20 * GIB, extend_days: 60, traffic_gb: 20.0, time_days: 60 }
        );
        assert_eq!(
            Order::Custom { months: 0.0, gb: 20.0 }.grant(),
            Grant { bytes: 20 * GIB, extend_days: 365, traffic_gb: 20.0, time_days: 0 },
            "traffic alone runs a year, like a GB plan"
        );
    }

    #[test]
    fn quota_rules() {
        let quota = |order: Order, current: Option<Current>| new_quota(&order, &order.grant(), current.as_ref());
        let client = |quota_bytes, used_bytes| Current { quota_bytes, used_bytes, expires_ms: NOW_MS };

        // New clients get what was bought.
        assert_eq!(quota(Order::Gb(10.0), None), 10 * GIB);
        assert_eq!(quota(Order::Month(1.0), None), MONTH_PLAN_QUOTA);
        assert_eq!(quota(Order::Custom { months: 1.0, gb: 5.0 }, None), 5 * GIB);
        assert_eq!(quota(Order::Custom { months: 1.0, gb: 0.0 }, None), 0, "custom without traffic: unlimited");

        // Traffic adds up.
        assert_eq!(quota(Order::Gb(10.0), Some(client(5 * GIB, GIB))), 15 * GIB);
        assert_eq!(quota(Order::Custom { months: 1.0, gb: 10.0 }, Some(client(5 * GIB, 0))), 15 * GIB);
        assert_eq!(quota(Order::Gb(10.0), Some(client(0, 0))), 10 * GIB, "unlimited plus GB becomes limited");
        // Time plans set 1 TiB, whatever was there.
        assert_eq!(quota(Order::Month(1.0), Some(client(5 * GIB, 0))), MONTH_PLAN_QUOTA);
        assert_eq!(quota(Order::Month(1.0), Some(client(2 * MONTH_PLAN_QUOTA, 0))), MONTH_PLAN_QUOTA);
        assert_eq!(quota(Order::Custom { months: 1.0, gb: 0.0 }, Some(client(5 * GIB, 9 * GIB))), 0);

        // A quota below what is used already becomes used + bought.
        assert_eq!(quota(Order::Gb(1.0), Some(client(0, 50 * GIB))), 51 * GIB);
        assert_eq!(quota(Order::Month(1.0), Some(client(5 * GIB, MONTH_PLAN_QUOTA + GIB))), 2 * MONTH_PLAN_QUOTA + GIB);
        assert_eq!(quota(Order::Gb(1.0), Some(client(u64::MAX, 0))), u64::MAX, "saturates");
    }

    #[test]
    fn expiry_rules() {
        let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
        let client = |expires_ms| Current { quota_bytes: 0, used_bytes: 0, expires_ms };
        assert_eq!(new_expiry(now(), None, 30).unwrap(), at(NOW_MS + day_ms(30)), "new client: from now");
        assert_eq!(
            new_expiry(now(), Some(&client(NOW_MS + day_ms(10))), 30).unwrap(),
            at(NOW_MS + day_ms(40)),
            "a running client is extended from its expiry"
        );
        assert_eq!(
            new_expiry(now(), Some(&client(NOW_MS - day_ms(100))), 30).unwrap(),
            at(NOW_MS + day_ms(30)),
            "an expired client starts again from now"
        );
        assert_eq!(new_expiry(now(), None, 365 * 20_000), Err(PlanError::ExpiryOutOfRange));
        assert_eq!(shift_expiry(NOW_MS, -10).unwrap(), at(NOW_MS - day_ms(10)));
        assert_eq!(shift_expiry(NOW_MS, 5).unwrap(), at(NOW_MS + day_ms(5)));
        assert_eq!(shift_expiry(NOW_MS, 3_000_000), Err(PlanError::ExpiryOutOfRange));
        assert_eq!(shift_expiry(NOW_MS, i64::MIN), Err(PlanError::ExpiryOutOfRange), "no overflow panic");
        assert_eq!(new_expiry(now(), None, i64::MAX), Err(PlanError::ExpiryOutOfRange));
    }
}
