//! The fused layer operations as a burn backend extension: the Flex kernels, and the autodiff
//! wrapper that records one graph node per operation with its hand-written backward.

use burn::{
    backend::{
        Autodiff, AutodiffBackend, Backend, Dispatch, Flex,
        autodiff::{
            checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
            grads::Gradients,
            ops::{Backward, Ops, OpsKind, unary},
        },
        backend_extension,
        tensor::FloatTensor,
    },
    tensor::Tensor,
};

use super::flex_layers;

/// The fused layer operations of a backend.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLayerBackend: Backend {
    /// See [`super::layers::conv2d_same`].
    fn conv2d_same(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
    /// See [`super::layers::conv_transpose2d_blocks`] (the bias is always given here).
    fn conv_transpose2d_blocks(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// See [`super::layers::batch_norm_relu_train`]: the output, the batch mean and the biased
    /// batch variance.
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// See [`super::layers::max_pool2d_2x2`].
    fn max_pool2d_2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The gradient kernels of a concrete backend's fused layer operations.
pub trait FusedLayerKernels: Backend {
    /// The input's gradient (when `input_gradient`) and the weight's, given the output's.
    fn conv2d_same_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>);
    /// The input's gradient (when `input_gradient`), the weight's and the bias's, given the
    /// output's.
    #[allow(clippy::type_complexity)]
    fn conv_transpose2d_blocks_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (
        Option<FloatTensor<Self>>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
    /// The gradients of the input, `gamma` and `beta`, given the output's and the batch
    /// statistics the forward pass returned.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_relu_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3];
    /// The input's gradient given the output's.
    fn max_pool2d_2x2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl FusedLayerBackend for Flex {
    fn conv2d_same(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_layers::conv2d_same(x, weight)
    }

    fn conv_transpose2d_blocks(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_layers::conv_transpose2d_blocks(x, weight, bias)
    }

    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        flex_layers::batch_norm_relu(x, gamma, beta, epsilon)
    }

    fn max_pool2d_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_layers::max_pool2d_2x2(x)
    }
}

impl FusedLayerKernels for Flex {
    fn conv2d_same_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>) {
        flex_layers::conv2d_same_backward(x, weight, grad, input_gradient)
    }

    fn conv_transpose2d_blocks_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (
        Option<FloatTensor<Self>>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        flex_layers::conv_transpose2d_blocks_backward(x, weight, grad, input_gradient)
    }

    fn batch_norm_relu_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        flex_layers::batch_norm_relu_backward(x, gamma, beta, mean, variance, epsilon, grad)
    }

    fn max_pool2d_2x2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_layers::max_pool2d_2x2_backward(x, grad)
    }
}

#[derive(Debug)]
struct Conv2dSame;

impl<B: FusedLayerKernels> Backward<B, 2> for Conv2dSame {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [input_node, weight_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let (input_grad, weight_grad) =
            B::conv2d_same_backward(x, weight, grad, input_node.is_some());
        if let (Some(node), Some(input_grad)) = (input_node, input_grad) {
            grads.register::<B>(node.id, input_grad);
        }
        if let Some(node) = weight_node {
            grads.register::<B>(node.id, weight_grad);
        }
    }
}

#[derive(Debug)]
struct ConvTranspose2dBlocks;

impl<B: FusedLayerKernels> Backward<B, 3> for ConvTranspose2dBlocks {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [input_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let (input_grad, weight_grad, bias_grad) =
            B::conv_transpose2d_blocks_backward(x, weight, grad, input_node.is_some());
        if let (Some(node), Some(input_grad)) = (input_node, input_grad) {
            grads.register::<B>(node.id, input_grad);
        }
        for (node, grad) in [(weight_node, weight_grad), (bias_node, bias_grad)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct BatchNormRelu;

impl<B: FusedLayerKernels> Backward<B, 3> for BatchNormRelu {
    #[allow(clippy::type_complexity)]
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, mean, variance, epsilon) = ops.state;
        let computed =
            B::batch_norm_relu_train_backward(x, gamma, beta, mean, variance, epsilon, grad);
        for (node, grad) in ops.parents.into_iter().zip(computed) {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct MaxPool2x2;

impl<B: FusedLayerKernels> Backward<B, 1> for MaxPool2x2 {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::max_pool2d_2x2_backward(x, grad)
        });
    }
}

// The graph keeps the inputs' primitives (shared, not copied) and, for batch norm, the batch
// statistics.
impl<B, C> FusedLayerBackend for Autodiff<B, C>
where
    B: FusedLayerKernels + FusedLayerBackend,
    C: CheckpointStrategy,
{
    fn conv2d_same(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match Conv2dSame
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let output = B::conv2d_same(x.clone(), weight.clone());
                prep.finish((x, weight), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d_same(x.into_primitive(), weight.into_primitive()))
            }
        }
    }

    fn conv_transpose2d_blocks(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match ConvTranspose2dBlocks
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let output =
                    B::conv_transpose2d_blocks(x.clone(), weight.clone(), bias.into_primitive());
                prep.finish((x, weight), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_transpose2d_blocks(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = BatchNormRelu
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let (output, mean, variance) =
            B::batch_norm_relu_train(x.clone(), gamma.clone(), beta.clone(), epsilon);
        let output = match prep {
            OpsKind::Tracked(prep) => prep.finish(
                (x, gamma, beta, mean.clone(), variance.clone(), epsilon),
                output,
            ),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        // The statistics feed the running averages, not the graph.
        (output, Self::from_inner(mean), Self::from_inner(variance))
    }

    fn max_pool2d_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match MaxPool2x2
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let output = B::max_pool2d_2x2(x.clone());
                prep.finish(x, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::max_pool2d_2x2(x.into_primitive())),
        }
    }
}

pub(super) fn conv2d_same(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedLayerBackend>::conv2d_same(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

pub(super) fn conv_transpose2d_blocks(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedLayerBackend>::conv_transpose2d_blocks(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

pub(super) fn batch_norm_relu_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let (output, mean, variance) = <Dispatch as FusedLayerBackend>::batch_norm_relu_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    (
        Tensor::from_dispatch(output),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(variance),
    )
}

pub(super) fn max_pool2d_2x2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedLayerBackend>::max_pool2d_2x2(
        x.into_dispatch(),
    ))
}
