//! The fiber's own contract, without the pipeline: suspension and
//! resumption, the running-fiber pointer (also when fibers nest), the
//! guard-range bookkeeping, cancellation (unwinding and forced), and the
//! fiber-owned waker.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use corosensei::stack::DefaultStack;

use super::current::{place, suspend, with_hooks, with_waker, Hooks, Place};
use super::fiber::{Cancel, Fiber, Step};
use super::overflow;
use super::unwind::{is_forced_unwind, Cancelled};
use super::warm;

const SIZE: usize = 64 * 1024;

fn stack() -> DefaultStack {
    DefaultStack::new(SIZE).expect("map a test stack")
}

/// Hooks that only carry a tag, and record what they were told.
struct Tag {
    n: u32,
    log: Rc<RefCell<Vec<String>>>,
}

impl Hooks for Tag {
    fn suspending(&self) {
        self.log.borrow_mut().push(format!("{} suspending", self.n));
    }
    fn resumed(&self) {
        self.log.borrow_mut().push(format!("{} resumed", self.n));
    }
    fn exiting(&self) {
        let here = place();
        self.log
            .borrow_mut()
            .push(format!("{} exiting, place {here:?}", self.n));
    }
}

fn tag(n: u32, log: &Rc<RefCell<Vec<String>>>) -> Tag {
    Tag {
        n,
        log: log.clone(),
    }
}

fn tag_here() -> Option<u32> {
    with_hooks(|t: &Tag| t.n)
}

type F = Fiber<u32, u32, u32>;

#[test]
fn values_cross_each_switch_and_hooks_see_each() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut f = F::new(stack(), tag(1, &log), |_| {
        let r = suspend::<u32, u32>(5).expect("on a fiber");
        r + 1
    });
    assert!(matches!(f.resume(Waker::noop(), 0), Step::Suspended(5)));
    assert!(matches!(f.resume(Waker::noop(), 10), Step::Done(11)));
    assert!(f.is_done());
    assert_eq!(
        *log.borrow(),
        ["1 suspending", "1 resumed", "1 exiting, place Off"]
    );
    assert!(f.into_stack().is_some());
}

#[test]
fn the_pointer_is_set_only_while_fiber_code_runs() {
    assert_eq!(place(), Place::Off);
    let seen = Rc::new(Cell::new(None));
    let s2 = seen.clone();
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut f = F::new(stack(), tag(3, &log), move |_| {
        s2.set(Some((place(), tag_here())));
        let _ = suspend::<u32, u32>(0);
        s2.set(Some((place(), tag_here())));
        0
    });
    f.resume(Waker::noop(), 0);
    assert_eq!(seen.get(), Some((Place::Fiber, Some(3))));
    assert_eq!(place(), Place::Off, "cleared while suspended");
    seen.set(None);
    f.resume(Waker::noop(), 0);
    assert_eq!(seen.get(), Some((Place::Fiber, Some(3))));
    assert_eq!(place(), Place::Off, "cleared after return");
}

#[test]
fn nested_fibers_restore_the_outer_pointer_and_guard_range() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let outside_guard = overflow::current_running();
    let mut outer = F::new(stack(), tag(1, &log), move |_| {
        let my_guard = overflow::current_running();
        let mut inner = F::new(stack(), tag(2, &l2), |_| {
            assert_eq!(tag_here(), Some(2));
            let _ = suspend::<u32, u32>(0);
            assert_eq!(tag_here(), Some(2));
            7
        });
        inner.resume(Waker::noop(), 0);
        // Back on the outer fiber after the inner one suspended.
        assert_eq!(tag_here(), Some(1));
        assert_eq!(overflow::current_running(), my_guard);
        let r = match inner.resume(Waker::noop(), 0) {
            Step::Done(r) => r,
            Step::Suspended(_) => unreachable!(),
        };
        assert_eq!(tag_here(), Some(1));
        assert_eq!(overflow::current_running(), my_guard);
        r
    });
    assert!(matches!(outer.resume(Waker::noop(), 0), Step::Done(7)));
    assert_eq!(overflow::current_running(), outside_guard);
}

struct OnDrop<G: FnMut()>(G);

impl<G: FnMut()> Drop for OnDrop<G> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn cancel_unwinds_every_destructor_inside_the_fiber() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let dropped = Rc::new(Cell::new(None));
    let d2 = dropped.clone();
    let mut f = F::new(stack(), tag(4, &log), move |_| {
        let _guard = OnDrop(move || d2.set(Some((tag_here(), std::thread::panicking()))));
        let _ = suspend::<u32, u32>(0);
        unreachable!("cancelled")
    });
    f.resume(Waker::noop(), 0);
    assert!(matches!(f.cancel(), Cancel::Unwound));
    assert_eq!(dropped.get(), Some((Some(4), true)));
    assert!(f.is_done());
    assert_eq!(place(), Place::Off);
    assert!(
        f.into_stack().is_some(),
        "an unwound fiber's stack is reusable"
    );
}

#[test]
fn a_fiber_that_keeps_catching_is_forced_under_its_own_pointer() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s2 = seen.clone();
    let mut f = F::new(stack(), tag(5, &log), move |_| {
        let s3 = s2.clone();
        let _guard = OnDrop(move || s3.borrow_mut().push(format!("drop in {:?}", tag_here())));
        loop {
            match panic::catch_unwind(AssertUnwindSafe(|| suspend::<u32, u32>(0))) {
                Err(p) if p.is::<Cancelled>() => continue,
                Err(p) => {
                    s2.borrow_mut()
                        .push(format!("forced={}", is_forced_unwind(&*p)));
                    panic::resume_unwind(p);
                }
                Ok(_) => {}
            }
        }
    });
    f.resume(Waker::noop(), 0);
    // Called from "another fiber's" context: the pointer must still be the
    // cancelled fiber's while its destructors run.
    assert!(matches!(f.cancel(), Cancel::Forced));
    assert_eq!(*seen.borrow(), ["forced=true", "drop in Some(5)"]);
    assert_eq!(place(), Place::Off);
    assert!(f.is_done());
}

#[test]
fn suspend_refuses_off_fiber_and_while_unwinding() {
    assert!(matches!(suspend::<u32, u32>(1), Err(Place::Off)));
    let refused = Rc::new(Cell::new(None));
    let r2 = refused.clone();
    let mut f = F::new(stack(), (), move |_| {
        let r3 = r2.clone();
        let out = panic::catch_unwind(AssertUnwindSafe(move || {
            let _guard = OnDrop(move || r3.set(Some(suspend::<u32, u32>(2).err())));
            panic::resume_unwind(Box::new("unwinding"));
        }));
        assert!(out.is_err());
        1
    });
    assert!(matches!(f.resume(Waker::noop(), 0), Step::Done(1)));
    assert_eq!(refused.get(), Some(Some(Place::Unwinding)));
}

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_fiber_waker_is_stable_and_wakes_the_latest_driver_waker() {
    let first = Arc::new(Count(AtomicUsize::new(0)));
    let second = Arc::new(Count(AtomicUsize::new(0)));
    let kept: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
    let k2 = kept.clone();
    let mut f = F::new(stack(), (), move |_| {
        let a = with_waker(|w| w.clone()).expect("on a fiber");
        *k2.borrow_mut() = Some(a.clone());
        let _ = suspend::<u32, u32>(0);
        let b = with_waker(|w| w.clone()).expect("on a fiber");
        assert!(a.will_wake(&b), "one waker for the fiber's whole life");
        let _ = suspend::<u32, u32>(0);
        0
    });
    f.resume(&Waker::from(first.clone()), 0);
    f.resume(&Waker::from(second.clone()), 0);
    kept.borrow().as_ref().unwrap().wake_by_ref();
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 1);
    f.resume(Waker::noop(), 0);
}

/// A driver waker that tells the two ways it can be woken apart.
#[derive(Default)]
struct Ways {
    by_ref: AtomicUsize,
    by_value: AtomicUsize,
}

impl Wake for Ways {
    fn wake(self: Arc<Self>) {
        self.by_value.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.by_ref.fetch_add(1, Ordering::SeqCst);
    }
}

fn ways(w: &Ways) -> (usize, usize) {
    (
        w.by_ref.load(Ordering::SeqCst),
        w.by_value.load(Ordering::SeqCst),
    )
}

#[test]
fn a_wake_on_the_fibers_thread_is_in_place_and_from_another_thread_forwarded() {
    let first = Arc::new(Ways::default());
    let second = Arc::new(Ways::default());
    let kept: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
    let k2 = kept.clone();
    let mut f = F::new(stack(), (), move |_| {
        let own = with_waker(|w| w.clone()).expect("on a fiber");
        *k2.borrow_mut() = Some(own.clone());
        let _ = suspend::<u32, u32>(0);
        // Resumed under `second`: the fiber's own wakes reach it by
        // reference (no lock, no clone of it), also from a nested fiber.
        own.wake_by_ref();
        let by_value = own.clone();
        by_value.wake();
        let mut inner = F::new(stack(), (), move |_| {
            own.wake_by_ref();
            0
        });
        assert!(matches!(inner.resume(Waker::noop(), 0), Step::Done(0)));
        let _ = suspend::<u32, u32>(0);
        0
    });
    f.resume(&Waker::from(first.clone()), 0);
    f.resume(&Waker::from(second.clone()), 0);
    assert_eq!(ways(&first), (0, 0));
    assert_eq!(ways(&second), (3, 0), "all three in place");
    let own = kept.borrow().clone().expect("kept");
    // Off the fiber, on its thread (a deferred wake, a timer): in place.
    own.wake_by_ref();
    assert_eq!(ways(&second), (4, 0));
    // From another thread: a clone of the latest target, woken by value.
    std::thread::scope(|s| {
        s.spawn(|| own.wake_by_ref());
    });
    assert_eq!(ways(&second), (4, 1), "forwarded from another thread");
    assert!(matches!(f.resume(Waker::noop(), 0), Step::Done(0)));
}

thread_local! {
    static POLLED_ON_WAKE: RefCell<Option<F>> = const { RefCell::new(None) };
}

/// A driver's waker that resumes the fiber from its own wake, under another
/// waker (an executor that polls a task from its waker).
struct PollsOnWake;

impl Wake for PollsOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        POLLED_ON_WAKE.with(|f| {
            if let Some(f) = f.borrow_mut().as_mut() {
                let other = Waker::from(Arc::new(Ways::default()));
                assert!(matches!(f.resume(&other, 0), Step::Done(0)));
            }
        });
    }
}

#[test]
fn a_re_point_from_inside_the_in_place_wake_is_refused() {
    // Re-pointing would replace the waker the in-place wake is reading.
    let said = Rc::new(RefCell::new(String::new()));
    let kept: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
    let (s2, k2) = (said.clone(), kept.clone());
    let mut f = F::new(stack(), (), move |_| {
        *k2.borrow_mut() = Some(with_waker(|w| w.clone()).expect("on a fiber"));
        let out = panic::catch_unwind(AssertUnwindSafe(|| suspend::<u32, u32>(0)));
        *s2.borrow_mut() = match out {
            Ok(_) => "resumed".to_string(),
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        0
    });
    let driver = Waker::from(Arc::new(PollsOnWake));
    assert!(matches!(f.resume(&driver, 0), Step::Suspended(0)));
    POLLED_ON_WAKE.with(|p| *p.borrow_mut() = Some(f));
    let own = kept.borrow().clone().expect("kept");
    own.wake_by_ref();
    assert!(
        said.borrow()
            .contains("resumed from inside its driver's wake, under another waker"),
        "{}",
        said.borrow()
    );
    let f = POLLED_ON_WAKE
        .with(|p| p.borrow_mut().take())
        .expect("fiber");
    assert!(f.is_done());
}

#[test]
fn cancelled_is_not_a_forced_unwind() {
    assert!(!is_forced_unwind(&Cancelled));
    assert!(!is_forced_unwind(&"a panic"));
}

/// Whether a fiber's recorded suspension point lies inside its own stack.
fn suspended_inside(f: &F) -> bool {
    let (limit, at, base) = f.suspension_bounds();
    limit < at && at < base
}

#[test]
fn each_fiber_records_a_suspension_point_in_its_own_stack_also_when_nested() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let inner_ok = Rc::new(Cell::new(None));
    let i2 = inner_ok.clone();
    let mut outer = F::new(stack(), tag(1, &log), move |_| {
        let mut inner = F::new(stack(), tag(2, &l2), |_| {
            let _ = suspend::<u32, u32>(0);
            2
        });
        let (_, before, _) = inner.suspension_bounds();
        inner.resume(Waker::noop(), 0);
        i2.set(Some((before, suspended_inside(&inner))));
        // The outer fiber suspends while the inner one is suspended: the
        // driver must record the outer's point, not the inner's.
        let _ = suspend::<u32, u32>(1);
        inner.resume(Waker::noop(), 0);
        1
    });
    assert!(matches!(outer.resume(Waker::noop(), 0), Step::Suspended(1)));
    assert_eq!(
        inner_ok.get(),
        Some((0, true)),
        "nothing recorded before the first run; then a point in the inner stack"
    );
    assert!(suspended_inside(&outer), "the outer fiber's own point");
    assert!(matches!(outer.resume(Waker::noop(), 0), Step::Done(1)));
}

#[test]
fn live_fibers_are_counted_on_their_thread_until_each_goes() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let before = warm::live();
    let suspending = |n| {
        F::new(stack(), tag(n, &log), |_| {
            let _ = suspend::<u32, u32>(0);
            0
        })
    };
    let (mut finished, mut cancelled, unstarted) = (suspending(1), suspending(2), suspending(3));
    assert_eq!(warm::live(), before + 3);
    let other_thread = std::thread::spawn(warm::live).join().expect("thread");
    assert_eq!(other_thread, 0, "counted on their own thread only");

    finished.resume(Waker::noop(), 0);
    finished.resume(Waker::noop(), 0);
    assert!(finished.into_stack().is_some());
    assert_eq!(
        warm::live(),
        before + 2,
        "a finished fiber whose stack was taken back"
    );

    cancelled.resume(Waker::noop(), 0);
    drop(cancelled);
    assert_eq!(
        warm::live(),
        before + 1,
        "a suspended fiber dropped (cancelled)"
    );

    drop(unstarted);
    assert_eq!(warm::live(), before, "a fiber that never ran");
}

#[test]
fn a_resume_is_warmed_only_after_a_suspension_and_above_the_threshold() {
    let mut f = F::new(stack(), (), |_| {
        let _ = suspend::<u32, u32>(0);
        let _ = suspend::<u32, u32>(0);
        0
    });
    // Enough other fibers alive on this thread for stacks to be cold.
    let crowd: Vec<F> = (0..warm::COLD_ABOVE)
        .map(|_| F::new(stack(), (), |_| 0))
        .collect();
    let before = warm::warmed();
    f.resume(Waker::noop(), 0);
    assert_eq!(warm::warmed(), before, "not before the first run");
    f.resume(Waker::noop(), 0);
    assert_eq!(warm::warmed(), before + 1, "after a suspension, in a crowd");
    drop(crowd);
    assert!(matches!(f.resume(Waker::noop(), 0), Step::Done(0)));
    assert_eq!(
        warm::warmed(),
        before + 1,
        "not with one fiber on the thread"
    );
}
