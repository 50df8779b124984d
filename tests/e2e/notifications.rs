//! No push is lost when a notifier dies at any step of one event (claim, send, completion,
//! acknowledgement), and a push sent twice carries one collapse key.
//!
//! Each case runs the notifier as the system does, behind a consumer on the in-process topic,
//! and kills it at one step: the consumer's task is aborted there, which leaves the view store
//! and the topic as a killed process leaves them (a claim never completed or given back, a
//! delivery never settled, so the topic delivers the event again). A second notifier, the
//! restarted process, shares the view store and takes the redelivery. The topic allows two
//! deliveries in all, so a notifier that spent one on waiting for the dead one's lease would
//! dead-letter the event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use domain::RecordedEvent;
use eventlog::Failure;
use infra::bus::{EventBus, Handler, MemoryBus, RetryPolicy, consume};
use projections::MemoryViewStore;
use projections::notifier::{Installation, Notification, PushError, PushSender};
use projections::{Claim, Notifier, ViewStore};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// Where a notifier dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Claimed, the push not sent yet.
    BeforeSend,
    /// The push service took the push; the claim is not completed yet.
    AfterSend,
    /// The claim is completed; the delivery is not acknowledged yet.
    AfterCompletion,
}

/// The push service: records what it accepted, and can hang the notifier at a step.
#[derive(Default)]
struct Pushes {
    accepted: Mutex<Vec<Notification>>,
    die: Mutex<Option<Step>>,
    reached: Notify,
}

impl Pushes {
    fn accepted(&self) -> Vec<Notification> {
        self.accepted.lock().unwrap().clone()
    }

    fn dies_at(&self, step: Step) -> bool {
        let mut die = self.die.lock().unwrap();
        if *die == Some(step) {
            *die = None;
            return true;
        }
        false
    }

    /// Marks the step reached and never returns: the process dies here.
    async fn die(&self) -> ! {
        self.reached.notify_one();
        std::future::pending().await
    }
}

#[async_trait]
impl PushSender for Pushes {
    async fn send(&self, notification: &Notification) -> Result<(), PushError> {
        if self.dies_at(Step::BeforeSend) {
            self.die().await;
        }
        self.accepted.lock().unwrap().push(notification.clone());
        if self.dies_at(Step::AfterSend) {
            self.die().await;
        }
        Ok(())
    }

    async fn register(&self, _: Installation) -> Result<(), PushError> {
        Ok(())
    }

    async fn delete(&self, _: Uuid, _: &str) -> Result<bool, PushError> {
        Ok(false)
    }
}

/// The lease the notifiers take: short, so that a dead one's is over soon.
const LEASE: Duration = Duration::from_millis(800);

fn handler(notifier: Arc<Notifier>, pushes: Arc<Pushes>) -> Handler {
    Arc::new(move |event: RecordedEvent| {
        let (notifier, pushes) = (notifier.clone(), pushes.clone());
        Box::pin(async move {
            notifier.handle(&event).await.map_err(Failure::from)?;
            if pushes.dies_at(Step::AfterCompletion) {
                pushes.die().await;
            }
            Ok(())
        })
    })
}

/// Kills a notifier at `step` while it pushes an order's confirmation, restarts it, and
/// answers what the push service accepted.
async fn kill_at(step: Step) -> (Vec<Notification>, RecordedEvent, Arc<MemoryBus>) {
    let (_dir, store, _, events) = orderflow_tests::confirmed_order("PUSH-1").await;
    let confirmed = events[1].clone();
    let views: Arc<dyn ViewStore> = Arc::new(MemoryViewStore::new());
    let pushes = Arc::new(Pushes::default());
    *pushes.die.lock().unwrap() = Some(step);
    let policy = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
    };
    let bus = Arc::new(MemoryBus::new(&["notifier"], policy));
    let notifier = || {
        let push: Arc<dyn PushSender> = pushes.clone();
        Arc::new(Notifier::new(store.clone(), views.clone(), push).with_lease(LEASE))
    };

    let (stop, stopped) = watch::channel(false);
    let dying = tokio::spawn(consume(
        "notifier",
        bus.subscribe("notifier").await.unwrap(),
        4,
        handler(notifier(), pushes.clone()),
        stopped.clone(),
    ));
    let receipt = bus.publish(vec![confirmed.clone()]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pushes.reached.notified())
        .await
        .unwrap_or_else(|_| panic!("the notifier never reached {step:?}"));
    dying.abort();
    let _ = dying.await;

    let restarted = tokio::spawn(consume(
        "notifier",
        bus.subscribe("notifier").await.unwrap(),
        4,
        handler(notifier(), pushes.clone()),
        stopped,
    ));
    tokio::time::timeout(Duration::from_secs(20), receipt)
        .await
        .expect("the redelivery is settled in time")
        .expect("the topic settles the event");
    assert_eq!(
        views
            .claim(&format!("notified:{}", confirmed.event_id), LEASE)
            .await,
        Ok(Claim::Done),
        "the event's claim ends completed"
    );
    stop.send_replace(true);
    restarted.await.unwrap();
    (pushes.accepted(), confirmed, bus)
}

fn collapse_ids(accepted: &[Notification]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = accepted.iter().map(|n| n.event_id).collect();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_between_its_claim_and_the_send_is_taken_over() {
    let (accepted, confirmed, bus) = kill_at(Step::BeforeSend).await;

    assert_eq!(accepted.len(), 1, "pushed once, by the restarted notifier");
    assert_eq!(accepted[0].event_id, confirmed.event_id);
    assert_eq!(accepted[0].status, "confirmed");
    assert_eq!(
        bus.dead_letters().await.unwrap(),
        vec![],
        "waiting for the dead notifier's lease spent no delivery attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_after_the_send_pushes_again_under_one_collapse_key() {
    let (accepted, confirmed, bus) = kill_at(Step::AfterSend).await;

    assert_eq!(
        accepted.len(),
        2,
        "the one window for a second push: after the service took it, before the completion"
    );
    assert_eq!(
        collapse_ids(&accepted),
        vec![confirmed.event_id],
        "both carry the event id, so the device shows one"
    );
    assert_eq!(bus.dead_letters().await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_after_completing_pushes_nothing_more() {
    let (accepted, confirmed, bus) = kill_at(Step::AfterCompletion).await;

    assert_eq!(accepted.len(), 1, "the redelivery finds the push done");
    assert_eq!(accepted[0].event_id, confirmed.event_id);
    assert_eq!(bus.dead_letters().await.unwrap(), vec![]);
}
