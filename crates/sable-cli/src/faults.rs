//! What an armed fault point does in the `sable` binary: say so on stdout, then stop the
//! whole process (SIGSTOP), so that a test can SIGKILL it exactly at that point.

use std::io::Write;
use std::sync::Arc;

use sable_core::FaultPoints;

use crate::settings::Settings;

/// The line a fault-injection test waits for before it sends SIGKILL.
pub const MARKER: &str = "sable fault point reached:";

/// The process's fault points from `fault_pause_at` / `fault_hits_to_pass`.
pub fn from_settings(settings: &Settings) -> FaultPoints {
    FaultPoints::arm(
        &settings.fault_pause_at,
        settings.fault_hits_to_pass,
        Arc::new(stop_here),
    )
}

/// Stopping the process, rather than one task, freezes every in-flight turn and lease
/// renewal at once: nothing moves between the marker and the test's SIGKILL.
#[allow(clippy::print_stdout)]
fn stop_here(point: &str) {
    tracing::warn!(point, "fault point reached; stopping the process");
    println!("{MARKER} {point}");
    let _ = std::io::stdout().flush();
    if let Err(error) = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP) {
        tracing::error!(%error, "cannot stop at the fault point");
    }
}
