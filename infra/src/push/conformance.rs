//! The conformance suite of the [`PushSender`] port: what every push adapter must do, written
//! once.
//!
//! Each case is a `pub async fn` that takes a sender and panics with a message that says which
//! promise broke. Cases use fresh customer and installation ids, so one sender may serve many
//! cases at once. [`push_sender_conformance!`](crate::push_sender_conformance) turns them into
//! one test per case for an adapter:
//!
//! ```ignore
//! async fn fixture() -> (Arc<dyn PushSender>, FakeServer) { /* a sender and what it needs */ }
//!
//! mod conformance {
//!     infra::push_sender_conformance!(super::fixture());
//! }
//! ```
//!
//! The factory expression yields either the sender or a `(sender, guard)` pair whose guard (a
//! local fake server, say) lives until the test ends; see [`PushFixture`]. The calling crate
//! needs `tokio` with `macros` and `rt-multi-thread`.

use std::sync::Arc;

use chrono::Utc;
use projections::notifier::{Installation, Notification, PushError, PushSender};
use uuid::Uuid;

/// What a conformance factory yields: the sender under test, maybe with a guard to keep alive.
pub trait PushFixture {
    fn sender(&self) -> Arc<dyn PushSender>;
}

impl PushFixture for Arc<dyn PushSender> {
    fn sender(&self) -> Arc<dyn PushSender> {
        self.clone()
    }
}

impl<G> PushFixture for (Arc<dyn PushSender>, G) {
    fn sender(&self) -> Arc<dyn PushSender> {
        self.0.clone()
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on a sender made by the given
/// async factory expression (see the [module docs](crate::push::conformance)).
#[macro_export]
macro_rules! push_sender_conformance {
    ($factory:expr) => {
        $crate::push_sender_conformance!(@cases $factory;
            re_registering_by_the_same_customer_replaces,
            registering_another_customers_id_is_refused,
            delete_by_the_owner_is_true_then_false,
            delete_by_another_customer_is_refused_and_keeps_it,
            sending_to_a_customer_without_devices_is_ok,
            sending_to_a_registered_customer_is_ok,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $factory.await;
                let sender = $crate::push::conformance::PushFixture::sender(&fixture);
                $crate::push::conformance::$case(sender).await;
            }
        )+
    };
}

/// An installation of `customer` on `platform` with a fresh id.
pub fn installation(customer: Uuid, platform: &str) -> Installation {
    Installation {
        installation_id: format!("device-{}", Uuid::new_v4().simple()),
        customer_id: customer,
        platform: platform.to_owned(),
        push_channel: format!("channel-{}", Uuid::new_v4().simple()),
        tags: vec![format!("customer:{customer}")],
    }
}

/// A status change of a fresh order of `customer`.
pub fn notification(customer: Uuid, status: &str, reason: Option<&str>) -> Notification {
    Notification {
        order_id: Uuid::new_v4(),
        customer_id: customer,
        status: status.to_owned(),
        version: 2,
        reason: reason.map(str::to_owned),
        event_id: Uuid::now_v7(),
        at: Utc::now(),
    }
}

pub async fn re_registering_by_the_same_customer_replaces(sender: Arc<dyn PushSender>) {
    let customer = Uuid::new_v4();
    let first = installation(customer, "apns");
    let mut again = first.clone();
    again.push_channel = "a-new-channel".into();

    sender.register(first).await.expect("first registration");
    let replaced = sender.register(again.clone()).await;

    assert_eq!(replaced, Ok(()), "the owner may register the same id again");
    assert_eq!(
        sender.delete(customer, &again.installation_id).await,
        Ok(true),
        "the re-registered installation is still there"
    );
}

pub async fn registering_another_customers_id_is_refused(sender: Arc<dyn PushSender>) {
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mine = installation(owner, "fcmv1");
    let mut theirs = installation(other, "fcmv1");
    theirs.installation_id = mine.installation_id.clone();

    sender.register(mine.clone()).await.expect("registration");
    let stolen = sender.register(theirs).await;

    assert_eq!(
        stolen,
        Err(PushError::NotOwner),
        "another customer cannot take over an installation id"
    );
    assert_eq!(
        sender.delete(owner, &mine.installation_id).await,
        Ok(true),
        "the owner's installation survived"
    );
}

pub async fn delete_by_the_owner_is_true_then_false(sender: Arc<dyn PushSender>) {
    let customer = Uuid::new_v4();
    let device = installation(customer, "wns");
    sender.register(device.clone()).await.expect("registration");

    let first = sender.delete(customer, &device.installation_id).await;
    let second = sender.delete(customer, &device.installation_id).await;

    assert_eq!(first, Ok(true), "deleting an existing installation");
    assert_eq!(second, Ok(false), "deleting it again finds nothing");
}

pub async fn delete_by_another_customer_is_refused_and_keeps_it(sender: Arc<dyn PushSender>) {
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    let device = installation(owner, "apns");
    sender.register(device.clone()).await.expect("registration");

    let refused = sender.delete(other, &device.installation_id).await;

    assert_eq!(refused, Err(PushError::NotOwner), "only the owner deletes");
    assert_eq!(
        sender.delete(owner, &device.installation_id).await,
        Ok(true),
        "the installation was kept"
    );
}

pub async fn sending_to_a_customer_without_devices_is_ok(sender: Arc<dyn PushSender>) {
    let sent = sender
        .send(&notification(Uuid::new_v4(), "confirmed", None))
        .await;

    assert_eq!(sent, Ok(()), "no device is not an error");
}

pub async fn sending_to_a_registered_customer_is_ok(sender: Arc<dyn PushSender>) {
    let customer = Uuid::new_v4();
    sender
        .register(installation(customer, "fcmv1"))
        .await
        .expect("registration");

    let sent = sender
        .send(&notification(customer, "rejected", Some("out of stock")))
        .await;

    assert_eq!(sent, Ok(()), "a push to a registered device");
}
