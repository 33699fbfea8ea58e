//! The boxed future type of the middleware traits, and a boxed future that
//! borrows from an `Arc` it owns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A boxed, not necessarily `Send`, future (what async middleware and views
/// return when written as trait impls).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Boxes the future `$make` evaluates to, building it in its heap
/// allocation: `box_in_place!(Fut, f(req))` is `Box::pin(f(req))` without
/// the copy (`Fut` is the future's type).
///
/// `Box::pin(f(req))` builds the future on the stack and then copies it,
/// whole, into the allocation: for a view's future, which holds the
/// 256-byte request and room for everything it awaits, several hundred
/// bytes per request (648 in the comparison harness). With the allocation
/// made first, the compiler writes the future straight into it
/// (BENCHMARKS.md, "Seventh round (issue 13)"); if `$make` panics, the
/// empty allocation is freed. A macro, not a function taking a closure:
/// the closure's capture of the request cost the copy back.
macro_rules! box_in_place {
    ($ty:ty, $make:expr) => {{
        let slot: ::std::boxed::Box<::std::mem::MaybeUninit<$ty>> = ::std::boxed::Box::new_uninit();
        let fut: ::std::boxed::Box<$ty> = ::std::boxed::Box::write(slot, $make);
        ::std::boxed::Box::into_pin(fut)
    }};
}
pub(crate) use box_in_place;

/// A boxed future that borrows from `T`, held together with the `Arc<T>`
/// it borrows from: an async layer's future borrows its middleware (the
/// traits take `&self`), which lives in the pipeline's shared chain.
///
/// It replaces an `async move { owner.call(..).await }` block, which keeps
/// the owner and the call's arguments in its own heap state beside the
/// call's boxed future (a 256-byte request and a 152-byte block per async
/// layer; BENCHMARKS.md, "Fourth round (issue 13)").
///
/// Sound because:
/// - `T` is behind an `Arc`, so it neither moves nor dies while `owner`
///   is held, and an `Arc` only hands out shared references;
/// - the future is dropped before `owner` (field order, which Rust keeps
///   even when a destructor panics);
/// - the future is private and only polled in place: its `'static` never
///   reaches code that could keep it past `owner`.
pub(crate) struct ArcBorrowing<T: ?Sized + 'static, O> {
    /// Declared first: dropped before `owner`, whose data it borrows.
    fut: LocalBoxFuture<'static, O>,
    /// What `fut` borrows from.
    owner: Arc<T>,
}

impl<T: ?Sized + 'static, O> ArcBorrowing<T, O> {
    /// Calls `make` with a borrow of `owner` and keeps the future it returns
    /// beside `owner`. `make` must work for every lifetime of the borrow and
    /// captures nothing borrowed (`'static`), so the future can borrow from
    /// `owner` and from nothing else.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn new(
        owner: Arc<T>,
        make: impl for<'a> FnOnce(&'a T) -> LocalBoxFuture<'a, O> + 'static,
    ) -> Self {
        let fut: LocalBoxFuture<'_, O> = make(&owner);
        // SAFETY: only the lifetime changes (same type and layout). By
        // `make`'s signature the future borrows only from `*owner`, which
        // stays put and alive while `owner` is held (it is an `Arc`'s
        // pointee, never mutably reachable while this clone exists), and
        // `fut` is dropped before `owner` (field order). The `'static` is
        // never exposed: `fut` is private and only polled in place.
        let fut: LocalBoxFuture<'static, O> = unsafe {
            std::mem::transmute::<LocalBoxFuture<'_, O>, LocalBoxFuture<'static, O>>(fut)
        };
        ArcBorrowing { fut, owner }
    }

    /// The owner the future borrows from.
    pub(crate) fn owner(&self) -> &Arc<T> {
        &self.owner
    }
}

impl<T: ?Sized + 'static, O: 'static> ArcBorrowing<T, O> {
    /// Drops the future now (while `owner` is held), leaving one that never
    /// finishes in its place: for a caller that must see the future's drop
    /// at a time of its choosing (e.g. inside a panic boundary, once it has
    /// finished). A panic from the drop propagates; the placeholder is in
    /// place by then.
    pub(crate) fn drop_future(&mut self) {
        // A zero-sized future: its box allocates nothing.
        let old = std::mem::replace(&mut self.fut, Box::pin(std::future::pending::<O>()));
        drop(old);
    }
}

impl<T: ?Sized + 'static, O> Future for ArcBorrowing<T, O> {
    type Output = O;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        self.fut.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Owner {
        text: String,
        drops: Arc<AtomicUsize>,
    }

    impl Drop for Owner {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Records, when the future is dropped, whether the owner was still
    /// alive then.
    struct ReadsOnDrop<'a> {
        text: &'a str,
        owner_drops: Arc<AtomicUsize>,
        seen: Arc<AtomicUsize>,
    }

    impl Future for ReadsOnDrop<'_> {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            Poll::Ready(self.text.len())
        }
    }

    impl Drop for ReadsOnDrop<'_> {
        fn drop(&mut self) {
            // The owner must not have been dropped yet, and its text must be
            // readable (memcheck would flag a use after free here).
            assert_eq!(self.owner_drops.load(Ordering::SeqCst), 0);
            self.seen.store(self.text.len(), Ordering::SeqCst);
        }
    }

    #[test]
    fn the_future_borrows_the_owner_and_is_dropped_before_it() {
        let drops = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let owner = Arc::new(Owner {
            text: "borrowed".to_owned(),
            drops: drops.clone(),
        });
        let (d, s) = (drops.clone(), seen.clone());
        let mut f = ArcBorrowing::new(owner, move |o: &Owner| -> LocalBoxFuture<'_, usize> {
            Box::pin(ReadsOnDrop {
                text: &o.text,
                owner_drops: d,
                seen: s,
            })
        });
        assert_eq!(Arc::strong_count(f.owner()), 1);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(8));
        drop(f);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            8,
            "the future's destructor ran"
        );
        assert_eq!(drops.load(Ordering::SeqCst), 1, "then the owner's");
    }
}
