//! `losskit`: list, explain, evaluate, train and compare losses.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use losskit_examples::predict::{ExportFormat, Layout};
use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use losskit_cli::{
    commands::{self, compute::ComputeRequest, list::ListFormat},
    panics,
    signals::{self, INTERRUPTED_EXIT, Interrupted},
};
use losskit_core::Reduction;

#[derive(Debug, Parser)]
#[command(
    name = "losskit",
    version,
    about = "Swappable, verifiable loss functions for burn"
)]
struct Cli {
    /// Show more diagnostics on stderr: -v for debug (the loss built, the device chosen, each
    /// epoch's events), -vv for trace (every step). RUST_LOG sets them finer when -v is not
    /// given (e.g. RUST_LOG=losskit::registry=debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a bundled example (a CNN on blood-cell images by default) with any loss,
    /// optimizer and schedule; live loss statistics, checkpoints, metrics.csv, summary.json,
    /// loss.svg.
    Train(commands::train_args::TrainArgs),
    /// Train once per --loss on the same data, model and seed, and compare them.
    Compare(commands::train_args::CompareArgs),
    /// Evaluate a trained model (a checkpoint) on its validation data (or --data).
    Evaluate(commands::train_args::EvaluateArgs),
    /// Apply a trained model to new images: a CSV of class probabilities (classification) or
    /// a full-resolution mask and an outlined preview per image (segmentation).
    Predict {
        /// A run folder (its last checkpoint), a checkpoint file such as RUN/best.lkc, or an
        /// exported model (.safetensors or .bpk with its .json beside it).
        #[arg(long)]
        checkpoint: PathBuf,
        /// An image, or a folder of images (PNG, JPEG, TIFF).
        #[arg(long)]
        input: PathBuf,
        /// The folder for the predictions (created; never the input folder).
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu (default), flex, ndarray, wgpu.
        #[arg(long)]
        device: Option<String>,
    },
    /// Export a trained model's weights (safetensors or burnpack) with its description
    /// (MODEL.json: model, classes, normalisation) beside them.
    Export {
        /// A run folder (its last checkpoint) or a checkpoint file such as RUN/best.lkc.
        #[arg(long)]
        checkpoint: PathBuf,
        /// safetensors or burnpack.
        #[arg(long, value_enum)]
        format: ExportFormatArg,
        /// Tensor names and layouts: burn (default) or pytorch (safetensors only:
        /// norm.weight/bias, linear weights [out, in]).
        #[arg(long, value_enum, default_value = "burn")]
        layout: LayoutArg,
        /// The file to write (*.safetensors or *.bpk).
        #[arg(long)]
        out: PathBuf,
    },
    /// List every registered loss.
    List {
        /// Only this category: classification, segmentation, regression or composite.
        #[arg(long)]
        category: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Scaffold a new loss as a plugin crate under plugins/NAME and link it into losskit.
    NewLoss {
        /// The loss's name, snake_case (also the crate's name).
        name: String,
        /// classification, segmentation, regression or composite.
        #[arg(long, default_value = "classification")]
        category: losskit_core::Category,
        /// The repository root (default: the checkout around the current directory).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// List the compiled-in backends and what device names resolve to (wgpu: the adapter).
    Devices {
        /// Device names to describe, e.g. cpu, ndarray, wgpu (default: cpu).
        names: Vec<String>,
    },
    /// Host a local device for `--device remote:ws://HOST:PORT` (burn's remote backend);
    /// needs a build with `--features remote-server`.
    Serve {
        /// The address to listen on (127.0.0.1: this machine only).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// The port (0: any free port, printed once listening).
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// The local device to serve: cpu (default), flex, ndarray, wgpu[:…].
        #[arg(long)]
        device: Option<String>,
    },
    /// A live web page of every run in a folder: the report's charts and tables updating while
    /// runs train, a compare view of selected runs, each run's settings and files.
    Dashboard {
        /// The folder holding the runs (searched three levels deep for events.jsonl).
        #[arg(default_value = "runs")]
        runs_dir: PathBuf,
        /// The port (0: any free port, printed once listening).
        #[arg(long, default_value_t = 8050)]
        port: u16,
        /// The address to listen on (127.0.0.1: this machine only; there is no
        /// authentication).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
    },
    /// Show a loss's documentation, options and an example config.
    Info {
        /// The loss's name or alias.
        name: String,
    },
    /// Compute a loss (and its gradient) on .npy arrays; prints {"loss": ...}.
    #[command(alias = "eval")]
    Compute {
        /// The loss: a name, a JSON object, or a .json/.toml file.
        #[arg(long)]
        loss: String,
        /// The model output, [N, C, ...] float32/float64.
        #[arg(long)]
        output: PathBuf,
        /// The target: integer class indices [N, ...] or a float array of the output's shape.
        #[arg(long)]
        target: PathBuf,
        /// mean, sum or none (one value per sample).
        #[arg(long, default_value = "mean")]
        reduction: Reduction,
        /// Write d(loss)/d(output) here as float32 .npy.
        #[arg(long)]
        grad: Option<PathBuf>,
        /// Device: cpu (default), flex, ndarray, wgpu.
        #[arg(long)]
        device: Option<String>,
        /// An auxiliary input the loss reads, NAME=FILE.npy of the output's shape (e.g.
        /// signed_distance_maps=maps.npy for `boundary`, computed on whole images); repeatable.
        #[arg(long = "auxiliary", value_name = "NAME=FILE")]
        auxiliary: Vec<String>,
        /// The training epoch (from 1, as in metrics.csv) that scheduled losses read (default 1).
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        epoch: Option<usize>,
        /// The optimizer step within the epoch (from 0), with --epoch.
        #[arg(long, requires = "epoch")]
        step: Option<usize>,
    },
}

/// `export --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormatArg {
    Safetensors,
    Burnpack,
}

/// `export --layout`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LayoutArg {
    Burn,
    Pytorch,
}

fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Train(args) => args.run(),
        Command::Compare(args) => args.run(),
        Command::Evaluate(args) => args.run(),
        Command::Predict {
            checkpoint,
            input,
            out,
            device,
        } => commands::predict::run(&checkpoint, &input, &out, device.as_deref()),
        Command::Export {
            checkpoint,
            format,
            layout,
            out,
        } => commands::predict::export(
            &checkpoint,
            match format {
                ExportFormatArg::Safetensors => ExportFormat::Safetensors,
                ExportFormatArg::Burnpack => ExportFormat::Burnpack,
            },
            match layout {
                LayoutArg::Burn => Layout::Burn,
                LayoutArg::Pytorch => Layout::Pytorch,
            },
            &out,
        ),
        Command::List { category, format } => commands::list::run(category.as_deref(), format),
        Command::Info { name } => commands::info::run(&name),
        Command::Devices { names } => commands::devices::run(&names),
        Command::Dashboard {
            runs_dir,
            port,
            bind,
        } => commands::dashboard::run(&runs_dir, &bind, port),
        Command::Serve { bind, port, device } => {
            commands::serve::run(&bind, port, device.as_deref())
        }
        Command::NewLoss {
            name,
            category,
            root,
        } => commands::new_loss::run(&name, category, root.as_deref()),
        Command::Compute {
            loss,
            output,
            target,
            reduction,
            grad,
            device,
            auxiliary,
            epoch,
            step,
        } => commands::compute::run(&ComputeRequest {
            loss: &loss,
            output: &output,
            target: &target,
            reduction,
            grad: grad.as_deref(),
            device: device.as_deref(),
            auxiliary: &auxiliary,
            progress: epoch.map(|epoch| losskit_core::TrainingProgress {
                epoch,
                step: step.unwrap_or(0),
            }),
        }),
    }
}

fn main() -> ExitCode {
    // Panics are bugs; even then the user gets one line, not a backtrace.
    panics::install_hook();
    signals::report_file_size_limits();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // clap's message spans lines (the problem, then usage); keep the problem, on one line.
            let rendered = error.to_string();
            let problem: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| {
                    !line.starts_with("Usage:") && !line.starts_with("For more information")
                })
                .filter(|line| !line.is_empty())
                .collect();
            let problem = problem.join(" ");
            let problem = problem.strip_prefix("error: ").unwrap_or(&problem);
            eprintln!("losskit: error: {problem} (see `losskit --help`)");
            return ExitCode::from(2);
        }
    };
    losskit_cli::diagnostics::install(cli.verbose);
    match run(cli) {
        Ok(text) => {
            // A closed pipe (`losskit list | head`) is not an error worth a message.
            let mut stdout = std::io::stdout().lock();
            let written = stdout.write_all(text.as_bytes()).and_then(|()| {
                if text.ends_with('\n') {
                    Ok(())
                } else {
                    stdout.write_all(b"\n")
                }
            });
            match written {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("losskit: error: cannot write the output: {error}");
                    ExitCode::from(2)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("losskit: error: {message}");
            if error.downcast_ref::<Interrupted>().is_some() {
                ExitCode::from(INTERRUPTED_EXIT)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
