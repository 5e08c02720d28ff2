//! `Sequential`: layers applied one after the other, named `0`, `1`, ... in the state dict.

use crate::module::{Forward, Module};
use stapes_autograd::Var;
use stapes_tensor::Result;

/// An ordered chain of layers (`nn.Sequential`): the forward pass feeds each layer's output
/// to the next. Children are named by position, so a `Sequential` of `[Conv2d, BatchNorm2d,
/// ReLU]` has the state-dict keys `0.weight`, `0.bias`, `1.weight`, ..., `1.running_mean`,
/// as in PyTorch; `train`/`eval` reach every layer.
///
/// ```
/// use stapes_nn::layers::{Linear, ReLU, Sequential};
/// use stapes_nn::Module;
/// let mut net = Sequential::new();
/// net.push(Linear::new(4, 8, true)?).push(ReLU).push(Linear::new(8, 2, false)?);
/// let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight"]);
/// # Ok::<(), stapes_tensor::Error>(())
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Forward>>,
}

impl Sequential {
    /// An empty chain (its forward pass returns the input).
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer; returns `self` for chaining.
    pub fn push<L: Forward + 'static>(&mut self, layer: L) -> &mut Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends an already boxed layer.
    pub fn push_boxed(&mut self, layer: Box<dyn Forward>) -> &mut Self {
        self.layers.push(layer);
        self
    }

    /// Builder form of [`Sequential::push`].
    pub fn with<L: Forward + 'static>(mut self, layer: L) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the chain has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer at `index`.
    pub fn get(&self, index: usize) -> Option<&dyn Forward> {
        self.layers.get(index).map(|l| l.as_ref())
    }

    /// The layers in order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Forward> {
        self.layers.iter().map(|l| l.as_ref())
    }
}

impl Module for Sequential {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().enumerate().map(|(i, l)| (i.to_string(), l.as_ref() as &dyn Module)).collect()
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Var) -> Result<Var> {
        let mut y = x.clone();
        for layer in &self.layers {
            y = layer.forward(&y)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{BatchNorm1d, Dropout, Linear, ReLU};
    use stapes_tensor::{DType, Device, Tensor};

    #[test]
    fn names_modes_and_chaining() {
        let net = Sequential::new()
            .with(Linear::new(3, 4, true).unwrap())
            .with(BatchNorm1d::new(4).unwrap())
            .with(ReLU)
            .with(Dropout::new(0.5).unwrap());
        assert_eq!(net.len(), 4);
        let keys: Vec<String> = net.state_dict().into_keys().collect();
        assert_eq!(
            keys,
            ["0.bias", "0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean", "1.running_var", "1.weight"]
        );
        let x = Var::constant(Tensor::randn([5, 3], DType::F32, &Device::Cpu).unwrap());
        net.eval();
        let y1 = net.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        let y2 = net.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        // In evaluation dropout is off and batch norm uses its (untouched) running stats.
        assert_eq!(y1, y2);
        assert!(y1.iter().all(|&v| v >= 0.0));
        net.train(true);
        net.forward(&x).unwrap();
        let sd = net.state_dict();
        assert_eq!(sd["1.num_batches_tracked"].to_scalar::<i64>().unwrap(), 1);
        assert!(Sequential::new().forward(&x).unwrap().tensor().to_vec::<f32>().unwrap().len() == 15);
        assert!(net.forward(&Var::constant(Tensor::zeros([5, 2], DType::F32, &Device::Cpu).unwrap())).is_err());
    }
}
