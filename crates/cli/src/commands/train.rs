//! `losskit train`: train a bundled example with any registered loss, optimizer and schedule.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use losskit_core::{Loss, atomic_write::write_atomically};
use losskit_examples::{
    run::{Prepared, RunSpec, TaskRun, TrainRequest, check_forward, prepare, with_task},
    run_config::{CONFIG_FILE, RunConfig},
};
use losskit_optim::{
    BEST_FILE, CHECKPOINT_FILE, EVENTS_FILE, Progress, RunStats, Task, TaskKind, TrainConfig,
    TrainError,
    stats::{PREDICTION_FILES, REPORT_FILES},
};
use serde_json::Value;

use crate::signals::Interrupted;

struct Training<'a> {
    loss: &'a dyn Loss,
    spec: &'a RunSpec,
    device: &'a Device,
    config: &'a TrainConfig,
    request: &'a TrainRequest,
}

impl TaskRun for Training<'_> {
    type Output = RunStats;

    fn run<T: Task>(self, task: &T) -> Result<RunStats> {
        check_forward(task, self.loss, self.device)?;
        // Only now is the output folder created; with --force the old run's files stay until
        // the new run writes its first checkpoint and reports over them.
        check_out_dir(&self.request.out, self.request.resume, self.request.force)?;
        let replacing = !self.request.resume && self.request.out.join(CHECKPOINT_FILE).exists();

        match losskit_optim::train(
            task,
            self.loss,
            &self.spec.optimizer,
            &self.spec.schedule,
            self.device,
            self.config,
        ) {
            Ok(outcome) => Ok(outcome.stats),
            Err(
                error @ TrainError::NonFiniteLoss {
                    checkpoint: None, ..
                },
            ) if replacing => Err(anyhow::anyhow!(
                "{error}; the earlier run in {} is left as it was",
                self.request.out.display()
            )),
            Err(error @ TrainError::NonFiniteLoss { .. }) => Err(anyhow::anyhow!("{error}")),
            Err(error @ TrainError::Interrupted { .. }) => {
                let out = self.request.out.display();
                let hint = match &error {
                    TrainError::Interrupted {
                        checkpoint: Some(_),
                        ..
                    } => format!("; continue it with `losskit train --resume --out {out}`"),
                    _ if replacing => format!("; the earlier run in {out} is left as it was"),
                    _ => String::new(),
                };
                Err(Interrupted(format!("{error}{hint}")).into())
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Creates the output folder and checks it can be written to (a probe file, removed again).
pub fn check_out_dir(out: &Path, resume: bool, force: bool) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    if !resume && !force && out.join(CHECKPOINT_FILE).exists() {
        bail!(
            "{} already holds a run; pass --resume to continue it, --force to replace it, or another --out",
            out.display()
        );
    }
    let probe = out.join(".losskit-write-check");
    write_atomically(&probe, b"ok")
        .map_err(|error| anyhow::anyhow!("--out {} is not writable: {error}", out.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Runs training for a prepared run; returns the statistics.
pub fn run_prepared(prepared: Prepared, request: &TrainRequest, title: &str) -> Result<RunStats> {
    let Prepared {
        spec,
        data,
        device,
        data_parallel,
        initial_model,
    } = prepared;
    let loss = spec.build_loss()?;
    let config = TrainConfig {
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        seed: spec.seed,
        out_dir: request.out.clone(),
        resume: request.resume,
        progress: request.progress,
        run: serde_json::to_value(&spec)?,
        title: title.to_string(),
        max_steps_per_epoch: spec.max_steps,
        stop: crate::signals::stop_flag(),
        data_parallel,
        monitor: spec.monitor()?,
        patience: spec.patience,
        initial_model,
        files: vec![(
            CONFIG_FILE.to_string(),
            RunConfig::resolved(&spec, request.device.as_deref(), &request.devices).to_toml()?,
        )],
    };
    if let Some(advice) = losskit_examples::run::loss_advice(&spec.loss, spec.task) {
        tracing::warn!("{advice}");
    }
    if request.progress != Progress::Quiet {
        tracing::info!("{}", data.description());
        if let Some(source) = &spec.init_from {
            tracing::info!(
                "starting from the weights of {} (epoch {}, loss {})",
                source.checkpoint.display(),
                source.epoch,
                source.loss
            );
        }
        if let Some(segmentation) = &spec.segmentation {
            let settings = &segmentation.settings;
            let [ph, pw] = settings.patches.size;
            tracing::info!(
                "U-Net depth {} width {}; {} patches of {ph}x{pw} per epoch ({:.0} % around foreground), augmentation {}; validation on whole images, {ph}x{pw} windows overlapping {:.0} %",
                segmentation.depth,
                spec.width,
                settings.patches.per_epoch,
                settings.patches.foreground * 100.0,
                if settings.augmentation.is_none() {
                    "off"
                } else {
                    "on"
                },
                settings.window.overlap * 100.0
            );
        }
    }
    let training = Training {
        loss: loss.as_ref(),
        spec: &spec,
        device: &device,
        config: &config,
        request,
    };
    let remote = request
        .devices
        .iter()
        .chain(&request.device)
        .any(|name| name.trim().starts_with("remote:"));
    if !remote {
        return with_task(&spec, data, training);
    }
    // burn's remote client panics when the connection drops mid-run; that is an outside
    // failure with a message for the user, and the last checkpoint (written atomically) stays.
    crate::panics::catch(|| with_task(&spec, data, training)).unwrap_or_else(|panic| {
        let checkpoint = request.out.join(CHECKPOINT_FILE);
        let kept = if checkpoint.exists() {
            format!(
                "; the last checkpoint is kept at {} (continue it with `losskit train --resume --out {}`)",
                checkpoint.display(),
                request.out.display()
            )
        } else {
            "; no epoch completed, so there is no checkpoint".to_string()
        };
        bail!("lost the remote device ({panic}){kept}")
    })
}

/// The closing report of a run.
pub fn report(stats: &RunStats, out: &Path, linear_r2: Option<f64>) -> String {
    let Some(last) = stats.last() else {
        return "no epoch finished".into();
    };
    let mut text = format!(
        "epochs {}  val_loss {:.4}  avg_loss_all_epochs {:.4}",
        last.epoch,
        last.val_loss,
        stats.avg_loss_all_epochs()
    );
    for (name, value) in last.val_metrics.headline(stats.task) {
        text.push_str(&format!("  {name} {value:.4}"));
    }
    let seconds: f64 = stats.epochs.iter().map(|e| e.seconds).sum();
    text.push_str(&format!("  time {seconds:.1}s"));
    if stats.task != TaskKind::Regression {
        text.push_str("\nrecall:");
        for (name, recall) in stats.classes.iter().zip(&last.val_metrics.recall) {
            text.push_str(&format!(" {name} {recall:.3}"));
        }
    }
    if stats.task == TaskKind::Regression {
        text.push_str("\n(val_coverage: the fraction of targets at or below the prediction)");
        if let Some(r2) = linear_r2 {
            text.push_str(&format!(
                "\nlinear least squares on the same split: val_r2 {r2:.4}"
            ));
        }
    }
    if !last.val_metrics.label_f1.is_empty() {
        text.push_str("\nf1:");
        for (name, f1) in stats.classes.iter().zip(&last.val_metrics.label_f1) {
            text.push_str(&format!(" {name} {f1:.3}"));
        }
    }
    if !last.val_metrics.class_dice.is_empty() {
        text.push_str(
            "
dice:",
        );
        for (name, dice) in stats.classes.iter().zip(&last.val_metrics.class_dice) {
            text.push_str(&format!(" {name} {dice:.3}"));
        }
    }
    if let Some(best) = &stats.best {
        text.push_str(&format!(
            "\nbest: {} {:.4} at epoch {} ({BEST_FILE}){}",
            best.metric,
            best.value,
            best.epoch,
            if stats.stopped_early {
                "; stopped early"
            } else {
                ""
            }
        ));
    }
    let best_file = stats.best.is_some().then_some(BEST_FILE);
    let prediction_files: &[&str] = if stats.task == TaskKind::Regression {
        &PREDICTION_FILES
    } else {
        &[]
    };
    let files: Vec<String> = std::iter::once(CHECKPOINT_FILE)
        .chain(best_file)
        .chain([CONFIG_FILE])
        .chain(REPORT_FILES)
        .chain(prediction_files.iter().copied())
        .chain([EVENTS_FILE])
        .map(|file| format!("{}/{file}", out.display()))
        .collect();
    text.push_str(&format!("\nwrote {}", files.join(", ")));
    text
}

/// Trains as asked; returns the closing report.
pub fn run(request: &TrainRequest) -> Result<String> {
    let prepared = prepare(request)?;
    let title = format!(
        "{} - loss {} - {}",
        prepared.spec.task.as_str(),
        prepared
            .spec
            .loss
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        prepared.spec.optimizer.name()
    );
    let linear_r2 = prepared.spec.linear_r2;
    let stats = run_prepared(prepared, request, &title)?;
    Ok(report(&stats, &request.out, linear_r2))
}
