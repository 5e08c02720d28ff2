//! The public API never panics on bad input: random (mostly invalid) shapes, dims, indices and
//! arguments must give `Ok` or an `Err`, never a panic.

use proptest::prelude::*;
use stapes::autograd::Var;
use stapes::tensor::{DType, Device, Generator, PadMode, Tensor};

fn t(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape.to_vec(), DType::F32, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_calls_return_results(
        sa in prop::collection::vec(0usize..4, 0..4),
        sb in prop::collection::vec(0usize..4, 0..4),
        dt in prop::sample::select(vec![DType::F32, DType::F64, DType::BF16, DType::I64, DType::U8]),
        d in -5i64..5, k in 0usize..5, op in 0usize..26, seed in 0u64..1000,
    ) {
        let a = t(&sa, dt, seed);
        let b = t(&sb, DType::F32, seed + 1);
        let idx = Tensor::from_vec(vec![k as i64 - 1, k as i64], [2], &Device::Cpu).unwrap();
        let r = std::panic::catch_unwind(|| {
            let _ = match op {
                0 => a.add(&b).map(|_| ()),
                1 => a.matmul(&b).map(|_| ()),
                2 => a.sum([d], k % 2 == 0).map(|_| ()),
                3 => a.softmax(d).map(|_| ()),
                4 => a.argmax(d, false).map(|_| ()),
                5 => a.reshape(sb.clone()).map(|_| ()),
                6 => a.narrow(d, k, 1).map(|_| ()),
                7 => Tensor::cat(&[&a, &b], d).map(|_| ()),
                8 => a.index_select(d, &idx).map(|_| ()),
                9 => a.gather(d, &b.to_dtype(DType::I64).unwrap()).map(|_| ()),
                10 => a.pad(&[k, 1], if k % 2 == 0 { PadMode::Reflect } else { PadMode::Constant }, 0.0).map(|_| ()),
                11 => a.conv2d(&b, None, [k, 1], [1, k], [1, 1], k).map(|_| ()),
                12 => a.max_pool2d([k, 2], [1, k], [k, 0], [1, 1], true).map(|_| ()),
                13 => a.layer_norm(&sb, None, None, 1e-5).map(|_| ()),
                14 => a.batch_norm(None, None, None, None, true, 0.1, 1e-5).map(|_| ()),
                15 => a.chunk(k, d).map(|_| ()),
                16 => a.split(&[k, 1], d).map(|_| ()),
                17 => a.embedding(&idx).map(|_| ()),
                18 => a.scatter_add(d, &b.to_dtype(DType::I64).unwrap(), &b).map(|_| ()),
                19 => b.where_cond(&a, &a).map(|_| ()),
                20 => a.masked_fill(&b.to_dtype(DType::U8).unwrap(), 1.0).map(|_| ()),
                21 => a.permute(&[k, 0]).map(|_| ()),
                22 => a.var([d], k, false).map(|_| ()),
                23 => a.avg_pool2d([2, k], [k, 1], [0, 1], false, true).map(|_| ()),
                24 => a.conv1d(&b, None, k, 1, 1, 1).map(|_| ()),
                _ => {
                    let x = Var::leaf(a.clone());
                    x.mul(&Var::constant(b.clone())).and_then(|y| y.sum_all()).and_then(|y| y.backward())
                }
            };
        });
        prop_assert!(r.is_ok(), "op {} panicked on shapes {:?} {:?} dtype {:?} d={} k={}", op, sa, sb, dt, d, k);
    }
}
