//! Gradient checking by central finite differences in `f64`.
//!
//! For `y = f(x_1, ..., x_k)` the check compares the analytic vector-Jacobian product
//! `vᵀ ∂y/∂x_i` (one backward pass with a fixed random seed gradient `v`) with the numeric
//! derivative of the scalar `L(x) = Σ v ⊙ f(x)` taken element by element:
//! `(L(x + h e_j) - L(x - h e_j)) / 2h`.

use crate::var::{no_grad, Var};
use stapes_tensor::{DType, Error, Generator, Result, Tensor};

/// The outcome of [`gradcheck`]: the worst absolute error and where it was.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    /// Largest `|analytic - numeric|` over all inputs and elements.
    pub max_abs_err: f64,
    /// The input index and flat element index of that error.
    pub worst: Option<(usize, usize)>,
    /// Number of elements checked.
    pub checked: usize,
}

fn weighted_sum(y: &Tensor, v: &Tensor) -> Result<f64> {
    y.mul(v)?.sum_all()?.to_scalar_f64()
}

/// Checks the gradients of `f` at `inputs` (converted to f64). Fails with an error naming the
/// worst element when `|analytic - numeric| > atol + rtol * |numeric|` anywhere.
pub fn gradcheck(
    f: impl Fn(&[Var]) -> Result<Var>,
    inputs: &[Tensor],
    eps: f64,
    atol: f64,
    rtol: f64,
) -> Result<GradcheckReport> {
    let xs: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(DType::F64)).collect::<Result<_>>()?;
    let vars: Vec<Var> = xs.iter().map(|t| Var::leaf(t.clone())).collect();
    let y = f(&vars)?;
    if y.tensor().dtype() != DType::F64 {
        return Err(Error::invalid(
            "gradcheck",
            format!("the function must compute in f64, its output is {}", y.tensor().dtype()),
        ));
    }
    let v = Tensor::randn_with(
        &mut Generator::new(1234),
        0.0,
        1.0,
        y.tensor().shape().clone(),
        DType::F64,
        y.tensor().device(),
    )?;
    y.backward_with(&v)?;
    let mut report = GradcheckReport { max_abs_err: 0.0, worst: None, checked: 0 };
    for (i, x) in xs.iter().enumerate() {
        let analytic = match vars[i].grad() {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; x.elem_count()],
        };
        let base = x.to_vec::<f64>()?;
        for j in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut p = base.clone();
                p[j] += delta;
                let xp = Tensor::from_vec(p, x.shape().clone(), x.device())?;
                let args: Vec<Var> = vars
                    .iter()
                    .enumerate()
                    .map(|(k, vk)| if k == i { Var::constant(xp.clone()) } else { Var::constant(vk.tensor().clone()) })
                    .collect();
                let out = no_grad(|| f(&args))?;
                weighted_sum(out.tensor(), &v)
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            let err = (analytic[j] - numeric).abs();
            report.checked += 1;
            if err > report.max_abs_err || err.is_nan() {
                report.max_abs_err = err;
                report.worst = Some((i, j));
            }
            let within = err <= atol + rtol * numeric.abs();
            if !within {
                return Err(Error::invalid(
                    "gradcheck",
                    format!(
                        "input {i} element {j}: analytic gradient {} vs numeric {numeric} (|diff| = {err:e})",
                        analytic[j]
                    ),
                ));
            }
        }
    }
    Ok(report)
}
