//! Splitting one output between parts that may run on several threads at once: a slice whose
//! disjoint ranges the parts write ([`Shared`]), and the even split of `n` items into ranges
//! ([`bounds`]). That the ranges are disjoint is the caller's to ensure.

/// A mutable slice that [`super::for_each`]'s parts write disjoint ranges of.
pub struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: parts only reach the slice through `range`, whose contract is that no two live
// ranges overlap: sharing a `Shared` between threads shares disjoint `&mut` ranges of `T`s,
// which is sound for `T: Send`.
unsafe impl<T: Send> Sync for Shared<'_, T> {}
// SAFETY: a `Shared` is a `&mut [T]` split in ranges; sending it to another thread is sending
// the `&mut [T]`, sound for `T: Send`.
unsafe impl<T: Send> Send for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    pub fn new(s: &'a mut [T]) -> Self {
        Shared {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _slice: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The first value's address, for kernels that store through pointers: the same contract
    /// as [`Self::range`] holds for every value they write.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `start..end` of the slice.
    ///
    /// # Safety
    /// No other range in use at the same time overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, end: usize) -> &mut [T] {
        assert!(
            start <= end && end <= self.len,
            "{start}..{end} of {}",
            self.len
        );
        // SAFETY: in bounds (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// Splits `n` items into at most `parts` contiguous ranges of nearly equal size: part `i` of
/// `split(n, parts)` is `bounds(n, parts, i)`.
pub fn bounds(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let parts = parts.max(1);
    (n * i / parts, n * (i + 1) / parts)
}
