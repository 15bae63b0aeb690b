//! Shard-local timers that cost glommio's park nothing: one kernel timeout serves all of them.
//!
//! Why (issue 13, measured): while any glommio timer is pending, glommio arms a timeout in its
//! latency ring at every park and removes it at every wake (`sys/uring.rs`, `Reactor::wait`).
//! At hub load that is most of a message's cost above the floor: floor-uring2 hosted in glommio
//! spent 55–60 µs per message with no timer pending and 86 µs with one (`--pending-timer-s`),
//! and `io_uring_enter` calls went from 6–7 to 11–14 per message. A shard always has timers
//! pending (every connection's read deadline, the heartbeat, the shutdown watch, the journal's
//! group delay), so it always paid that.
//!
//! On a shard with its own socket ring (SOCKET_IO=uring) the timers live here instead: a map
//! ordered by deadline, whose earliest entry the ring's driver keeps armed as one
//! IORING_OP_TIMEOUT on its ring (moved with a timeout update when an earlier entry comes) and
//! whose due entries it wakes at each turn ([`Timers::fire_due`]). glommio then parks with no
//! timer of its own. Where no driver is installed on the thread (SOCKET_IO=glommio, unit tests,
//! and after the driver stopped at shutdown), [`sleep`] is a glommio timer, as before.
//!
//! Written here rather than taken from a crate: the timer wheels of tokio and async-io belong to
//! their own reactors and glommio's offers no hook to park on; what is needed is an ordered map
//! (std's `BTreeMap`: insert and remove in O(log n), memory exactly the pending entries) and the
//! bookkeeping of which deadline the kernel holds.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A pending entry: its deadline, then a sequence number that keeps equal deadlines apart.
type Key = (Instant, u64);

/// One shard's timers. Single-threaded: it lives on its shard's executor.
#[derive(Debug, Default)]
pub struct Timers {
    inner: RefCell<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Pending sleeps by deadline.
    entries: BTreeMap<Key, Waker>,
    /// The sequence number of the next entry.
    next_id: u64,
    /// The deadline the driver's kernel timeout is set for, if one is armed.
    armed: Option<Instant>,
    /// An entry earlier than `armed` came since the driver last armed.
    earlier: bool,
    /// The driver, parked until something is due or an earlier entry comes.
    driver: Option<Waker>,
    /// The driver stopped: pending and new sleeps become glommio timers.
    stopped: bool,
}

thread_local! {
    /// The timers of the shard running on this thread, while its driver runs.
    static INSTALLED: RefCell<Option<Rc<Timers>>> = const { RefCell::new(None) };
}

impl Timers {
    /// Timers for this thread's shard, which [`sleep`] uses from now on: the caller must drive
    /// them ([`Timers::fire_due`], [`Timers::next_deadline`], [`Timers::poll_earlier`]) until
    /// [`Timers::stop`].
    pub fn install() -> Rc<Timers> {
        let timers = Rc::new(Timers::default());
        INSTALLED.with(|t| *t.borrow_mut() = Some(Rc::clone(&timers)));
        timers
    }

    /// The driver stops: sleeps fall back to glommio timers (those pending are woken so they
    /// switch), and this thread's [`sleep`] no longer uses these timers.
    pub fn stop(self: &Rc<Self>) {
        INSTALLED.with(|t| {
            let mut installed = t.borrow_mut();
            if installed.as_ref().is_some_and(|i| Rc::ptr_eq(i, self)) {
                *installed = None;
            }
        });
        let entries = {
            let mut inner = self.inner.borrow_mut();
            inner.stopped = true;
            std::mem::take(&mut inner.entries)
        };
        entries.into_values().for_each(Waker::wake);
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inner
            .borrow()
            .entries
            .first_key_value()
            .map(|(k, _)| k.0)
    }

    /// Moves the wakers of every entry due at `now` into `wake`; returns how many.
    pub fn fire_due(&self, now: Instant, wake: &mut Vec<Waker>) -> usize {
        let mut inner = self.inner.borrow_mut();
        let mut fired = 0;
        while let Some(entry) = inner.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            wake.push(entry.remove());
            fired += 1;
        }
        fired
    }

    /// The driver's kernel timeout now fires at `at` (`None`: none is armed).
    pub fn set_armed(&self, at: Option<Instant>) {
        let mut inner = self.inner.borrow_mut();
        inner.armed = at;
        inner.earlier = false;
    }

    /// Resolves once an entry earlier than the armed timeout came (for a parked driver).
    pub fn poll_earlier(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        if std::mem::take(&mut inner.earlier) {
            return Poll::Ready(());
        }
        inner.driver = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Adds an entry; `None` once stopped.
    fn insert(&self, deadline: Instant, waker: &Waker) -> Option<Key> {
        let mut inner = self.inner.borrow_mut();
        if inner.stopped {
            return None;
        }
        let key = (deadline, inner.next_id);
        inner.next_id = inner.next_id.wrapping_add(1);
        inner.entries.insert(key, waker.clone());
        if inner.armed.is_none_or(|armed| deadline < armed) {
            inner.earlier = true;
            if let Some(driver) = inner.driver.take() {
                drop(inner);
                driver.wake();
            }
        }
        Some(key)
    }

    /// Refreshes an entry's waker; `false` if it is no longer pending (fired or stopped).
    fn refresh(&self, key: Key, waker: &Waker) -> bool {
        let mut inner = self.inner.borrow_mut();
        match inner.entries.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&self, key: Key) {
        self.inner.borrow_mut().entries.remove(&key);
    }

    fn stopped(&self) -> bool {
        self.inner.borrow().stopped
    }

    /// Entries pending (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }
}

/// Resolves `duration` from now: on the shard's [`Timers`] if installed, else a glommio timer.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Resolves at `deadline`: on the shard's [`Timers`] if installed, else a glommio timer.
pub fn sleep_until(deadline: Instant) -> Sleep {
    let timers = INSTALLED.with(|t| t.borrow().clone());
    Sleep {
        deadline,
        state: match timers {
            Some(timers) => State::Shard { timers, key: None },
            None => State::Idle,
        },
    }
}

/// A [`sleep`]; dropping it removes its entry.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    state: State,
}

#[derive(Debug)]
enum State {
    /// On the shard's timers; `key` once registered.
    Shard {
        timers: Rc<Timers>,
        key: Option<Key>,
    },
    /// Not polled yet, no shard timers: a glommio timer at the first poll.
    Idle,
    /// A glommio timer.
    Glommio(glommio::timer::Timer),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let now = Instant::now();
        if now >= this.deadline {
            if let State::Shard {
                timers,
                key: Some(key),
            } = &this.state
            {
                timers.remove(*key);
            }
            return Poll::Ready(());
        }
        if let State::Shard { timers, key } = &mut this.state {
            let pending = match *key {
                Some(k) => timers.refresh(k, cx.waker()),
                None => match timers.insert(this.deadline, cx.waker()) {
                    Some(k) => {
                        *key = Some(k);
                        true
                    }
                    None => false,
                },
            };
            if pending {
                return Poll::Pending;
            }
            if !timers.stopped() {
                // Fired: the deadline passed between the driver's clock and ours. Not expected
                // (both read the same monotonic clock); ready all the same.
                return Poll::Ready(());
            }
            this.state = State::Idle;
        }
        if let State::Idle = this.state {
            this.state = State::Glommio(glommio::timer::Timer::new(this.deadline - now));
        }
        match &mut this.state {
            State::Glommio(timer) => Pin::new(timer).poll(cx).map(drop),
            _ => Poll::Pending,
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let State::Shard {
            timers,
            key: Some(key),
        } = &self.state
        {
            timers.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    fn poll(sleep: &mut Sleep, waker: &Waker) -> Poll<()> {
        Pin::new(sleep).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn entries_fire_in_deadline_order_and_a_dropped_sleep_leaves_nothing() {
        let timers = Timers::install();
        let (count, waker) = counter();
        let base = Instant::now();
        let mut late = sleep_until(base + Duration::from_secs(20));
        let mut early = sleep_until(base + Duration::from_secs(10));
        let mut dropped = sleep_until(base + Duration::from_secs(5));
        for s in [&mut late, &mut early, &mut dropped] {
            assert_eq!(poll(s, &waker), Poll::Pending);
        }
        assert_eq!(timers.len(), 3);
        drop(dropped);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next_deadline(), Some(base + Duration::from_secs(10)));
        let mut wake = Vec::new();
        assert_eq!(timers.fire_due(base + Duration::from_secs(9), &mut wake), 0);
        assert_eq!(
            timers.fire_due(base + Duration::from_secs(15), &mut wake),
            1
        );
        wake.drain(..).for_each(Waker::wake);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(timers.next_deadline(), Some(base + Duration::from_secs(20)));
        drop(late);
        drop(early);
        assert_eq!(timers.len(), 0);
        timers.stop();
    }

    #[test]
    fn an_entry_earlier_than_the_armed_timeout_wakes_the_parked_driver() {
        let timers = Timers::install();
        let (driver_count, driver) = counter();
        let (_, waker) = counter();
        let base = Instant::now();
        timers.set_armed(Some(base + Duration::from_secs(10)));
        assert_eq!(
            timers.poll_earlier(&mut Context::from_waker(&driver)),
            Poll::Pending
        );
        let mut later = sleep_until(base + Duration::from_secs(30));
        assert_eq!(poll(&mut later, &waker), Poll::Pending);
        assert_eq!(driver_count.0.load(Ordering::SeqCst), 0, "later: no wake");
        let mut sooner = sleep_until(base + Duration::from_secs(5));
        assert_eq!(poll(&mut sooner, &waker), Poll::Pending);
        assert_eq!(driver_count.0.load(Ordering::SeqCst), 1, "earlier: woken");
        assert_eq!(
            timers.poll_earlier(&mut Context::from_waker(&driver)),
            Poll::Ready(())
        );
        timers.set_armed(Some(base + Duration::from_secs(5)));
        assert_eq!(
            timers.poll_earlier(&mut Context::from_waker(&driver)),
            Poll::Pending
        );
        timers.stop();
    }

    #[test]
    fn a_past_deadline_is_ready_without_an_entry() {
        let timers = Timers::install();
        let (_, waker) = counter();
        let mut past = sleep_until(Instant::now() - Duration::from_millis(1));
        assert_eq!(poll(&mut past, &waker), Poll::Ready(()));
        assert_eq!(timers.len(), 0);
        timers.stop();
    }

    #[test]
    fn after_stop_a_pending_sleep_is_woken_and_becomes_a_glommio_timer() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let timers = Timers::install();
                let started = Instant::now();
                let pending = glommio::spawn_local(sleep(Duration::from_millis(30)));
                // Let it register on the shard timers.
                glommio::executor().yield_now().await;
                assert_eq!(timers.len(), 1);
                timers.stop();
                assert_eq!(timers.len(), 0);
                pending.await;
                assert!(started.elapsed() >= Duration::from_millis(30));
                // And a new sleep is a glommio timer from the start.
                let started = Instant::now();
                sleep(Duration::from_millis(5)).await;
                assert!(started.elapsed() >= Duration::from_millis(5));
            })
            .expect("an executor")
            .join()
            .expect("the test ran");
    }
}
