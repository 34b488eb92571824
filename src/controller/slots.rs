//! Work slots, handed out fairly per namespace: `--concurrency` reconciles run at once and, while
//! they are all taken, each slot that comes free goes to the waiting namespaces in turn
//! (round-robin), so one namespace's 10,000 objects cannot hold every worker.
//!
//! Hand-written: tokio's `Semaphore` serves all waiters in one FIFO, and no well-kept crate hands
//! out permits fairly per key.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// The slots of one leadership term.
pub struct FairSlots {
    state: Mutex<State>,
    /// Set (under the lock) by [`FairSlots::close`]; read without it by waiting polls.
    closed: AtomicBool,
}

/// One wait. kube-runtime polls every reconcile it holds whenever one of them wakes it, so a
/// waiting one must answer a poll without the lock: a flag and a waker of its own.
#[derive(Default)]
struct Waiter {
    granted: AtomicBool,
    waker: AtomicWaker,
    /// Given up: left in its queue, skipped when its turn comes (no search through the queue).
    cancelled: AtomicBool,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Namespaces with waiters, in the order they are served next.
    turn: VecDeque<String>,
    /// Each namespace's waiters, first come first served.
    waiting: HashMap<String, VecDeque<Arc<Waiter>>>,
    /// Waiting and not given up.
    waiters: usize,
}

impl State {
    /// A slot came free: to the next namespace's first waiter, or back to the pool.
    fn hand_over(&mut self) -> Option<Arc<Waiter>> {
        while let Some(namespace) = self.turn.pop_front() {
            let Some(queue) = self.waiting.get_mut(&namespace) else {
                continue;
            };
            let next = std::iter::from_fn(|| queue.pop_front())
                .find(|w| !w.cancelled.load(Ordering::Acquire));
            if queue.is_empty() {
                self.waiting.remove(&namespace);
            } else {
                self.turn.push_back(namespace);
            }
            if let Some(waiter) = next {
                self.waiters -= 1;
                waiter.granted.store(true, Ordering::Release);
                return Some(waiter);
            }
        }
        self.free += 1;
        None
    }
}

impl FairSlots {
    pub fn new(slots: usize) -> Self {
        Self {
            state: Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            }),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot for an object of `namespace`; `None` once the slots are closed.
    pub fn acquire<'a>(&'a self, namespace: &'a str) -> Acquire<'a> {
        Acquire {
            slots: self,
            namespace,
            waiter: None,
            done: false,
        }
    }

    /// Ends every wait, now and later, with `None` (shutdown: what has not started does not).
    /// Slots already held stay held until dropped.
    pub fn close(&self) {
        let waiters: Vec<Arc<Waiter>> = {
            let mut state = self.lock();
            self.closed.store(true, Ordering::Release);
            state.turn.clear();
            state.waiters = 0;
            state.waiting.drain().flat_map(|(_, queue)| queue).collect()
        };
        waiters.iter().for_each(|w| w.waker.wake());
    }

    /// Reconciles waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.lock().waiters
    }

    fn release(&self) {
        let next = self.lock().hand_over();
        if let Some(waiter) = next {
            waiter.waker.wake();
        }
    }
}

/// A slot, given back when dropped.
pub struct Slot<'a> {
    slots: &'a FairSlots,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// The wait for a slot: a few words, plus its [`Waiter`] (one small allocation) while it waits.
pub struct Acquire<'a> {
    slots: &'a FairSlots,
    namespace: &'a str,
    waiter: Option<Arc<Waiter>>,
    done: bool,
}

impl<'a> Future for Acquire<'a> {
    type Output = Option<Slot<'a>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let slots = this.slots;
        if let Some(waiter) = &this.waiter {
            // The common poll: not its turn yet, answered without the lock.
            waiter.waker.register(cx.waker());
            if waiter.granted.load(Ordering::Acquire) {
                this.done = true;
                return Poll::Ready(Some(Slot { slots }));
            }
            if !slots.closed.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            this.done = true;
            // Granted just before the close: the slot goes back.
            return Poll::Ready(
                waiter
                    .granted
                    .load(Ordering::Acquire)
                    .then_some(Slot { slots }),
            );
        }
        let mut state = slots.lock();
        if slots.closed.load(Ordering::Acquire) {
            this.done = true;
            return Poll::Ready(None);
        }
        // Free slots only exist while nobody waits.
        if state.free > 0 {
            state.free -= 1;
            this.done = true;
            return Poll::Ready(Some(Slot { slots }));
        }
        let waiter = Arc::new(Waiter::default());
        waiter.waker.register(cx.waker());
        state.waiters += 1;
        match state.waiting.get_mut(this.namespace) {
            Some(queue) => queue.push_back(waiter.clone()),
            None => {
                state
                    .waiting
                    .insert(this.namespace.to_string(), VecDeque::from([waiter.clone()]));
                state.turn.push_back(this.namespace.to_string());
            }
        }
        this.waiter = Some(waiter);
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    /// Given up while waiting (a shutdown, a lost Lease): skipped when its turn comes, and a slot
    /// handed to it meanwhile goes on to the next.
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take().filter(|_| !self.done) else {
            return;
        };
        let next = {
            let mut state = self.slots.lock();
            if waiter.granted.load(Ordering::Acquire) {
                state.hand_over()
            } else {
                if !self.slots.closed.load(Ordering::Acquire) {
                    state.waiters -= 1;
                }
                waiter.cancelled.store(true, Ordering::Release);
                None
            }
        };
        if let Some(next) = next {
            next.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    /// Polls once; the slot if it was ready.
    fn try_now<'a>(acquire: &mut Pin<Box<Acquire<'a>>>) -> Option<Option<Slot<'a>>> {
        acquire.as_mut().now_or_never()
    }

    #[test]
    fn free_slots_are_taken_at_once_then_waiters_queue() {
        let slots = FairSlots::new(2);
        let a = slots.acquire("a").now_or_never().flatten();
        let b = slots.acquire("a").now_or_never().flatten();
        assert!(a.is_some() && b.is_some());
        let mut c = Box::pin(slots.acquire("a"));
        assert!(try_now(&mut c).is_none());
        assert_eq!(slots.waiting(), 1);
        drop(a);
        assert!(try_now(&mut c).flatten().is_some());
        assert_eq!(slots.waiting(), 0);
    }

    /// One namespace queues ten, then two others queue one each: the slots that come free go to
    /// the namespaces in turn, not to the flood first.
    #[test]
    fn freed_slots_go_to_the_waiting_namespaces_in_turn() {
        let slots = FairSlots::new(1);
        let mut held = slots.acquire("flood").now_or_never().flatten();
        assert!(held.is_some());
        let mut queued: Vec<(&str, Pin<Box<Acquire<'_>>>)> = Vec::new();
        for _ in 0..10 {
            queued.push(("flood", Box::pin(slots.acquire("flood"))));
        }
        queued.push(("quiet", Box::pin(slots.acquire("quiet"))));
        queued.push(("other", Box::pin(slots.acquire("other"))));
        for (_, a) in queued.iter_mut() {
            assert!(try_now(a).is_none());
        }
        let mut order = Vec::new();
        while !queued.is_empty() {
            drop(held.take());
            let at = queued
                .iter_mut()
                .position(|(_, a)| {
                    try_now(a).is_some_and(|s| {
                        s.is_some_and(|s| {
                            held = Some(s);
                            true
                        })
                    })
                })
                .expect("a freed slot goes to a waiter");
            order.push(queued.remove(at).0);
        }
        assert_eq!(
            order[..6],
            ["flood", "quiet", "other", "flood", "flood", "flood"]
        );
        assert_eq!(order.iter().filter(|n| **n == "flood").count(), 10);
    }

    /// Within a namespace, first come first served.
    #[test]
    fn a_namespace_is_served_in_arrival_order() {
        let slots = FairSlots::new(1);
        let mut held = slots.acquire("a").now_or_never().flatten();
        let mut first = Box::pin(slots.acquire("a"));
        let mut second = Box::pin(slots.acquire("a"));
        assert!(try_now(&mut first).is_none() && try_now(&mut second).is_none());
        drop(held.take());
        assert!(try_now(&mut second).is_none());
        held = try_now(&mut first).flatten();
        assert!(held.is_some());
        drop(held);
        assert!(try_now(&mut second).flatten().is_some());
    }

    /// A waiter that gives up leaves the queue, and a slot handed to it goes on to the next.
    #[test]
    fn a_cancelled_wait_passes_its_slot_on() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").now_or_never().flatten();
        let mut gone = Box::pin(slots.acquire("b"));
        let mut next = Box::pin(slots.acquire("c"));
        assert!(try_now(&mut gone).is_none() && try_now(&mut next).is_none());
        drop(held); // handed to `gone`, which never takes it
        drop(gone);
        let held = try_now(&mut next).flatten();
        assert!(held.is_some());
        assert_eq!(slots.waiting(), 0);
        let mut cancelled = Box::pin(slots.acquire("d"));
        assert!(try_now(&mut cancelled).is_none());
        drop(cancelled);
        assert_eq!(slots.waiting(), 0);
        drop(held);
        assert!(slots.acquire("e").now_or_never().flatten().is_some());
    }

    #[test]
    fn closing_ends_every_wait_but_not_the_slots_held() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").now_or_never().flatten();
        let mut waiting = Box::pin(slots.acquire("b"));
        assert!(try_now(&mut waiting).is_none());
        slots.close();
        assert!(matches!(try_now(&mut waiting), Some(None)));
        assert!(matches!(slots.acquire("c").now_or_never(), Some(None)));
        assert!(held.is_some());
        drop(held);
        assert_eq!(slots.waiting(), 0);
    }
}
