//! A range of layer indices.

use std::ops::Range;

/// The layers `start..end` of a chain (end exclusive), e.g. the layers one
/// segment runs. The one way the crate names a run of layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layers {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Layers {
    pub(crate) fn new(start: usize, end: usize) -> Layers {
        debug_assert!(start <= end, "layers {start}..{end}");
        Layers { start, end }
    }

    /// Whether layer `i` is one of these.
    pub(crate) fn contains(&self, i: usize) -> bool {
        (self.start..self.end).contains(&i)
    }

    /// The indices, outermost first.
    pub(crate) fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}
