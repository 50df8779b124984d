//! The analytics read model: orders per status, revenue per day and the best-selling SKUs, for
//! `GET /api/analytics/summary`.
//!
//! Unlike the other views it is a fold of the whole log, not of one stream, so it cannot be kept
//! compare-on-version per stream. It is one document holding both the totals and the log
//! cursor they reflect; the projector folds the log after that cursor and writes totals and
//! cursor together, compare-on-version, so an event is counted exactly once however often it is
//! delivered, and two projectors racing cannot both count a page.
//!
//! Some events need the order as it was just before them (a confirmation's total and lines,
//! whether a cancelled order had been confirmed): [`OrderFacts`], taken from the order's view
//! (any version at or after the one needed: its history has a status per version) or folded
//! from the order's stream.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use domain::RecordedEvent;
use domain::envelope::{DecodeError, decode};
use domain::order::{OrderEvent, OrderStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::views::{OrderView, OrderViewLine};

/// The running totals, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Events folded in.
    pub events: u64,
    /// Orders now in each status, by status name.
    pub by_status: BTreeMap<String, u64>,
    /// By UTC day of confirmation, then currency.
    pub revenue: BTreeMap<NaiveDate, BTreeMap<String, DayRevenue>>,
    /// By SKU: what confirmed orders bought, net of cancellations.
    pub skus: BTreeMap<String, SkuSales>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Revenue booked on one day in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DayRevenue {
    /// Orders confirmed that day.
    pub orders: u64,
    /// Their totals, in minor units.
    pub gross: u64,
    /// Orders confirmed that day and cancelled since.
    pub cancelled_orders: u64,
    /// Their totals, in minor units.
    pub refunded: u64,
}

/// What confirmed orders bought of one SKU, net of those cancelled since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SkuSales {
    pub units: u64,
    pub orders: u64,
    /// In minor units of `currency`.
    pub revenue: u64,
    pub currency: String,
}

/// The order just before an event: what the analytics fold needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFacts {
    pub status: OrderStatus,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub total: u64,
    pub currency: String,
    pub lines: Vec<OrderViewLine>,
}

impl OrderFacts {
    /// The order as of stream version `version`, from a view of that version or later (its
    /// history holds one status change per version); `None` if the view is older.
    pub fn from_view(view: &OrderView, version: u64) -> Option<Self> {
        let history = view.history.get(..usize::try_from(version).ok()?)?;
        let status = history.last()?.status;
        let confirmed_at = history
            .iter()
            .find(|change| change.status == OrderStatus::Confirmed)
            .map(|change| change.at);
        Some(Self {
            status,
            confirmed_at,
            total: view.total,
            currency: view.currency.clone(),
            lines: view.lines.clone(),
        })
    }
}

/// Whether folding `event` needs the order's facts before it.
pub fn needs_facts(event: &RecordedEvent) -> bool {
    event.stream_type == domain::order::STREAM_TYPE
        && matches!(
            event.event_type.as_str(),
            "OrderConfirmed" | "OrderCancelled"
        )
}

impl Totals {
    /// Folds one event of the log. `before` is the order just before it, required when
    /// [`needs_facts`] says so; other events ignore it.
    pub fn apply(
        &mut self,
        event: &RecordedEvent,
        before: Option<&OrderFacts>,
    ) -> Result<(), DecodeError> {
        if event.stream_type != domain::order::STREAM_TYPE {
            self.count(event);
            return Ok(());
        }
        self.apply_order(event, &decode::<OrderEvent>(event)?, before)
    }

    /// Counts an event that changes no total (the inventory's).
    pub fn count(&mut self, event: &RecordedEvent) {
        self.events += 1;
        self.updated_at = Some(event.occurred_at);
    }

    /// [`Totals::apply`] of an order event already decoded.
    pub fn apply_order(
        &mut self,
        event: &RecordedEvent,
        decoded: &OrderEvent,
        before: Option<&OrderFacts>,
    ) -> Result<(), DecodeError> {
        self.count(event);
        let missing = || DecodeError::of(event, "the order before this event is unknown".into());
        // The order's rules fix where each event comes from (domain::order), except a
        // cancellation, which may follow placement or confirmation.
        let to = decoded.status_after();
        let from = match decoded {
            OrderEvent::OrderPlaced { .. } => None,
            OrderEvent::OrderConfirmed => {
                let order = before.ok_or_else(missing)?;
                self.book(order, event.occurred_at.date_naive(), 1);
                Some(order.status)
            }
            OrderEvent::OrderRejected { .. } => Some(OrderStatus::Placed),
            OrderEvent::OrderCancelled { .. } => {
                let order = before.ok_or_else(missing)?;
                if let Some(confirmed_at) = order.confirmed_at {
                    self.book(order, confirmed_at.date_naive(), -1);
                }
                Some(order.status)
            }
            OrderEvent::OrderShipped { .. } => Some(OrderStatus::Confirmed),
            OrderEvent::OrderDelivered => Some(OrderStatus::Shipped),
        };
        if let Some(from) = from
            && let Some(count) = self.by_status.get_mut(from.as_str())
        {
            *count = count.saturating_sub(1);
        }
        *self.by_status.entry(to.as_str().to_owned()).or_default() += 1;
        Ok(())
    }

    /// Books a confirmation (`sign` 1) or takes it back (`sign` -1) on `day`.
    fn book(&mut self, order: &OrderFacts, day: NaiveDate, sign: i8) {
        let revenue = self
            .revenue
            .entry(day)
            .or_default()
            .entry(order.currency.clone())
            .or_default();
        if sign > 0 {
            revenue.orders += 1;
            revenue.gross += order.total;
        } else {
            revenue.cancelled_orders += 1;
            revenue.refunded += order.total;
        }
        for line in &order.lines {
            let sales = self.skus.entry(line.sku.clone()).or_default();
            let amount = u64::from(line.quantity) * line.unit_price;
            if sign > 0 {
                sales.units += u64::from(line.quantity);
                sales.orders += 1;
                sales.revenue += amount;
            } else {
                sales.units = sales.units.saturating_sub(u64::from(line.quantity));
                sales.orders = sales.orders.saturating_sub(1);
                sales.revenue = sales.revenue.saturating_sub(amount);
            }
            sales.currency.clone_from(&order.currency);
        }
    }

    /// What `GET /api/analytics/summary` answers: revenue days in `[since, until]` (either
    /// end open), the `top` SKUs by units sold (ties by revenue, then SKU).
    pub fn summary(
        &self,
        since: Option<NaiveDate>,
        until: Option<NaiveDate>,
        top: usize,
    ) -> Summary {
        let revenue_per_day = self
            .revenue
            .iter()
            .filter(|(day, _)| since.is_none_or(|s| **day >= s) && until.is_none_or(|u| **day <= u))
            .flat_map(|(day, currencies)| {
                currencies.iter().map(|(currency, r)| RevenueDay {
                    day: *day,
                    currency: currency.clone(),
                    orders: r.orders,
                    gross: r.gross,
                    cancelled_orders: r.cancelled_orders,
                    refunded: r.refunded,
                    net: r.gross.saturating_sub(r.refunded),
                })
            })
            .collect();
        let mut top_skus: Vec<TopSku> = self
            .skus
            .iter()
            .filter(|(_, s)| s.units > 0)
            .map(|(sku, s)| TopSku {
                sku: sku.clone(),
                units: s.units,
                orders: s.orders,
                revenue: s.revenue,
                currency: s.currency.clone(),
            })
            .collect();
        top_skus.sort_by(|a, b| {
            (b.units, b.revenue)
                .cmp(&(a.units, a.revenue))
                .then_with(|| a.sku.cmp(&b.sku))
        });
        top_skus.truncate(top);
        Summary {
            orders: self.by_status.values().sum(),
            orders_per_status: OrderStatus::ALL
                .iter()
                .map(|s| {
                    let name = s.as_str().to_owned();
                    let count = self.by_status.get(&name).copied().unwrap_or(0);
                    (name, count)
                })
                .collect(),
            revenue_per_day,
            top_skus,
            events: self.events,
            updated_at: self.updated_at,
            lag: None,
        }
    }
}

/// The analytics summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    /// Orders placed, in any status.
    pub orders: u64,
    /// Orders now in each status (every status is present).
    pub orders_per_status: BTreeMap<String, u64>,
    /// Oldest day first; one entry per day and currency with a confirmation.
    pub revenue_per_day: Vec<RevenueDay>,
    /// Most units sold first.
    pub top_skus: Vec<TopSku>,
    /// Events of the log folded into these numbers.
    pub events: u64,
    /// When the newest of them happened.
    pub updated_at: Option<DateTime<Utc>>,
    /// Events in the log not yet folded in, when the store can tell.
    pub lag: Option<u64>,
}

/// Revenue booked on one UTC day: the totals of the orders confirmed that day, and of those
/// among them cancelled since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevenueDay {
    pub day: NaiveDate,
    pub currency: String,
    pub orders: u64,
    /// In minor units of `currency`.
    pub gross: u64,
    pub cancelled_orders: u64,
    pub refunded: u64,
    /// `gross - refunded`.
    pub net: u64,
}

/// One SKU's sales to confirmed orders, net of cancellations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopSku {
    pub sku: String,
    pub units: u64,
    pub orders: u64,
    /// In minor units of `currency`.
    pub revenue: u64,
    pub currency: String,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use domain::order::OrderLine;
    use domain::order::{OrderEvent, STREAM_TYPE};
    use domain::values::{Currency, CustomerId, Quantity, ShippingAddress, Sku};
    use domain::{EventMetadata, NewEvent, envelope};
    use uuid::Uuid;

    use super::*;
    use crate::views::{View, fold};

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    /// An order's events as the store records them, one per `(event, when)`.
    fn order(id: Uuid, events: Vec<(OrderEvent, DateTime<Utc>)>) -> Vec<RecordedEvent> {
        events
            .into_iter()
            .zip(1..)
            .map(|((event, when), version)| {
                let new =
                    NewEvent::from_domain(Uuid::new_v4(), &event, when, EventMetadata::default());
                RecordedEvent {
                    event_id: new.event_id,
                    stream_id: envelope::stream_id(STREAM_TYPE, id),
                    stream_type: STREAM_TYPE.into(),
                    version,
                    global_position: None,
                    event_type: new.event_type,
                    schema_version: new.schema_version,
                    occurred_at: when,
                    payload: new.payload.into(),
                    metadata: new.metadata,
                }
            })
            .collect()
    }

    fn placed(id: Uuid, lines: &[(&str, u32, u64)]) -> OrderEvent {
        let lines: Vec<OrderLine> = lines
            .iter()
            .map(|(sku, quantity, price)| OrderLine {
                sku: Sku::parse(sku).unwrap(),
                quantity: Quantity::parse(i64::from(*quantity)).unwrap(),
                unit_price: *price,
            })
            .collect();
        let total = lines
            .iter()
            .map(|l| u64::from(l.quantity.get()) * l.unit_price)
            .sum();
        OrderEvent::OrderPlaced {
            order_id: id,
            customer_id: CustomerId(Uuid::new_v4()),
            lines,
            currency: Currency::parse("EUR").unwrap(),
            total,
            shipping_address: ShippingAddress {
                name: "Ada".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    /// Folds the events as the projector does: each order's facts from its own view.
    fn totals(log: &[RecordedEvent]) -> Totals {
        let mut views = std::collections::HashMap::<String, OrderView>::new();
        let mut totals = Totals::default();
        for event in log {
            let view = views.entry(event.stream_id.clone()).or_default();
            let facts = OrderFacts::from_view(view, event.version - 1);
            totals
                .apply(
                    event,
                    needs_facts(event).then_some(facts.as_ref()).flatten(),
                )
                .unwrap();
            view.apply(event).unwrap();
        }
        totals
    }

    #[test]
    fn a_confirmed_order_books_its_total_on_the_day_it_was_confirmed() {
        let id = Uuid::now_v7();
        let log = order(
            id,
            vec![
                (
                    placed(id, &[("TEA-001", 2, 450), ("MUG-001", 1, 1200)]),
                    at(3, 23),
                ),
                (OrderEvent::OrderConfirmed, at(4, 1)),
            ],
        );

        let summary = totals(&log).summary(None, None, 10);

        assert_eq!(summary.orders, 1);
        assert_eq!(summary.orders_per_status["confirmed"], 1);
        assert_eq!(summary.orders_per_status["placed"], 0);
        assert_eq!(summary.revenue_per_day.len(), 1);
        let day = &summary.revenue_per_day[0];
        assert_eq!(day.day, at(4, 0).date_naive());
        assert_eq!((day.orders, day.gross, day.net), (1, 2100, 2100));
        assert_eq!(summary.top_skus[0].sku, "TEA-001");
        assert_eq!(summary.top_skus[0].units, 2);
        assert_eq!(summary.top_skus[1].revenue, 1200);
    }

    #[test]
    fn cancelling_a_confirmed_order_refunds_its_confirmation_day_and_its_skus() {
        let id = Uuid::now_v7();
        let log = order(
            id,
            vec![
                (placed(id, &[("TEA-001", 3, 100)]), at(1, 9)),
                (OrderEvent::OrderConfirmed, at(1, 10)),
                (OrderEvent::OrderCancelled { reason: None }, at(5, 8)),
            ],
        );

        let summary = totals(&log).summary(None, None, 10);

        assert_eq!(summary.orders_per_status["cancelled"], 1);
        assert_eq!(summary.orders_per_status["confirmed"], 0);
        let day = &summary.revenue_per_day[0];
        assert_eq!(day.day, at(1, 0).date_naive());
        assert_eq!((day.gross, day.refunded, day.net), (300, 300, 0));
        assert!(
            summary.top_skus.is_empty(),
            "nothing sold: {:?}",
            summary.top_skus
        );
    }

    #[test]
    fn cancelling_before_confirmation_books_no_revenue() {
        let id = Uuid::now_v7();
        let log = order(
            id,
            vec![
                (placed(id, &[("TEA-001", 1, 100)]), at(1, 9)),
                (OrderEvent::OrderCancelled { reason: None }, at(1, 10)),
            ],
        );

        let summary = totals(&log).summary(None, None, 10);

        assert_eq!(summary.orders_per_status["cancelled"], 1);
        assert_eq!(summary.orders_per_status["placed"], 0);
        assert!(summary.revenue_per_day.is_empty());
    }

    #[test]
    fn each_order_counts_once_in_the_status_it_is_in_now() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut log = order(
            a,
            vec![
                (placed(a, &[("TEA-001", 1, 100)]), at(1, 9)),
                (OrderEvent::OrderConfirmed, at(1, 9)),
                (
                    OrderEvent::OrderShipped {
                        carrier: "DHL".into(),
                        tracking_number: "1".into(),
                    },
                    at(2, 9),
                ),
                (OrderEvent::OrderDelivered, at(3, 9)),
            ],
        );
        log.extend(order(
            b,
            vec![
                (placed(b, &[("TEA-001", 1, 100)]), at(1, 9)),
                (
                    OrderEvent::OrderRejected {
                        reason: domain::values::RejectionReason::OutOfStock,
                    },
                    at(1, 9),
                ),
            ],
        ));
        log.extend(order(
            c,
            vec![(placed(c, &[("MUG-001", 1, 100)]), at(1, 9))],
        ));

        let summary = totals(&log).summary(None, None, 10);

        let per_status: Vec<(&str, u64)> = summary
            .orders_per_status
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            per_status,
            vec![
                ("cancelled", 0),
                ("confirmed", 0),
                ("delivered", 1),
                ("placed", 1),
                ("rejected", 1),
                ("shipped", 0)
            ]
        );
        assert_eq!(summary.orders, 3);
        assert_eq!(summary.events, 7);
    }

    #[test]
    fn the_summary_filters_days_and_ranks_skus_by_units() {
        let mut log = Vec::new();
        for (day, sku, units) in [(1, "TEA-001", 1), (2, "MUG-001", 5), (3, "POT-001", 2)] {
            let id = Uuid::now_v7();
            log.extend(order(
                id,
                vec![
                    (placed(id, &[(sku, units, 100)]), at(day, 9)),
                    (OrderEvent::OrderConfirmed, at(day, 9)),
                ],
            ));
        }
        let totals = totals(&log);

        let summary = totals.summary(Some(at(2, 0).date_naive()), Some(at(3, 0).date_naive()), 2);

        let days: Vec<u32> = summary
            .revenue_per_day
            .iter()
            .map(|d| chrono::Datelike::day(&d.day))
            .collect();
        assert_eq!(days, vec![2, 3]);
        let skus: Vec<&str> = summary.top_skus.iter().map(|s| s.sku.as_str()).collect();
        assert_eq!(skus, vec!["MUG-001", "POT-001"]);
    }

    #[test]
    fn facts_come_from_a_later_view_as_they_were_then() {
        let id = Uuid::now_v7();
        let log = order(
            id,
            vec![
                (placed(id, &[("TEA-001", 1, 100)]), at(1, 9)),
                (OrderEvent::OrderConfirmed, at(1, 10)),
                (OrderEvent::OrderCancelled { reason: None }, at(2, 10)),
            ],
        );
        let view: OrderView = fold(&log).unwrap();

        let before_confirmation = OrderFacts::from_view(&view, 1).unwrap();
        let before_cancellation = OrderFacts::from_view(&view, 2).unwrap();

        assert_eq!(before_confirmation.status, OrderStatus::Placed);
        assert_eq!(before_confirmation.confirmed_at, None);
        assert_eq!(before_cancellation.status, OrderStatus::Confirmed);
        assert_eq!(before_cancellation.confirmed_at, Some(at(1, 10)));
        assert_eq!(OrderFacts::from_view(&view, 4), None, "the view is older");
    }

    #[test]
    fn an_event_that_needs_facts_without_them_is_an_error() {
        let id = Uuid::now_v7();
        let log = order(
            id,
            vec![
                (placed(id, &[("TEA-001", 1, 100)]), at(1, 9)),
                (OrderEvent::OrderConfirmed, at(1, 10)),
            ],
        );
        let mut totals = Totals::default();
        totals.apply(&log[0], None).unwrap();

        assert!(totals.apply(&log[1], None).is_err());
    }
}
