//! The keep-alive machinery shared by every backend: [`RegistrationHandle`] and
//! [`LockGuard`].
//!
//! A backend implements only the few backend-specific calls, as a
//! [`RegistrationSession`] (refresh, re-register, deregister) or a [`LockSession`]
//! (refresh, release). A generic driver task does the rest, identically for every
//! backend:
//!
//! * it refreshes every `TTL / refresh_divisor` (3 by default, see [`KeepAliveOptions`]);
//! * a failed refresh is retried sooner, with jitter and exponential backoff capped at the
//!   refresh interval, and logged at **warn** level; once the TTL has elapsed without a
//!   successful refresh it is logged at **error** level (the registration or lock is then
//!   presumably gone on the backend's side);
//! * a registration that the backend answers is gone ([`Refresh::Lost`]) is registered
//!   again; a lock that is gone stays lost ([`LockGuard::lost`] resolves and
//!   [`LockGuard::release`] reports [`BackendError::LockLost`]);
//! * every step of a registration is published as a [`RegistrationEvent`] to
//!   [`RegistrationHandle::subscribe`];
//! * each backend call is bounded by the TTL, even if the session forgets its own timeout.
//!
//! Ending it:
//!
//! | | registration | lock |
//! |---|---|---|
//! | explicit | [`RegistrationHandle::deregister`] reports errors | [`LockGuard::release`] reports errors and a lost lock |
//! | last clone dropped | deregisters in the background | (not `Clone`) releases in the background |
//! | [`abandon`](RegistrationHandle::abandon) | stops refreshing, leaves the registration to expire | stops refreshing, leaves the lock to expire |
//!
//! `abandon` is how a test or a trial simulates a process that crashed: the backend only
//! learns it through the TTL.
//!
//! ```
//! use std::time::Duration;
//! use autocluster::backend::{Backend, MemoryBackend, Registration, RegistrationEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = MemoryBackend::new();
//! let handle = backend
//!     .register(Registration::new("rabbit@node1".parse()?, Duration::from_secs(3)))
//!     .await?;
//! let mut events = handle.subscribe();
//! // ... the registration is refreshed every second in the background ...
//! handle.deregister().await?;
//! assert!(matches!(events.recv().await?, RegistrationEvent::Deregistered));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::BackendError;
use crate::NodeName;

/// What a refresh found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The registration or lock is still there; its TTL was renewed.
    Alive,
    /// The backend no longer has it (lease expired, key deleted, check unknown, lock taken
    /// over).
    Lost,
}

/// The backend-specific half of a registration: what the keep-alive driver calls.
///
/// Each call should bound its own network I/O with the backend's timeout; the driver
/// additionally bounds each call by the TTL.
#[async_trait::async_trait]
pub trait RegistrationSession: Send + Sync + fmt::Debug {
    /// Renews the registration's TTL (etcd: lease keep-alive; Consul: TTL check pass).
    /// `Ok(Refresh::Lost)` when the backend answers that it no longer has it.
    async fn refresh(&self) -> Result<Refresh, BackendError>;
    /// Registers again after the backend lost the registration (new lease, new check).
    async fn reregister(&self) -> Result<(), BackendError>;
    /// Removes the registration.
    async fn deregister(&self) -> Result<(), BackendError>;
}

/// The backend-specific half of a held lock: what the keep-alive driver calls.
#[async_trait::async_trait]
pub trait LockSession: Send + Sync + fmt::Debug {
    /// Renews the lock's lease and checks that the lock is still ours.
    async fn refresh(&self) -> Result<Refresh, BackendError>;
    /// Releases the lock. Returns [`BackendError::LockLost`] if it was no longer ours.
    async fn release(&self) -> Result<(), BackendError>;
}

/// How often the driver refreshes, and how it retries.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepAliveOptions {
    /// Refresh every `TTL / refresh_divisor` (default 3: two refreshes may fail before the
    /// TTL runs out). Values below 2 are treated as 2.
    pub refresh_divisor: u32,
    /// The first retry after a failed refresh comes after about this long (jittered);
    /// later retries back off exponentially, never beyond the refresh interval.
    /// Default: 1/8 of the refresh interval, at least 50 ms.
    pub retry_initial: Option<Duration>,
}

impl Default for KeepAliveOptions {
    fn default() -> Self {
        KeepAliveOptions {
            refresh_divisor: 3,
            retry_initial: None,
        }
    }
}

impl KeepAliveOptions {
    /// The refresh interval for `ttl`.
    pub fn interval(&self, ttl: Duration) -> Duration {
        let interval = ttl / self.refresh_divisor.max(2);
        interval.max(Duration::from_millis(10))
    }

    /// The (un-jittered) delay before retry number `consecutive` (1 = first retry).
    fn retry_delay(&self, ttl: Duration, consecutive: u32) -> Duration {
        let interval = self.interval(ttl);
        let initial = self
            .retry_initial
            .unwrap_or_else(|| (interval / 8).max(Duration::from_millis(50)));
        let factor = 1u32 << consecutive.saturating_sub(1).min(16);
        initial.saturating_mul(factor).min(interval)
    }
}

/// Something that happened to a registration, as seen by the keep-alive driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RegistrationEvent {
    /// The TTL was renewed.
    Refreshed,
    /// A refresh failed; `consecutive` counts the failures since the last success.
    RefreshFailed {
        /// Why.
        error: BackendError,
        /// Failures in a row.
        consecutive: u32,
    },
    /// The backend no longer had the registration; the driver registers again.
    Lost,
    /// The registration was made again after it had been lost.
    Reregistered,
    /// The registration was removed (explicitly or because the last handle was dropped).
    Deregistered,
}

/// Identifies what a driver keeps alive, for logs and errors.
#[derive(Debug, Clone)]
struct Subject {
    backend: &'static str,
    what: String,
    ttl: Duration,
}

enum Command {
    /// Stop and end it (deregister / release); the reply, if any, gets the result.
    Finish(Option<oneshot::Sender<Result<(), BackendError>>>),
    /// Stop without ending it.
    Abandon,
    /// Stop refreshing for a while (simulates a stalled process) / resume.
    Pause(bool),
}

#[async_trait::async_trait]
trait Driven: Send + Sync + 'static {
    async fn refresh(&self) -> Result<Refresh, BackendError>;
    /// `None` when a lost subject cannot be recovered (a lock).
    async fn recover(&self) -> Option<Result<(), BackendError>>;
    async fn finish(&self) -> Result<(), BackendError>;
}

struct RegDriven(Arc<dyn RegistrationSession>);

#[async_trait::async_trait]
impl Driven for RegDriven {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        self.0.refresh().await
    }
    async fn recover(&self) -> Option<Result<(), BackendError>> {
        Some(self.0.reregister().await)
    }
    async fn finish(&self) -> Result<(), BackendError> {
        self.0.deregister().await
    }
}

struct LockDriven(Arc<dyn LockSession>);

#[async_trait::async_trait]
impl Driven for LockDriven {
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        self.0.refresh().await
    }
    async fn recover(&self) -> Option<Result<(), BackendError>> {
        None
    }
    async fn finish(&self) -> Result<(), BackendError> {
        self.0.release().await
    }
}

/// State shared by the driver and its handles.
#[derive(Debug)]
struct Shared {
    active: AtomicBool,
    /// `true` once a lock is (presumably) lost; for registrations it stays `false`.
    lost: watch::Sender<bool>,
}

/// Jitter: a factor in `[0.5, 1.0)`.
fn jitter(d: Duration) -> Duration {
    let factor = 0.5 + rand::random::<f64>() * 0.5;
    d.mul_f64(factor)
}

async fn drive(
    subject: Subject,
    driven: Box<dyn Driven>,
    options: KeepAliveOptions,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: broadcast::Sender<RegistrationEvent>,
    shared: Arc<Shared>,
    is_lock: bool,
) {
    let ttl = subject.ttl;
    let interval = options.interval(ttl);
    let mut next = Instant::now() + interval;
    let mut last_ok = Instant::now();
    let mut consecutive: u32 = 0;
    let mut reported_expired = false;
    let mut paused = false;
    let bound = ttl.max(Duration::from_millis(100));

    let finish = |reply: Option<oneshot::Sender<Result<(), BackendError>>>,
                  driven: Box<dyn Driven>,
                  shared: Arc<Shared>,
                  events: broadcast::Sender<RegistrationEvent>,
                  subject: Subject| async move {
        shared.active.store(false, Ordering::SeqCst);
        let mut result = match tokio::time::timeout(bound, driven.finish()).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::timeout(
                subject.backend,
                if is_lock { "release" } else { "deregister" },
                bound,
            )),
        };
        if is_lock && *shared.lost.borrow() && result.is_ok() {
            result = Err(BackendError::LockLost {
                backend: subject.backend,
                detail: format!(
                    "{} was lost before release (its lease expired or it was taken over)",
                    subject.what
                ),
            });
        }
        match &result {
            Ok(()) => {
                tracing::debug!(backend = subject.backend, "{} ended", subject.what);
                if !is_lock {
                    let _ = events.send(RegistrationEvent::Deregistered);
                }
            }
            Err(error) => {
                tracing::warn!(backend = subject.backend, %error, "ending {} failed", subject.what)
            }
        }
        shared.lost.send_replace(true);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    };

    loop {
        // Wait for the next refresh or a command.
        let command = if paused {
            match commands.recv().await {
                Some(command) => Some(command),
                // Every handle is gone; their Drop sent `Finish` before, so this is only
                // reached after an abandon: nothing left to do.
                None => return,
            }
        } else {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => Some(command),
                    None => return,
                },
                _ = tokio::time::sleep_until(next) => None,
            }
        };
        match command {
            Some(Command::Finish(reply)) => {
                finish(reply, driven, shared, events, subject).await;
                return;
            }
            Some(Command::Abandon) => {
                shared.active.store(false, Ordering::SeqCst);
                tracing::debug!(backend = subject.backend, "{} abandoned", subject.what);
                return;
            }
            Some(Command::Pause(p)) => {
                paused = p;
                if !paused {
                    next = Instant::now();
                }
                continue;
            }
            None => {}
        }
        if *shared.lost.borrow() {
            // A lost lock is not refreshed any more; wait for release or drop.
            paused = true;
            continue;
        }

        let outcome = match tokio::time::timeout(bound, driven.refresh()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(BackendError::timeout(subject.backend, "refresh", bound)),
        };
        let outcome = match outcome {
            Ok(Refresh::Alive) => Ok(()),
            Ok(Refresh::Lost) => {
                let _ = events.send(RegistrationEvent::Lost);
                match driven.recover().await {
                    None => {
                        tracing::error!(
                            backend = subject.backend,
                            "{} was lost: its lease expired or it was taken over",
                            subject.what
                        );
                        shared.lost.send_replace(true);
                        paused = true;
                        continue;
                    }
                    Some(Ok(())) => {
                        tracing::warn!(
                            backend = subject.backend,
                            "{} had been lost by the backend; registered again",
                            subject.what
                        );
                        let _ = events.send(RegistrationEvent::Reregistered);
                        Ok(())
                    }
                    Some(Err(error)) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        let now = Instant::now();
        match outcome {
            Ok(()) => {
                if consecutive > 0 {
                    tracing::info!(
                        backend = subject.backend,
                        "{} refreshed again after {consecutive} failed attempts",
                        subject.what
                    );
                }
                consecutive = 0;
                reported_expired = false;
                last_ok = now;
                next = now + interval;
                let _ = events.send(RegistrationEvent::Refreshed);
            }
            Err(error) => {
                consecutive = consecutive.saturating_add(1);
                let silent_for = now.saturating_duration_since(last_ok);
                if silent_for >= ttl {
                    if !reported_expired {
                        tracing::error!(
                            backend = subject.backend,
                            %error,
                            consecutive,
                            "refreshing {} has failed for {silent_for:?}, longer than its TTL \
                             of {ttl:?}: the backend has presumably dropped it",
                            subject.what
                        );
                        reported_expired = true;
                    } else {
                        tracing::warn!(backend = subject.backend, %error, consecutive, "refreshing {} failed", subject.what);
                    }
                    if is_lock {
                        // Someone else may hold the lock by now: it must be treated as lost.
                        shared.lost.send_replace(true);
                    }
                } else {
                    tracing::warn!(
                        backend = subject.backend,
                        %error,
                        consecutive,
                        "refreshing {} failed; retrying",
                        subject.what
                    );
                }
                let _ = events.send(RegistrationEvent::RefreshFailed { error, consecutive });
                next = now + jitter(options.retry_delay(ttl, consecutive));
            }
        }
    }
}

/// The sending half shared by every clone of a handle; dropping the last one ends the
/// registration (or lock) in the background unless it was abandoned or ended explicitly.
#[derive(Debug)]
struct Control {
    commands: mpsc::UnboundedSender<Command>,
    done: AtomicBool,
}

impl Control {
    fn send(&self, command: Command) -> bool {
        if self.done.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.commands.send(command).is_ok()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            let _ = self.commands.send(Command::Finish(None));
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Finish(_) => f.write_str("Finish"),
            Command::Abandon => f.write_str("Abandon"),
            Command::Pause(p) => write!(f, "Pause({p})"),
        }
    }
}

fn spawn_driver(
    subject: Subject,
    driven: Box<dyn Driven>,
    options: KeepAliveOptions,
    is_lock: bool,
) -> (
    Arc<Control>,
    broadcast::Sender<RegistrationEvent>,
    Arc<Shared>,
) {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(64);
    let shared = Arc::new(Shared {
        active: AtomicBool::new(true),
        lost: watch::Sender::new(false),
    });
    tokio::spawn(drive(
        subject,
        driven,
        options,
        commands_rx,
        events.clone(),
        shared.clone(),
        is_lock,
    ));
    let control = Arc::new(Control {
        commands: commands_tx,
        done: AtomicBool::new(false),
    });
    (control, events, shared)
}

/// A live registration, kept alive in the background until it is deregistered, abandoned,
/// or the last clone is dropped (which deregisters in the background).
///
/// Cheap to clone; every clone controls the same registration.
#[derive(Debug, Clone)]
pub struct RegistrationHandle {
    node: NodeName,
    backend: &'static str,
    ttl: Duration,
    control: Arc<Control>,
    events: broadcast::Sender<RegistrationEvent>,
    shared: Arc<Shared>,
}

impl RegistrationHandle {
    /// Starts keeping `session` alive. Backends call this from
    /// [`Backend::register`](super::Backend::register) once the first registration has
    /// succeeded. Must be called inside a tokio runtime.
    pub fn spawn(
        backend: &'static str,
        node: NodeName,
        ttl: Duration,
        session: Arc<dyn RegistrationSession>,
        options: KeepAliveOptions,
    ) -> RegistrationHandle {
        let subject = Subject {
            backend,
            what: format!("the registration of {node}"),
            ttl,
        };
        let (control, events, shared) =
            spawn_driver(subject, Box::new(RegDriven(session)), options, false);
        RegistrationHandle {
            node,
            backend,
            ttl,
            control,
            events,
            shared,
        }
    }

    /// The registered node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The registration's TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the registration is still being kept alive (not deregistered, abandoned or
    /// dropped). A registration whose refreshes currently fail is still active: the driver
    /// keeps trying.
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Events from now on. A slow subscriber that falls more than 64 events behind gets
    /// [`broadcast::error::RecvError::Lagged`].
    pub fn subscribe(&self) -> broadcast::Receiver<RegistrationEvent> {
        self.events.subscribe()
    }

    /// Stops refreshing and removes the registration, reporting the backend's answer.
    /// Every clone stops; calling it again (on another clone) returns `Ok(())`.
    pub async fn deregister(self) -> Result<(), BackendError> {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Command::Finish(Some(tx))) {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Stops refreshing WITHOUT deregistering: the backend drops the registration when its
    /// TTL runs out, as it would for a crashed process. For tests and trials.
    pub fn abandon(self) {
        self.control.send(Command::Abandon);
    }

    /// Stops refreshing until [`resume_refresh`](Self::resume_refresh), simulating a
    /// stalled process (a long GC pause, `SIGSTOP`). For tests and trials.
    pub fn pause_refresh(&self) {
        let _ = self.control.commands.send(Command::Pause(true));
    }

    /// Resumes refreshing after [`pause_refresh`](Self::pause_refresh), at once.
    pub fn resume_refresh(&self) {
        let _ = self.control.commands.send(Command::Pause(false));
    }
}

/// A held startup lock. Its lease is kept alive in the background while the guard lives.
///
/// End it with [`release`](Self::release), which reports a lock that was lost or stolen
/// meanwhile; dropping the guard releases it in the background; [`abandon`](Self::abandon)
/// leaves it to expire.
#[derive(Debug)]
pub struct LockGuard {
    backend: &'static str,
    owner: String,
    fencing_token: u64,
    ttl: Duration,
    control: Arc<Control>,
    shared: Arc<Shared>,
    _events: broadcast::Sender<RegistrationEvent>,
}

impl LockGuard {
    /// Starts keeping `session` alive. Backends call this from
    /// [`Backend::lock`](super::Backend::lock) once the lock is held. Must be called inside
    /// a tokio runtime.
    pub fn spawn(
        backend: &'static str,
        owner: String,
        fencing_token: u64,
        ttl: Duration,
        session: Arc<dyn LockSession>,
        options: KeepAliveOptions,
    ) -> LockGuard {
        let subject = Subject {
            backend,
            what: format!("the startup lock held by {owner} (fencing token {fencing_token})"),
            ttl,
        };
        let (control, events, shared) =
            spawn_driver(subject, Box::new(LockDriven(session)), options, true);
        LockGuard {
            backend,
            owner,
            fencing_token,
            ttl,
            control,
            shared,
            _events: events,
        }
    }

    /// A number that grows with every acquisition of this lock (etcd: the revision at
    /// which the lock key was created). A resource guarded by the lock can reject a holder
    /// whose token is lower than one it has already seen.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Who holds it, as given in the [`LockRequest`](super::LockRequest).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The lock's lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the lock is still held as far as we know: not released, not found lost by a
    /// refresh, and refreshed successfully within its TTL.
    pub fn is_held(&self) -> bool {
        self.shared.active.load(Ordering::SeqCst) && !*self.shared.lost.borrow()
    }

    /// Resolves once the lock is lost (taken over, its lease expired, or not refreshed
    /// within its TTL) or ended. Cancel-safe.
    pub async fn lost(&self) {
        let mut lost = self.shared.lost.subscribe();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Releases the lock. Returns [`BackendError::LockLost`] when it had been lost or
    /// stolen before (someone else may have held it meanwhile).
    pub async fn release(self) -> Result<(), BackendError> {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Command::Finish(Some(tx))) {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Stops refreshing WITHOUT releasing: the lock frees itself when its lease expires, as
    /// for a crashed holder. For tests and trials.
    pub fn abandon(self) {
        self.control.send(Command::Abandon);
    }

    /// Stops refreshing until [`resume_refresh`](Self::resume_refresh), simulating a
    /// stalled holder. For tests and trials.
    pub fn pause_refresh(&self) {
        let _ = self.control.commands.send(Command::Pause(true));
    }

    /// Resumes refreshing after [`pause_refresh`](Self::pause_refresh), at once.
    pub fn resume_refresh(&self) {
        let _ = self.control.commands.send(Command::Pause(false));
    }
}
