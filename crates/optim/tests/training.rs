//! The optimizer and schedule configs, and the training loop on a tiny model: the loss goes
//! down, a resumed run continues exactly like an uninterrupted one, and a NaN loss stops the run.

extern crate losskit_losses;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use burn::{
    module::Module,
    nn::{Linear, LinearConfig},
    tensor::{Device, Int, Tensor, TensorData},
};
use losskit_core::{LossInput, Registry, devices::parse_device};
use losskit_optim::{
    Checkpoint, Monitor, OptimConfigError, OptimizerConfig, Progress, ScheduleConfig, Split, Task,
    TaskKind, TrainConfig, TrainError, train,
};

fn device() -> Device {
    parse_device("cpu").expect("a CPU backend is compiled in")
}

/// Two Gaussian blobs in 2-D and a linear classifier.
struct Blobs {
    points: Vec<[f32; 2]>,
    labels: Vec<i64>,
    /// Scales the logits (NaN makes the loss NaN).
    scale: f32,
    /// Raises the flag when this many training batches have been read (a Ctrl-C mid-run).
    raise_after: Option<(usize, Arc<AtomicBool>)>,
    train_batches: AtomicUsize,
}

impl Blobs {
    fn new(n: usize) -> Self {
        let mut rng = losskit_optim::Rng::new(7);
        let mut points = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = (i % 2) as i64;
            let centre = if c == 0 { -1.5 } else { 1.5 };
            points.push([
                centre + rng.normal() as f32 * 0.7,
                centre + rng.normal() as f32 * 0.7,
            ]);
            labels.push(c);
        }
        Self {
            points,
            labels,
            scale: 1.0,
            raise_after: None,
            train_batches: AtomicUsize::new(0),
        }
    }
}

#[derive(Module, Debug)]
struct Tiny {
    linear: Linear,
}

impl Task for Blobs {
    type Model = Tiny;

    fn kind(&self) -> TaskKind {
        TaskKind::Classification
    }

    fn classes(&self) -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn init_model(&self, device: &Device) -> Tiny {
        Tiny {
            linear: LinearConfig::new(2, 2).init(device),
        }
    }

    fn len(&self, _split: Split) -> usize {
        self.points.len()
    }

    fn input(
        &self,
        model: &Tiny,
        split: Split,
        indices: &[usize],
        device: &Device,
    ) -> Result<LossInput, TrainError> {
        if split == Split::Train {
            let read = self.train_batches.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some((after, flag)) = &self.raise_after
                && read == *after
            {
                flag.store(true, Ordering::SeqCst);
            }
        }
        let values: Vec<f32> = indices.iter().flat_map(|&i| self.points[i]).collect();
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        let x = Tensor::<2>::from_data(TensorData::new(values, [indices.len(), 2]), device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), device);
        let logits = model.linear.forward(x).mul_scalar(self.scale);
        Ok(LossInput::with_indices(logits, y).map_err(losskit_core::Error::from)?)
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("losskit-optim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(out: PathBuf, epochs: usize, resume: bool) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        seed: 3,
        out_dir: out,
        resume,
        progress: Progress::Quiet,
        run: serde_json::json!({"test": true}),
        title: "test".into(),
        max_steps_per_epoch: None,
        stop: None,
        data_parallel: Vec::new(),
        monitor: Monitor::default(),
        patience: None,
        initial_model: None,
        files: Vec::new(),
    }
}

fn weights(model: &Tiny) -> Vec<f64> {
    losskit_core::input::to_f64_vec(model.linear.weight.val().reshape([4]))
}

#[test]
fn optimizers_parse_by_name_and_json() {
    for name in ["sgd", "adam", "adamw", "rmsprop", "adagrad"] {
        let config = OptimizerConfig::parse(name).unwrap();
        assert_eq!(config.name(), name);
        let _ = config.build();
        let back = OptimizerConfig::from_value(&config.to_value()).unwrap();
        assert_eq!(back, config);
    }
    let sgd =
        OptimizerConfig::parse(r#"{"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": true}"#)
            .unwrap();
    assert_eq!(sgd.lr(), 0.1);
    let adam =
        OptimizerConfig::parse(r#"{"name": "adam", "betas": [0.8, 0.99], "weight_decay": 1e-4}"#)
            .unwrap();
    assert!(matches!(
        adam,
        OptimizerConfig::Adam {
            betas: [0.8, 0.99],
            ..
        }
    ));
}

#[test]
fn optimizer_errors_name_the_problem() {
    let error = OptimizerConfig::parse("adma").unwrap_err();
    assert!(
        matches!(&error, OptimConfigError::UnknownName { suggestions, .. } if suggestions.contains(&"adam".to_string())),
        "{error}"
    );
    let error = OptimizerConfig::parse(r#"{"name": "sgd", "momentun": 0.9}"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no option `momentun`") && error.contains("did you mean `momentum`"),
        "{error}"
    );
    let error = OptimizerConfig::parse(r#"{"name": "adam", "lr": 0}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("option `lr` must be > 0"), "{error}");
    let error = OptimizerConfig::parse(r#"{"name": "sgd", "momentum": 1.0}"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("option `momentum` must be in [0, 1)"),
        "{error}"
    );
    let error = OptimizerConfig::parse(r#"{"name": "sgd", "nesterov": true}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`nesterov` needs `momentum` > 0"), "{error}");
    let error = OptimizerConfig::parse(r#"{"name": "adam", "betas": 0.9}"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("option `betas` must be two numbers"),
        "{error}"
    );
    let error = OptimizerConfig::parse("not a name!")
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot read optimizer spec"), "{error}");
}

#[test]
fn schedules_follow_their_shape() {
    let lrs = |spec: &str, total: usize| -> Vec<f64> {
        let mut scheduler = ScheduleConfig::parse(spec)
            .unwrap()
            .build(0.1, total)
            .unwrap();
        (0..total).map(|_| scheduler.step().base()).collect()
    };
    assert!(lrs("constant", 5).iter().all(|&lr| lr == 0.1));
    let step = lrs(r#"{"name": "step", "step_size": 2, "gamma": 0.5}"#, 6);
    assert!(
        (step[1] - 0.1).abs() < 1e-12
            && (step[2] - 0.05).abs() < 1e-12
            && (step[4] - 0.025).abs() < 1e-12,
        "{step:?}"
    );
    let exponential = lrs(r#"{"name": "exponential", "gamma": 0.5}"#, 3);
    assert!((exponential[2] - 0.025).abs() < 1e-12, "{exponential:?}");
    let cosine = lrs(r#"{"name": "cosine", "min_lr": 0.01}"#, 11);
    assert!(
        (cosine[0] - 0.1).abs() < 1e-12 && cosine.windows(2).all(|w| w[1] <= w[0] + 1e-15),
        "{cosine:?}"
    );
    assert!(cosine[10] < 0.02, "{cosine:?}");
    let warm = lrs(
        r#"{"name": "warmup", "warmup_steps": 4, "then": "cosine"}"#,
        12,
    );
    assert!(warm[0] < warm[1] && warm[1] < warm[3], "{warm:?}");
    assert!(
        warm.iter().all(|&lr| lr <= 0.1 + 1e-12) && warm[11] < 0.02,
        "{warm:?}"
    );
    let warm_step = lrs(
        r#"{"name": "step", "step_size": 100, "warmup_steps": 2}"#,
        4,
    );
    assert!(
        warm_step[0] < 0.1 && (warm_step[3] - 0.1).abs() < 1e-12,
        "{warm_step:?}"
    );
}

#[test]
fn schedule_errors_name_the_problem() {
    let error = ScheduleConfig::parse("cosin").unwrap_err().to_string();
    assert!(
        error.contains("unknown schedule `cosin`") && error.contains("cosine"),
        "{error}"
    );
    let error = ScheduleConfig::parse(r#"{"name": "step"}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("option `step_size` is required"), "{error}");
    let error = ScheduleConfig::parse(r#"{"name": "exponential", "gamma": 2}"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("option `gamma` must be in (0, 1]"),
        "{error}"
    );
    let error = ScheduleConfig::parse(r#"{"name": "cosine", "min_lr": 0.5}"#)
        .unwrap()
        .build(0.1, 10)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("min_lr"), "{error}");
    let error = ScheduleConfig::parse("cosine")
        .unwrap()
        .build(2.0, 10)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("lr must be in (0, 1]"), "{error}");
}

#[test]
fn the_loss_goes_down_with_every_optimizer() {
    let task = Blobs::new(64);
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    for spec in [
        "sgd",
        r#"{"name": "sgd", "lr": 0.1, "momentum": 0.9}"#,
        "adam",
        "adamw",
        "rmsprop",
        r#"{"name": "adagrad", "lr": 0.1}"#,
    ] {
        let optimizer = OptimizerConfig::parse(spec).unwrap();
        let mut config = config(scratch("down"), 3, false);
        config.batch_size = 8;
        let outcome = train(
            &task,
            loss.as_ref(),
            &optimizer,
            &ScheduleConfig::default(),
            &device(),
            &config,
        )
        .unwrap();
        let epochs = &outcome.stats.epochs;
        assert_eq!(epochs.len(), 3);
        assert_eq!(epochs[0].step_losses.len(), 8);
        let first = epochs[0].step_losses[0];
        let last = epochs[2].train_loss;
        assert!(last < first, "{spec}: {first} -> {last}");
        let _ = std::fs::remove_dir_all(&config.out_dir);
    }
}

#[test]
fn resume_gives_the_same_model_as_an_uninterrupted_run() {
    let task = Blobs::new(48);
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    // Adam state and a step schedule both matter for the continuation.
    let optimizer = OptimizerConfig::parse(r#"{"name": "adam", "lr": 0.05}"#).unwrap();
    let schedule =
        ScheduleConfig::parse(r#"{"name": "step", "step_size": 4, "gamma": 0.5}"#).unwrap();
    let straight_dir = scratch("straight");
    let straight = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &schedule,
        &device(),
        &config(straight_dir.clone(), 3, false),
    )
    .unwrap();

    // A run stopped after its first epoch, then resumed to the third.
    let resumed_dir = scratch("resumed");
    train(
        &task,
        loss.as_ref(),
        &optimizer,
        &schedule,
        &device(),
        &config(resumed_dir.clone(), 1, false),
    )
    .unwrap();
    assert_eq!(Checkpoint::read(&resumed_dir).unwrap().meta.epoch, 1);
    let resumed = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &schedule,
        &device(),
        &config(resumed_dir.clone(), 3, true),
    )
    .unwrap();

    assert_eq!(
        weights(&straight.model),
        weights(&resumed.model),
        "resumed weights differ"
    );
    assert_eq!(resumed.stats.epochs.len(), 3);
    for (x, y) in straight.stats.epochs.iter().zip(&resumed.stats.epochs) {
        assert_eq!(x.step_losses, y.step_losses, "epoch {}", x.epoch);
        if x.epoch == 1 {
            // Epoch 1's statistics come back from the checkpoint's JSON, which serde_json
            // (without its `float_roundtrip` feature) parses to within one ulp.
            assert!(
                (x.val_loss - y.val_loss).abs() <= f64::EPSILON * x.val_loss.abs(),
                "{} vs {}",
                x.val_loss,
                y.val_loss
            );
        } else {
            assert_eq!(x.val_loss, y.val_loss, "epoch {}", x.epoch);
        }
    }
    for file in [
        "metrics.csv",
        "steps.csv",
        "summary.json",
        "loss.svg",
        "checkpoint.lkc",
    ] {
        assert!(resumed_dir.join(file).is_file(), "{file} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(resumed_dir.join("summary.json")).unwrap())
            .unwrap();
    assert!(
        summary["val_loss"].is_number()
            && summary["avg_loss_all_epochs"].is_number()
            && summary["val_accuracy"].is_number()
    );
    let _ = std::fs::remove_dir_all(straight_dir);
    let _ = std::fs::remove_dir_all(resumed_dir);
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let mut task = Blobs::new(32);
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let optimizer = OptimizerConfig::parse("sgd").unwrap();
    let dir = scratch("nan");
    train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &config(dir.clone(), 1, false),
    )
    .unwrap();
    let before = std::fs::read(dir.join("checkpoint.lkc")).unwrap();
    task.scale = f32::NAN;
    let error = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &config(dir.clone(), 2, true),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            TrainError::NonFiniteLoss {
                epoch: 2,
                step: 1,
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("NaN") && message.contains("last good checkpoint"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(dir.join("checkpoint.lkc")).unwrap(),
        before,
        "the checkpoint changed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_interrupted_run_keeps_its_checkpoint_and_resumes_exactly() {
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let optimizer = OptimizerConfig::parse("adam").unwrap();
    let run = |task: &Blobs, dir: &PathBuf, resume: bool, stop: Option<Arc<AtomicBool>>| {
        let mut config = config(dir.clone(), 3, resume);
        config.stop = stop;
        train(
            task,
            loss.as_ref(),
            &optimizer,
            &ScheduleConfig::default(),
            &device(),
            &config,
        )
    };
    let whole = scratch("uninterrupted");
    let uninterrupted = run(&Blobs::new(32), &whole, false, None).unwrap();

    // 32 points in batches of 16: two steps an epoch; the flag goes up while epoch 2's first
    // batch is read, so the run ends before epoch 2, step 2, with epoch 1's checkpoint.
    let dir = scratch("interrupted");
    let flag = Arc::new(AtomicBool::new(false));
    let mut task = Blobs::new(32);
    task.raise_after = Some((3, flag.clone()));
    let error = run(&task, &dir, false, Some(flag)).unwrap_err();
    assert!(
        matches!(
            error,
            TrainError::Interrupted {
                epoch: 2,
                step: 2,
                checkpoint: Some(_)
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("checkpoint is kept"), "{error}");
    assert_eq!(
        Checkpoint::read(&dir.join("checkpoint.lkc"))
            .unwrap()
            .meta
            .epoch,
        1
    );
    let resumed = run(&Blobs::new(32), &dir, true, None).unwrap();
    assert_eq!(weights(&resumed.model), weights(&uninterrupted.model));

    // A flag raised before the first step: nothing was trained, so there is no checkpoint.
    let early = scratch("interrupted-early");
    let error = run(
        &Blobs::new(32),
        &early,
        false,
        Some(Arc::new(AtomicBool::new(true))),
    )
    .unwrap_err();
    assert!(error.to_string().contains("no checkpoint"), "{error}");
    assert!(!early.join("checkpoint.lkc").exists());
    for dir in [whole, dir, early] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn two_devices_give_the_one_device_loss_curve() {
    // Batches of 12 split 6 + 6 over two workers: for losses that are means over samples,
    // the shard-weighted sum of the shard losses and gradients is the one-device step, up to
    // float rounding (the sums run in another order).
    for spec in ["cross_entropy", "dice"] {
        let loss = Registry::global().unwrap().build_spec(spec).unwrap();
        let optimizer = OptimizerConfig::parse("adam").unwrap();
        let run = |devices: Vec<Device>, name: &str| {
            let mut config = config(scratch(name), 3, false);
            config.batch_size = 12;
            config.data_parallel = devices;
            let outcome = train(
                &Blobs::new(40),
                loss.as_ref(),
                &optimizer,
                &ScheduleConfig::default(),
                &device(),
                &config,
            )
            .unwrap();
            let _ = std::fs::remove_dir_all(&config.out_dir);
            outcome
        };
        let one = run(Vec::new(), &format!("dp-one-{spec}"));
        let two = run(vec![device(), device()], &format!("dp-two-{spec}"));
        let curve = |o: &losskit_optim::TrainOutcome<Tiny>| -> Vec<f64> {
            o.stats
                .epochs
                .iter()
                .flat_map(|e| e.step_losses.clone())
                .collect()
        };
        let (a, b) = (curve(&one), curve(&two));
        assert_eq!(a.len(), b.len());
        assert_eq!(
            a.len(),
            12,
            "4 steps (12 + 12 + 12 + 4 samples) in each of 3 epochs"
        );
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{spec} step {step}: {x} vs {y}"
            );
        }
        for (x, y) in weights(&one.model).iter().zip(weights(&two.model)) {
            assert!((x - y).abs() <= 1e-4, "{spec} weights: {x} vs {y}");
        }
        // The training metrics count every sample once, whatever the split.
        let (m1, m2) = (
            &one.stats.epochs[2].train_metrics,
            &two.stats.epochs[2].train_metrics,
        );
        assert_eq!(m1.accuracy, m2.accuracy, "{spec}");
    }
}

#[test]
fn composite_losses_report_their_terms() {
    let spec = r#"{"name": "weighted_sum", "terms": [{"weight": 1.0, "loss": "cross_entropy"}, {"weight": 0.5, "loss": {"name": "focal", "gamma": 2}}]}"#;
    let loss = Registry::global()
        .unwrap()
        .build_spec(spec)
        .expect("weighted_sum builds");
    let task = Blobs::new(32);
    let dir = scratch("terms");
    let optimizer = OptimizerConfig::parse("adam").unwrap();
    let outcome = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &config(dir.clone(), 1, false),
    )
    .unwrap();
    let names: Vec<&str> = outcome.stats.epochs[0]
        .train_terms
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["cross_entropy", "focal"]);
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for column in [
        "train_term_cross_entropy",
        "val_term_cross_entropy",
        "train_term_focal",
        "val_term_focal",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "no column {column} in {header}"
        );
    }
    // The terms' means add up (with their weights applied) to the loss.
    let epoch = &outcome.stats.epochs[0];
    let sum: f64 = epoch.train_terms.iter().map(|(_, v)| v).sum();
    assert!(
        (sum - epoch.train_loss).abs() < 1e-4 * epoch.train_loss.abs().max(1.0),
        "{sum} vs {}",
        epoch.train_loss
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_checkpoint_of_another_run_or_absurd_epochs_are_refused() {
    let task = Blobs::new(32);
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let optimizer = OptimizerConfig::parse("sgd").unwrap();
    let dir = scratch("other-run");
    train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &config(dir.clone(), 1, false),
    )
    .unwrap();
    let before = std::fs::read(dir.join("checkpoint.lkc")).unwrap();
    let mut other = config(dir.clone(), 2, true);
    other.run = serde_json::json!({"test": false});
    let error = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &other,
    )
    .unwrap_err();
    assert!(error.to_string().contains("different run"), "{error}");
    // Only the epochs may differ.
    let mut longer = config(dir.clone(), 2, true);
    longer.run = serde_json::json!({"test": true, "epochs": 2});
    let mut first = config(dir.clone(), 1, false);
    first.run = serde_json::json!({"test": true, "epochs": 1});
    let dir2 = scratch("other-run-2");
    first.out_dir = dir2.clone();
    longer.out_dir = dir2.clone();
    train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &first,
    )
    .unwrap();
    train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &longer,
    )
    .unwrap();

    let error = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &config(dir.clone(), usize::MAX, true),
    )
    .unwrap_err();
    assert!(error.to_string().contains("epochs must be in"), "{error}");
    assert_eq!(
        std::fs::read(dir.join("checkpoint.lkc")).unwrap(),
        before,
        "the checkpoint changed"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn two_runs_in_threads_with_one_seed_are_identical() {
    // Two runs with the same seed at the same time, while a third thread seeds and draws from
    // the device's process-wide generator: weights, loss curves and metrics agree to the bit.
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let optimizer = OptimizerConfig::parse("adam").unwrap();
    let task = Blobs::new(48);
    let run = |name: &str| {
        let config = config(scratch(name), 3, false);
        let outcome = train(
            &task,
            loss.as_ref(),
            &optimizer,
            &ScheduleConfig::default(),
            &device(),
            &config,
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&config.out_dir);
        let curve: Vec<f64> = outcome
            .stats
            .epochs
            .iter()
            .flat_map(|e| e.step_losses.clone())
            .collect();
        let val: Vec<f64> = outcome.stats.epochs.iter().map(|e| e.val_loss).collect();
        (weights(&outcome.model), curve, val)
    };
    let done = AtomicBool::new(false);
    let (a, b) = std::thread::scope(|scope| {
        let noise = scope.spawn(|| {
            let device = device().autodiff();
            let mut seed = 0;
            while !done.load(Ordering::SeqCst) {
                device.seed(seed);
                let _ = Tensor::<1>::random([64], burn::tensor::Distribution::Default, &device);
                seed += 1;
            }
        });
        let a = scope.spawn(|| run("threads-a"));
        let b = scope.spawn(|| run("threads-b"));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        done.store(true, Ordering::SeqCst);
        noise.join().unwrap();
        (a, b)
    });
    assert_eq!(a, b);
    // And a third run alone, later, gives the same again.
    assert_eq!(run("threads-c"), a);
}

#[test]
fn patience_stops_a_run_that_stopped_improving_and_keeps_the_best_epoch() {
    let task = Blobs::new(64);
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let out = scratch("patience");
    let mut config = config(out.clone(), 30, false);
    // Accuracy on two separable blobs saturates within a few epochs; ties are no improvement.
    config.monitor = Monitor::new("val_accuracy", TaskKind::Classification).unwrap();
    config.patience = Some(2);
    let optimizer = OptimizerConfig::parse(r#"{"name": "sgd", "lr": 0.5}"#).unwrap();
    let outcome = train(
        &task,
        loss.as_ref(),
        &optimizer,
        &ScheduleConfig::default(),
        &device(),
        &config,
    )
    .unwrap();
    let stats = &outcome.stats;
    assert!(
        outcome.stopped_early() && stats.epochs.len() < 30,
        "{} epochs",
        stats.epochs.len()
    );
    let best = stats.best.clone().unwrap();
    assert_eq!(
        best.epoch + 2,
        stats.epochs.len(),
        "stopped two epochs after the best"
    );
    let best_value = stats.epochs[best.epoch - 1].val_metrics.accuracy;
    assert_eq!(best.value, best_value);
    assert!(
        stats
            .epochs
            .iter()
            .all(|e| e.val_metrics.accuracy <= best_value)
    );
    let kept = Checkpoint::read(&out.join(losskit_optim::BEST_FILE)).unwrap();
    assert_eq!(kept.meta.epoch, best.epoch);
    let last = Checkpoint::read(&out).unwrap();
    assert_eq!(last.meta.epoch, stats.epochs.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["stopped_early"], true);
    assert_eq!(summary["best"]["epoch"], best.epoch);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn initial_weights_start_where_the_source_run_ended() {
    let task = Blobs::new(64);
    let loss = Registry::global()
        .unwrap()
        .build_spec("cross_entropy")
        .unwrap();
    let source_dir = scratch("init-source");
    let source = train(
        &task,
        loss.as_ref(),
        &OptimizerConfig::parse("adam").unwrap(),
        &ScheduleConfig::default(),
        &device(),
        &config(source_dir.clone(), 3, false),
    )
    .unwrap();
    let source_val = source.stats.last().unwrap().val_loss;
    let mut warm = config(scratch("init-warm"), 1, false);
    warm.initial_model = Some(Checkpoint::read(&source_dir).unwrap().model);
    // A learning rate too small to move the weights: the first validation is the source's.
    let still = OptimizerConfig::parse(r#"{"name": "sgd", "lr": 1e-12}"#).unwrap();
    let started = train(
        &task,
        loss.as_ref(),
        &still,
        &ScheduleConfig::default(),
        &device(),
        &warm,
    )
    .unwrap();
    let warm_val = started.stats.epochs[0].val_loss;
    assert!(
        (warm_val - source_val).abs() < 1e-6,
        "{warm_val} vs {source_val}"
    );
    let fresh = train(
        &task,
        loss.as_ref(),
        &still,
        &ScheduleConfig::default(),
        &device(),
        &config(scratch("init-fresh"), 1, false),
    )
    .unwrap();
    assert!((fresh.stats.epochs[0].val_loss - source_val).abs() > 1e-3);
    let mut wrong = config(scratch("init-wrong"), 1, false);
    wrong.initial_model = Some(b"not a model".to_vec());
    let error = train(
        &task,
        loss.as_ref(),
        &still,
        &ScheduleConfig::default(),
        &device(),
        &wrong,
    )
    .unwrap_err();
    assert!(error.to_string().contains("initial weights"), "{error}");
    for dir in [source_dir, warm.out_dir, wrong.out_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
