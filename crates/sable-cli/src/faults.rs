//! What an armed fault point does in the `sable` binary: say so on stdout, then stop the
//! whole process (SIGSTOP), so that a test can SIGKILL it exactly at that point; or, for
//! a point named in `fault_panic_at`, panic there once.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sable_core::FaultPoints;

use crate::settings::Settings;

/// The line a fault-injection test waits for before it sends SIGKILL.
pub const MARKER: &str = "sable fault point reached:";

/// The process's fault points from `fault_pause_at`, `fault_panic_at` and
/// `fault_hits_to_pass`.
pub fn from_settings(settings: &Settings) -> FaultPoints {
    let panic_at: Vec<String> = names(&settings.fault_panic_at);
    let panicked = AtomicBool::new(false);
    FaultPoints::arm(
        &format!("{},{}", settings.fault_pause_at, settings.fault_panic_at),
        settings.fault_hits_to_pass,
        Arc::new(move |point: &str| {
            if !panic_at.iter().any(|name| name == point) {
                stop_here(point);
            } else if !panicked.swap(true, Ordering::SeqCst) {
                panic!("fault point {point} reached: panicking here once");
            }
        }),
    )
}

fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
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
