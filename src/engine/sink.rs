//! Where the engine's outputs go. The engine calls the sink once per output, in order, while
//! it processes a command; the sink must not fail (it is outside the deterministic state).

use exchange_domain::Output;

pub trait EventSink {
    fn emit(&mut self, output: &Output);
}

impl EventSink for Vec<Output> {
    #[inline]
    fn emit(&mut self, output: &Output) {
        self.push(*output);
    }
}

/// Drops every output (the hash still covers them): for benchmarks and replays that only need
/// the final state and hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSink;

impl EventSink for DiscardSink {
    #[inline]
    fn emit(&mut self, _output: &Output) {}
}

/// Calls a closure for each output.
pub struct FnSink<F>(pub F);

impl<F: FnMut(&Output)> EventSink for FnSink<F> {
    #[inline]
    fn emit(&mut self, output: &Output) {
        (self.0)(output)
    }
}
