//! How library work tells its caller how far it has come: the command line implements
//! [`Progress`] with progress bars; the library never draws one itself.

/// Told how far long work has come (a progress bar, or nothing).
pub trait Progress: Sync {
    /// A new stage of `total` units.
    fn start(&self, _what: &str, _total: u64) {}
    /// `n` more units done.
    fn inc(&self, _n: u64) {}
    /// The stage is at `pos` units (a resumed training starts where it stopped).
    fn set_position(&self, _pos: u64) {}
    /// A short line on the current state (the loss, a held-out bound).
    fn message(&self, _msg: &str) {}
    /// The stage is over.
    fn finish(&self) {}
}

/// No progress reporting.
impl Progress for () {}
