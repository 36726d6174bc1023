//! Data parallelism: each step's batch split into one shard per device, as PyTorch's
//! `DistributedDataParallel` does within one process.
//!
//! Each device has a worker thread that lives for the whole run (burn's `RunningState`, which
//! holds batch-norm statistics, keeps one value per thread and averages them, so the threads
//! must stay the same from step to step). A step sends every worker a replica of the model
//! (`Module::fork` onto its device: the same parameter ids, fresh autodiff leaves) and its
//! shard; each worker runs forward and backward of `loss × shard / batch`; the gradients are
//! moved to the main device and summed with burn's `GradientsAccumulator`, and the optimizer
//! takes one step there.
//!
//! What "the same loss" means across shards: the step's loss is the shard means weighted by
//! shard size. For a loss that is a mean over samples (cross-entropy without `ignore_index`,
//! MSE, Dice with `batch: false`, ...) that is exactly the one-device loss, and so are the
//! gradients (up to float rounding). For a loss computed over the whole batch at once (Dice or
//! Tversky with `batch: true`, weighted cross-entropy normalised by the batch's weights,
//! `ignore_index` positions, `"balanced"` weights) it is the size-weighted mean of per-shard
//! losses, as in PyTorch DDP, where each rank computes its loss on its own shard. Batch norm
//! likewise normalises each shard with its own statistics.

use std::sync::mpsc::{Receiver, Sender, channel};

use burn::{
    module::Module,
    optim::{GradientsAccumulator, GradientsParams},
    tensor::Device,
};
use losskit_core::{Loss, Reduction, TrainingProgress};

use crate::{
    error::TrainError,
    metrics::Tally,
    train::{Task, scalar, tally_of},
};

/// What one forward and backward pass gives the loop.
pub(crate) struct StepResult {
    /// d(loss)/d(parameters), weighted by the shard's share of the batch.
    pub grads: GradientsParams,
    /// The loss (the shard-size-weighted mean over shards).
    pub value: f64,
    /// Each term of a composite loss, weighted like `value`.
    pub terms: Vec<(String, f64)>,
    /// The training predictions against their targets.
    pub tally: Tally,
}

/// Forward and backward of `loss × weight` on the training samples `indices` at `progress`,
/// with `model` on `device`. A non-finite loss skips the backward pass (the loop stops on it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn shard_step<T: Task>(
    task: &T,
    loss: &dyn Loss,
    model: &T::Model,
    indices: &[usize],
    progress: TrainingProgress,
    device: &Device,
    weight: f64,
) -> Result<StepResult, TrainError> {
    let input = task
        .train_input_with(
            model,
            indices,
            progress.epoch,
            device,
            &loss.auxiliary_inputs(),
        )?
        .with_progress(progress);
    let mut tally = tally_of(task);
    tally.add(&input);
    let value = loss.forward(input, Reduction::Mean)?;
    let current = scalar(value.value.clone().detach());
    let terms = value
        .terms
        .iter()
        .map(|(name, term)| (name.clone(), scalar(term.clone().detach()) * weight))
        .collect();
    let grads = if current.is_finite() {
        // A one-shard step keeps the exact one-device arithmetic (no multiplication by 1).
        let scaled = if weight == 1.0 {
            value.value
        } else {
            value.value.mul_scalar(weight)
        };
        GradientsParams::from_grads(scaled.backward(), model)
    } else {
        GradientsParams::new()
    };
    Ok(StepResult {
        grads,
        value: current * weight,
        terms,
        tally,
    })
}

struct Job<M> {
    model: M,
    indices: Vec<usize>,
    progress: TrainingProgress,
    weight: f64,
}

/// One worker thread per device, for the whole run.
pub(crate) struct Workers<M> {
    jobs: Vec<Sender<Job<M>>>,
    results: Vec<Receiver<Result<StepResult, TrainError>>>,
    devices: Vec<Device>,
    /// An empty tally of the task's metrics.
    empty: Tally,
}

impl<M: Module> Workers<M> {
    /// Starts one worker per device in `scope`.
    pub(crate) fn start<'scope, 'env, T: Task<Model = M>>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        task: &'env T,
        loss: &'env dyn Loss,
        devices: &[Device],
    ) -> Self
    where
        M: 'scope,
    {
        let mut jobs = Vec::new();
        let mut results = Vec::new();
        for device in devices {
            let (job_sender, job_receiver) = channel::<Job<M>>();
            let (result_sender, result_receiver) = channel();
            let device = device.clone();
            scope.spawn(move || {
                for job in job_receiver {
                    let replica = job.model.fork(&device);
                    let result = shard_step(
                        task,
                        loss,
                        &replica,
                        &job.indices,
                        job.progress,
                        &device,
                        job.weight,
                    );
                    if result_sender.send(result).is_err() {
                        break;
                    }
                }
            });
            jobs.push(job_sender);
            results.push(result_receiver);
        }
        Self {
            jobs,
            results,
            devices: devices.to_vec(),
            empty: tally_of(task),
        }
    }

    /// One step over `batch`, split across the workers; the gradients summed on `main`.
    pub(crate) fn step(
        &self,
        model: &M,
        batch: &[usize],
        progress: TrainingProgress,
        main: &Device,
    ) -> Result<StepResult, TrainError> {
        let per_shard = batch.len().div_ceil(self.devices.len());
        let total = batch.len() as f64;
        let mut used = 0;
        for (shard, jobs) in batch.chunks(per_shard).zip(&self.jobs) {
            let job = Job {
                model: model.clone(),
                indices: shard.to_vec(),
                progress,
                weight: shard.len() as f64 / total,
            };
            jobs.send(job).map_err(|_| worker_lost())?;
            used += 1;
        }
        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut combined = StepResult {
            grads: GradientsParams::new(),
            value: 0.0,
            terms: Vec::new(),
            tally: self.empty.clone(),
        };
        // Every started shard is collected, even after an error, so no result is left queued.
        let mut first_error = None;
        for results in &self.results[..used] {
            match results.recv().map_err(|_| worker_lost()).and_then(|r| r) {
                Ok(shard) => {
                    combined.value += shard.value;
                    for (name, value) in shard.terms {
                        match combined.terms.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, sum)) => *sum += value,
                            None => combined.terms.push((name, value)),
                        }
                    }
                    combined.tally.merge(&shard.tally);
                    accumulator.accumulate(model, shard.grads.to_device(main, model));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        combined.grads = accumulator.grads();
        Ok(combined)
    }
}

fn worker_lost() -> TrainError {
    TrainError::Task("a data-parallel worker stopped unexpectedly (see the message above)".into())
}
