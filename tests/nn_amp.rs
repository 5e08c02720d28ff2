//! Mixed precision end to end on the CPU: a small MLP trained with autocast (bf16) and a
//! GradScaler ends within 1% of the loss of the same model trained in f32, and a step with an
//! injected inf gradient is skipped while the scale backs off.

use stapes_autograd::Var;
use stapes_nn::amp::{autocast, GradScaler, GradScalerConfig};
use stapes_nn::layers::Linear;
use stapes_nn::{Forward, Module, Param};
use stapes_tensor::{DType, Device, Generator, Result, Tensor};

struct Mlp {
    l1: Linear,
    l2: Linear,
    l3: Linear,
}

impl Module for Mlp {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("l1".into(), &self.l1 as &dyn Module), ("l2".into(), &self.l2), ("l3".into(), &self.l3)]
    }
}

impl Mlp {
    fn new() -> Result<Mlp> {
        Ok(Mlp { l1: Linear::new(16, 64, true)?, l2: Linear::new(64, 64, true)?, l3: Linear::new(64, 4, true)? })
    }
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.l1.forward(x)?.tanh()?;
        let h = self.l2.forward(&h)?.tanh()?;
        self.l3.forward(&h)
    }
}

fn sgd(params: &[Param], lr: f64) -> Result<()> {
    for p in params {
        if let Some(g) = p.grad() {
            p.set_tensor(p.tensor().sub(&g.mul_scalar(lr)?)?)?;
        }
    }
    Ok(())
}

/// Sets every parameter from its own generator (U(±1/sqrt(fan_in)) for weights, U(±0.1) for
/// biases), so the two tests in this file, running in parallel, do not race on the
/// process-wide generator that `Linear::new` draws from.
fn reinit(m: &Mlp, seed: u64) {
    let mut g = Generator::new(seed);
    for p in m.parameters() {
        let d = p.dims();
        let b = if d.len() == 2 { 1.0 / (d[1] as f64).sqrt() } else { 0.1 };
        p.set_tensor(Tensor::rand_with(&mut g, -b, b, d, DType::F32, &Device::Cpu).unwrap()).unwrap();
    }
}

/// A fixed regression task: targets from a random teacher network.
fn data() -> (Tensor, Tensor) {
    let mut g = Generator::new(7);
    let x = Tensor::randn_with(&mut g, 0.0, 1.0, [256, 16], DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::randn_with(&mut g, 0.0, 0.5, [16, 4], DType::F32, &Device::Cpu).unwrap();
    let y = x.matmul(&w).unwrap().sin().unwrap();
    (x, y)
}

fn train(mixed: bool, steps: usize) -> f64 {
    let model = Mlp::new().unwrap();
    reinit(&model, 1234);
    let params = model.parameters();
    let (x, y) = data();
    let (x, y) = (Var::constant(x), Var::constant(y));
    let mut scaler = GradScaler::new(GradScalerConfig { enabled: mixed, ..GradScalerConfig::default() }).unwrap();
    let mut last = f64::NAN;
    for _ in 0..steps {
        model.zero_grad();
        let loss = if mixed {
            autocast(DType::BF16, || -> Result<Var> { model.forward(&x)?.sub(&y)?.sqr()?.mean_all() }).unwrap().unwrap()
        } else {
            model.forward(&x).unwrap().sub(&y).unwrap().sqr().unwrap().mean_all().unwrap()
        };
        assert_eq!(loss.tensor().dtype(), DType::F32, "losses run in f32 under autocast");
        last = loss.tensor().to_scalar_f64().unwrap();
        scaler.scale(&loss).unwrap().backward().unwrap();
        assert!(scaler.step(&params, || sgd(&params, 0.1)).unwrap());
        scaler.update().unwrap();
    }
    last
}

#[test]
fn autocast_bf16_with_grad_scaler_matches_f32_training() {
    let f32_loss = train(false, 200);
    let amp_loss = train(true, 200);
    let first = {
        let m = Mlp::new().unwrap();
        reinit(&m, 1234);
        let (x, y) = data();
        m.forward(&Var::constant(x))
            .unwrap()
            .tensor()
            .sub(&y)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar_f64()
            .unwrap()
    };
    println!("initial loss {first:.6}, f32 after 200 steps {f32_loss:.6}, autocast bf16 {amp_loss:.6}");
    assert!(f32_loss < 0.7 * first, "training must make progress: {first} -> {f32_loss}");
    let rel = (amp_loss - f32_loss).abs() / f32_loss;
    assert!(rel <= 0.01, "autocast loss {amp_loss} vs f32 {f32_loss}: {:.3}% apart", 100.0 * rel);
}

#[test]
fn injected_inf_skips_the_step_and_backs_off() {
    let model = Mlp::new().unwrap();
    reinit(&model, 5);
    let params = model.parameters();
    let (x, y) = data();
    let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
    let before: Vec<Vec<f32>> = params.iter().map(|p| p.tensor().to_vec::<f32>().unwrap()).collect();
    let loss = autocast(DType::BF16, || -> Result<Var> {
        model.forward(&Var::constant(x.clone()))?.sub(&Var::constant(y.clone()))?.sqr()?.mean_all()
    })
    .unwrap()
    .unwrap();
    scaler.scale(&loss).unwrap().backward().unwrap();
    // Inject an inf into one gradient, as an f16 overflow would.
    let g = params[2].grad().unwrap();
    let mut v = g.to_vec::<f32>().unwrap();
    v[3] = f32::INFINITY;
    params[2].set_grad(Some(Tensor::from_vec(v, g.dims(), &Device::Cpu).unwrap()));
    let stepped = scaler.step(&params, || sgd(&params, 0.1)).unwrap();
    scaler.update().unwrap();
    assert!(!stepped);
    assert_eq!(scaler.get_scale(), 32768.0);
    assert_eq!(scaler.skipped_steps(), 1);
    let after: Vec<Vec<f32>> = params.iter().map(|p| p.tensor().to_vec::<f32>().unwrap()).collect();
    assert_eq!(before, after, "a skipped step leaves the parameters untouched");
}
