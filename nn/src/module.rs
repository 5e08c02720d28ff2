//! The `Module` pattern: parameters and buffers with PyTorch `state_dict` names, train/eval
//! mode, moving to a device or dtype, zeroing gradients, counting parameters.
//!
//! A layer owns [`Param`]s (trainable tensors) and [`Buffer`]s (state such as BatchNorm's
//! running statistics) and implements [`Module`] by listing them with their local names and
//! listing its child modules. Every recursive operation (`named_parameters`, `state_dict`,
//! `load_state_dict`, `train`, `to_dtype`, ...) is a provided method built from those lists,
//! so names come out exactly as PyTorch spells them: `rnn.weight_ih_l0_reverse`,
//! `conv.0.weight`, `norm.running_mean`.
//!
//! Parameters are shared handles: cloning a `Param` gives another handle to the same value.
//! An optimizer replaces the value with [`Param::set_tensor`]; every forward pass reads the
//! current value through [`Param::var`], a leaf `Var` that collects the gradient.

use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result, Tensor};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A trainable tensor: a shared handle to a leaf [`Var`] that requires a gradient.
#[derive(Clone)]
pub struct Param(Arc<RwLock<Var>>);

impl Param {
    /// A new parameter holding `t` (it requires a gradient).
    pub fn new(t: Tensor) -> Param {
        Param(Arc::new(RwLock::new(Var::leaf(t))))
    }
    /// The current value as a leaf `Var`: use it in the forward pass; after `backward` its
    /// gradient is [`Param::grad`].
    pub fn var(&self) -> Var {
        read(&self.0).clone()
    }
    /// The current value.
    pub fn tensor(&self) -> Tensor {
        read(&self.0).tensor().clone()
    }
    /// The value's dims.
    pub fn dims(&self) -> Vec<usize> {
        read(&self.0).dims().to_vec()
    }
    /// The value's dtype.
    pub fn dtype(&self) -> DType {
        read(&self.0).tensor().dtype()
    }
    /// The value's device.
    pub fn device(&self) -> Device {
        *read(&self.0).tensor().device()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        read(&self.0).tensor().elem_count()
    }
    /// The accumulated gradient, if any.
    pub fn grad(&self) -> Option<Tensor> {
        read(&self.0).grad()
    }
    /// Replaces the accumulated gradient (gradient clipping, GradScaler unscaling).
    pub fn set_grad(&self, g: Option<Tensor>) {
        read(&self.0).set_grad(g)
    }
    /// Clears the gradient.
    pub fn zero_grad(&self) {
        read(&self.0).zero_grad()
    }
    /// Replaces the value with `t`, which must have the same shape and dtype (an optimizer
    /// step, loading a checkpoint). The accumulated gradient is kept.
    pub fn set_tensor(&self, t: Tensor) -> Result<()> {
        let mut slot = write(&self.0);
        if t.dims() != slot.dims() {
            return Err(Error::shape(
                "Param::set_tensor",
                format!("new value has shape {:?}, the parameter has shape {:?}", t.dims(), slot.dims()),
            ));
        }
        if t.dtype() != slot.tensor().dtype() {
            return Err(Error::DTypeMismatch { op: "Param::set_tensor", lhs: slot.tensor().dtype(), rhs: t.dtype() });
        }
        let grad = slot.grad();
        let v = Var::new(t, slot.requires_grad());
        v.set_grad(grad);
        *slot = v;
        Ok(())
    }
    /// Replaces the value with `t` of any shape, dtype or device (moving a module; the
    /// gradient is dropped, `requires_grad` kept).
    pub fn replace(&self, t: Tensor) {
        let mut slot = write(&self.0);
        *slot = Var::new(t, slot.requires_grad());
    }
    /// Whether backward computes a gradient for it (true unless frozen).
    pub fn requires_grad(&self) -> bool {
        read(&self.0).requires_grad()
    }
    /// Freezes (`false`) or unfreezes the parameter, as PyTorch's `requires_grad_`: a frozen
    /// parameter gets no gradient and backward skips the work of computing one. Its gradient is
    /// cleared.
    pub fn set_requires_grad(&self, requires_grad: bool) {
        let mut slot = write(&self.0);
        *slot = Var::new(slot.tensor().clone(), requires_grad);
    }
    /// Whether two handles refer to the same parameter.
    pub fn same(&self, other: &Param) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({:?}, {:?})", self.dims(), self.dtype())
    }
}

/// A non-trainable tensor that belongs to a module's state (running statistics, step
/// counters); saved in the `state_dict` like parameters.
#[derive(Clone)]
pub struct Buffer(Arc<RwLock<Tensor>>);

impl Buffer {
    /// A new buffer holding `t`.
    pub fn new(t: Tensor) -> Buffer {
        Buffer(Arc::new(RwLock::new(t)))
    }
    /// The current value.
    pub fn tensor(&self) -> Tensor {
        read(&self.0).clone()
    }
    /// Replaces the value (shape and dtype must match).
    pub fn set_tensor(&self, t: Tensor) -> Result<()> {
        let mut slot = write(&self.0);
        if t.dims() != slot.dims() {
            return Err(Error::shape(
                "Buffer::set_tensor",
                format!("new value has shape {:?}, the buffer has shape {:?}", t.dims(), slot.dims()),
            ));
        }
        if t.dtype() != slot.dtype() {
            return Err(Error::DTypeMismatch { op: "Buffer::set_tensor", lhs: slot.dtype(), rhs: t.dtype() });
        }
        *slot = t;
        Ok(())
    }
    /// Replaces the value with one of any shape, dtype or device.
    pub fn replace(&self, t: Tensor) {
        *write(&self.0) = t;
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tensor();
        write!(f, "Buffer({:?}, {:?})", t.dims(), t.dtype())
    }
}

/// A train/eval switch shared by a module's clones.
#[derive(Clone, Debug)]
pub struct TrainingFlag(Arc<AtomicBool>);

impl Default for TrainingFlag {
    fn default() -> Self {
        TrainingFlag(Arc::new(AtomicBool::new(true)))
    }
}

impl TrainingFlag {
    /// Whether the module is in training mode (the default, as in PyTorch).
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Sets the mode.
    pub fn set(&self, training: bool) {
        self.0.store(training, Ordering::Relaxed)
    }
}

/// A layer or model: named parameters, buffers and children.
///
/// Implement the three `local_*`/`children` lists (and `set_local_training` when the module
/// behaves differently in training); everything else is provided.
pub trait Module: Send + Sync {
    /// This module's own parameters with their local names (e.g. `weight`, `bias`), in
    /// registration order, children excluded.
    fn local_params(&self) -> Vec<(String, Param)> {
        Vec::new()
    }
    /// This module's own buffers with their local names (e.g. `running_mean`).
    fn local_buffers(&self) -> Vec<(String, Buffer)> {
        Vec::new()
    }
    /// Child modules with their names (`0`, `1`, ... for sequences; field names otherwise).
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }
    /// Sets this module's own mode flag, if it has one (children are handled by `train`).
    fn set_local_training(&self, _training: bool) {}
    /// This module as a layer that dynamic int8 quantization can convert (`Linear`, `Lstm`,
    /// `Gru`);
    /// see [`crate::quantized::quantize_dynamic`].
    fn as_quantizable(&self) -> Option<&dyn crate::quantized::Quantizable> {
        None
    }

    /// All parameters with dotted names, as in `model.named_parameters()`.
    fn named_parameters(&self) -> Vec<(String, Param)> {
        let mut out = Vec::new();
        collect_params(self, "", &mut out);
        out
    }
    /// All parameters, in `named_parameters` order.
    fn parameters(&self) -> Vec<Param> {
        self.named_parameters().into_iter().map(|(_, p)| p).collect()
    }
    /// All buffers with dotted names.
    fn named_buffers(&self) -> Vec<(String, Buffer)> {
        let mut out = Vec::new();
        collect_buffers(self, "", &mut out);
        out
    }
    /// Total number of parameter elements (`sum(p.numel() for p in model.parameters())`).
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.elem_count()).sum()
    }
    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }
    /// Sets training mode on this module and all its children.
    fn train(&self, training: bool) {
        self.set_local_training(training);
        for (_, c) in self.children() {
            c.train(training);
        }
    }
    /// Evaluation mode (`train(false)`).
    fn eval(&self) {
        self.train(false)
    }
    /// The state: parameters then buffers, by dotted name (`model.state_dict()`).
    fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        for (n, p) in self.named_parameters() {
            m.insert(n, p.tensor());
        }
        for (n, b) in self.named_buffers() {
            m.insert(n, b.tensor());
        }
        m
    }
    /// Loads a state. With `strict`, missing and unexpected keys are an error that lists
    /// them; a tensor whose shape differs is always an error. Values are converted to each
    /// parameter's dtype and device. Nothing is changed unless every check passes. Returns the
    /// keys that were missing or unexpected (empty with `strict`), as PyTorch's does.
    fn load_state_dict(&self, state: &BTreeMap<String, Tensor>, strict: bool) -> Result<IncompatibleKeys> {
        load_state(self, state, strict)
    }
    /// Loads the part of a larger state under `prefix` (`"encoder"` or `"encoder."`): what
    /// `model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in sd.items() if
    /// k.startswith("encoder.")}, strict)` does in PyTorch. Keys outside the prefix are ignored,
    /// not unexpected; with `strict`, every key of this module must be present under it.
    ///
    /// ```
    /// use stapes_nn::layers::{Linear, ReLU, Sequential};
    /// use stapes_nn::{Module, StateDictExt};
    /// let big = Sequential::new().with(Linear::new(4, 8, true)?).with(ReLU::new()).with(Linear::new(8, 2, true)?);
    /// let head = Linear::new(8, 2, true)?;
    /// head.load_state_dict_prefixed(&big.state_dict(), "2", true)?;
    /// let (mine, theirs) = (head.state_dict(), big.state_dict().filter_prefix("2"));
    /// assert_eq!(mine["weight"].to_vec::<f32>()?, theirs["weight"].to_vec::<f32>()?);
    /// # Ok::<(), stapes_tensor::Error>(())
    /// ```
    fn load_state_dict_prefixed(
        &self,
        state: &BTreeMap<String, Tensor>,
        prefix: &str,
        strict: bool,
    ) -> Result<IncompatibleKeys> {
        let part = state.filter_prefix(prefix);
        if part.is_empty() && !state.is_empty() && !self.state_dict().is_empty() {
            let some: Vec<&String> = state.keys().take(5).collect();
            return Err(Error::invalid(
                "load_state_dict_prefixed",
                format!("no key starts with the prefix {prefix:?} (the state has {} keys, e.g. {some:?})", state.len()),
            ));
        }
        load_state(self, &part, strict)
    }
    /// Converts every floating-point parameter and buffer to `dtype` (integer buffers keep
    /// their dtype, like `module.to(dtype)`).
    fn to_dtype(&self, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "Module::to_dtype", dtype, msg: "modules hold floating point" });
        }
        for (_, p) in self.named_parameters() {
            let t = p.tensor().to_dtype(dtype)?;
            p.replace(t);
        }
        for (_, b) in self.named_buffers() {
            let t = b.tensor();
            if t.dtype().is_float() {
                b.replace(t.to_dtype(dtype)?);
            }
        }
        Ok(())
    }
    /// Moves every parameter and buffer to `device`.
    fn to_device(&self, device: &Device) -> Result<()> {
        // Move everything first so a failure leaves the module untouched.
        let params: Vec<(Param, Tensor)> = self
            .named_parameters()
            .into_iter()
            .map(|(_, p)| {
                let t = p.tensor().to_device(device)?;
                Ok((p, t))
            })
            .collect::<Result<_>>()?;
        let bufs: Vec<(Buffer, Tensor)> = self
            .named_buffers()
            .into_iter()
            .map(|(_, b)| {
                let t = b.tensor().to_device(device)?;
                Ok((b, t))
            })
            .collect::<Result<_>>()?;
        for (p, t) in params {
            p.replace(t);
        }
        for (b, t) in bufs {
            b.replace(t);
        }
        Ok(())
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn collect_params<M: Module + ?Sized>(m: &M, prefix: &str, out: &mut Vec<(String, Param)>) {
    for (n, p) in m.local_params() {
        // A parameter shared between modules is listed once, like PyTorch's dedup.
        if !out.iter().any(|(_, q)| q.same(&p)) {
            out.push((join(prefix, &n), p));
        }
    }
    for (n, c) in m.children() {
        collect_params(c, &join(prefix, &n), out);
    }
}

fn collect_buffers<M: Module + ?Sized>(m: &M, prefix: &str, out: &mut Vec<(String, Buffer)>) {
    for (n, b) in m.local_buffers() {
        out.push((join(prefix, &n), b));
    }
    for (n, c) in m.children() {
        collect_buffers(c, &join(prefix, &n), out);
    }
}

/// What [`Module::load_state_dict`] did not match: `model.load_state_dict(...)`'s
/// `_IncompatibleKeys` in PyTorch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    /// The module's keys the state did not have (left unchanged).
    pub missing_keys: Vec<String>,
    /// The state's keys the module does not have (ignored).
    pub unexpected_keys: Vec<String>,
}

impl IncompatibleKeys {
    /// Whether every key matched.
    pub fn is_empty(&self) -> bool {
        self.missing_keys.is_empty() && self.unexpected_keys.is_empty()
    }
}

/// Key-prefix helpers on a `state_dict` (`BTreeMap<String, Tensor>`).
pub trait StateDictExt {
    /// The entries under `prefix` (`"encoder"` or `"encoder."`), with the prefix removed: the
    /// state of that sub-module.
    fn filter_prefix(&self, prefix: &str) -> BTreeMap<String, Tensor>;
    /// Every entry with `prefix.` put in front of its key: a sub-module's state as it sits in
    /// the larger model's.
    fn add_prefix(&self, prefix: &str) -> BTreeMap<String, Tensor>;
}

impl StateDictExt for BTreeMap<String, Tensor> {
    fn filter_prefix(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let prefix = prefix.trim_end_matches('.');
        if prefix.is_empty() {
            return self.clone();
        }
        self.iter()
            .filter_map(|(k, t)| {
                let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((rest.to_string(), t.clone()))
            })
            .collect()
    }
    fn add_prefix(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let prefix = prefix.trim_end_matches('.');
        self.iter().map(|(k, t)| (join(prefix, k), t.clone())).collect()
    }
}

fn load_state<M: Module + ?Sized>(m: &M, state: &BTreeMap<String, Tensor>, strict: bool) -> Result<IncompatibleKeys> {
    const OP: &str = "load_state_dict";
    let params = m.named_parameters();
    let bufs = m.named_buffers();
    let own: BTreeSet<&str> =
        params.iter().map(|(n, _)| n.as_str()).chain(bufs.iter().map(|(n, _)| n.as_str())).collect();
    let missing: Vec<&str> = own.iter().copied().filter(|n| !state.contains_key(*n)).collect();
    let unexpected: Vec<&str> = state.keys().map(|k| k.as_str()).filter(|k| !own.contains(k)).collect();
    if strict && (!missing.is_empty() || !unexpected.is_empty()) {
        return Err(Error::invalid(
            OP,
            format!(
                "missing keys: {missing:?}; unexpected keys: {unexpected:?} (pass strict = false to load the rest)"
            ),
        ));
    }
    let mut mis_shaped = Vec::new();
    let mut plan_p = Vec::new();
    let mut plan_b = Vec::new();
    for (n, p) in &params {
        if let Some(t) = state.get(n) {
            if t.dims() != p.dims().as_slice() {
                mis_shaped.push(format!("{n}: checkpoint {:?}, model {:?}", t.dims(), p.dims()));
                continue;
            }
            let t = t.to_dtype(p.dtype())?.to_device(&p.device())?.contiguous()?;
            plan_p.push((p.clone(), t));
        }
    }
    for (n, b) in &bufs {
        if let Some(t) = state.get(n) {
            let cur = b.tensor();
            if t.dims() != cur.dims() {
                mis_shaped.push(format!("{n}: checkpoint {:?}, model {:?}", t.dims(), cur.dims()));
                continue;
            }
            let t = t.to_dtype(cur.dtype())?.to_device(cur.device())?.contiguous()?;
            plan_b.push((b.clone(), t));
        }
    }
    if !mis_shaped.is_empty() {
        return Err(Error::shape(OP, format!("size mismatch for {}", mis_shaped.join("; "))));
    }
    for (p, t) in plan_p {
        p.set_tensor(t)?;
    }
    for (b, t) in plan_b {
        b.set_tensor(t)?;
    }
    Ok(IncompatibleKeys {
        missing_keys: missing.iter().map(|k| k.to_string()).collect(),
        unexpected_keys: unexpected.iter().map(|k| k.to_string()).collect(),
    })
}

/// A module with a single-input forward pass, the kind [`crate::layers::Sequential`] chains.
pub trait Forward: Module {
    /// Applies the module.
    fn forward(&self, x: &Var) -> Result<Var>;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Leaf {
        w: Param,
        b: Param,
        stat: Buffer,
        flag: TrainingFlag,
    }
    impl Module for Leaf {
        fn local_params(&self) -> Vec<(String, Param)> {
            vec![("weight".into(), self.w.clone()), ("bias".into(), self.b.clone())]
        }
        fn local_buffers(&self) -> Vec<(String, Buffer)> {
            vec![("running_mean".into(), self.stat.clone())]
        }
        fn set_local_training(&self, t: bool) {
            self.flag.set(t)
        }
    }
    struct Net {
        a: Leaf,
        b: Leaf,
    }
    impl Module for Net {
        fn children(&self) -> Vec<(String, &dyn Module)> {
            vec![("enc.0".into(), &self.a as &dyn Module), ("norm".into(), &self.b)]
        }
    }
    fn leaf(n: usize) -> Leaf {
        let d = Device::Cpu;
        Leaf {
            w: Param::new(Tensor::ones([n, 2], DType::F32, &d).unwrap()),
            b: Param::new(Tensor::zeros(n, DType::F32, &d).unwrap()),
            stat: Buffer::new(Tensor::zeros(n, DType::F32, &d).unwrap()),
            flag: TrainingFlag::default(),
        }
    }

    #[test]
    fn names_counts_modes() {
        let net = Net { a: leaf(3), b: leaf(4) };
        let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["enc.0.weight", "enc.0.bias", "norm.weight", "norm.bias"]);
        assert_eq!(net.num_parameters(), 6 + 3 + 8 + 4);
        let sd = net.state_dict();
        assert!(sd.contains_key("norm.running_mean"));
        assert!(net.a.flag.get());
        net.eval();
        assert!(!net.a.flag.get() && !net.b.flag.get());
    }

    #[test]
    fn load_state_dict_checks_keys_and_shapes() {
        let net = Net { a: leaf(3), b: leaf(4) };
        let mut sd = net.state_dict();
        sd.insert("enc.0.weight".into(), Tensor::full(2.0, [3, 2], DType::F64, &Device::Cpu).unwrap());
        net.load_state_dict(&sd, true).unwrap();
        assert_eq!(net.a.w.tensor().to_vec::<f32>().unwrap(), vec![2.0; 6]);
        assert_eq!(net.a.w.dtype(), DType::F32);

        let mut bad = sd.clone();
        bad.remove("norm.bias");
        bad.insert("extra".into(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
        let e = net.load_state_dict(&bad, true).unwrap_err().to_string();
        assert!(e.contains("norm.bias") && e.contains("extra"), "{e}");
        let report = net.load_state_dict(&bad, false).unwrap();
        assert_eq!(report.missing_keys, ["norm.bias"]);
        assert_eq!(report.unexpected_keys, ["extra"]);
        assert!(net.load_state_dict(&sd, true).unwrap().is_empty());

        let mut shaped = sd.clone();
        shaped.insert("norm.weight".into(), Tensor::zeros([5, 2], DType::F32, &Device::Cpu).unwrap());
        shaped.insert("enc.0.weight".into(), Tensor::full(7.0, [3, 2], DType::F32, &Device::Cpu).unwrap());
        let e = net.load_state_dict(&shaped, true).unwrap_err().to_string();
        assert!(e.contains("norm.weight") && e.contains("[5, 2]"), "{e}");
        // Nothing was changed by the failed load.
        assert_eq!(net.a.w.tensor().to_vec::<f32>().unwrap(), vec![2.0; 6]);
    }

    fn same(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|((ka, ta), (kb, tb))| {
                ka == kb && ta.dims() == tb.dims() && ta.to_vec_f64().unwrap() == tb.to_vec_f64().unwrap()
            })
    }

    #[test]
    fn prefixes_select_a_sub_module() {
        let net = Net { a: leaf(3), b: leaf(4) };
        let mut sd = net.state_dict();
        sd.insert("norm.weight".into(), Tensor::full(5.0, [4, 2], DType::F32, &Device::Cpu).unwrap());
        let part = sd.filter_prefix("norm");
        let keys: Vec<&str> = part.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["bias", "running_mean", "weight"]);
        assert!(same(&sd.filter_prefix("norm."), &part));
        assert_eq!(sd.filter_prefix("enc").len(), 3, "dotted child names keep their dots");
        assert!(sd.filter_prefix("nor").is_empty(), "a prefix matches whole name components");
        assert!(same(&part.add_prefix("norm"), &sd.filter_prefix("norm").add_prefix("norm.")));
        let back: Vec<String> = part.add_prefix("norm").into_keys().collect();
        assert_eq!(back, ["norm.bias", "norm.running_mean", "norm.weight"]);

        // model.norm.load_state_dict(...) from the whole model's state.
        let alone = leaf(4);
        let report = alone.load_state_dict_prefixed(&sd, "norm", true).unwrap();
        assert!(report.is_empty());
        assert_eq!(alone.w.tensor().to_vec::<f32>().unwrap(), vec![5.0; 8]);
        // Strict: a missing key under the prefix is an error; keys elsewhere are not unexpected.
        let mut partial = sd.clone();
        partial.remove("norm.bias");
        let e = alone.load_state_dict_prefixed(&partial, "norm", true).unwrap_err().to_string();
        assert!(e.contains("bias") && !e.contains("enc.0"), "{e}");
        assert_eq!(alone.load_state_dict_prefixed(&partial, "norm", false).unwrap().missing_keys, ["bias"]);
        // A prefix that matches nothing says so, with examples of the keys there are.
        let e = alone.load_state_dict_prefixed(&sd, "decoder", false).unwrap_err().to_string();
        assert!(e.contains("\"decoder\"") && e.contains("enc.0.bias"), "{e}");
        // A shape mismatch under the prefix is still an error.
        assert!(leaf(3).load_state_dict_prefixed(&sd, "norm", false).is_err());
    }

    #[test]
    fn set_tensor_keeps_grad_and_checks_shape() {
        let p = Param::new(Tensor::ones(3, DType::F32, &Device::Cpu).unwrap());
        let y = p.var().sum_all().unwrap();
        y.backward().unwrap();
        assert!(p.grad().is_some());
        p.set_tensor(Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert!(p.grad().is_some());
        assert!(p.set_tensor(Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).is_err());
        let q = p.clone();
        assert!(q.same(&p));
        net_to_dtype();
    }

    fn net_to_dtype() {
        let net = Net { a: leaf(3), b: leaf(4) };
        net.to_dtype(DType::BF16).unwrap();
        assert!(net.parameters().iter().all(|p| p.dtype() == DType::BF16));
        assert!(net.to_device(&Device::Cuda(0)).is_err());
        assert!(net.parameters().iter().all(|p| p.device() == Device::Cpu));
    }
}
