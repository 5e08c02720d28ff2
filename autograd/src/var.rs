//! `Var`, the graph nodes and the backward engine.

use stapes_tensor::{Error, Result, Tensor};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The backward of one recorded op: given the gradient of its output, the gradients of its
/// inputs (in the order they were recorded; `None` for an input that gets no gradient).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

struct NodeState {
    inputs: Vec<Var>,
    backward: BackwardFn,
}

struct Node {
    name: &'static str,
    /// `None` once the graph has been freed by a backward pass.
    state: Mutex<Option<NodeState>>,
}

struct VarInner {
    id: u64,
    tensor: Tensor,
    requires_grad: bool,
    node: Option<Node>,
    grad: Mutex<Option<Tensor>>,
}

/// A tensor that takes part in automatic differentiation.
///
/// Leaves are created with [`Var::leaf`] (requires grad) or [`Var::constant`]; every op on
/// `Var`s returns a new `Var` whose graph node remembers how to compute input gradients.
#[derive(Clone)]
pub struct Var(Arc<VarInner>);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops currently record graph nodes (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Disables graph recording on this thread while alive (like `torch.no_grad()`).
pub struct NoGradGuard {
    prev: bool,
}

impl NoGradGuard {
    /// Starts a no-grad scope.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { prev }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Runs `f` with graph recording disabled.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = NoGradGuard::new();
    f()
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Var {
    fn make(tensor: Tensor, requires_grad: bool, node: Option<Node>) -> Var {
        Var(Arc::new(VarInner { id: next_id(), tensor, requires_grad, node, grad: Mutex::new(None) }))
    }

    /// A leaf that requires a gradient (a parameter or an input to differentiate).
    pub fn leaf(tensor: Tensor) -> Var {
        Var::make(tensor, true, None)
    }

    /// A leaf that does not require a gradient.
    pub fn constant(tensor: Tensor) -> Var {
        Var::make(tensor, false, None)
    }

    /// A leaf with an explicit `requires_grad`.
    pub fn new(tensor: Tensor, requires_grad: bool) -> Var {
        Var::make(tensor, requires_grad, None)
    }

    /// Records the output of an op over `inputs` with its backward: the public way to add a
    /// fused op (CTC, LSTM, ...) with a hand-written gradient. `backward` receives the output
    /// gradient and returns one optional gradient per input, each of that input's shape.
    /// Without grad mode, or when no input requires a gradient, the result is a constant.
    pub fn from_op(name: &'static str, output: Tensor, inputs: &[&Var], backward: BackwardFn) -> Var {
        let needs = is_grad_enabled() && inputs.iter().any(|v| v.requires_grad());
        if !needs {
            return Var::constant(output);
        }
        let state = NodeState { inputs: inputs.iter().map(|v| (*v).clone()).collect(), backward };
        Var::make(output, true, Some(Node { name, state: Mutex::new(Some(state)) }))
    }

    /// The value.
    pub fn tensor(&self) -> &Tensor {
        &self.0.tensor
    }
    /// The value's dims.
    pub fn dims(&self) -> &[usize] {
        self.0.tensor.dims()
    }
    /// Whether gradients flow to (or through) this variable.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    /// Whether this is a leaf (not the output of a recorded op).
    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }
    /// Name of the op that produced this variable, if any.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.node.as_ref().map(|n| n.name)
    }
    /// The accumulated gradient of a leaf (`None` before any backward reached it).
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    /// Replaces the accumulated gradient (used by optimizers and gradient clipping).
    pub fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g;
    }
    /// A constant with the same value, cut from the graph.
    pub fn detach(&self) -> Var {
        Var::constant(self.0.tensor.clone())
    }

    /// Backpropagates from a one-element output (seed gradient 1).
    pub fn backward(&self) -> Result<()> {
        if self.tensor().elem_count() != 1 {
            return Err(Error::shape(
                "backward",
                format!("grad can be implicitly created only for one-element outputs, this one has shape {:?}; use backward_with", self.dims()),
            ));
        }
        let seed = self.tensor().ones_like()?;
        self.backward_with_options(&seed, false)
    }

    /// Backpropagates with an explicit seed gradient of the output's shape.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        self.backward_with_options(grad, false)
    }

    /// Backpropagates with a seed gradient; with `retain_graph` the graph is kept for another
    /// backward pass, otherwise each node's saved tensors are freed once used.
    pub fn backward_with_options(&self, grad: &Tensor, retain_graph: bool) -> Result<()> {
        if grad.dims() != self.dims() {
            return Err(Error::shape(
                "backward",
                format!("seed gradient has shape {:?}, the output has shape {:?}", grad.dims(), self.dims()),
            ));
        }
        if grad.dtype() != self.tensor().dtype() {
            return Err(Error::DTypeMismatch { op: "backward", lhs: self.tensor().dtype(), rhs: grad.dtype() });
        }
        if !self.requires_grad() {
            return Err(Error::invalid(
                "backward",
                "the output does not require grad (no input requires grad, or it was computed under no_grad)",
            ));
        }
        let _no_grad = NoGradGuard::new();
        let order = self.topo_order();
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.0.id, grad.clone());
        for v in order.iter().rev() {
            let Some(g) = grads.remove(&v.0.id) else { continue };
            match &v.0.node {
                None => {
                    if v.requires_grad() {
                        let mut slot = v.0.grad.lock().unwrap_or_else(|e| e.into_inner());
                        *slot = Some(match slot.take() {
                            Some(prev) => prev.add(&g)?,
                            None => g.contiguous()?,
                        });
                    }
                }
                Some(node) => {
                    let mut guard = node.state.lock().unwrap_or_else(|e| e.into_inner());
                    let state = guard.as_ref().ok_or_else(|| {
                        Error::invalid("backward", format!("the graph through `{}` was already freed by an earlier backward; pass retain_graph = true to backward twice", node.name))
                    })?;
                    let input_grads = (state.backward)(&g)?;
                    if input_grads.len() != state.inputs.len() {
                        return Err(Error::invalid(
                            "backward",
                            format!(
                                "op `{}` returned {} gradients for {} inputs",
                                node.name,
                                input_grads.len(),
                                state.inputs.len()
                            ),
                        ));
                    }
                    for (inp, ig) in state.inputs.iter().zip(input_grads) {
                        let Some(ig) = ig else { continue };
                        if !inp.requires_grad() {
                            continue;
                        }
                        if ig.dims() != inp.dims() {
                            return Err(Error::shape(
                                "backward",
                                format!(
                                    "op `{}` produced a gradient of shape {:?} for an input of shape {:?}",
                                    node.name,
                                    ig.dims(),
                                    inp.dims()
                                ),
                            ));
                        }
                        let acc = match grads.remove(&inp.0.id) {
                            Some(prev) => prev.add(&ig)?,
                            None => ig,
                        };
                        grads.insert(inp.0.id, acc);
                    }
                    if !retain_graph {
                        *guard = None;
                    }
                }
            }
        }
        Ok(())
    }

    /// Variables reachable from `self` that require grad, in topological order (inputs first),
    /// by an iterative depth-first search (no recursion: long unrolled graphs are fine).
    fn topo_order(&self) -> Vec<Var> {
        let mut order = Vec::new();
        let mut visited = std::collections::HashSet::new();
        let mut stack: Vec<(Var, bool)> = vec![(self.clone(), false)];
        while let Some((v, expanded)) = stack.pop() {
            if expanded {
                order.push(v);
                continue;
            }
            if !visited.insert(v.0.id) {
                continue;
            }
            stack.push((v.clone(), true));
            if let Some(node) = &v.0.node {
                let guard = node.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(state) = guard.as_ref() {
                    for inp in &state.inputs {
                        if inp.requires_grad() && !visited.contains(&inp.0.id) {
                            stack.push((inp.clone(), false));
                        }
                    }
                }
            }
        }
        order
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}, requires_grad={}, op={:?})", self.tensor(), self.requires_grad(), self.op_name())
    }
}
