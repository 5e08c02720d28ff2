//! Helpers shared by the integration tests: the one comparison helper ([`assert_close`]), the
//! golden-file loader ([`load_golden`]) and a small JSON reader for the golden files' parameters.
//!
//! Each test binary that says `mod common;` compiles this module on its own and may use only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use half::{bf16, f16};
use stapes::tensor::{DType, Device, Tensor};

// ------------------------------------------------------------------------------------------------
// assert_close
// ------------------------------------------------------------------------------------------------

/// Default `(rtol, atol)` for a dtype, the same as `torch.testing.assert_close`.
/// Integer and mask dtypes compare exactly.
pub fn default_tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1.3e-6, 1e-5),
        DType::F64 => (1e-7, 1e-7),
        DType::F16 => (1e-3, 1e-5),
        DType::BF16 => (1.6e-2, 1e-5),
        _ => (0.0, 0.0),
    }
}

/// The elements of `t`, in row-major logical order, widened to `f64` (exact for every dtype
/// the golden files use, i64 aside beyond 2^53, which indices never reach).
pub fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>, String> {
    let err = |e: &dyn std::fmt::Display| format!("to_vec of a {:?} tensor failed: {e}", t.dtype());
    Ok(match t.dtype() {
        DType::F32 => t.to_vec::<f32>().map_err(|e| err(&e))?.into_iter().map(f64::from).collect(),
        DType::F64 => t.to_vec::<f64>().map_err(|e| err(&e))?,
        DType::F16 => t.to_vec::<f16>().map_err(|e| err(&e))?.into_iter().map(f64::from).collect(),
        DType::BF16 => t.to_vec::<bf16>().map_err(|e| err(&e))?.into_iter().map(f64::from).collect(),
        DType::I64 => t.to_vec::<i64>().map_err(|e| err(&e))?.into_iter().map(|v| v as f64).collect(),
        DType::U8 => t.to_vec::<u8>().map_err(|e| err(&e))?.into_iter().map(f64::from).collect(),
        DType::I8 => t.to_vec::<i8>().map_err(|e| err(&e))?.into_iter().map(f64::from).collect(),
        #[allow(unreachable_patterns)]
        other => return Err(format!("to_f64_vec: unsupported dtype {other:?}")),
    })
}

/// Row-major multi-index of flat index `flat` in `shape`.
pub fn multi_index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = flat % n;
            flat /= n;
        }
    }
    idx
}

/// Like [`assert_close`], but returns the failure message instead of panicking, so that a
/// caller can collect failures.
///
/// Element `a` matches `e` when `|a - e| <= atol + rtol * |e|`, or when both are the same
/// infinity. NaN never matches (as `torch.testing.assert_close` with `equal_nan=False`). The
/// dtypes must be equal too: a parity test checks the result dtype as well as the values.
pub fn check_close(
    actual: &Tensor,
    expected: &Tensor,
    rtol: Option<f64>,
    atol: Option<f64>,
    what: &str,
) -> Result<(), String> {
    close_margin(actual, expected, rtol, atol, what).map(|_| ())
}

/// [`check_close`] that also returns, on success, the largest `|a - e| / (atol + rtol * |e|)`
/// over all elements: how much of the tolerance the comparison used (0 = exact, 1 = at the
/// limit). Handy for judging whether a tolerance is tight.
pub fn close_margin(
    actual: &Tensor,
    expected: &Tensor,
    rtol: Option<f64>,
    atol: Option<f64>,
    what: &str,
) -> Result<f64, String> {
    let (dr, da) = default_tolerance(expected.dtype());
    let (rtol, atol) = (rtol.unwrap_or(dr), atol.unwrap_or(da));
    if actual.dims() != expected.dims() {
        return Err(format!("{what}: shape mismatch: actual {:?}, expected {:?}", actual.dims(), expected.dims()));
    }
    if actual.dtype() != expected.dtype() {
        return Err(format!("{what}: dtype mismatch: actual {:?}, expected {:?}", actual.dtype(), expected.dtype()));
    }
    let a = to_f64_vec(actual).map_err(|e| format!("{what}: actual: {e}"))?;
    let e = to_f64_vec(expected).map_err(|e| format!("{what}: expected: {e}"))?;
    if a.len() != e.len() {
        return Err(format!(
            "{what}: actual has {} elements for shape {:?}, expected {}",
            a.len(),
            actual.dims(),
            e.len()
        ));
    }
    // Worst element: largest error relative to its allowed error (infinite for non-finite
    // mismatches), so the reported element is the one furthest out of tolerance.
    let mut mismatches = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    let mut max_abs = 0.0f64;
    let mut max_score = 0.0f64;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = if x.is_finite() && y.is_finite() {
            (x - y).abs() <= atol + rtol * y.abs()
        } else {
            x == y // equal infinities match; NaN never does
        };
        let score = if x.is_finite() && y.is_finite() {
            let d = (x - y).abs();
            max_abs = max_abs.max(d);
            d / (atol + rtol * y.abs()).max(f64::MIN_POSITIVE)
        } else if x == y {
            0.0
        } else {
            f64::INFINITY
        };
        max_score = max_score.max(score);
        if !ok {
            mismatches += 1;
            if worst.is_none_or(|(_, s)| score > s) {
                worst = Some((i, score));
            }
        }
    }
    match worst {
        None => Ok(max_score),
        Some((i, _)) => {
            let (x, y) = (a[i], e[i]);
            let abs = (x - y).abs();
            let rel = if y != 0.0 { abs / y.abs() } else { f64::INFINITY };
            Err(format!(
                "{what}: {mismatches} of {} elements differ (dtype {:?}, shape {:?}, rtol {rtol:e}, \
                 atol {atol:e}); worst at flat index {i}, index {:?}: actual {x}, expected {y}, \
                 abs err {abs:.3e}, rel err {rel:.3e}; largest abs err overall {max_abs:.3e}",
                e.len(),
                expected.dtype(),
                expected.dims(),
                multi_index(i, expected.dims()),
            ))
        }
    }
}

/// Asserts that `actual` and `expected` have the same shape and dtype and close values.
///
/// Tolerances default per dtype like `torch.testing.assert_close` (f32: rtol 1.3e-6,
/// atol 1e-5; f64: 1e-7/1e-7; f16: 1e-3/1e-5; bf16: 1.6e-2/1e-5; integers exact). On failure
/// panics with the worst element (flat index and multi-index, both values, absolute and
/// relative error) and the number of mismatching elements. `what` names the compared thing.
#[track_caller]
pub fn assert_close(actual: &Tensor, expected: &Tensor, rtol: Option<f64>, atol: Option<f64>, what: &str) {
    if let Err(msg) = check_close(actual, expected, rtol, atol, what) {
        panic!("{msg}");
    }
}

// ------------------------------------------------------------------------------------------------
// Golden files
// ------------------------------------------------------------------------------------------------

/// A golden safetensors file: its tensors by name and its `__metadata__`.
pub struct Golden {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a safetensors file into CPU `Tensor`s (F32, F64, F16, BF16, I64, U8, I8).
pub fn load_golden(path: impl AsRef<Path>) -> Golden {
    let path = path.as_ref();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .unwrap_or_else(|e| panic!("{}: bad header: {e}", path.display()));
    let metadata: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = view_to_tensor(&view).unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
        tensors.insert(name, t);
    }
    Golden { tensors, metadata }
}

fn le_chunks<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N).map(|c| f(c.try_into().unwrap())).collect()
}

fn view_to_tensor(v: &safetensors::tensor::TensorView<'_>) -> Result<Tensor, String> {
    use safetensors::Dtype as S;
    let shape = v.shape().to_vec();
    let d = v.data();
    let dev = &Device::Cpu;
    let r = match v.dtype() {
        S::F32 => Tensor::from_vec(le_chunks(d, f32::from_le_bytes), shape, dev),
        S::F64 => Tensor::from_vec(le_chunks(d, f64::from_le_bytes), shape, dev),
        S::F16 => Tensor::from_vec(le_chunks(d, |b| f16::from_bits(u16::from_le_bytes(b))), shape, dev),
        S::BF16 => Tensor::from_vec(le_chunks(d, |b| bf16::from_bits(u16::from_le_bytes(b))), shape, dev),
        S::I64 => Tensor::from_vec(le_chunks(d, i64::from_le_bytes), shape, dev),
        S::U8 => Tensor::from_vec(d.to_vec(), shape, dev),
        S::I8 => Tensor::from_vec(d.iter().map(|&b| b as i8).collect::<Vec<i8>>(), shape, dev),
        other => return Err(format!("unsupported safetensors dtype {other:?}")),
    };
    r.map_err(|e| format!("Tensor::from_vec: {e}"))
}

// ------------------------------------------------------------------------------------------------
// Parameters: a small JSON reader
// ------------------------------------------------------------------------------------------------

/// A JSON value. The golden generators emit flat objects of numbers, booleans, strings, null
/// and arrays of numbers; the reader accepts any JSON without exotic string escapes.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Parses one JSON document.
pub fn parse_json(s: &str) -> Result<Json, String> {
    let mut p = JsonParser { s: s.as_bytes(), i: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at {} in {s:?}", p.i));
    }
    Ok(v)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("JSON: {what} at byte {} of {:?}", self.i, String::from_utf8_lossy(self.s)))
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", c as char))
        }
    }
    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("bad literal")
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'n') => self.lit("null", Json::Null),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    fields.push((k, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return self.err("expected ',' or '}'"),
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                match text.parse::<f64>() {
                    Ok(v) if !text.is_empty() => Ok(Json::Num(v)),
                    _ => self.err("bad number"),
                }
            }
        }
    }
    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let esc = *self.s.get(self.i).ok_or("JSON: dangling escape")?;
                    self.i += 1;
                    out.push(match esc {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'n' => b'\n',
                        b't' => b'\t',
                        _ => return self.err("unsupported string escape"),
                    });
                }
                _ => out.push(c),
            }
        }
        self.err("unterminated string")
    }
}

/// A case's parameters (a flat JSON object), with typed getters that record which keys were
/// read, so a test can fail on parameters nobody looked at ([`Params::unused`]).
pub struct Params {
    map: HashMap<String, Json>,
    used: RefCell<BTreeSet<String>>,
}

impl Params {
    /// Parses a flat JSON object.
    pub fn parse(json: &str) -> Result<Params, String> {
        match parse_json(json)? {
            Json::Obj(fields) => Ok(Params { map: fields.into_iter().collect(), used: RefCell::new(BTreeSet::new()) }),
            other => Err(format!("parameters must be a JSON object, got {other:?}")),
        }
    }

    /// The raw value of `key`, if present (marks it used).
    pub fn get(&self, key: &str) -> Option<&Json> {
        let v = self.map.get(key);
        if v.is_some() {
            self.used.borrow_mut().insert(key.to_string());
        }
        v
    }

    fn need(&self, key: &str) -> Result<&Json, String> {
        self.get(key).ok_or_else(|| format!("missing parameter {key:?}"))
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn f64(&self, key: &str) -> Result<f64, String> {
        match self.need(key)? {
            Json::Num(v) => Ok(*v),
            v => Err(format!("parameter {key:?}: expected a number, got {v:?}")),
        }
    }

    pub fn i64(&self, key: &str) -> Result<i64, String> {
        let v = self.f64(key)?;
        if v.fract() != 0.0 {
            return Err(format!("parameter {key:?}: expected an integer, got {v}"));
        }
        Ok(v as i64)
    }

    pub fn usize(&self, key: &str) -> Result<usize, String> {
        let v = self.i64(key)?;
        usize::try_from(v).map_err(|_| format!("parameter {key:?}: expected >= 0, got {v}"))
    }

    pub fn bool(&self, key: &str) -> Result<bool, String> {
        match self.need(key)? {
            Json::Bool(b) => Ok(*b),
            v => Err(format!("parameter {key:?}: expected a boolean, got {v:?}")),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, String> {
        match self.need(key)? {
            Json::Str(s) => Ok(s),
            v => Err(format!("parameter {key:?}: expected a string, got {v:?}")),
        }
    }

    pub fn i64s(&self, key: &str) -> Result<Vec<i64>, String> {
        match self.need(key)? {
            Json::Arr(items) => items
                .iter()
                .map(|v| match v {
                    Json::Num(x) if x.fract() == 0.0 => Ok(*x as i64),
                    v => Err(format!("parameter {key:?}: expected integers, got {v:?}")),
                })
                .collect(),
            v => Err(format!("parameter {key:?}: expected an array, got {v:?}")),
        }
    }

    pub fn usizes(&self, key: &str) -> Result<Vec<usize>, String> {
        self.i64s(key)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| format!("parameter {key:?}: negative {v}")))
            .collect()
    }

    /// A 2-element array, e.g. a conv2d stride.
    pub fn usize2(&self, key: &str) -> Result<[usize; 2], String> {
        let v = self.usizes(key)?;
        v.as_slice().try_into().map_err(|_| format!("parameter {key:?}: expected 2 values, got {v:?}"))
    }

    /// Keys present but never read, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut keys: Vec<String> = self.map.keys().filter(|k| !used.contains(*k)).cloned().collect();
        keys.sort();
        keys
    }
}
