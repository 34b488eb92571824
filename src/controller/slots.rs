//! Work slots, handed out fairly per namespace: `--concurrency` reconciles run at once and, while
//! they are all taken, each slot that comes free goes to the waiting namespaces in turn
//! (round-robin), so one namespace's 10,000 objects cannot hold every worker.
//!
//! Two kinds of wait share the queues. A VncPassword waits as a [`Ticket`] (its object's
//! reference, about 0.2 KB), left by a watch event that finds no slot free ([`trigger`]) or by a
//! reconcile that finds none ([`admit`]: requeues and wakes): kube-runtime would otherwise hold
//! every due object in its scheduler (about 1 KB each, in tables that never shrink) and its
//! reconcile's future in its runner (about 1.9 KB). When the ticket's turn comes, a slot is
//! reserved for it and the object is woken (through the index's wake queue); its next reconcile
//! takes the reserved slot. A watch event that finds a slot free reserves it the same way. A
//! deleted object's ticket is cancelled (from the watch's Delete event); a reservation not taken
//! within [`RESERVED_FOR`] (the object went in a watch gap) goes to the next in turn, and the
//! object, should it come later, queues again. A set's pass waits as a future ([`acquire`]):
//! sets are few.
//!
//! Hand-written: tokio's `Semaphore` serves all waiters in one FIFO, and no well-kept crate hands
//! out permits fairly per key.
//!
//! [`acquire`]: FairSlots::acquire
//! [`admit`]: FairSlots::admit
//! [`trigger`]: FairSlots::trigger

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use kube::runtime::reflector::ObjectRef;

use crate::controller::cache::CachedVncPassword;

/// The object a queued reconcile is for.
pub type Ticket = ObjectRef<CachedVncPassword>;

/// `obj`'s ticket: its namespace and name only (the store's key).
pub fn ticket(obj: &CachedVncPassword) -> Ticket {
    ObjectRef::new(obj.metadata.name.as_deref().unwrap_or_default())
        .within(obj.metadata.namespace.as_deref().unwrap_or_default())
}

/// How long a slot reserved for a ticket waits for its object's reconcile.
pub const RESERVED_FOR: Duration = Duration::from_secs(5);

/// How many reconciles kube-runtime's runner holds at once for `slots` work slots: those running,
/// and an eighth more (at least 16) passing through to leave a ticket, a moment each (the others
/// due meanwhile wait in kube's scheduler, where they already are). Bounded, because the runner
/// keeps its reconciles in a hash table that never shrinks (about 2 KB a bucket, 3 MB at 512
/// reconciles) and polls every one of them whenever one wakes.
pub fn kube_window(slots: usize) -> u16 {
    let slots = slots.max(1);
    u16::try_from(slots.saturating_add((slots / 8).max(16))).unwrap_or(u16::MAX)
}

/// The slots of one leadership term.
pub struct FairSlots {
    state: Mutex<State>,
    /// Set (under the lock) by [`FairSlots::close`]; read without it by waiting polls.
    closed: AtomicBool,
    /// Asks for a reconcile of a ticket's object (its slot is reserved).
    wake: Box<dyn Fn(Ticket) + Send + Sync>,
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

enum Queued {
    Waiter(Arc<Waiter>),
    /// Shared with `State::ticketed`: one copy of the names per queued object.
    Ticket(Arc<Ticket>),
}

/// Whom a freed slot went to.
enum Next {
    Waiter(Arc<Waiter>),
    Ticket(Ticket),
}

#[derive(Default)]
struct State {
    free: usize,
    /// Namespaces with waiters, in the order they are served next.
    turn: VecDeque<String>,
    /// Each namespace's waiters, first come first served.
    waiting: HashMap<String, VecDeque<Queued>>,
    /// Waiting and not given up (tickets included).
    waiters: usize,
    /// Tickets in the queues (an object queues once).
    ticketed: HashSet<Arc<Ticket>>,
    /// Slots reserved for woken tickets, until when.
    reserved: HashMap<Ticket, Instant>,
}

impl State {
    /// A slot came free: to the next namespace's first waiter, or back to the pool.
    fn hand_over(&mut self, now: Instant) -> Option<Next> {
        while let Some(namespace) = self.turn.pop_front() {
            let ticketed = &mut self.ticketed;
            let Some(queue) = self.waiting.get_mut(&namespace) else {
                continue;
            };
            // Cancelled waits and tickets are skipped here rather than searched for in the queue.
            let next = std::iter::from_fn(|| queue.pop_front()).find(|q| match q {
                Queued::Waiter(w) => !w.cancelled.load(Ordering::Acquire),
                Queued::Ticket(t) => ticketed.remove(&**t),
            });
            if queue.is_empty() {
                self.waiting.remove(&namespace);
            } else {
                self.turn.push_back(namespace);
            }
            match next {
                Some(Queued::Waiter(waiter)) => {
                    self.waiters -= 1;
                    waiter.granted.store(true, Ordering::Release);
                    return Some(Next::Waiter(waiter));
                }
                Some(Queued::Ticket(ticket)) => {
                    let ticket = Arc::unwrap_or_clone(ticket);
                    self.waiters -= 1;
                    self.reserved.insert(ticket.clone(), now + RESERVED_FOR);
                    return Some(Next::Ticket(ticket));
                }
                None => {}
            }
        }
        self.free += 1;
        None
    }

    /// Reservations not taken in time: their slots go on.
    fn expire(&mut self, now: Instant) -> Vec<Next> {
        let expired: Vec<Ticket> = self
            .reserved
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(t, _)| t.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|t| {
                self.reserved.remove(&t);
                self.hand_over(now)
            })
            .collect()
    }

    /// `ticket` in `namespace`'s queue, unless it is queued already (an object queues once).
    fn queue_ticket(&mut self, namespace: &str, ticket: &Ticket) {
        if !self.ticketed.contains(ticket) {
            let ticket = Arc::new(ticket.clone());
            self.ticketed.insert(ticket.clone());
            self.enqueue(namespace, Queued::Ticket(ticket));
        }
    }

    fn enqueue(&mut self, namespace: &str, queued: Queued) {
        self.waiters += 1;
        match self.waiting.get_mut(namespace) {
            Some(queue) => queue.push_back(queued),
            None => {
                self.waiting
                    .insert(namespace.to_string(), VecDeque::from([queued]));
                self.turn.push_back(namespace.to_string());
            }
        }
    }
}

/// What [`FairSlots::admit`] answers a reconcile.
pub enum Admission<'a> {
    /// Run now.
    Run(Slot<'a>),
    /// Queued (or already queued): the object is woken when its turn comes.
    Queued,
    /// Shutting down: nothing more starts.
    Closed,
}

impl FairSlots {
    /// `slots` work slots; a ticket's turn asks `wake` for its object's reconcile.
    pub fn new(slots: usize, wake: impl Fn(Ticket) + Send + Sync + 'static) -> Self {
        Self {
            state: Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            }),
            closed: AtomicBool::new(false),
            wake: Box::new(wake),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `ticket`'s reconcile (in `namespace`'s share) now, or its place in the queue.
    pub fn admit<'a>(&'a self, namespace: &str, ticket: &Ticket) -> Admission<'a> {
        let now = Instant::now();
        let (admission, woken) = {
            let mut state = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Admission::Closed;
            }
            let woken = state.expire(now);
            let admission = if state.reserved.remove(ticket).is_some() {
                Admission::Run(Slot { slots: self })
            } else if state.free > 0 {
                // Free slots only exist while nobody waits.
                state.free -= 1;
                Admission::Run(Slot { slots: self })
            } else {
                state.queue_ticket(namespace, ticket);
                Admission::Queued
            };
            (admission, woken)
        };
        self.notify(woken);
        admission
    }

    /// Whether a trigger of `ticket`'s object (a watch event, in `namespace`'s share) goes on to
    /// kube-runtime's queue now. Yes with a slot reserved for its reconcile: one already is, or
    /// one was free. Otherwise its ticket takes its place in the queue (once) and the trigger
    /// stops here; the object is woken when its turn comes, as from [`FairSlots::admit`]. So
    /// kube-runtime's scheduler holds about as many objects as can run, not a whole wave or a
    /// restart's list (its tables never shrink). While closed, everything goes on.
    pub fn trigger(&self, namespace: &str, ticket: &Ticket) -> bool {
        let now = Instant::now();
        let (pass, woken) = {
            let mut state = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return true;
            }
            let woken = state.expire(now);
            let pass = if state.reserved.contains_key(ticket) {
                true
            } else if state.ticketed.contains(ticket) {
                false
            } else if state.free > 0 {
                // Free slots only exist while nobody waits.
                state.free -= 1;
                state.reserved.insert(ticket.clone(), now + RESERVED_FOR);
                true
            } else {
                state.queue_ticket(namespace, ticket);
                false
            };
            (pass, woken)
        };
        self.notify(woken);
        pass
    }

    /// Waits for a slot for work of `namespace`; `None` once the slots are closed.
    pub fn acquire<'a>(&'a self, namespace: &'a str) -> Acquire<'a> {
        Acquire {
            slots: self,
            namespace,
            waiter: None,
            done: false,
        }
    }

    /// The object is gone (deleted): its ticket leaves the queue, and a slot reserved for it goes
    /// on at once.
    pub fn cancel(&self, ticket: &Ticket) {
        let woken = {
            let mut state = self.lock();
            if state.ticketed.remove(ticket) {
                state.waiters -= 1;
            }
            if state.reserved.remove(ticket).is_some() {
                state.hand_over(Instant::now())
            } else {
                None
            }
        };
        self.notify(woken.into_iter().collect());
    }

    /// Hands on the slots of reservations not taken in time (also done by every admission and
    /// release; this is for when nothing else happens).
    pub fn expire(&self) {
        self.expire_at(Instant::now());
    }

    fn expire_at(&self, now: Instant) {
        let woken = self.lock().expire(now);
        self.notify(woken);
    }

    /// Ends every wait, now and later, with `None` (shutdown: what has not started does not).
    /// Slots already held stay held until dropped.
    pub fn close(&self) {
        let waiters: Vec<Arc<Waiter>> = {
            let mut state = self.lock();
            self.closed.store(true, Ordering::Release);
            state.turn.clear();
            state.waiters = 0;
            state.ticketed.clear();
            state.reserved.clear();
            state
                .waiting
                .drain()
                .flat_map(|(_, queue)| queue)
                .filter_map(|q| match q {
                    Queued::Waiter(w) => Some(w),
                    Queued::Ticket(_) => None,
                })
                .collect()
        };
        waiters.iter().for_each(|w| w.waker.wake());
    }

    /// Reconciles waiting for a slot (tickets and reserved slots not yet taken included).
    pub fn waiting(&self) -> usize {
        let state = self.lock();
        state.waiters + state.reserved.len()
    }

    fn release(&self) {
        let now = Instant::now();
        let woken = {
            let mut state = self.lock();
            let mut woken = state.expire(now);
            woken.extend(state.hand_over(now));
            woken
        };
        self.notify(woken);
    }

    fn notify(&self, woken: Vec<Next>) {
        for next in woken {
            match next {
                Next::Waiter(waiter) => waiter.waker.wake(),
                Next::Ticket(ticket) => (self.wake)(ticket),
            }
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
        state.enqueue(this.namespace, Queued::Waiter(waiter.clone()));
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
                state.hand_over(Instant::now())
            } else {
                if !self.slots.closed.load(Ordering::Acquire) {
                    state.waiters -= 1;
                }
                waiter.cancelled.store(true, Ordering::Release);
                None
            }
        };
        self.slots.notify(next.into_iter().collect());
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
    fn kubes_window_is_the_slots_and_an_eighth_more() {
        assert_eq!(kube_window(256), 288);
        assert_eq!(kube_window(1), 17);
        assert_eq!(kube_window(0), 17);
        assert_eq!(kube_window(usize::from(u16::MAX)), u16::MAX);
    }

    #[test]
    fn free_slots_are_taken_at_once_then_waiters_queue() {
        let slots = FairSlots::new(2, |_| {});
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
        let slots = FairSlots::new(1, |_| {});
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
        let slots = FairSlots::new(1, |_| {});
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
        let slots = FairSlots::new(1, |_| {});
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
        let slots = FairSlots::new(1, |_| {});
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

    fn ticket(namespace: &str, name: &str) -> Ticket {
        ObjectRef::new(name).within(namespace)
    }

    /// Slots whose tickets' wakes are recorded.
    fn recording(n: usize) -> (FairSlots, Arc<Mutex<Vec<String>>>) {
        let woken = Arc::new(Mutex::new(Vec::new()));
        let log = woken.clone();
        let slots = FairSlots::new(n, move |t: Ticket| log.lock().unwrap().push(t.name));
        (slots, woken)
    }

    fn run<'a>(slots: &'a FairSlots, namespace: &str, name: &str) -> Option<Slot<'a>> {
        match slots.admit(namespace, &ticket(namespace, name)) {
            Admission::Run(slot) => Some(slot),
            Admission::Queued | Admission::Closed => None,
        }
    }

    /// With no slot free a reconcile queues a ticket and ends; a freed slot is reserved for the
    /// first ticket, whose object is woken and takes it; nobody else can.
    #[test]
    fn a_ticket_is_woken_and_its_reserved_slot_is_its_own() {
        let (slots, woken) = recording(1);
        let held = run(&slots, "a", "first");
        assert!(held.is_some());
        assert!(run(&slots, "a", "second").is_none());
        assert!(run(&slots, "a", "second").is_none(), "queued once");
        assert_eq!(slots.waiting(), 1);
        assert!(woken.lock().unwrap().is_empty());
        drop(held);
        assert_eq!(*woken.lock().unwrap(), ["second"]);
        assert!(run(&slots, "b", "other").is_none(), "the slot is reserved");
        let second = run(&slots, "a", "second");
        assert!(second.is_some());
        drop(second);
        // The slot went on to the other ticket.
        assert_eq!(*woken.lock().unwrap(), ["second", "other"]);
        assert!(run(&slots, "b", "other").is_some());
    }

    /// Tickets are served per namespace in turn like waiting futures, and beside them.
    #[test]
    fn tickets_and_waits_take_turns_per_namespace() {
        let (slots, woken) = recording(1);
        let mut held = run(&slots, "flood", "x");
        for i in 0..5 {
            assert!(run(&slots, "flood", &format!("f{i}")).is_none());
        }
        assert!(run(&slots, "quiet", "q").is_none());
        let mut set_pass = Some(Box::pin(slots.acquire("sets")));
        assert!(try_now(set_pass.as_mut().unwrap()).is_none());
        let mut order = Vec::new();
        for _ in 0..7 {
            drop(held.take());
            if let Some(slot) = set_pass.as_mut().and_then(|p| try_now(p).flatten()) {
                order.push("sets".to_string());
                held = Some(slot);
                set_pass = None;
                continue;
            }
            let name = woken
                .lock()
                .unwrap()
                .last()
                .cloned()
                .expect("a ticket woken");
            let namespace = if name == "q" { "quiet" } else { "flood" };
            held = run(&slots, namespace, &name);
            assert!(held.is_some());
            order.push(name);
        }
        assert_eq!(order, ["f0", "q", "sets", "f1", "f2", "f3", "f4"]);
        assert_eq!(slots.waiting(), 0);
    }

    /// A reservation nobody takes (the object was deleted) passes its slot on after
    /// `RESERVED_FOR`; the object, should it come later, queues again.
    #[test]
    fn an_untaken_reservation_passes_on() {
        let (slots, woken) = recording(1);
        let held = run(&slots, "a", "busy");
        assert!(run(&slots, "a", "gone").is_none());
        assert!(run(&slots, "b", "next").is_none());
        drop(held);
        assert_eq!(*woken.lock().unwrap(), ["gone"]);
        slots.expire_at(Instant::now() + RESERVED_FOR / 2);
        assert_eq!(woken.lock().unwrap().len(), 1);
        slots.expire_at(Instant::now() + RESERVED_FOR);
        assert_eq!(*woken.lock().unwrap(), ["gone", "next"]);
        assert!(run(&slots, "a", "gone").is_none(), "queued again");
        assert!(run(&slots, "b", "next").is_some());
    }

    /// A deleted object's ticket is skipped when its turn comes; a slot already reserved for it
    /// goes on at once.
    #[test]
    fn a_cancelled_ticket_is_skipped_and_its_reservation_passes_on() {
        let (slots, woken) = recording(1);
        let held = run(&slots, "a", "busy");
        assert!(run(&slots, "a", "deleted").is_none());
        assert!(run(&slots, "b", "reserved").is_none());
        assert!(run(&slots, "c", "last").is_none());
        slots.cancel(&ticket("a", "deleted"));
        assert_eq!(slots.waiting(), 2);
        drop(held);
        assert_eq!(*woken.lock().unwrap(), ["reserved"]);
        slots.cancel(&ticket("b", "reserved"));
        assert_eq!(*woken.lock().unwrap(), ["reserved", "last"]);
        assert!(run(&slots, "c", "last").is_some());
        assert_eq!(slots.waiting(), 0);
    }

    #[test]
    fn closing_drops_the_tickets() {
        let (slots, woken) = recording(1);
        let held = run(&slots, "a", "x");
        assert!(run(&slots, "a", "y").is_none());
        slots.close();
        assert!(matches!(
            slots.admit("a", &ticket("a", "y")),
            Admission::Closed
        ));
        drop(held);
        assert!(woken.lock().unwrap().is_empty());
        assert_eq!(slots.waiting(), 0);
    }

    /// A trigger passes with a slot reserved while one is free; once none is, it leaves a ticket
    /// and stops, and the ticket's turn reserves a slot and wakes the object.
    #[test]
    fn triggers_reserve_free_slots_then_leave_tickets() {
        let (slots, woken) = recording(1);
        assert!(slots.trigger("ns", &ticket("ns", "a")));
        // Its second trigger passes too, on the same reservation.
        assert!(slots.trigger("ns", &ticket("ns", "a")));
        assert!(!slots.trigger("ns", &ticket("ns", "b")));
        assert!(!slots.trigger("ns", &ticket("ns", "b")), "queued once");
        assert_eq!(slots.waiting(), 2, "a's reservation and b's ticket");
        let a = match slots.admit("ns", &ticket("ns", "a")) {
            Admission::Run(slot) => slot,
            _ => panic!("a's reconcile takes its reserved slot"),
        };
        assert!(woken.lock().unwrap().is_empty());
        drop(a);
        assert_eq!(*woken.lock().unwrap(), ["b"]);
        assert!(
            slots.trigger("ns", &ticket("ns", "b")),
            "b's slot is reserved"
        );
        assert!(matches!(
            slots.admit("ns", &ticket("ns", "b")),
            Admission::Run(_)
        ));
    }

    /// A reservation made by a trigger whose reconcile never comes goes on after `RESERVED_FOR`.
    #[test]
    fn an_untaken_trigger_reservation_goes_on() {
        let (slots, woken) = recording(1);
        assert!(slots.trigger("ns", &ticket("ns", "gone")));
        assert!(!slots.trigger("ns", &ticket("ns", "next")));
        slots.expire_at(Instant::now() + RESERVED_FOR);
        assert_eq!(*woken.lock().unwrap(), ["next"]);
    }

    #[test]
    fn triggers_pass_once_closed() {
        let slots = FairSlots::new(1, |_| {});
        assert!(slots.trigger("ns", &ticket("ns", "a")));
        slots.close();
        assert!(slots.trigger("ns", &ticket("ns", "b")));
    }
}
