//! The state word of a hand-off.
//!
//! Three independent bits, each set exactly once (with `fetch_or`) by the
//! side that owns it, never cleared:
//!
//! | bit          | set by                      | meaning for the other side            |
//! |--------------|-----------------------------|---------------------------------------|
//! | `SENT`       | `Sender::send`, after it stored the value | the value is there to take |
//! | `TX_DROPPED` | `Sender`'s drop, unsent     | no value will come: `Closed`          |
//! | `RX_DROPPED` | `Receiver`'s drop           | nobody will take the value            |
//!
//! `SENT` and `TX_DROPPED` exclude each other (a sender either sends or is
//! dropped unsent). The receiver is done once either is set.

/// The value was stored; set by `Sender::send` after storing it.
pub(crate) const SENT: usize = 0b001;
/// The sender was dropped without sending.
pub(crate) const TX_DROPPED: usize = 0b010;
/// The receiver was dropped; a later `send` gets its value back.
pub(crate) const RX_DROPPED: usize = 0b100;

/// A snapshot of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State(usize);

impl State {
    /// Nothing happened yet.
    pub(crate) const INITIAL: State = State(0);

    pub(crate) fn from_bits(bits: usize) -> State {
        State(bits)
    }

    pub(crate) fn bits(self) -> usize {
        self.0
    }

    /// The value is (or was) there to take.
    pub(crate) fn is_sent(self) -> bool {
        self.0 & SENT != 0
    }

    /// The sender is gone without sending.
    pub(crate) fn is_tx_dropped(self) -> bool {
        self.0 & TX_DROPPED != 0
    }

    /// The receiver is gone.
    pub(crate) fn is_rx_dropped(self) -> bool {
        self.0 & RX_DROPPED != 0
    }
}
