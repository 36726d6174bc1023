//! The losskit side of `bench/peers/run`. It reads requests from stdin, one a line:
//!
//! - `run CASE REPS`: runs the case REPS times (after two warm-up runs the first time) and
//!   prints `{"case": …, "seconds": [...]}`;
//! - `peak CASE`: runs the case once and prints how far the process's peak resident memory
//!   (`VmHWM`, reset first) rose above what it held with the inputs ready,
//!   `{"case": …, "peak_bytes": …}` (run it first in a fresh process, as the driver does);
//! - `cases`: prints the case names, one JSON list;
//! - `inputs DIR`: later loss cases read their arrays from `DIR/CASE.output.npy` and
//!   `DIR/CASE.target.npy` (the driver writes them once and gives PyTorch the same ones);
//!   without it, each side would draw its own;
//! - `check CASE I J …`: the loss on those arrays and its gradient at flat indices I, J, …,
//!   `{"case": …, "loss": …, "grad": [...]}`.
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

use std::path::{Path, PathBuf};

use losskit_cli::npy::read_npy;
use losskit_core::input::HostArray;
use losskit_peer::{
    LOSS_CASES, Runner, STEP_CASES, check_loss_case, loss_case, loss_runner_on, runner,
};
use serde_json::json;

/// Resets the process's peak resident memory to what it holds now (Linux `clear_refs` 5), so
/// that a later peak measures a run and not the reading of its inputs; the driver does the same
/// on the PyTorch side.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The resident memory of this process now, in bytes.
fn resident_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// The peak resident memory of this process so far, in bytes.
fn peak_resident_bytes() -> u64 {
    status_bytes("VmHWM:")
}

fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
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

/// The arrays of loss case `case` in `dir`.
fn case_arrays(dir: &Path, case: &str) -> Result<(HostArray, HostArray), String> {
    let read = |part: &str| {
        read_npy(&dir.join(format!("{case}.{part}.npy"))).map_err(|error| error.to_string())
    };
    Ok((read("output")?, read("target")?))
}

/// The runner of `case`: on the arrays in `inputs` for a loss case when given, else on inputs
/// it makes.
fn prepare(
    case: &str,
    inputs: Option<&Path>,
    device: &burn::tensor::Device,
) -> Result<Runner, String> {
    match (loss_case(case), inputs) {
        (Some(loss), Some(dir)) => {
            let (output, target) = case_arrays(dir, case)?;
            loss_runner_on(loss, &output, &target, device)
        }
        _ => runner(case, device).ok_or_else(|| format!("unknown case {case}")),
    }
}

fn main() {
    // LOSSKIT_PEER_DEVICE picks another device by name (e.g. `ndarray`); the default CPU one
    // otherwise.
    let name = std::env::var("LOSSKIT_PEER_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = losskit_core::devices::parse_device(&name).expect("a known device");
    let mut prepared: HashMap<String, Runner> = HashMap::new();
    let mut inputs: Option<PathBuf> = None;
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
                    match prepare(case, inputs.as_deref(), &device) {
                        Ok(mut run) => {
                            for _ in 0..2 {
                                std::hint::black_box(run());
                            }
                            prepared.insert(case.to_string(), run);
                        }
                        Err(error) => {
                            let reply = json!({"error": error});
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
            ["peak", case] => match prepare(case, inputs.as_deref(), &device) {
                Ok(mut run) => {
                    reset_peak();
                    let before = resident_bytes();
                    std::hint::black_box(run());
                    let after = peak_resident_bytes();
                    json!({"case": case, "peak_bytes": after.saturating_sub(before)})
                }
                Err(error) => json!({"error": error}),
            },
            ["inputs", dir] => {
                inputs = Some(PathBuf::from(dir));
                json!({"inputs": dir})
            }
            ["check", case, indices @ ..] => {
                let checked = loss_case(case)
                    .ok_or_else(|| format!("{case} is not a loss case"))
                    .and_then(|loss| {
                        let dir = inputs.as_deref().ok_or("send `inputs DIR` first")?;
                        let (output, target) = case_arrays(dir, case)?;
                        check_loss_case(loss, &output, &target, &device)
                    })
                    .and_then(|(value, gradient)| {
                        let picked = indices
                            .iter()
                            .map(|i| {
                                i.parse::<usize>()
                                    .ok()
                                    .and_then(|i| gradient.get(i).copied())
                                    .ok_or_else(|| format!("no gradient element {i}"))
                            })
                            .collect::<Result<Vec<f64>, String>>()?;
                        Ok((value, picked))
                    });
                match checked {
                    Ok((value, grad)) => json!({"case": case, "loss": value, "grad": grad}),
                    Err(error) => json!({"error": error}),
                }
            }
            _ => json!({"error": format!("cannot read request `{line}`")}),
        };
        let _ = writeln!(stdout, "{reply}");
        let _ = stdout.flush();
    }
}
