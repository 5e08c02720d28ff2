//! `torch.save` files (`pytorch_model.bin`, `*.pt`) read without executing anything.
//!
//! Since PyTorch 1.6 `torch.save` writes a zip archive: `<name>/data.pkl` is a pickle of the
//! object, and each tensor storage is a raw little-endian file `<name>/data/<key>`. In the
//! pickle a storage is a *persistent id* `('storage', torch.FloatStorage, key, location, numel)`
//! and a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`; a
//! `state_dict` is a `collections.OrderedDict` (with a `_metadata` attribute set by `BUILD`).
//!
//! Unpickling normally *calls* whatever global the pickle names, which is how a malicious
//! checkpoint runs code (`os.system`, `builtins.eval`). This reader is a small pickle machine of
//! its own (no crate reads PyTorch's pickles while refusing globals; `serde-pickle` has no
//! persistent ids): it understands the opcodes a state dict uses (protocols 2 to 5), knows only
//! the globals above (the storage types, the tensor rebuilders, `OrderedDict`), and refuses any
//! other global with an error naming it, before anything is built. Nothing is ever called; the
//! "rebuilders" are interpreted as descriptions of a tensor.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use safetensors::Dtype;
use stapes_tensor::{Error, Result, Tensor};

const OP: &str = "read_torch_pickle";

/// Element types of PyTorch storages.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StorageType {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<StorageType> {
        Some(match name {
            "FloatStorage" => StorageType::F32,
            "DoubleStorage" => StorageType::F64,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::Bf16,
            "LongStorage" => StorageType::I64,
            "IntStorage" => StorageType::I32,
            "ShortStorage" => StorageType::I16,
            "CharStorage" => StorageType::I8,
            "ByteStorage" => StorageType::U8,
            "BoolStorage" => StorageType::Bool,
            _ => return None,
        })
    }
    /// The same element type in safetensors' terms, for [`super::from_bytes`].
    fn dtype(self) -> Dtype {
        match self {
            StorageType::F32 => Dtype::F32,
            StorageType::F64 => Dtype::F64,
            StorageType::F16 => Dtype::F16,
            StorageType::Bf16 => Dtype::BF16,
            StorageType::I64 => Dtype::I64,
            StorageType::I32 => Dtype::I32,
            StorageType::I16 => Dtype::I16,
            StorageType::I8 => Dtype::I8,
            StorageType::U8 => Dtype::U8,
            StorageType::Bool => Dtype::BOOL,
        }
    }
    fn size(self) -> usize {
        self.dtype().bitsize() / 8
    }
}

/// The globals a state dict may name; anything else is refused.
#[derive(Clone, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageType),
}

fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", s) => StorageType::from_name(s).map(Global::Storage),
        _ => None,
    }
}

/// A tensor as the pickle describes it: a view of a storage.
#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    key: String,
    dtype: StorageType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage { dtype: StorageType, key: String },
    Tensor(TensorRef),
    Mark,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg.to_string())
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad(format!("the pickle ends inside an opcode's argument (at byte {})", self.pos)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("a GLOBAL opcode without its newline"))?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| bad("a GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8(b.to_vec()).map_err(|_| bad("a string is not UTF-8"))?))
    }
    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| bad("the pickle pops an empty stack"))
    }
    /// The values above the topmost MARK, removed with it.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.stack.iter().rposition(|v| *v == Value::Mark).ok_or_else(|| bad("no MARK on the stack"))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().ok_or_else(|| bad("the pickle uses an empty stack"))
    }
    fn push_global(&mut self, module: &str, name: &str) -> Result<()> {
        match allowed_global(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => Err(bad(format!(
                "the checkpoint's pickle names the global {module}.{name}, which a state dict never needs; refused \
                 (nothing was executed)"
            ))),
        }
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(bad(format!("pickle protocol {proto} is not supported (2 to 5)")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(bad(format!("an integer of {n} bytes does not fit 64 bits")));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack.push(Value::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s)
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s)
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(bad("a TUPLE opcode with too few items on the stack"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err(bad("APPEND to something that is not a list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(bad("APPENDS to something that is not a list")),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err(bad("SETITEM on something that is not a dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(bad("SETITEMS with an odd number of items"));
                    }
                    let mut it = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top()? {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return Err(bad("SETITEMS on something that is not a dict")),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                    let v =
                        self.memo.get(&i).cloned().ok_or_else(|| bad(format!("memo entry {i} was never stored")))?;
                    self.stack.push(v)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push_global(&m, &n)?,
                        _ => return Err(bad("STACK_GLOBAL without two strings")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid)?;
                    self.stack.push(v)
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = reduce(f, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD: an OrderedDict's attributes (a state dict's `_metadata`); ignored
                    let _state = self.pop()?;
                    if !matches!(self.top()?, Value::Dict(_)) {
                        return Err(bad("BUILD on something other than a dict"));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "pickle opcode 0x{other:02x} at byte {} is not one a state dict uses",
                        self.pos - 1
                    )))
                }
            }
        }
    }
}

fn int(v: &Value, what: &str) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(bad(format!("{what} should be an integer, got {other:?}"))),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| usize::try_from(int(x, what)?).map_err(|_| bad(format!("{what} has a negative entry"))))
            .collect(),
        other => Err(bad(format!("{what} should be a tuple of integers, got {other:?}"))),
    }
}

/// `('storage', torch.XStorage, key, location, numel)`.
fn persistent_load(pid: Value) -> Result<Value> {
    let items = match pid {
        Value::Tuple(t) => t,
        other => return Err(bad(format!("a persistent id should be a tuple, got {other:?}"))),
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(Global::Storage(dtype)), Value::Str(key), _location, _numel]
            if kind == "storage" =>
        {
            Ok(Value::Storage { dtype: *dtype, key: key.clone() })
        }
        _ => Err(bad(format!("unsupported persistent id {items:?}"))),
    }
}

fn reduce(f: Value, args: Value) -> Result<Value> {
    let args = match args {
        Value::Tuple(a) => a,
        other => return Err(bad(format!("REDUCE arguments should be a tuple, got {other:?}"))),
    };
    match f {
        Value::Global(Global::OrderedDict) => Ok(Value::Dict(Vec::new())),
        Value::Global(Global::RebuildTensorV2) => {
            if args.len() < 4 {
                return Err(bad("_rebuild_tensor_v2 with fewer than 4 arguments"));
            }
            let (dtype, key) = match &args[0] {
                Value::Storage { dtype, key } => (*dtype, key.clone()),
                other => return Err(bad(format!("_rebuild_tensor_v2 of something that is not a storage: {other:?}"))),
            };
            let offset =
                usize::try_from(int(&args[1], "storage offset")?).map_err(|_| bad("negative storage offset"))?;
            let size = usizes(&args[2], "size")?;
            let stride = usizes(&args[3], "stride")?;
            if size.len() != stride.len() {
                return Err(bad(format!("size {size:?} and stride {stride:?} differ in rank")));
            }
            Ok(Value::Tensor(TensorRef { key, dtype, offset, size, stride }))
        }
        Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            other => Err(bad(format!("_rebuild_parameter of something that is not a tensor: {other:?}"))),
        },
        other => Err(bad(format!("REDUCE of {other:?}, which is not a known constructor"))),
    }
}

/// Runs the restricted machine over a pickle and returns the object it describes.
fn unpickle(data: &[u8]) -> Result<Value> {
    Machine { data, pos: 0, stack: Vec::new(), memo: HashMap::new() }.run()
}

/// Reads a zip-format `torch.save` file holding a state dict (a dict of tensors; nested dicts
/// such as `{"model": state_dict}` are not flattened). Tensors come back on the CPU, contiguous,
/// in their stored dtype (`int32`/`int16` as `int64`, `bool` as `uint8`). A pickle naming any
/// global other than `OrderedDict`, the tensor rebuilders and the storage types is refused with
/// an error naming that global; truncated or corrupt files are errors naming the file.
pub fn read_torch_state_dict(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(OP, path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        Error::io(
            OP,
            path,
            format!(
                "not a zip-format torch.save file ({e}); files from PyTorch < 1.6 must be re-saved with a newer torch"
            ),
        )
    })?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or_else(|| Error::io(OP, path, "the archive has no data.pkl"))?;
    let prefix = pkl_name.strip_suffix("data.pkl").expect("suffix checked").to_string();
    let mut read_entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).map_err(|e| Error::io(OP, path, format!("{name}: {e}")))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(|e| Error::io(OP, path, format!("{name}: {e}")))?;
        Ok(buf)
    };
    let pkl = read_entry(&pkl_name)?;
    let top = unpickle(&pkl).map_err(|e| match e {
        Error::InvalidArgument { msg, .. } => Error::io(OP, path, msg),
        other => other,
    })?;
    let entries = match top {
        Value::Dict(d) => d,
        other => return Err(Error::io(OP, path, format!("the pickle holds {other:?}, not a state dict"))),
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let name = match k {
            Value::Str(s) => s,
            other => return Err(Error::io(OP, path, format!("a state-dict key is {other:?}, not a string"))),
        };
        let t = match v {
            Value::Tensor(t) => t,
            other => {
                return Err(Error::io(
                    OP,
                    path,
                    format!("{name:?} is {other:?}, not a tensor (nested checkpoints are not read)"),
                ))
            }
        };
        if !storages.contains_key(&t.key) {
            let bytes = read_entry(&format!("{prefix}data/{}", t.key))?;
            storages.insert(t.key.clone(), bytes);
        }
        let tensor = materialise(&t, &storages[&t.key], path, &name)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// The contiguous tensor a strided view of a storage describes, every index checked.
fn materialise(t: &TensorRef, bytes: &[u8], path: &Path, name: &str) -> Result<Tensor> {
    let es = t.dtype.size();
    let n_storage = bytes.len() / es;
    let count: usize = t.size.iter().product();
    // the highest element the view touches must exist in the storage
    if count > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&s, &st)| (s - 1).checked_mul(st).and_then(|x| acc.checked_add(x)));
        match last {
            Some(l) if l < n_storage => {}
            _ => {
                return Err(Error::io(
                    OP,
                    path,
                    format!(
                        "{name}: the view (offset {}, size {:?}, stride {:?}) reaches past its storage of {n_storage} \
                         elements",
                        t.offset, t.size, t.stride
                    ),
                ))
            }
        }
    }
    // the view's elements in order, gathered into one contiguous little-endian buffer
    let mut idx = vec![0usize; t.size.len()];
    let mut gathered = Vec::with_capacity(count * es);
    for _ in 0..count {
        let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        gathered.extend_from_slice(&bytes[e * es..(e + 1) * es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    super::from_bytes(OP, path, name, t.dtype.dtype(), &t.size, &gathered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_any_other_global_by_name() {
        // protocol 0 text of `os.system('echo pwned')`: GLOBAL, MARK, string, TUPLE, REDUCE
        let p = b"cposix\nsystem\n(S'echo pwned'\ntR.";
        let e = unpickle(p).unwrap_err().to_string();
        assert!(e.contains("posix.system") && e.contains("refused"), "{e}");
        // protocol 4's STACK_GLOBAL spelling
        let mut p = vec![0x80, 4, 0x8c, 8];
        p.extend_from_slice(b"builtins");
        p.extend_from_slice(&[0x8c, 4]);
        p.extend_from_slice(b"eval");
        p.extend_from_slice(&[0x93, b'.']);
        let e = unpickle(&p).unwrap_err().to_string();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn truncated_and_unknown_opcodes_are_errors() {
        assert!(unpickle(b"").is_err());
        assert!(unpickle(&[0x80, 2, b'X', 10, 0]).is_err());
        let e = unpickle(&[0x80, 2, b'i']).unwrap_err().to_string();
        assert!(e.contains("0x69"), "{e}");
    }

    #[test]
    fn strided_views_are_gathered() {
        let bytes: Vec<u8> = (0..6i64).flat_map(|v| v.to_le_bytes()).collect();
        let t = TensorRef { key: "0".into(), dtype: StorageType::I64, offset: 0, size: vec![3, 2], stride: vec![1, 3] };
        let path = Path::new("x.bin");
        assert_eq!(materialise(&t, &bytes, path, "t").unwrap().to_vec::<i64>().unwrap(), [0, 3, 1, 4, 2, 5]);
        let past = TensorRef { key: "0".into(), dtype: StorageType::I64, offset: 1, size: vec![6], stride: vec![1] };
        assert!(materialise(&past, &bytes, path, "t").unwrap_err().to_string().contains("past its storage"));
    }
}
