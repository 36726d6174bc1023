//! The losskit side of `bench/peers/run`. It reads requests from stdin, one a line:
//!
//! - `run CASE REPS`: runs the case REPS times (after two warm-up runs the first time) and
//!   prints `{"case": …, "seconds": [...]}`;
//! - `peak CASE`: runs the case once and prints the growth of the process's peak resident
//!   memory (`VmHWM`) over what the inputs already held, `{"case": …, "peak_bytes": …}` (run
//!   it first in a fresh process, as the driver does);
//! - `cases`: prints the case names, one JSON list.
//!
//! `LOSSKIT_PEER_DEVICE` names the device (`losskit devices` lists them); the default CPU
//! device otherwise.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashMap,
    io::{BufRead, Write},
    time::Instant,
};

use losskit_peer::{LOSS_CASES, Runner, STEP_CASES, runner};
use serde_json::json;

/// The peak resident memory of this process so far, in bytes.
fn peak_resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

fn main() {
    // LOSSKIT_PEER_DEVICE picks another device by name (e.g. `ndarray`); the default CPU one
    // otherwise.
    let name = std::env::var("LOSSKIT_PEER_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = losskit_core::devices::parse_device(&name).expect("a known device");
    let mut prepared: HashMap<String, Runner> = HashMap::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["cases"] => {
                let names: Vec<&str> = LOSS_CASES
                    .iter()
                    .map(|(n, _)| *n)
                    .chain(STEP_CASES)
                    .collect();
                json!(names)
            }
            ["run", case, reps] => {
                let reps: usize = reps.parse().unwrap_or(1);
                if !prepared.contains_key(*case) {
                    match runner(case, &device) {
                        Some(mut run) => {
                            for _ in 0..2 {
                                std::hint::black_box(run());
                            }
                            prepared.insert(case.to_string(), run);
                        }
                        None => {
                            let reply = json!({"error": format!("unknown case {case}")});
                            let _ = writeln!(stdout, "{reply}");
                            let _ = stdout.flush();
                            continue;
                        }
                    }
                }
                let run = prepared.get_mut(*case).expect("prepared above");
                let seconds: Vec<f64> = (0..reps)
                    .map(|_| {
                        let started = Instant::now();
                        std::hint::black_box(run());
                        started.elapsed().as_secs_f64()
                    })
                    .collect();
                json!({"case": case, "seconds": seconds})
            }
            ["peak", case] => match runner(case, &device) {
                Some(mut run) => {
                    let before = peak_resident_bytes();
                    std::hint::black_box(run());
                    let after = peak_resident_bytes();
                    json!({"case": case, "peak_bytes": after.saturating_sub(before)})
                }
                None => json!({"error": format!("unknown case {case}")}),
            },
            _ => json!({"error": format!("cannot read request `{line}`")}),
        };
        let _ = writeln!(stdout, "{reply}");
        let _ = stdout.flush();
    }
}
