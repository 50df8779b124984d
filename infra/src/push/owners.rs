//! Who owns each push installation, kept by orderflow in the view store (the cache) rather than
//! learnt from the push service.
//!
//! Notification Hubs keeps installations eventually consistent: a read right after a write can
//! answer 404 or the previous body (azure-notificationhubs-dotnet issues #95 and #345). An
//! ownership check made with such a read can miss that an id was just registered, by another
//! customer or by this one, so both push adapters decide ownership here instead, with the view
//! store's compare-and-set:
//!
//! - `installation:{id}` holds the [`Installation`] as last registered (JSON), or `null` once
//!   its owner deleted it (a tombstone: the view store has no delete);
//! - `installations:customer:{customer}` indexes a customer's installation ids.
//!
//! Registering claims the id with a compare-and-set, so of two customers registering one new
//! id at the same instant exactly one wins and the other is told [`PushError::NotOwner`].
//!
//! What the cache forgets (a flushed or failed-over cache without persistence) the push
//! service may still have. An id with no record at all is therefore [`Record::Unknown`], not
//! "nobody's": the Notification Hubs adapter then asks the hub, whose answer is old enough by
//! then to be settled.

use std::sync::Arc;

use projections::notifier::{Installation, PushError};
use projections::view_store::{Doc, ViewStore};
use uuid::Uuid;

/// Where an installation is kept in the view store: `installation:{id}`.
pub const KEY_PREFIX: &str = "installation:";
/// The index of a customer's installations: `installations:customer:{customer_id}`.
pub const INDEX_PREFIX: &str = "installations:customer:";

/// A compare-and-set lost to a concurrent writer is tried again this many times.
const CAS_ATTEMPTS: usize = 5;

/// What the view store knows of an installation id.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Never seen (or forgotten by the cache).
    Unknown,
    /// Registered once and deleted by its owner since.
    Deleted { version: u64 },
    /// Registered, as last registered.
    Registered {
        version: u64,
        installation: Installation,
    },
}

impl Record {
    fn version(&self) -> u64 {
        match self {
            Self::Unknown => 0,
            Self::Deleted { version } | Self::Registered { version, .. } => *version,
        }
    }

    /// The owner, when registered.
    pub fn owner(&self) -> Option<Uuid> {
        match self {
            Self::Registered { installation, .. } => Some(installation.customer_id),
            _ => None,
        }
    }
}

/// The ownership records, on a view store shared by every process.
#[derive(Clone)]
pub struct Owners {
    views: Arc<dyn ViewStore>,
}

fn key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

fn unavailable(error: impl std::fmt::Display) -> PushError {
    PushError::Unavailable(format!("installation records: {error}"))
}

impl Owners {
    pub fn new(views: Arc<dyn ViewStore>) -> Self {
        Self { views }
    }

    pub async fn record(&self, id: &str) -> Result<Record, PushError> {
        match self.views.get(&key(id)).await.map_err(unavailable)? {
            None => Ok(Record::Unknown),
            Some(doc) if doc.body == "null" => Ok(Record::Deleted {
                version: doc.version,
            }),
            Some(doc) => serde_json::from_str(&doc.body)
                .map(|installation| Record::Registered {
                    version: doc.version,
                    installation,
                })
                .map_err(unavailable),
        }
    }

    /// Records `installation` as its customer's, unless the id is another customer's
    /// ([`PushError::NotOwner`]). `unknown` decides an id without a record (see the module
    /// docs): it returns the owner the push service knows, if any.
    pub async fn claim<F, Fut>(
        &self,
        installation: &Installation,
        unknown: F,
    ) -> Result<(), PushError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Uuid>, PushError>>,
    {
        let id = &installation.installation_id;
        let body = serde_json::to_string(installation).map_err(unavailable)?;
        for _ in 0..CAS_ATTEMPTS {
            let record = self.record(id).await?;
            let owner = match &record {
                Record::Unknown => unknown().await?,
                other => other.owner(),
            };
            if owner.is_some_and(|owner| owner != installation.customer_id) {
                return Err(PushError::NotOwner);
            }
            let version = record.version();
            let doc = Doc {
                version: version + 1,
                body: body.clone(),
            };
            if self
                .views
                .put(&key(id), version, doc)
                .await
                .map_err(unavailable)?
            {
                let index = format!("{INDEX_PREFIX}{}", installation.customer_id);
                return self
                    .views
                    .index_add(&index, 0, id)
                    .await
                    .map_err(unavailable);
            }
        }
        Err(PushError::Unavailable(format!(
            "installation {id} kept changing while it was registered; retry"
        )))
    }

    /// Whether `customer` may delete `id`: `Ok(Some(version))` when the record says so,
    /// `Ok(None)` when there is nothing of theirs to delete, [`PushError::NotOwner`] when it
    /// is another customer's. `unknown` decides an id without a record, as in [`Self::claim`].
    pub async fn check_delete<F, Fut>(
        &self,
        customer: Uuid,
        id: &str,
        unknown: F,
    ) -> Result<Option<u64>, PushError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Uuid>, PushError>>,
    {
        let record = self.record(id).await?;
        let owner = match &record {
            Record::Unknown => unknown().await?,
            other => other.owner(),
        };
        match owner {
            None => Ok(None),
            Some(owner) if owner != customer => Err(PushError::NotOwner),
            Some(_) => Ok(Some(record.version())),
        }
    }

    /// Marks `id` deleted, after its owner's delete (checked at `version`) went through. A
    /// record changed in between (the owner registered it again) is left as it is.
    pub async fn forget(&self, id: &str, version: u64) -> Result<(), PushError> {
        let tombstone = Doc {
            version: version + 1,
            body: "null".into(),
        };
        self.views
            .put(&key(id), version, tombstone)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// How many devices `customer` has registered.
    pub async fn devices(&self, customer: Uuid) -> Result<usize, PushError> {
        let index = format!("{INDEX_PREFIX}{customer}");
        let members = self
            .views
            .index_page(&index, None, 1000)
            .await
            .map_err(unavailable)?;
        let mut count = 0;
        for (_, id) in members {
            if self.record(&id).await?.owner() == Some(customer) {
                count += 1;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projections::MemoryViewStore;

    fn device(customer: Uuid) -> Installation {
        crate::push::conformance::installation(customer, "apns")
    }

    async fn nobody() -> Result<Option<Uuid>, PushError> {
        Ok(None)
    }

    #[tokio::test]
    async fn of_two_customers_claiming_one_new_id_at_once_exactly_one_wins() {
        for _ in 0..50 {
            let owners = Owners::new(Arc::new(MemoryViewStore::new()));
            let first = device(Uuid::new_v4());
            let mut second = device(Uuid::new_v4());
            second.installation_id = first.installation_id.clone();

            let (a, b) = tokio::join!(owners.claim(&first, nobody), owners.claim(&second, nobody));

            let mut outcomes = [a, b];
            outcomes.sort_by_key(|o| o.is_err());
            assert_eq!(outcomes, [Ok(()), Err(PushError::NotOwner)]);
        }
    }

    #[tokio::test]
    async fn an_id_the_cache_forgot_is_decided_by_what_the_service_knows() {
        let owners = Owners::new(Arc::new(MemoryViewStore::new()));
        let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mine = device(owner);
        let mut theirs = device(other);
        theirs.installation_id = mine.installation_id.clone();
        let hub_says = || async move { Ok(Some(owner)) };

        assert_eq!(
            owners.claim(&theirs, hub_says).await,
            Err(PushError::NotOwner)
        );
        assert_eq!(
            owners
                .check_delete(other, &mine.installation_id, hub_says)
                .await,
            Err(PushError::NotOwner)
        );
        assert_eq!(
            owners
                .check_delete(owner, &mine.installation_id, hub_says)
                .await,
            Ok(Some(0))
        );
        assert_eq!(owners.claim(&mine, hub_says).await, Ok(()));
        assert_eq!(owners.devices(owner).await, Ok(1));
    }

    #[tokio::test]
    async fn a_deleted_id_is_nobodys_without_asking_the_service() {
        let owners = Owners::new(Arc::new(MemoryViewStore::new()));
        let customer = Uuid::new_v4();
        let mine = device(customer);
        owners.claim(&mine, nobody).await.unwrap();
        let version = owners
            .check_delete(customer, &mine.installation_id, nobody)
            .await
            .unwrap()
            .unwrap();
        owners.forget(&mine.installation_id, version).await.unwrap();
        let asked = || async { panic!("a tombstone needs no question to the service") };

        let again = owners
            .check_delete(customer, &mine.installation_id, asked)
            .await;

        assert_eq!(again, Ok(None));
        assert_eq!(owners.devices(customer).await, Ok(0));
        let newcomer = device(Uuid::new_v4());
        let mut taken = newcomer.clone();
        taken.installation_id = mine.installation_id.clone();
        assert_eq!(owners.claim(&taken, asked).await, Ok(()));
    }
}
