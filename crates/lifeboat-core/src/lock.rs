//! One writer per job, across machines: `jobs/<job>/lock`, created only if absent.
//!
//! The lock holds who took it (owner, host, pid), a random token, when, and when it expires.
//! A running holder renews it (a lease, conditional on the ETag of the version it last wrote,
//! so a run that lost its lock never overwrites another's) so a long backup keeps it; a crashed holder stops
//! renewing, and once `expires_at` has passed the next run takes the lock over with a warning.
//! A run on the same machine need not wait for the lease: the lock names the holder's process
//! precisely enough ([`ProcessStamp`]) to tell that it has ended (killed, out of memory, the
//! container restarted), and then it is taken over at once, with the same warning.
//! Stores that silently ignore conditional create (some S3-compatible servers accept
//! `If-None-Match` and overwrite anyway) are detected before the first use and refused.
//!
//! Lease times are in the store's clock, not this host's: every run measures how far its clock
//! is from the store's (the modification time of the probe object it writes anyway) and
//! corrects by it. Otherwise a host whose clock runs ten minutes ahead would read every live
//! lock as expired and take it over, and two runs of a job would overlap.
//!
//! Takeover of an expired lock replaces exactly the version that was read (S3 `If-Match` on its
//! ETag, a compare-and-swap under a file lock in a directory), never delete-then-create: of
//! several runs taking over the same expired lock at once, exactly one wins.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{ObjectKey, Store};

/// How long a lock lives without renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10 * 60);

/// What a lock object holds: who has the job's lock, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// What holds it, e.g. `lifeboat-backup`.
    pub owner: String,
    /// The host the holder runs on.
    pub host: String,
    /// The holder's process id on that host.
    pub pid: u32,
    /// Random, per acquisition: a holder renews and releases only its own lock.
    pub token: String,
    /// When the lock was taken.
    pub started_at: DateTime<Utc>,
    /// When the lease runs out unless renewed; after that another run may take it over.
    pub expires_at: DateTime<Utc>,
    /// The holder's process, where the system can name it (absent in locks of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessStamp>,
}

/// Where a pid names one process, and which one: this boot of this kernel and this PID
/// namespace (`scope`), and when the process started (`started`, clock ticks after boot), so a
/// pid that was reused by another process is not taken for the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStamp {
    /// The kernel's boot id and the PID namespace.
    pub scope: String,
    /// The process's start time (field 22 of `/proc/PID/stat`).
    pub started: u64,
}

impl ProcessStamp {
    /// This process's stamp, where the system gives one (Linux's procfs); `None` elsewhere.
    pub fn of_this_process() -> Option<ProcessStamp> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
        Some(ProcessStamp {
            scope: format!("{}/{}", boot.trim(), namespace.display()),
            started: start_time("self")?,
        })
    }

    /// Whether process `pid` with this stamp has certainly ended, as seen from `here` (the
    /// asking process's stamp): same scope, and no process has the pid, or the one that has it
    /// started at another time. Anything uncertain (another machine or namespace, a process
    /// this user may not look at) counts as still running.
    fn has_ended(&self, pid: u32, here: &ProcessStamp) -> bool {
        if self.scope != here.scope {
            return false;
        }
        let Some(raw) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        // Signal 0 checks existence without sending anything; unlike procfs it sees every
        // process (`hidepid` does not hide them from it).
        match rustix::process::test_kill_process(raw) {
            Err(rustix::io::Errno::SRCH) => true,
            _ => start_time(&pid.to_string()).is_some_and(|s| s != self.started),
        }
    }
}

/// A process's start time: field 22 of `/proc/PID/stat`, in clock ticks after boot.
fn start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command, is in parentheses and may hold spaces: count from its end.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

impl LockInfo {
    /// One line for messages: who, where, since when, until when.
    pub fn describe(&self) -> String {
        format!(
            "{} on {} (pid {}) since {}, lease until {}",
            self.owner,
            self.host,
            self.pid,
            self.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Who is asking for the lock (the binary fills this in: the library reads no environment).
#[derive(Debug, Clone)]
pub struct Holder {
    /// The program, e.g. `lifeboat-backup`.
    pub owner: String,
    /// This host's name.
    pub host: String,
    /// This process's id.
    pub pid: u32,
    /// This process, precisely (see [`ProcessStamp::of_this_process`]).
    pub process: Option<ProcessStamp>,
}

impl Holder {
    /// Whether the run that holds `lock` has certainly ended, as far as this holder can see.
    fn sees_ended(&self, lock: &LockInfo) -> bool {
        match (&lock.process, &self.process) {
            (Some(theirs), Some(ours)) => theirs.has_ended(lock.pid, ours),
            _ => false,
        }
    }
}

pub use crate::catalog::lock_key;

fn random_token() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

async fn read_lock<S: Store>(store: &S, key: &ObjectKey) -> Result<Option<LockInfo>> {
    Ok(read_lock_tagged(store, key).await?.map(|(info, _)| info))
}

/// The lock and its version tag (ETag), which renewal is conditional on.
async fn read_lock_tagged<S: Store>(
    store: &S,
    key: &ObjectKey,
) -> Result<Option<(LockInfo, String)>> {
    match store.get_tagged(key).await? {
        None => Ok(None),
        Some((bytes, tag)) => parse_lock(&bytes)
            .map(|i| Some((i, tag)))
            .map_err(|e| unreadable(store, key, &e)),
    }
}

fn parse_lock(bytes: &[u8]) -> std::result::Result<LockInfo, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn unreadable<S: Store>(store: &S, key: &ObjectKey, e: &serde_json::Error) -> Error {
    let job = key.as_str().split('/').nth(1).unwrap_or("JOB");
    Error::new(
        ErrorKind::Lock,
        format!("the lock {key} in {} is unreadable: {e}", store.describe()),
    )
    .with_hint(format!(
        "if no run is active, remove it with `lifeboat-backup unlock {job}`; it is taken over by itself once it is older than the lease"
    ))
}

/// Refuses stores whose conditional create does not work (they would let two runs in).
pub async fn check_conditional_create<S: Store>(store: &S, job: &str) -> Result<()> {
    store_clock_offset(store, job).await.map(|_| ())
}

/// Differences between this host's clock and the store's below this are the measurement's own
/// (S3 times are whole seconds) and are not corrected.
const CLOCK_TOLERANCE: chrono::Duration = chrono::Duration::seconds(2);

/// Checks conditional create with a probe object (see [`check_conditional_create`]) and, from
/// the probe's modification time, how far the store's clock is ahead of this host's (zero
/// within [`CLOCK_TOLERANCE`], or when the store gives no time).
async fn store_clock_offset<S: Store>(store: &S, job: &str) -> Result<chrono::Duration> {
    let probe = crate::catalog::lock_probe_key(job, &random_token())?;
    let before = Utc::now();
    let first = store.create_exclusive(&probe, b"probe").await?;
    let after = Utc::now();
    let written = if first {
        store.head(&probe).await.ok().flatten().map(|m| m.modified)
    } else {
        None
    };
    let second = store.create_exclusive(&probe, b"probe").await;
    let _ = store.delete(&probe).await;
    match (first, second?) {
        (true, false) => {
            let offset = written.map_or(chrono::Duration::zero(), |w| {
                let w = DateTime::<Utc>::from(w);
                // The store stamped the probe between `before` and `after` by its clock.
                if w < before - CLOCK_TOLERANCE {
                    w - before
                } else if w > after + CLOCK_TOLERANCE {
                    w - after
                } else {
                    chrono::Duration::zero()
                }
            });
            if offset.abs() > chrono::Duration::minutes(1) {
                // Stores stamp objects to the second, so the offset is known to a second or two:
                // said in whole minutes ("20m", not "1199s").
                let minutes = (offset.abs().num_seconds() as u64 + 30) / 60;
                tracing::warn!(
                    "This host's clock is about {} {} the clock of {}; the job's lock is timed by the store's clock. Fix this host's clock (NTP): snapshot times and retention use it.",
                    crate::text::format_duration(std::time::Duration::from_secs(minutes * 60)),
                    if offset > chrono::Duration::zero() { "behind" } else { "ahead of" },
                    store.describe()
                );
            }
            Ok(offset)
        }
        _ => Err(Error::new(
            ErrorKind::Lock,
            format!(
                "{} does not honour conditional create (If-None-Match: *): a second create of the same key succeeded",
                store.describe()
            ),
        )
        .with_hint("locks cannot work on this store; use AWS S3, R2, a recent MinIO, or a directory")),
    }
}

/// A probe lives for the few milliseconds of one [`store_clock_offset`]; one older than this
/// belongs to a run that was killed between writing and deleting it.
const PROBE_GRACE: chrono::Duration = chrono::Duration::minutes(2);

/// Removes the probe objects killed runs left (`jobs/<job>/lock-probe-*`), once this run holds
/// the lock; best effort, since a leftover probe harms nothing but the repository's tidiness.
async fn remove_dead_probes<S: Store>(store: &S, job: &str, now: DateTime<Utc>) {
    let Ok(probe_prefix) = crate::catalog::lock_probe_key(job, "") else {
        return;
    };
    let Ok(objects) = store.list(&crate::catalog::job_prefix(job)).await else {
        return;
    };
    let cutoff = std::time::SystemTime::from(now - PROBE_GRACE);
    for object in objects {
        if object.key.as_str().starts_with(probe_prefix.as_str())
            && object.modified < cutoff
            && store.delete(&object.key).await.is_ok()
        {
            tracing::info!("Removed {}, left by a run that was killed.", object.key);
        }
    }
}

/// A held lock. Renewed in the background until [`LockGuard::release`].
pub struct LockGuard<S: Store + Clone + 'static> {
    lease: HeldLease<S>,
    stop: Arc<Notify>,
    renewer: Option<JoinHandle<()>>,
    /// An expired lock that was taken over, for the report.
    pub took_over: Option<LockInfo>,
}

/// What a run proves before it commits or prunes: that the job's lock is still its own.
/// A run that lost its lock (another host took it over, or it was removed by hand) must commit
/// nothing and prune nothing, however long or short it ran.
pub trait Lease: Send + Sync {
    /// Renews the lease conditionally on the version this run last wrote (S3 `If-Match`, a
    /// compare-and-swap in a directory): `Ok` proves the lock is still this run's; an
    /// [`ErrorKind::Lock`] error names whoever holds it now.
    fn confirm(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>>;
}

/// The lock as this run holds it: what it wrote, and the version tag every renewal is
/// conditional on (shared by the background renewal and [`Lease::confirm`]).
struct HeldLease<S: Store + Clone + 'static> {
    store: S,
    key: ObjectKey,
    info: LockInfo,
    lease: Duration,
    /// Turns this host's time into the store's.
    clock_offset: chrono::Duration,
    tag: Arc<tokio::sync::Mutex<String>>,
}

impl<S: Store + Clone + 'static> Clone for HeldLease<S> {
    fn clone(&self) -> Self {
        HeldLease {
            store: self.store.clone(),
            key: self.key.clone(),
            info: self.info.clone(),
            lease: self.lease,
            clock_offset: self.clock_offset,
            tag: self.tag.clone(),
        }
    }
}

impl<S: Store + Clone + 'static> HeldLease<S> {
    /// One conditional renewal: `Ok(true)` renewed, `Ok(false)` the lock is no longer this
    /// run's, `Err` the store could not be asked.
    async fn renew_once(&self) -> Result<bool> {
        let mut tag = self.tag.lock().await;
        let mut info = self.info.clone();
        info.expires_at = Utc::now()
            + self.clock_offset
            + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(10));
        let bytes = serde_json::to_vec_pretty(&info).unwrap_or_default();
        match self.store.replace_if(&self.key, &bytes, &tag).await? {
            Some(new_tag) => {
                *tag = new_tag;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn confirm_held(&self) -> Result<()> {
        if self.renew_once().await? {
            return Ok(());
        }
        let job = self
            .key
            .as_str()
            .split('/')
            .nth(1)
            .unwrap_or("JOB")
            .to_string();
        let now_held = read_lock(&self.store, &self.key).await.ok().flatten();
        Err(Error::new(
            ErrorKind::Lock,
            format!(
                "job {job:?}: this run lost its lock {} in {}; it is now held by {}",
                self.key,
                self.store.describe(),
                now_held.map_or_else(
                    || "nobody (it was removed)".to_string(),
                    |l| l.describe()
                )
            ),
        )
        .with_hint(
            "this run committed and pruned nothing, and left the lock as it is; find out which run took it over \
             (a host whose clock runs ahead, or `lifeboat-backup unlock` while a run was active)",
        ))
    }
}

impl<S: Store + Clone + 'static> Lease for HeldLease<S> {
    fn confirm(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.confirm_held())
    }
}

/// Runs `work` while holding the job's lock, and releases it whatever `work` returns: how
/// the maintenance operations (prune, forget, pin) keep out of a running backup's way.
pub async fn holding<S: Store + Clone + 'static, T>(
    store: &S,
    job: &str,
    holder: &Holder,
    now: DateTime<Utc>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let guard = acquire(store, job, holder, DEFAULT_LEASE, now).await?;
    let result = work.await;
    let _ = guard.release().await;
    result
}

/// Takes the job's lock, or fails with [`ErrorKind::Lock`] naming who holds it.
pub async fn acquire<S: Store + Clone + 'static>(
    store: &S,
    job: &str,
    holder: &Holder,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<LockGuard<S>> {
    // From here on `now` is the store's time.
    let offset = store_clock_offset(store, job).await?;
    let now = now + offset;
    let key = lock_key(job)?;
    let lease_chrono = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(10));
    let info = LockInfo {
        owner: holder.owner.clone(),
        host: holder.host.clone(),
        pid: holder.pid,
        token: random_token(),
        started_at: now,
        expires_at: now + lease_chrono,
        process: holder.process.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&info).unwrap_or_default();
    let locked_by = |other: Option<LockInfo>| {
        Error::new(
            ErrorKind::Lock,
            format!(
                "job {job:?} is locked by {}",
                other.map_or_else(|| "another run".to_string(), |w| w.describe())
            ),
        )
        .with_hint(format!(
            "another run is active; wait for it. If it is not (a crashed machine), the lock expires by itself, \
             or remove it with `lifeboat-backup unlock {job}`"
        ))
    };
    let mut took_over = None;
    if !store.create_exclusive(&key, &bytes).await? {
        match store.get_tagged(&key).await? {
            // Released meanwhile: one more conditional create decides.
            None => {
                if !store.create_exclusive(&key, &bytes).await? {
                    return Err(locked_by(read_lock(store, &key).await.ok().flatten()));
                }
            }
            Some((current, current_tag)) => {
                let stale = match parse_lock(&current) {
                    Ok(held) if held.token == info.token => None, // our own create, retried
                    Ok(held) if held.expires_at > now && !holder.sees_ended(&held) => {
                        return Err(locked_by(Some(held)))
                    }
                    Ok(held) => Some(held),
                    Err(e) => {
                        // An unreadable lock (a crash or a full disk while it was written) is
                        // taken over only once it is older than a lease; until then it may be
                        // a lock being written.
                        let written = store.head(&key).await?.map(|m| m.modified);
                        let age = written
                            .and_then(|w| std::time::SystemTime::from(now).duration_since(w).ok());
                        if age.is_none_or(|a| a < lease) {
                            return Err(unreadable(store, &key, &e));
                        }
                        tracing::warn!(
                            "Taking over the unreadable lock {key} in {} ({e}), written more than {} ago.",
                            store.describe(),
                            crate::text::format_duration(lease)
                        );
                        None
                    }
                };
                if let Some(s) = &stale {
                    if s.expires_at > now {
                        tracing::warn!(
                            "Taking over the lock of job {job:?} held by {}: that process has ended on this machine without releasing it.",
                            s.describe()
                        );
                    } else {
                        tracing::warn!(
                            "Taking over the expired lock of job {job:?} held by {}.",
                            s.describe()
                        );
                    }
                }
                // Replace exactly the version that was read: of several runs taking over the
                // same expired lock, one wins and the others see the winner's fresh lock.
                store.replace_if(&key, &bytes, &current_tag).await?;
                took_over = stale;
            }
        }
    }
    // Whether this run holds the lock is decided by what is there now: a conditional write
    // whose answer was lost and retried reports failure although it succeeded.
    let tag = match read_lock_tagged(store, &key).await? {
        Some((l, current)) if l.token == info.token => current,
        other => return Err(locked_by(other.map(|(l, _)| l))),
    };
    remove_dead_probes(store, job, now).await;
    let stop = Arc::new(Notify::new());
    let held = HeldLease {
        store: store.clone(),
        key,
        info,
        lease,
        clock_offset: offset,
        tag: Arc::new(tokio::sync::Mutex::new(tag)),
    };
    let renewer = tokio::spawn(renew(held.clone(), stop.clone()));
    Ok(LockGuard {
        lease: held,
        stop,
        renewer: Some(renewer),
        took_over,
    })
}

/// Renews the lease every third of its length, each time only if the lock is still the version
/// this run wrote (conditional on its ETag), so a run that lost its lock never overwrites the
/// lock of the run that took it over.
async fn renew<S: Store + Clone + 'static>(held: HeldLease<S>, stop: Arc<Notify>) {
    let every = held.lease / 3;
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match held.renew_once().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(
                    "The lock {} is no longer held by this run (it was removed or taken over); this run will commit and prune nothing.",
                    held.key
                );
                return;
            }
            // A failed request (the store is unreachable): try again at the next interval;
            // the lease is long enough for a few misses.
            Err(e) => tracing::warn!("Could not renew the lock {}: {e}", held.key),
        }
    }
}

impl<S: Store + Clone + 'static> LockGuard<S> {
    /// What the lock object says (as written when it was taken).
    pub fn info(&self) -> &LockInfo {
        &self.lease.info
    }

    /// How far the store's clock is ahead of this host's, as measured when the lock was taken
    /// (zero within the measurement's precision, and always zero on a directory: its clock is
    /// this host's own).
    pub fn clock_offset(&self) -> chrono::Duration {
        self.lease.clock_offset
    }

    /// The proof a run gives before it commits or prunes (see [`Lease`]).
    pub fn lease(&self) -> Arc<dyn Lease> {
        Arc::new(self.lease.clone())
    }

    /// Proves the lock is still this run's (see [`Lease::confirm`]).
    pub async fn confirm(&self) -> Result<()> {
        self.lease.confirm_held().await
    }

    /// Stops renewing the lease (a cancelled run: it must not keep the lock alive while it
    /// cleans up); the lock stays until [`LockGuard::release`] or its expiry.
    pub fn stop_renewing(&mut self) {
        self.stop.notify_one();
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }

    /// Stops renewing and removes the lock if it is still ours.
    pub async fn release(mut self) -> Result<()> {
        self.stop.notify_one();
        if let Some(r) = self.renewer.take() {
            let _ = r.await;
        }
        let held = &self.lease;
        if let Some(current) = read_lock(&held.store, &held.key).await? {
            if current.token == held.info.token {
                held.store.delete(&held.key).await?;
            }
        }
        Ok(())
    }
}

impl<S: Store + Clone + 'static> Drop for LockGuard<S> {
    fn drop(&mut self) {
        // Not released (an error or a signal): stop renewing; the lease then expires by itself.
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// Who holds the job's lock, if anyone.
pub async fn current<S: Store>(store: &S, job: &str) -> Result<Option<LockInfo>> {
    read_lock(store, &lock_key(job)?).await
}

/// Who holds the job's lock: `Ok(None)` if nobody, `Err` with the reason if the lock object is
/// there but unreadable (`unlock` removes those too).
pub async fn inspect(
    store: &impl Store,
    job: &str,
) -> Result<Option<std::result::Result<LockInfo, String>>> {
    let key = lock_key(job)?;
    Ok(store.get(&key).await?.map(|bytes| {
        parse_lock(&bytes).map_err(|e| unreadable(store, &key, &e).message().to_string())
    }))
}

/// Removes a job's lock by hand (after the operator confirmed no run is active).
pub async fn force_unlock<S: Store>(store: &S, job: &str) -> Result<Option<LockInfo>> {
    let key = lock_key(job)?;
    let held = read_lock(store, &key).await.ok().flatten();
    store.delete(&key).await?;
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faulty::FaultyStore;
    use crate::store::LocalStore;

    /// The lock works over any store: here the fault-injecting wrapper of the fault tests.
    #[tokio::test]
    async fn one_run_holds_the_lock_over_any_store() {
        let root = std::env::temp_dir().join(format!(
            "lifeboat-unit-lock-{}-{}",
            std::process::id(),
            crate::catalog::SnapshotId::generate(Utc::now())
        ));
        let store = FaultyStore::new(LocalStore::open(&root).unwrap(), u64::MAX);
        let holder = |pid| Holder {
            owner: "test".into(),
            host: "here".into(),
            pid,
            process: None,
        };
        let lease = Duration::from_secs(600);
        let first = acquire(&store, "app", &holder(1), lease, Utc::now())
            .await
            .unwrap();
        let second = acquire(&store, "app", &holder(2), lease, Utc::now()).await;
        assert_eq!(second.err().map(|e| e.kind()), Some(ErrorKind::Lock));
        assert_eq!(current(&store, "app").await.unwrap().unwrap().pid, 1);
        first.release().await.unwrap();
        assert!(current(&store, "app").await.unwrap().is_none());
        acquire(&store, "app", &holder(2), lease, Utc::now())
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(&root);
    }
}
