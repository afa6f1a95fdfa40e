//! W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.

use std::fmt;

use rand::RngCore;

/// The trace a piece of work belongs to and the span that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// Starts a new trace.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        rand::rng().fill_bytes(&mut trace_id);
        Self {
            trace_id,
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// The same trace, with a new span as parent of what comes next.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// Parses a `traceparent` header; `None` when malformed or all-zero (as the spec says
    /// to treat it).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || parts.next().is_some() && version == "00" {
            return None;
        }
        let trace_id: [u8; 16] = hex::decode(trace).ok()?.try_into().ok()?;
        let span_id: [u8; 8] = hex::decode(span).ok()?.try_into().ok()?;
        let flags: [u8; 1] = hex::decode(flags).ok()?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    pub(crate) fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Self {
        Self {
            trace_id,
            span_id,
            sampled,
        }
    }

    pub(crate) fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    pub(crate) fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    pub(crate) fn sampled(&self) -> bool {
        self.sampled
    }

    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            u8::from(self.sampled)
        )
    }
}

fn random_span_id() -> [u8; 8] {
    let mut span_id = [0u8; 8];
    rand::rng().fill_bytes(&mut span_id);
    span_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let context = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&context.to_string()), Some(context));
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
    }

    #[test]
    fn the_spec_example_parses_and_garbage_does_not() {
        let parsed =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
