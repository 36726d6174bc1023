//! The fused operations as a burn backend extension: the Flex kernels, and the autodiff
//! wrapper that records one graph node per operation with its hand-written backward.

use burn::{
    backend::{
        Autodiff, AutodiffBackend, Backend, Dispatch, Flex,
        autodiff::{
            checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
            grads::Gradients,
            ops::{Backward, Ops, OpsKind, binary, unary},
        },
        backend_extension,
        tensor::{FloatTensor, IntTensor},
    },
    tensor::{Int, Tensor},
};

use super::flex;

/// The fused loss operations of a backend.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLossBackend: Backend {
    /// See [`super::log_softmax_nll`].
    fn log_softmax_nll(logits: FloatTensor<Self>, target: IntTensor<Self>) -> FloatTensor<Self>;
    /// See [`super::softmax_overlap_sums`]: the intersection and prediction sums stacked,
    /// `[2, N, C]` (one graph node, so that the backward pass is one pass over the logits),
    /// and the truth sums `[N, C]`.
    fn softmax_overlap_sums(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// See [`super::log_softmax_nll_sum`]: `weights` `[N·S]`, or `[1]` for one weight at
    /// every position.
    fn log_softmax_nll_sum(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        weights: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// See [`super::softmax_dice_rows_sum`]; `params` as for `softmax_dice_rows`.
    fn softmax_dice_rows_sum(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        class_scale: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// See [`super::squared_error_sum`].
    fn squared_error_sum(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// See [`super::softmax_dice_rows`]; `params` `[3]`: `smooth_nr`, `smooth_dr`, and 1
    /// (Dice) or 2 (Jaccard).
    fn softmax_dice_rows(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// See [`super::index_bounds`]: the smallest and the largest index, `[2]`.
    fn index_bounds(indices: IntTensor<Self>) -> IntTensor<Self>;
}

/// What a concrete backend provides so that its fused operations are differentiable: the
/// forward pass with what the backward keeps, and the gradients.
pub trait FusedLossKernels: Backend {
    /// The loss `[N, S]` and the log-sum-exp `[N, S]` kept for the backward pass.
    fn log_softmax_nll_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The logits' gradient given the loss's `grad` `[N, S]`.
    fn log_softmax_nll_backward(
        logits: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        target: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The loss `[1]` of [`FusedLossBackend::log_softmax_nll_sum`] and its gradient with
    /// respect to the logits, computed together.
    fn log_softmax_nll_sum_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        weights: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The loss `[1]` of [`FusedLossBackend::softmax_dice_rows_sum`] and its gradient with
    /// respect to the logits, computed together.
    fn softmax_dice_rows_sum_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        class_scale: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The loss `[1]` of [`FusedLossBackend::squared_error_sum`] and its gradient with
    /// respect to the output, computed together.
    fn squared_error_sum_forward(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `gradient` times the one-element upstream gradient `grad`.
    fn scaled_by_upstream(
        gradient: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The stacked intersection and prediction sums `[2, N, C]`, the truth sums `[N, C]`, and
    /// the log-sum-exp `[N, S]` kept for the backward pass.
    fn softmax_overlap_sums_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> [FloatTensor<Self>; 3];
    /// The logits' gradient given the stacked sums' gradient `[2, N, C]`.
    fn softmax_overlap_sums_backward(
        logits: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        target: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The loss `[N, C]` and the log-sum-exp `[N, 1]` kept for the backward pass.
    fn softmax_dice_rows_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The logits' gradient given the loss's `grad` `[N, C]`.
    fn softmax_dice_rows_backward(
        logits: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `scale · 2 · (output - target) · grad`: the output's gradient with the sum's `scale`,
    /// the target's with its negative.
    fn squared_error_backward(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

impl FusedLossKernels for Flex {
    fn log_softmax_nll_sum_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        weights: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (weights, scale) = flex::position_weights(weights, scale);
        let (loss, gradient) =
            flex::log_softmax_nll_sum_with_gradient(logits, target, weights, scale);
        (flex::tensor(vec![loss], vec![1]), gradient)
    }

    fn softmax_dice_rows_sum_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        class_scale: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, gradient) =
            flex::softmax_dice_rows_sum_with_gradient(logits, target, &params, &class_scale);
        (flex::tensor(vec![loss], vec![1]), gradient)
    }

    fn squared_error_sum_forward(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, gradient) = flex::squared_error_sum_with_gradient(output, target, scale);
        (flex::tensor(vec![loss], vec![1]), gradient)
    }

    fn scaled_by_upstream(
        gradient: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex::scaled_by_upstream(gradient, grad)
    }

    fn log_softmax_nll_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        flex::log_softmax_nll(logits, target)
    }

    fn log_softmax_nll_backward(
        logits: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        target: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex::log_softmax_nll_backward(logits, log_sum_exp, target, grad)
    }

    fn softmax_overlap_sums_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let (sums, truth, log_sum_exp) = flex::softmax_overlap_sums(logits, target);
        [sums, truth, log_sum_exp]
    }

    fn softmax_overlap_sums_backward(
        logits: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        target: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex::softmax_overlap_sums_backward(logits, log_sum_exp, target, grad)
    }

    fn squared_error_backward(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        flex::squared_error_backward(output, target, grad, scale)
    }

    fn softmax_dice_rows_forward(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        flex::softmax_dice_rows(logits, target, &params)
    }

    fn softmax_dice_rows_backward(
        logits: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex::softmax_dice_rows_backward(logits, log_sum_exp, target, &params, grad)
    }
}

impl FusedLossBackend for Flex {
    fn log_softmax_nll_sum(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        weights: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        // Without a graph, no gradient: the per-position losses, then their weighted sum.
        let (loss, _) = flex::log_softmax_nll(logits, target);
        let (weights, scale) = flex::position_weights(weights, scale);
        flex::weighted_sum(loss, weights, scale)
    }

    fn softmax_dice_rows_sum(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        class_scale: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (values, _) = flex::softmax_dice_rows(logits, target, &params);
        flex::class_weighted_sum(values, &class_scale)
    }

    fn log_softmax_nll(logits: FloatTensor<Self>, target: IntTensor<Self>) -> FloatTensor<Self> {
        flex::log_softmax_nll(logits, target).0
    }

    fn softmax_overlap_sums(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (sums, truth, _) = flex::softmax_overlap_sums(logits, target);
        (sums, truth)
    }

    fn squared_error_sum(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        flex::squared_error_sum(output, target, scale)
    }

    fn softmax_dice_rows(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex::softmax_dice_rows(logits, target, &params).0
    }

    fn index_bounds(indices: IntTensor<Self>) -> IntTensor<Self> {
        flex::index_bounds(indices)
    }
}

#[derive(Debug)]
struct LogSoftmaxNll;

impl<B: FusedLossKernels> Backward<B, 1> for LogSoftmaxNll {
    type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, log_sum_exp, target) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::log_softmax_nll_backward(logits, log_sum_exp, target, grad)
        });
    }
}

// A reduced loss whose forward pass computed the gradient: the backward pass only scales it.
#[derive(Debug)]
struct ScaledGradient;

impl<B: FusedLossKernels> Backward<B, 1> for ScaledGradient {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gradient = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::scaled_by_upstream(gradient, grad)
        });
    }
}

// The intersection and prediction sums are one graph node with a stacked `[2, N, C]` output:
// the backward pass then reads the logits once for both gradients. (As two nodes, each made a
// whole `[N, C, S]` gradient, and autodiff added the two.) Slicing the stack costs a
// zero-padded `[2, N, C]` gradient per slice, which is small.
#[derive(Debug)]
struct OverlapSums;

impl<B: FusedLossKernels> Backward<B, 1> for OverlapSums {
    type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, log_sum_exp, target) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::softmax_overlap_sums_backward(logits, log_sum_exp, target, grad)
        });
    }
}

#[derive(Debug)]
struct DiceRows;

impl<B: FusedLossKernels> Backward<B, 1> for DiceRows {
    type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, log_sum_exp, target, params) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::softmax_dice_rows_backward(logits, log_sum_exp, target, params, grad)
        });
    }
}

#[derive(Debug)]
struct SquaredErrorSum;

impl<B: FusedLossKernels> Backward<B, 2> for SquaredErrorSum {
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (output, target, scale) = ops.state;
        let (output_for_target, target_for_target) = (output.clone(), target.clone());
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| B::squared_error_backward(output, target, grad, scale),
            |grad| B::squared_error_backward(output_for_target, target_for_target, grad, -scale),
        );
    }
}

/// A reduced loss of `logits` as one graph node ([`ScaledGradient`]): when the logits are
/// tracked, `with_gradient` gives the loss and its gradient together; otherwise `loss` alone.
fn reduced_with_gradient<B: FusedLossKernels, C: CheckpointStrategy>(
    logits: FloatTensor<Autodiff<B, C>>,
    with_gradient: impl FnOnce(FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>),
    loss: impl FnOnce(FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match ScaledGradient
        .prepare::<C>([logits.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (loss, gradient) = with_gradient(logits.into_primitive());
            prep.finish(gradient, loss)
        }
        OpsKind::UnTracked(prep) => prep.finish(loss(logits.into_primitive())),
    }
}

// The forward values are computed once, on the inner backend; the graph keeps the inputs'
// primitives (shared, not copied) and the per-position log-sum-exp.
impl<B, C> FusedLossBackend for Autodiff<B, C>
where
    B: FusedLossKernels + FusedLossBackend,
    C: CheckpointStrategy,
{
    fn log_softmax_nll(logits: FloatTensor<Self>, target: IntTensor<Self>) -> FloatTensor<Self> {
        match LogSoftmaxNll
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let (loss, log_sum_exp) =
                    B::log_softmax_nll_forward(logits.clone(), target.clone());
                prep.finish((logits, log_sum_exp, target), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::log_softmax_nll(logits.into_primitive(), target))
            }
        }
    }

    fn log_softmax_nll_sum(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        weights: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let weights = weights.into_primitive();
        let weights_too = weights.clone();
        reduced_with_gradient::<B, C>(
            logits,
            |logits| B::log_softmax_nll_sum_forward(logits, target.clone(), weights, scale),
            |logits| B::log_softmax_nll_sum(logits, target.clone(), weights_too, scale),
        )
    }

    fn softmax_dice_rows_sum(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
        class_scale: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (params, class_scale) = (params.into_primitive(), class_scale.into_primitive());
        let (params_too, class_scale_too) = (params.clone(), class_scale.clone());
        reduced_with_gradient::<B, C>(
            logits,
            |logits| B::softmax_dice_rows_sum_forward(logits, target.clone(), params, class_scale),
            |logits| B::softmax_dice_rows_sum(logits, target.clone(), params_too, class_scale_too),
        )
    }

    fn softmax_overlap_sums(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let prep = OverlapSums
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful();
        let logits = logits.into_primitive();
        let [sums, truth, log_sum_exp] =
            B::softmax_overlap_sums_forward(logits.clone(), target.clone());
        let sums = match prep {
            OpsKind::Tracked(prep) => prep.finish((logits, log_sum_exp, target), sums),
            OpsKind::UnTracked(prep) => prep.finish(sums),
        };
        // The target counts do not depend on the logits.
        (sums, Self::from_inner(truth))
    }

    fn softmax_dice_rows(
        logits: FloatTensor<Self>,
        target: IntTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let params = params.into_primitive();
        match DiceRows
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let (loss, log_sum_exp) =
                    B::softmax_dice_rows_forward(logits.clone(), target.clone(), params.clone());
                prep.finish((logits, log_sum_exp, target, params), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_dice_rows(
                logits.into_primitive(),
                target,
                params,
            )),
        }
    }

    fn squared_error_sum(
        output: FloatTensor<Self>,
        target: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        // A constant target (a regression's labels): the output's gradient in the forward
        // pass. A target with a gradient of its own takes the two-parent node below.
        if !target.is_tracked() {
            let target = target.into_primitive();
            let target_too = target.clone();
            return reduced_with_gradient::<B, C>(
                output,
                |output| B::squared_error_sum_forward(output, target, scale),
                |output| B::squared_error_sum(output, target_too, scale),
            );
        }
        match SquaredErrorSum
            .prepare::<C>([output.node(), target.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (output, target) = (output.into_primitive(), target.into_primitive());
                let sum = B::squared_error_sum(output.clone(), target.clone(), scale);
                prep.finish((output, target, scale), sum)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::squared_error_sum(
                output.into_primitive(),
                target.into_primitive(),
                scale,
            )),
        }
    }

    fn index_bounds(indices: IntTensor<Self>) -> IntTensor<Self> {
        // Integer tensors carry no graph.
        B::index_bounds(indices)
    }
}

pub(super) fn log_softmax_nll(logits: Tensor<3>, target: Tensor<2, Int>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedLossBackend>::log_softmax_nll(
        logits.into_dispatch(),
        target.into_dispatch(),
    ))
}

pub(super) fn log_softmax_nll_sum(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
    weights: Tensor<1>,
    scale: f32,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedLossBackend>::log_softmax_nll_sum(
        logits.into_dispatch(),
        target.into_dispatch(),
        weights.into_dispatch(),
        scale,
    ))
}

pub(super) fn softmax_dice_rows_sum(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
    params: Tensor<1>,
    class_scale: Tensor<1>,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedLossBackend>::softmax_dice_rows_sum(
        logits.into_dispatch(),
        target.into_dispatch(),
        params.into_dispatch(),
        class_scale.into_dispatch(),
    ))
}

pub(super) fn softmax_overlap_sums(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let (sums, truth) = <Dispatch as FusedLossBackend>::softmax_overlap_sums(
        logits.into_dispatch(),
        target.into_dispatch(),
    );
    let sums = Tensor::<3>::from_dispatch(sums);
    let [_, n, c] = sums.dims();
    (
        sums.clone().slice([0..1]).reshape([n, c]),
        sums.slice([1..2]).reshape([n, c]),
        Tensor::from_dispatch(truth),
    )
}

pub(super) fn index_bounds(indices: Tensor<2, Int>) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as FusedLossBackend>::index_bounds(
        indices.into_dispatch(),
    ))
}

pub(super) fn squared_error_sum(output: Tensor<3>, target: Tensor<3>, scale: f32) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedLossBackend>::squared_error_sum(
        output.into_dispatch(),
        target.into_dispatch(),
        scale,
    ))
}

pub(super) fn softmax_dice_rows(
    logits: Tensor<3>,
    target: Tensor<2, Int>,
    params: Tensor<1>,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedLossBackend>::softmax_dice_rows(
        logits.into_dispatch(),
        target.into_dispatch(),
        params.into_dispatch(),
    ))
}
