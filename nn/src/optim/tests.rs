//! Unit tests of the optimizers: resuming from a saved state is bit-identical, load errors,
//! skipped parameters, half-precision parameters, schedules.

use super::*;
use crate::layers::Linear;
use crate::module::{Forward, Module};
use crate::schedule::StepLR;
use stapes_autograd::Var;
use stapes_tensor::Device;

struct Mlp {
    l1: Linear,
    l2: Linear,
}

impl Module for Mlp {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("l1".into(), &self.l1 as &dyn Module), ("l2".into(), &self.l2)]
    }
}

/// The parameters come from a generator of their own, not the process-wide one: tests run in
/// parallel, and two models built "with the same seed" must really be equal.
fn mlp(seed: u64, dtype: DType) -> Mlp {
    let m = Mlp {
        l1: Linear::new_with(4, 5, true, DType::F32, &Device::Cpu).unwrap(),
        l2: Linear::new_with(5, 3, true, DType::F32, &Device::Cpu).unwrap(),
    };
    let mut g = stapes_tensor::Generator::new(seed);
    for p in m.parameters() {
        let b = 1.0 / (*p.dims().last().unwrap_or(&1) as f64).sqrt();
        p.set_tensor(Tensor::rand_with(&mut g, -b, b, p.dims(), DType::F32, &Device::Cpu).unwrap()).unwrap();
    }
    m.to_dtype(dtype).unwrap();
    m
}

fn data() -> (Var, Tensor) {
    let x: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let x = Tensor::from_vec(x, [6, 4], &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![0i64, 2, 1, 1, 0, 2], [6], &Device::Cpu).unwrap();
    (Var::constant(x), y)
}

fn train(m: &Mlp, opt: &mut dyn Optimizer, steps: usize) -> Vec<f32> {
    let (x, y) = data();
    let x = x.to_dtype(m.l1.weight.dtype()).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        opt.zero_grad();
        let h = m.l1.forward(&x).unwrap().tanh().unwrap();
        let out = m.l2.forward(&h).unwrap();
        let loss = crate::loss::cross_entropy(&out, &y, &Default::default()).unwrap();
        losses.push(loss.tensor().to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap());
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    losses
}

fn bits(m: &Mlp) -> Vec<Vec<u64>> {
    m.parameters().iter().map(|p| p.tensor().to_vec_f64().unwrap().iter().map(|x| x.to_bits()).collect()).collect()
}

type MakeOpt = fn(Vec<Param>) -> Box<dyn Optimizer>;

fn makers() -> Vec<(&'static str, MakeOpt)> {
    vec![
        ("sgd", |p| Box::new(Sgd::new(p, SgdConfig { lr: 0.1, ..Default::default() }).unwrap())),
        ("sgd_nesterov", |p| {
            let c = SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-3, ..Default::default() };
            Box::new(Sgd::new(p, c).unwrap())
        }),
        ("adam_amsgrad", |p| {
            let c = AdamConfig { lr: 1e-2, amsgrad: true, weight_decay: 1e-2, ..AdamConfig::adam() };
            Box::new(Adam::new(p, c).unwrap())
        }),
        ("adamw", |p| Box::new(Adam::new(p, AdamConfig { lr: 1e-2, ..AdamConfig::adamw() }).unwrap())),
    ]
}

#[test]
fn resume_is_bit_identical() {
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for (name, make) in makers() {
            let a = mlp(7, dtype);
            let mut oa = make(a.parameters());
            let la = train(&a, oa.as_mut(), 12);

            let b = mlp(7, dtype);
            let mut ob = make(b.parameters());
            let mut lb = train(&b, ob.as_mut(), 6);
            let (tensors, meta) = ob.state_dict().unwrap();
            drop(ob);
            // through JSON text too, as a checkpoint file would
            let meta: Value = serde_json::from_str(&meta.to_string()).unwrap();
            let mut oc = make(b.parameters());
            oc.load_state_dict(&tensors, &meta).unwrap();
            lb.extend(train(&b, oc.as_mut(), 6));

            assert_eq!(la, lb, "{name} {dtype}: losses");
            assert_eq!(bits(&a), bits(&b), "{name} {dtype}: parameters after resuming");
            assert!(la[11] < la[0], "{name} {dtype}: the loss went from {} to {}", la[0], la[11]);
            assert!(a.parameters().iter().all(|p| p.dtype() == dtype));
        }
    }
}

#[test]
fn load_state_dict_rejects_mismatches() {
    let m = mlp(1, DType::F32);
    let c = AdamConfig { amsgrad: true, ..AdamConfig::adam() };
    let mut opt = Adam::new(m.parameters(), c).unwrap();
    train(&m, &mut opt, 2);
    let (t, j) = opt.state_dict().unwrap();
    assert_eq!(t.len(), 4 * 3);
    assert_eq!(j["state"]["3"]["step"], 2);

    // fewer parameters
    let mut short = Adam::new(m.parameters()[..3].to_vec(), c).unwrap();
    let e = short.load_state_dict(&t, &j).unwrap_err().to_string();
    assert!(e.contains("4 parameters") && e.contains("has 3"), "{e}");
    // another kind
    let mut sgd = Sgd::new(m.parameters(), SgdConfig::default()).unwrap();
    assert!(sgd.load_state_dict(&t, &j).unwrap_err().to_string().contains("`Adam`"));
    // a wrong shape
    let mut bad = t.clone();
    bad.insert("state.1.exp_avg".into(), Tensor::zeros([2], DType::F32, &Device::Cpu).unwrap());
    let mut fresh = Adam::new(m.parameters(), c).unwrap();
    let e = fresh.load_state_dict(&bad, &j).unwrap_err().to_string();
    assert!(e.contains("state.1.exp_avg") && e.contains("[2]"), "{e}");
    // a missing tensor, an unknown one
    let mut missing = t.clone();
    missing.remove("state.0.max_exp_avg_sq");
    assert!(fresh.load_state_dict(&missing, &j).is_err());
    let mut extra = t.clone();
    extra.insert("state.9.exp_avg".into(), Tensor::zeros([2], DType::F32, &Device::Cpu).unwrap());
    assert!(fresh.load_state_dict(&extra, &j).unwrap_err().to_string().contains("state.9.exp_avg"));
    // a wrong dtype
    let mut f64s = t.clone();
    f64s.insert("state.0.exp_avg".into(), t["state.0.exp_avg"].to_dtype(DType::F64).unwrap());
    assert!(fresh.load_state_dict(&f64s, &j).unwrap_err().to_string().contains("float64"));
    // nothing was loaded by the failed attempts
    assert!(fresh.state_dict().unwrap().0.is_empty());
    fresh.load_state_dict(&t, &j).unwrap();
    assert_eq!(fresh.state_dict().unwrap().0.len(), 12);
}

#[test]
fn params_without_grad_are_skipped_and_bad_config_fails() {
    let m = mlp(3, DType::F32);
    let frozen = m.l1.weight.tensor();
    let mut opt = Adam::new(m.parameters(), AdamConfig::adam()).unwrap();
    let (x, y) = data();
    // only l2 gets gradients
    let h = Var::constant(m.l1.forward(&x).unwrap().tensor().clone());
    let loss = crate::loss::cross_entropy(&m.l2.forward(&h).unwrap(), &y, &Default::default()).unwrap();
    loss.backward().unwrap();
    opt.step().unwrap();
    assert!(m.l1.weight.tensor().equal(&frozen).unwrap());
    let (t, j) = opt.state_dict().unwrap();
    assert!(!t.contains_key("state.0.exp_avg") && t.contains_key("state.2.exp_avg"));
    assert!(j["state"].get("0").is_none());

    assert!(Sgd::new(m.parameters(), SgdConfig { nesterov: true, ..Default::default() }).is_err());
    assert!(Sgd::new(m.parameters(), SgdConfig { lr: -1.0, ..Default::default() }).is_err());
    assert!(Adam::new(m.parameters(), AdamConfig { betas: (1.0, 0.9), ..AdamConfig::adam() }).is_err());
    let ints = Param::new(Tensor::zeros(2, DType::I64, &Device::Cpu).unwrap());
    assert!(Adam::new(vec![ints], AdamConfig::adam()).is_err());
}

#[test]
fn schedule_drives_lr_and_momentum() {
    let m = mlp(4, DType::F32);
    let mut opt = Sgd::new(m.parameters(), SgdConfig { lr: 1.0, momentum: 0.9, ..Default::default() }).unwrap();
    let mut s = StepLR::new(0.5, 2, 0.1).unwrap();
    for _ in 0..3 {
        s.step();
    }
    opt.apply_schedule(&s);
    assert!((opt.lr() - 0.05).abs() < 1e-15);
    assert_eq!(opt.momentum(), 0.9);
    let mut c = crate::schedule::CyclicLR::new(crate::schedule::CyclicLRConfig::default()).unwrap();
    c.step();
    let mut adam = Adam::new(m.parameters(), AdamConfig::adam()).unwrap();
    adam.apply_schedule(&c);
    assert_eq!(Some(adam.momentum()), c.momentum());
    assert_eq!(adam.lr(), c.lr());
}
