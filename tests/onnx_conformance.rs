//! The official ONNX node tests for the quantization operators, run through qkern's
//! public API and compared bit for bit (`../shared/conformance/onnx`, see its INDEX.md).
//!
//! One test per operator family; each prints one line per case:
//! `PASS <name>` or `UNSUPPORTED <name>: <reason>`. A supported case that mismatches or
//! errors fails its test, and so does any case of the five operators whose tensors are
//! all integer/f32/f16 (i.e. every case qkern implements) not passing, so a regression to
//! UNSUPPORTED cannot go unnoticed.
//!
//! Run: `cargo test --release --test onnx_conformance -- --nocapture`.

mod common;

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use qkern::{Context, Int8};
use qkern::onnx::{
    AutoPad, ConvAttrs, conv_integer_in, conv_output_shape, qlinear_conv_in,
    DequantizeAttrs, QLinearInput, QuantSliceMut, QuantTensor, QuantType, QuantizeAttrs, TensorRef, dequantize_linear,
    dynamic_quantize_linear, matmul_integer, matmul_output_shape, qlinear_matmul, quantize_linear, quantize_output_type,
};
use serde_json::Value;

/// The cases of the five operators, by name, as listed in INDEX.md. The dtype rule below
/// also requires any case added later; this list guards against cases disappearing.
const REQUIRED: &[&str] = &[
    "test_convinteger_with_padding",
    "test_convinteger_without_padding",
    "test_qlinearconv",
    "test_dequantizelinear",
    "test_dequantizelinear_axis",
    "test_dequantizelinear_blocked",
    "test_dequantizelinear_int16",
    "test_dequantizelinear_int2",
    "test_dequantizelinear_int4",
    "test_dequantizelinear_uint16",
    "test_dequantizelinear_uint2",
    "test_dequantizelinear_uint4",
    "test_dynamicquantizelinear",
    "test_dynamicquantizelinear_expanded",
    "test_dynamicquantizelinear_max_adjusted",
    "test_dynamicquantizelinear_max_adjusted_expanded",
    "test_dynamicquantizelinear_min_adjusted",
    "test_dynamicquantizelinear_min_adjusted_expanded",
    "test_matmulinteger",
    "test_qlinearmatmul_2D_int8_float16",
    "test_qlinearmatmul_2D_int8_float32",
    "test_qlinearmatmul_2D_uint8_float16",
    "test_qlinearmatmul_2D_uint8_float32",
    "test_qlinearmatmul_3D_int8_float16",
    "test_qlinearmatmul_3D_int8_float16__onnx_1_23_2",
    "test_qlinearmatmul_3D_int8_float32",
    "test_qlinearmatmul_3D_int8_float32__onnx_1_23_2",
    "test_qlinearmatmul_3D_uint8_float16",
    "test_qlinearmatmul_3D_uint8_float32",
    "test_quantizelinear",
    "test_quantizelinear_axis",
    "test_quantizelinear_blocked_asymmetric",
    "test_quantizelinear_blocked_symmetric",
    "test_quantizelinear_int16",
    "test_quantizelinear_int2",
    "test_quantizelinear_int4",
    "test_quantizelinear_uint16",
    "test_quantizelinear_uint2",
    "test_quantizelinear_uint4",
];

/// The dtypes qkern's ONNX operators handle (after f16 scales are widened to f32).
const SUPPORTED_DTYPES: &[&str] = &["FLOAT", "FLOAT16", "UINT8", "INT8", "UINT16", "INT16", "INT32", "UINT4", "INT4", "UINT2", "INT2"];

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/onnx")
}

/// One test folder.
struct Case {
    name: String,
    dir: PathBuf,
    json: Value,
}

impl Case {
    fn op(&self) -> &str {
        self.json["op"].as_str().unwrap_or("")
    }

    /// The input at operator position `idx`, if given.
    fn input(&self, idx: usize) -> Option<&Value> {
        self.json["inputs"].as_array()?.iter().find(|i| i["op_input_index"].as_u64() == Some(idx as u64))
    }

    fn output(&self, idx: usize) -> Result<&Value, String> {
        self.json["outputs"].as_array().and_then(|o| o.get(idx)).ok_or_else(|| format!("no output {idx}"))
    }

    /// An attribute (with the schema default), as i64.
    fn attr_i64(&self, name: &str) -> Option<i64> {
        self.json["attributes_with_schema_defaults"].get(name).and_then(Value::as_i64)
    }

    /// Every ONNX dtype among inputs and outputs.
    fn dtypes(&self) -> Vec<String> {
        ["inputs", "outputs"]
            .iter()
            .flat_map(|k| self.json[*k].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["onnx_dtype"].as_str().map(str::to_string))
            .collect()
    }

    /// Whether qkern must pass this case: one of the five operators, every tensor of a
    /// supported dtype.
    fn required(&self) -> bool {
        matches!(
            self.op(),
            "QuantizeLinear" | "DequantizeLinear" | "DynamicQuantizeLinear" | "QLinearMatMul" | "MatMulInteger" | "QLinearConv" | "ConvInteger"
        ) && self.dtypes().iter().all(|d| SUPPORTED_DTYPES.contains(&d.as_str()))
    }

    fn load(&self, spec: &Value) -> Result<Npy, String> {
        let file = spec["file"].as_str().ok_or("tensor without a file")?;
        let npy = load_npy(&self.dir.join(file))?;
        let want: Vec<usize> =
            spec["shape"].as_array().ok_or("tensor without a shape")?.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect();
        if npy.shape != want {
            return Err(format!("{file}: shape {:?} but test.json says {want:?}", npy.shape));
        }
        Ok(npy)
    }

    fn input_npy(&self, idx: usize) -> Result<Option<Npy>, String> {
        self.input(idx).map(|s| self.load(s)).transpose()
    }
}

fn all_cases() -> Vec<Case> {
    let dir = conformance_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "ONNX conformance data not found at {} ({e}). It lives in ../shared/conformance/onnx beside the repository (CI always has it).",
            dir.display()
        )
    });
    let mut cases: Vec<Case> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let dir = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(dir.join("test.json")).unwrap_or_else(|err| panic!("{name}/test.json: {err}"));
            let json: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}/test.json: {err}"));
            Case { name, dir, json }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!cases.is_empty(), "no test folders in {}", dir.display());
    cases
}

/// A loaded .npy array.
struct Npy {
    shape: Vec<usize>,
    data: Data,
}

enum Data {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    /// Half floats, widened to f32 (exact).
    F16(Vec<f32>),
}

fn load_npy(path: &Path) -> Result<Npy, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format!("{}: {e}", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => return Err(format!("{}: unexpected dtype {other:?}", path.display())),
    };
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let data = match descr.as_str() {
        "|u1" => Data::U8(npy.into_vec().map_err(err)?),
        "|i1" => Data::I8(npy.into_vec().map_err(err)?),
        "<u2" => Data::U16(npy.into_vec().map_err(err)?),
        "<i2" => Data::I16(npy.into_vec().map_err(err)?),
        "<i4" => Data::I32(npy.into_vec().map_err(err)?),
        "<f4" => Data::F32(npy.into_vec().map_err(err)?),
        "<f2" => {
            // npyz reads f16 only with its `half` feature; the data is simply the last
            // 2·len bytes of the file (npy has no trailer).
            let n = npy.len() as usize;
            let raw = bytes.get(bytes.len() - 2 * n..).ok_or("short f16 file")?;
            Data::F16(raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
        }
        d => return Err(format!("{}: unsupported npy dtype {d}", path.display())),
    };
    Ok(Npy { shape, data })
}

/// Typed access to loaded data.
trait FromData: Sized + Copy + Debug + PartialEq {
    fn from_data(d: Data) -> Option<Vec<Self>>;
}
macro_rules! from_data {
    ($t:ty, $v:ident) => {
        impl FromData for $t {
            fn from_data(d: Data) -> Option<Vec<Self>> {
                match d {
                    Data::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
from_data!(u8, U8);
from_data!(i8, I8);
from_data!(u16, U16);
from_data!(i16, I16);
from_data!(i32, I32);

impl Npy {
    fn typed<T: FromData>(self) -> Result<(Vec<T>, Vec<usize>), String> {
        let shape = self.shape;
        T::from_data(self.data)
            .map(|v| (v, shape))
            .ok_or_else(|| format!("unexpected element type (wanted {})", std::any::type_name::<T>()))
    }
    /// f32 data, or f16 widened to f32 (scales).
    fn f32(self) -> Result<(Vec<f32>, Vec<usize>), String> {
        match self.data {
            Data::F32(v) | Data::F16(v) => Ok((v, self.shape)),
            _ => Err("expected f32 or f16 data".into()),
        }
    }
}

enum Outcome {
    Pass,
    Unsupported(String),
    Fail(String),
}

fn compare<T: PartialEq + Debug>(what: &str, got: &[T], want: &[T]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    match got.iter().zip(want).position(|(g, w)| g != w) {
        None => Ok(()),
        Some(i) => Err(format!("{what}[{i}] = {:?}, expected {:?}\n  got:      {got:?}\n  expected: {want:?}", got[i], want[i])),
    }
}

/// f32 by bit pattern; a NaN reference requires a NaN, any payload.
fn compare_f32(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    let bad = got.iter().zip(want).position(|(g, w)| if w.is_nan() { !g.is_nan() } else { g.to_bits() != w.to_bits() });
    match bad {
        None => Ok(()),
        Some(i) => {
            Err(format!("{what}[{i}] = {:?} ({:#010x}), expected {:?} ({:#010x})", got[i], got[i].to_bits(), want[i], want[i].to_bits()))
        }
    }
}

fn qtype_of(spec: &Value) -> Result<QuantType, String> {
    let name = spec["onnx_dtype"].as_str().unwrap_or("");
    QuantType::from_onnx_name(name).ok_or_else(|| format!("dtype {name}"))
}

/// A loaded quantized tensor, owning its data.
enum Owned {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    I32(Vec<i32>),
}

fn load_quant(npy: Npy) -> Result<(Owned, Vec<usize>), String> {
    Ok(match npy.data {
        Data::U8(v) => (Owned::U8(v), npy.shape),
        Data::I8(v) => (Owned::I8(v), npy.shape),
        Data::U16(v) => (Owned::U16(v), npy.shape),
        Data::I16(v) => (Owned::I16(v), npy.shape),
        Data::I32(v) => (Owned::I32(v), npy.shape),
        _ => return Err("expected integer data".into()),
    })
}

/// A [`QuantTensor`] view of `o` as type `qt`.
fn view<'a>(o: &'a Owned, shape: &'a [usize], qt: QuantType) -> Result<QuantTensor<'a>, String> {
    Ok(match (o, qt) {
        (Owned::U8(v), QuantType::U8) => QuantTensor::U8(TensorRef::new(v, shape)),
        (Owned::U8(v), QuantType::U4) => QuantTensor::U4(TensorRef::new(v, shape)),
        (Owned::U8(v), QuantType::U2) => QuantTensor::U2(TensorRef::new(v, shape)),
        (Owned::I8(v), QuantType::I8) => QuantTensor::I8(TensorRef::new(v, shape)),
        (Owned::I8(v), QuantType::I4) => QuantTensor::I4(TensorRef::new(v, shape)),
        (Owned::I8(v), QuantType::I2) => QuantTensor::I2(TensorRef::new(v, shape)),
        (Owned::U16(v), QuantType::U16) => QuantTensor::U16(TensorRef::new(v, shape)),
        (Owned::I16(v), QuantType::I16) => QuantTensor::I16(TensorRef::new(v, shape)),
        (Owned::I32(v), QuantType::I32) => QuantTensor::I32(TensorRef::new(v, shape)),
        _ => return Err(format!("storage does not match {}", qt.name())),
    })
}

/// The reason a case is outside qkern, or None.
fn unsupported_reason(case: &Case) -> Option<String> {
    match case.op() {
        "QuantizeLinear" | "DequantizeLinear" | "DynamicQuantizeLinear" | "QLinearMatMul" | "MatMulInteger" | "ConvInteger" | "QLinearConv" => {}
        op => return Some(format!("operator {op} is not one of qkern's")),
    }
    let bad: Vec<String> = case.dtypes().into_iter().filter(|d| !SUPPORTED_DTYPES.contains(&d.as_str())).collect();
    if !bad.is_empty() {
        let mut bad = bad;
        bad.sort();
        bad.dedup();
        return Some(format!("{} (float8/float4 types are not integer quantization)", bad.join(", ")));
    }
    None
}

fn run_quantize(case: &Case) -> Result<(), String> {
    let (x, xs) = case.input_npy(0)?.ok_or("no x")?.f32()?;
    let scale_spec = case.input(1).ok_or("no y_scale")?;
    if scale_spec["onnx_dtype"] != "FLOAT" {
        return Err(format!("y_scale is {} (the division precision would differ from f32)", scale_spec["onnx_dtype"]));
    }
    let (s, ss) = case.load(scale_spec)?.f32()?;
    let zp = match case.input(2) {
        Some(spec) => Some((qtype_of(spec)?, load_quant(case.load(spec)?)?)),
        None => None,
    };
    let attrs = QuantizeAttrs {
        axis: case.attr_i64("axis").unwrap_or(1),
        block_size: case.attr_i64("block_size").unwrap_or(0),
        saturate: case.attr_i64("saturate").unwrap_or(1) != 0,
    };
    let qt = quantize_output_type(case.attr_i64("output_dtype").unwrap_or(0), zp.as_ref().map(|z| z.0)).map_err(|e| e.to_string())?;
    let out_spec = case.output(0)?;
    if qtype_of(out_spec)? != qt {
        return Err(format!("the output type resolves to {} but the case expects {}", qt.name(), out_spec["onnx_dtype"]));
    }
    let zp_view = match &zp {
        Some((t, (o, shape))) => Some(view(o, shape, *t)?),
        None => None,
    };
    let x = TensorRef::new(&x, &xs);
    let s = TensorRef::new(&s, &ss);
    let (want, _) = load_quant(case.load(out_spec)?)?;
    let n = x.data.len();
    let e = |e: qkern::Error| e.to_string();
    match want {
        Owned::U8(w) => {
            let mut y = vec![0u8; n];
            let buf = match qt {
                QuantType::U8 => QuantSliceMut::U8(&mut y),
                QuantType::U4 => QuantSliceMut::U4(&mut y),
                QuantType::U2 => QuantSliceMut::U2(&mut y),
                t => return Err(format!("u8 storage for {}", t.name())),
            };
            quantize_linear(x, s, zp_view, &attrs, buf).map_err(e)?;
            compare("y", &y, &w)
        }
        Owned::I8(w) => {
            let mut y = vec![0i8; n];
            let buf = match qt {
                QuantType::I8 => QuantSliceMut::I8(&mut y),
                QuantType::I4 => QuantSliceMut::I4(&mut y),
                QuantType::I2 => QuantSliceMut::I2(&mut y),
                t => return Err(format!("i8 storage for {}", t.name())),
            };
            quantize_linear(x, s, zp_view, &attrs, buf).map_err(e)?;
            compare("y", &y, &w)
        }
        Owned::U16(w) => {
            let mut y = vec![0u16; n];
            quantize_linear(x, s, zp_view, &attrs, QuantSliceMut::U16(&mut y)).map_err(e)?;
            compare("y", &y, &w)
        }
        Owned::I16(w) => {
            let mut y = vec![0i16; n];
            quantize_linear(x, s, zp_view, &attrs, QuantSliceMut::I16(&mut y)).map_err(e)?;
            compare("y", &y, &w)
        }
        Owned::I32(_) => Err("int32 is not a QuantizeLinear output".into()),
    }
}

fn run_dequantize(case: &Case) -> Result<(), String> {
    let x_spec = case.input(0).ok_or("no x")?;
    let qt = qtype_of(x_spec)?;
    let (x, xs) = load_quant(case.load(x_spec)?)?;
    let scale_spec = case.input(1).ok_or("no x_scale")?;
    if scale_spec["onnx_dtype"] != "FLOAT" {
        return Err(format!("x_scale is {} (the output would not be f32)", scale_spec["onnx_dtype"]));
    }
    let (s, ss) = case.load(scale_spec)?.f32()?;
    let zp = match case.input(2) {
        Some(spec) => Some((qtype_of(spec)?, load_quant(case.load(spec)?)?)),
        None => None,
    };
    let out_dtype = case.attr_i64("output_dtype").unwrap_or(0);
    if out_dtype != 0 && out_dtype != 1 {
        return Err(format!("output_dtype {out_dtype} is not FLOAT"));
    }
    let attrs = DequantizeAttrs { axis: case.attr_i64("axis").unwrap_or(1), block_size: case.attr_i64("block_size").unwrap_or(0) };
    let zp_view = match &zp {
        Some((t, (o, shape))) => Some(view(o, shape, *t)?),
        None => None,
    };
    let (want, _) = case.load(case.output(0)?)?.f32()?;
    let mut y = vec![0f32; want.len()];
    dequantize_linear(view(&x, &xs, qt)?, TensorRef::new(&s, &ss), zp_view, &attrs, &mut y).map_err(|e| e.to_string())?;
    compare_f32("y", &y, &want)
}

fn run_dynamic(case: &Case) -> Result<(), String> {
    let (x, _) = case.input_npy(0)?.ok_or("no x")?.f32()?;
    let (want_y, _) = case.load(case.output(0)?)?.typed::<u8>()?;
    let (want_s, _) = case.load(case.output(1)?)?.f32()?;
    let (want_z, _) = case.load(case.output(2)?)?.typed::<u8>()?;
    let mut y = vec![0u8; x.len()];
    let q = dynamic_quantize_linear(&x, &mut y).map_err(|e| e.to_string())?;
    compare_f32("y_scale", &[q.scale], &want_s)?;
    compare("y_zero_point", &[q.zero_point], &want_z)?;
    compare("y", &y, &want_y)
}

fn run_qlinear_matmul(case: &Case) -> Result<(), String> {
    let t = |i: usize| case.input(i).and_then(|s| s["npy_dtype"].as_str()).unwrap_or("");
    let out = case.output(0)?["npy_dtype"].as_str().unwrap_or("");
    match (t(0), t(3), out) {
        ("uint8", "uint8", "uint8") => qlm::<u8, u8, u8>(case),
        ("uint8", "uint8", "int8") => qlm::<u8, u8, i8>(case),
        ("uint8", "int8", "uint8") => qlm::<u8, i8, u8>(case),
        ("uint8", "int8", "int8") => qlm::<u8, i8, i8>(case),
        ("int8", "uint8", "uint8") => qlm::<i8, u8, u8>(case),
        ("int8", "uint8", "int8") => qlm::<i8, u8, i8>(case),
        ("int8", "int8", "uint8") => qlm::<i8, i8, u8>(case),
        ("int8", "int8", "int8") => qlm::<i8, i8, i8>(case),
        other => Err(format!("dtype combination {other:?}")),
    }
}

fn qlm<A: Int8 + FromData, B: Int8 + FromData, Y: Int8 + FromData>(case: &Case) -> Result<(), String> {
    let need = |i: usize, what: &str| case.input_npy(i)?.ok_or(format!("no {what}"));
    let (a, ash) = need(0, "a")?.typed::<A>()?;
    let (sa, sash) = need(1, "a_scale")?.f32()?;
    let (za, zash) = need(2, "a_zero_point")?.typed::<A>()?;
    let (b, bsh) = need(3, "b")?.typed::<B>()?;
    let (sb, sbsh) = need(4, "b_scale")?.f32()?;
    let (zb, zbsh) = need(5, "b_zero_point")?.typed::<B>()?;
    let (sy, sysh) = need(6, "y_scale")?.f32()?;
    let (zy, zysh) = need(7, "y_zero_point")?.typed::<Y>()?;
    let out_spec = case.output(0)?;
    let (want, wsh) = case.load(out_spec)?.typed::<Y>()?;
    let shape = matmul_output_shape(&ash, &bsh).map_err(|e| e.to_string())?;
    if shape != wsh {
        return Err(format!("output shape {shape:?}, expected {wsh:?}"));
    }
    let mut y = vec![Y::default(); want.len()];
    qlinear_matmul(
        QLinearInput::new(TensorRef::new(&a, &ash), TensorRef::new(&sa, &sash), TensorRef::new(&za, &zash)),
        QLinearInput::new(TensorRef::new(&b, &bsh), TensorRef::new(&sb, &sbsh), TensorRef::new(&zb, &zbsh)),
        TensorRef::new(&sy, &sysh),
        TensorRef::new(&zy, &zysh),
        &mut y,
    )
    .map_err(|e| e.to_string())?;
    compare("y", &y, &want)
}

fn run_matmul_integer(case: &Case) -> Result<(), String> {
    let t = |i: usize| case.input(i).and_then(|s| s["npy_dtype"].as_str()).unwrap_or("");
    match (t(0), t(1)) {
        ("uint8", "uint8") => mmi::<u8, u8>(case),
        ("uint8", "int8") => mmi::<u8, i8>(case),
        ("int8", "uint8") => mmi::<i8, u8>(case),
        ("int8", "int8") => mmi::<i8, i8>(case),
        other => Err(format!("dtype combination {other:?}")),
    }
}

fn mmi<A: Int8 + FromData, B: Int8 + FromData>(case: &Case) -> Result<(), String> {
    let (a, ash) = case.input_npy(0)?.ok_or("no A")?.typed::<A>()?;
    let (b, bsh) = case.input_npy(1)?.ok_or("no B")?.typed::<B>()?;
    let za = case.input_npy(2)?.map(|n| n.typed::<A>()).transpose()?;
    let zb = case.input_npy(3)?.map(|n| n.typed::<B>()).transpose()?;
    let (want, wsh) = case.load(case.output(0)?)?.typed::<i32>()?;
    let shape = matmul_output_shape(&ash, &bsh).map_err(|e| e.to_string())?;
    if shape != wsh {
        return Err(format!("output shape {shape:?}, expected {wsh:?}"));
    }
    let mut y = vec![0i32; want.len()];
    matmul_integer(
        TensorRef::new(&a, &ash),
        za.as_ref().map(|(v, s)| TensorRef::new(v, s)),
        TensorRef::new(&b, &bsh),
        zb.as_ref().map(|(v, s)| TensorRef::new(v, s)),
        &mut y,
    )
    .map_err(|e| e.to_string())?;
    compare("Y", &y, &want)
}

/// The conv attributes of a case (schema defaults where absent).
fn conv_attrs(case: &Case) -> Result<ConvAttrs, String> {
    let a = &case.json["attributes_with_schema_defaults"];
    let list = |name: &str| -> Result<Vec<usize>, String> {
        match a.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(v)) => v.iter().map(|x| x.as_u64().map(|x| x as usize).ok_or(format!("{name}: {x}"))).collect(),
            Some(other) => Err(format!("attribute {name} = {other}")),
        }
    };
    let auto_pad = AutoPad::from_onnx(a.get("auto_pad").and_then(Value::as_str).unwrap_or("NOTSET")).map_err(|e| e.to_string())?;
    Ok(ConvAttrs {
        auto_pad,
        dilations: list("dilations")?,
        group: case.attr_i64("group").unwrap_or(1) as usize,
        kernel_shape: list("kernel_shape")?,
        pads: list("pads")?,
        strides: list("strides")?,
    })
}

/// The conv cases run through every ISA tier this CPU has.
fn tier_contexts() -> Vec<Context> {
    common::available_isas().into_iter().map(|i| Context::for_isa(i).unwrap()).collect()
}

fn run_qlinear_conv(case: &Case) -> Result<(), String> {
    let t = |i: usize| case.input(i).and_then(|s| s["npy_dtype"].as_str()).unwrap_or("");
    let out = case.output(0)?["npy_dtype"].as_str().unwrap_or("");
    match (t(0), t(3), out) {
        ("uint8", "uint8", "uint8") => qlc::<u8, u8, u8>(case),
        ("uint8", "uint8", "int8") => qlc::<u8, u8, i8>(case),
        ("uint8", "int8", "uint8") => qlc::<u8, i8, u8>(case),
        ("uint8", "int8", "int8") => qlc::<u8, i8, i8>(case),
        ("int8", "uint8", "uint8") => qlc::<i8, u8, u8>(case),
        ("int8", "uint8", "int8") => qlc::<i8, u8, i8>(case),
        ("int8", "int8", "uint8") => qlc::<i8, i8, u8>(case),
        ("int8", "int8", "int8") => qlc::<i8, i8, i8>(case),
        other => Err(format!("dtype combination {other:?}")),
    }
}

fn qlc<A: Int8 + FromData, B: Int8 + FromData, Y: Int8 + FromData>(case: &Case) -> Result<(), String> {
    let need = |i: usize, what: &str| case.input_npy(i)?.ok_or(format!("no {what}"));
    let (x, xsh) = need(0, "x")?.typed::<A>()?;
    let (sx, sxsh) = need(1, "x_scale")?.f32()?;
    let (zx, zxsh) = need(2, "x_zero_point")?.typed::<A>()?;
    let (w, wsh) = need(3, "w")?.typed::<B>()?;
    let (sw, swsh) = need(4, "w_scale")?.f32()?;
    let (zw, zwsh) = need(5, "w_zero_point")?.typed::<B>()?;
    let (sy, sysh) = need(6, "y_scale")?.f32()?;
    let (zy, zysh) = need(7, "y_zero_point")?.typed::<Y>()?;
    let bias = case.input_npy(8)?.map(|n| n.typed::<i32>()).transpose()?;
    let attrs = conv_attrs(case)?;
    let (want, ysh) = case.load(case.output(0)?)?.typed::<Y>()?;
    let shape = conv_output_shape(&xsh, &wsh, &attrs).map_err(|e| e.to_string())?;
    if shape != ysh {
        return Err(format!("output shape {shape:?}, expected {ysh:?}"));
    }
    for ctx in tier_contexts() {
        let mut y = vec![Y::default(); want.len()];
        qlinear_conv_in(
            &ctx,
            TensorRef::new(&x, &xsh),
            TensorRef::new(&sx, &sxsh),
            TensorRef::new(&zx, &zxsh),
            TensorRef::new(&w, &wsh),
            TensorRef::new(&sw, &swsh),
            TensorRef::new(&zw, &zwsh),
            TensorRef::new(&sy, &sysh),
            TensorRef::new(&zy, &zysh),
            bias.as_ref().map(|(v, s)| TensorRef::new(v, s)),
            &attrs,
            &mut y,
        )
        .map_err(|e| format!("{}: {e}", ctx.kernels().isa.name()))?;
        compare(&format!("y ({})", ctx.kernels().isa.name()), &y, &want)?;
    }
    Ok(())
}

fn run_conv_integer(case: &Case) -> Result<(), String> {
    let t = |i: usize| case.input(i).and_then(|s| s["npy_dtype"].as_str()).unwrap_or("");
    match (t(0), t(1)) {
        ("uint8", "uint8") => ci::<u8, u8>(case),
        ("uint8", "int8") => ci::<u8, i8>(case),
        ("int8", "uint8") => ci::<i8, u8>(case),
        ("int8", "int8") => ci::<i8, i8>(case),
        other => Err(format!("dtype combination {other:?}")),
    }
}

fn ci<A: Int8 + FromData, B: Int8 + FromData>(case: &Case) -> Result<(), String> {
    let (x, xsh) = case.input_npy(0)?.ok_or("no x")?.typed::<A>()?;
    let (w, wsh) = case.input_npy(1)?.ok_or("no w")?.typed::<B>()?;
    let zx = case.input_npy(2)?.map(|n| n.typed::<A>()).transpose()?;
    let zw = case.input_npy(3)?.map(|n| n.typed::<B>()).transpose()?;
    let attrs = conv_attrs(case)?;
    let (want, ysh) = case.load(case.output(0)?)?.typed::<i32>()?;
    let shape = conv_output_shape(&xsh, &wsh, &attrs).map_err(|e| e.to_string())?;
    if shape != ysh {
        return Err(format!("output shape {shape:?}, expected {ysh:?}"));
    }
    for ctx in tier_contexts() {
        let mut y = vec![0i32; want.len()];
        conv_integer_in(
            &ctx,
            TensorRef::new(&x, &xsh),
            TensorRef::new(&w, &wsh),
            zx.as_ref().map(|(v, s)| TensorRef::new(v, s)),
            zw.as_ref().map(|(v, s)| TensorRef::new(v, s)),
            &attrs,
            &mut y,
        )
        .map_err(|e| format!("{}: {e}", ctx.kernels().isa.name()))?;
        compare(&format!("y ({})", ctx.kernels().isa.name()), &y, &want)?;
    }
    Ok(())
}

fn run_case(case: &Case) -> Outcome {
    if let Some(reason) = unsupported_reason(case) {
        return Outcome::Unsupported(reason);
    }
    let r = match case.op() {
        "QuantizeLinear" => run_quantize(case),
        "DequantizeLinear" => run_dequantize(case),
        "DynamicQuantizeLinear" => run_dynamic(case),
        "QLinearMatMul" => run_qlinear_matmul(case),
        "MatMulInteger" => run_matmul_integer(case),
        "QLinearConv" => run_qlinear_conv(case),
        "ConvInteger" => run_conv_integer(case),
        op => Err(format!("no runner for {op}")),
    };
    match r {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

/// Runs every case of `ops`, prints one line each, and fails on any failure or any
/// required case that does not pass.
fn family(ops: &[&str]) {
    let cases: Vec<Case> = all_cases().into_iter().filter(|c| ops.contains(&c.op())).collect();
    assert!(!cases.is_empty(), "no {ops:?} cases in {}", conformance_dir().display());
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    // One block per family, printed at once so parallel tests do not interleave lines.
    let mut report = String::new();
    for case in &cases {
        match run_case(case) {
            Outcome::Pass => {
                report += &format!("PASS {}\n", case.name);
                passed.push(case.name.clone());
            }
            Outcome::Unsupported(r) => report += &format!("UNSUPPORTED {}: {r}\n", case.name),
            Outcome::Fail(e) => {
                report += &format!("FAIL {}: {e}\n", case.name);
                failures.push(format!("{}: {e}", case.name));
            }
        }
    }
    for case in cases.iter().filter(|c| c.required()) {
        if !passed.contains(&case.name) && !failures.iter().any(|f| f.starts_with(&format!("{}:", case.name))) {
            failures.push(format!("{}: required (all of its types are supported) but not passed", case.name));
        }
    }
    for name in REQUIRED.iter().filter(|n| required_op_of(n, ops)) {
        if !passed.iter().any(|p| p == name) && !failures.iter().any(|f| f.starts_with(&format!("{name}:"))) {
            failures.push(format!("{name}: listed as required but missing or not passed"));
        }
    }
    report += &format!("{}: {} cases, {} passed, {} failures", ops.join("/"), cases.len(), passed.len(), failures.len());
    // Straight to the process's stderr, past the harness's capture, so every case shows
    // by name in a plain `cargo test` run (CI's log included).
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "\n{report}");
    }
    assert!(failures.is_empty(), "{} {ops:?} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// Whether a REQUIRED name belongs to one of `ops` (by its name prefix), so a missing
/// folder is noticed by the family that owns it.
fn required_op_of(name: &str, ops: &[&str]) -> bool {
    let prefix = |op: &str| match op {
        "QuantizeLinear" => "test_quantizelinear",
        "DequantizeLinear" => "test_dequantizelinear",
        "DynamicQuantizeLinear" => "test_dynamicquantizelinear",
        "QLinearMatMul" => "test_qlinearmatmul",
        "MatMulInteger" => "test_matmulinteger",
        "QLinearConv" => "test_qlinearconv",
        "ConvInteger" => "test_convinteger",
        _ => "\u{0}",
    };
    ops.iter().any(|op| name.starts_with(prefix(op)))
}

#[test]
fn onnx_qlinearmatmul() {
    family(&["QLinearMatMul"]);
}

#[test]
fn onnx_matmulinteger() {
    family(&["MatMulInteger"]);
}

#[test]
fn onnx_quantizelinear() {
    family(&["QuantizeLinear"]);
}

#[test]
fn onnx_dequantizelinear() {
    family(&["DequantizeLinear"]);
}

#[test]
fn onnx_dynamicquantizelinear() {
    family(&["DynamicQuantizeLinear"]);
}

#[test]
fn onnx_qlinearconv() {
    family(&["QLinearConv"]);
}

#[test]
fn onnx_convinteger() {
    family(&["ConvInteger"]);
}

/// Every folder belongs to a known operator.
#[test]
fn onnx_every_case_is_a_known_operator() {
    const KNOWN: &[&str] =
        &["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearConv"];
    for case in &all_cases() {
        assert!(KNOWN.contains(&case.op()), "{}: unknown operator {:?}", case.name, case.op());
    }
}
