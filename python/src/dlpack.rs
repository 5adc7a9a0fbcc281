//! DLPack (<https://dmlc.github.io/dlpack/latest/>): arrays in and out without a copy through
//! Python, by the C structs and the PyCapsule protocol (`__dlpack__`, `__dlpack_device__`).
//!
//! Written here rather than taken from a crate: the one maintained crate (`dlpark` 0.10) wants a
//! newer Rust (1.88) than the main crate (1.80), its own pyo3 version, and brings conversions for
//! candle / ndarray / image we do not use; what we need is four `#[repr(C)]` structs, a consumer
//! that reads float32 on the CPU, and a producer for our results — about 200 lines.
//!
//! - Consumer ([`read_f32`]): calls `obj.__dlpack__()`, takes the capsule (renamed
//!   `used_dltensor`, as the protocol asks), reads the data where it lies — any strides, f32 —
//!   into the engine's tensor, and calls the producer's deleter. numpy >= 1.22 and torch speak it.
//! - Producer ([`Array`]): a result owns its `Vec<f32>`; `__dlpack__` hands numpy or torch a
//!   capsule pointing into that very buffer (`numpy.from_dlpack(a)` copies nothing), kept alive by
//!   the capsule until the consumer's array is gone.

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use deepviz::Tensor;

/// `DLDeviceType::kDLCPU`
const DL_CPU: i32 = 1;
/// `DLDeviceType::kDLCUDAHost` (pinned host memory: readable from the CPU)
const DL_CUDA_HOST: i32 = 3;
/// `DLDataTypeCode::kDLFloat`
const DL_FLOAT: u8 = 2;

const NAME: &CStr = c"dltensor";
const USED: &CStr = c"used_dltensor";
const NAME_V: &CStr = c"dltensor_versioned";
const USED_V: &CStr = c"used_dltensor_versioned";
/// `DLPACK_FLAG_BITMASK_READ_ONLY`
const FLAG_READ_ONLY: u64 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    /// in elements; null: compact row-major
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

/// DLPack 1.0's managed tensor (capsule `dltensor_versioned`): a version and flags (read-only),
/// what numpy >= 2 and recent torch exchange when asked with `max_version`.
#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// The device names of DLPack's device types, for errors.
fn device_name(t: i32) -> String {
    match t {
        1 => "cpu".into(),
        2 => "cuda".into(),
        3 => "cuda host".into(),
        4 => "opencl".into(),
        7 => "vulkan".into(),
        8 => "metal".into(),
        10 => "rocm".into(),
        _ => format!("device type {t}"),
    }
}

/// A DLPack tensor taken from its capsule (either kind); its producer's deleter runs on drop.
enum Taken {
    Legacy(*mut DLManagedTensor),
    Versioned(*mut DLManagedTensorVersioned),
}

impl Taken {
    fn tensor(&self) -> &DLTensor {
        // SAFETY: a taken tensor stays alive until our drop calls its deleter.
        unsafe {
            match *self {
                Taken::Legacy(p) => &(*p).dl_tensor,
                Taken::Versioned(p) => &(*p).dl_tensor,
            }
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a capsule we renamed `used_…`, so we own it and call its
        // deleter exactly once.
        unsafe {
            match *self {
                Taken::Legacy(p) => {
                    if let Some(d) = (*p).deleter {
                        d(p)
                    }
                }
                Taken::Versioned(p) => {
                    if let Some(d) = (*p).deleter {
                        d(p)
                    }
                }
            }
        }
    }
}

/// Take the DLPack tensor of `obj` and own it: `obj.__dlpack__(max_version=(1, 0))` (numpy
/// exports read-only arrays only this way), else the legacy `obj.__dlpack__()`.
fn take(obj: &Bound<'_, PyAny>) -> PyResult<Taken> {
    if !obj.hasattr("__dlpack__")? {
        return Err(PyTypeError::new_err(format!(
            "expected a numpy array or a tensor that speaks DLPack (`__dlpack__`), got {}",
            obj.get_type().name()?
        )));
    }
    let kw = pyo3::types::PyDict::new(obj.py());
    kw.set_item("max_version", (1, 0))?;
    let cap = match obj.call_method("__dlpack__", (), Some(&kw)) {
        Ok(c) => c,
        Err(e) if e.is_instance_of::<PyTypeError>(obj.py()) => obj.call_method0("__dlpack__")?,
        Err(e) => return Err(e),
    };
    // SAFETY: `cap` is a live object; PyCapsule_IsValid only reads its type and name. A valid
    // capsule of that name holds the matching struct; renaming it marks it consumed, so its
    // destructor no longer frees it and the deleter is ours to call.
    unsafe {
        let (name, used) = if ffi::PyCapsule_IsValid(cap.as_ptr(), NAME_V.as_ptr()) == 1 {
            (NAME_V, USED_V)
        } else if ffi::PyCapsule_IsValid(cap.as_ptr(), NAME.as_ptr()) == 1 {
            (NAME, USED)
        } else {
            return Err(PyTypeError::new_err("__dlpack__() did not return an unused DLPack capsule"));
        };
        let p = ffi::PyCapsule_GetPointer(cap.as_ptr(), name.as_ptr());
        if p.is_null() || ffi::PyCapsule_SetName(cap.as_ptr(), used.as_ptr()) != 0 {
            return Err(PyErr::take(obj.py()).unwrap_or_else(|| PyBufferError::new_err("cannot take the DLPack capsule")));
        }
        Ok(if name == NAME_V { Taken::Versioned(p as *mut DLManagedTensorVersioned) } else { Taken::Legacy(p as *mut DLManagedTensor) })
    }
}

/// Where `obj`'s DLPack data lies (its address, device type and id, shape): for checking that an
/// array is read in place.
pub fn describe(obj: &Bound<'_, PyAny>) -> PyResult<(usize, (i32, i32), Vec<i64>)> {
    let t = take(obj)?;
    let d = t.tensor();
    // SAFETY: `t` owns a live tensor whose shape has `ndim` entries.
    unsafe {
        let shape = std::slice::from_raw_parts(d.shape, d.ndim.max(0) as usize).to_vec();
        Ok((d.data as usize + d.byte_offset as usize, (d.device.device_type, d.device.device_id), shape))
    }
}

/// The float32 tensor `obj` holds on the CPU, read where it lies (any strides) into a [`Tensor`]
/// of the same shape: the one copy, into the engine's own tensor.
pub fn read_f32(obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let t = take(obj)?;
    let d = t.tensor();
    // SAFETY: `t` owns a live tensor; shape and strides have `ndim` entries (strides may be null:
    // row-major); the data holds every element the shape and strides address, f32 once the dtype
    // is checked.
    unsafe {
        if d.device.device_type != DL_CPU && d.device.device_type != DL_CUDA_HOST {
            return Err(PyValueError::new_err(format!(
                "the tensor lives on {}:{}; deepviz reads tensors from the CPU (move it with .cpu())",
                device_name(d.device.device_type),
                d.device.device_id
            )));
        }
        if (d.dtype.code, d.dtype.bits, d.dtype.lanes) != (DL_FLOAT, 32, 1) {
            return Err(PyValueError::new_err(format!(
                "expected float32 values, found DLPack dtype (code {}, {} bits, {} lanes)",
                d.dtype.code, d.dtype.bits, d.dtype.lanes
            )));
        }
        let ndim = d.ndim.max(0) as usize;
        let shape: Vec<usize> = std::slice::from_raw_parts(d.shape, ndim).iter().map(|&s| s.max(0) as usize).collect();
        let n: usize = shape.iter().product();
        let base = (d.data as *const u8).add(d.byte_offset as usize) as *const f32;
        let compact = {
            let mut want = 1i64;
            let mut ok = true;
            if !d.strides.is_null() {
                let strides = std::slice::from_raw_parts(d.strides, ndim);
                for k in (0..ndim).rev() {
                    if shape[k] > 1 && strides[k] != want {
                        ok = false;
                    }
                    want *= shape[k] as i64;
                }
            }
            ok
        };
        let data = if n == 0 {
            vec![]
        } else if compact {
            std::slice::from_raw_parts(base, n).to_vec()
        } else {
            let strides = std::slice::from_raw_parts(d.strides, ndim);
            let mut out = Vec::with_capacity(n);
            let mut idx = vec![0usize; ndim];
            for _ in 0..n {
                let off: i64 = idx.iter().zip(strides).map(|(&i, &s)| i as i64 * s).sum();
                out.push(*base.offset(off as isize));
                for k in (0..ndim).rev() {
                    idx[k] += 1;
                    if idx[k] < shape[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
            out
        };
        Tensor::new(shape, data).map_err(crate::to_py)
    }
}

/// A result: float32 values on the host that numpy or torch take without a copy
/// (`numpy.from_dlpack(a)`, `torch.from_dlpack(a)`).
#[pyclass(module = "deepviz._native", frozen)]
pub struct Array {
    data: Arc<Vec<f32>>,
    shape: Vec<i64>,
}

impl Array {
    pub fn new(t: Tensor) -> Self {
        Array { shape: t.shape.iter().map(|&s| s as i64).collect(), data: Arc::new(t.data) }
    }
}

/// What a capsule's tensor keeps alive: the values and the shape its DLTensor points into. Both
/// kinds of managed tensor are filled; the capsule hands out the one the consumer asked for.
struct Ctx {
    legacy: DLManagedTensor,
    versioned: DLManagedTensorVersioned,
    _data: Arc<Vec<f32>>,
    _shape: Vec<i64>,
}

unsafe extern "C" fn delete_legacy(m: *mut DLManagedTensor) {
    // SAFETY: `m` is a field of a `Box<Ctx>` leaked in `__dlpack__`, whose `manager_ctx` is that
    // Box; deleted once, by whoever owns the capsule's tensor.
    unsafe { drop(Box::from_raw((*m).manager_ctx as *mut Ctx)) }
}

unsafe extern "C" fn delete_versioned(m: *mut DLManagedTensorVersioned) {
    // SAFETY: as `delete_legacy`.
    unsafe { drop(Box::from_raw((*m).manager_ctx as *mut Ctx)) }
}

unsafe extern "C" fn capsule_destructor(cap: *mut ffi::PyObject) {
    // SAFETY: called by Python when the capsule dies; still named `dltensor[_versioned]` means
    // nobody took it, so its tensor is still ours to delete. A consumed one (`used_…`) is not.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, NAME.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(cap, NAME.as_ptr()) as *mut DLManagedTensor;
            if !m.is_null() {
                delete_legacy(m);
            }
        } else if ffi::PyCapsule_IsValid(cap, NAME_V.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(cap, NAME_V.as_ptr()) as *mut DLManagedTensorVersioned;
            if !m.is_null() {
                delete_versioned(m);
            }
        }
    }
}

#[pymethods]
impl Array {
    /// A DLPack capsule of these values (shared, not copied, unless `copy=True`; writable): DLPack
    /// 1.0's versioned tensor when `max_version` allows it, else the legacy one; another device
    /// than the CPU is refused.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = stream;
        if let Some((t, _)) = dl_device {
            if t != DL_CPU {
                return Err(PyBufferError::new_err(format!("deepviz results live on the CPU, not on {}", device_name(t))));
            }
        }
        // copy=True: the consumer wants its own values
        let data = if copy == Some(true) { Arc::new(self.data.as_ref().clone()) } else { self.data.clone() };
        let mut shape = self.shape.clone();
        let tensor = DLTensor {
            data: data.as_ptr() as *mut c_void,
            device: DLDevice { device_type: DL_CPU, device_id: 0 },
            ndim: shape.len() as i32,
            dtype: DLDataType { code: DL_FLOAT, bits: 32, lanes: 1 },
            shape: shape.as_mut_ptr(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        let copied = if copy == Some(true) { 2 } else { 0 }; // DLPACK_FLAG_BITMASK_IS_COPIED
        let ctx = Box::new(Ctx {
            legacy: DLManagedTensor { dl_tensor: tensor, manager_ctx: std::ptr::null_mut(), deleter: Some(delete_legacy) },
            versioned: DLManagedTensorVersioned {
                version: DLPackVersion { major: 1, minor: 0 },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_versioned),
                flags: copied & !FLAG_READ_ONLY,
                dl_tensor: tensor,
            },
            _data: data,
            // moving the Vec keeps its heap buffer, which the tensors' `shape` points into
            _shape: shape,
        });
        let raw = Box::into_raw(ctx);
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        // SAFETY: `raw` is a live leaked Box; its tensors point into the Box's own shape and the
        // shared values, both alive until a deleter drops the Box. The capsule owns it until taken.
        unsafe {
            (*raw).legacy.manager_ctx = raw as *mut c_void;
            (*raw).versioned.manager_ctx = raw as *mut c_void;
            let (ptr, name) = if versioned {
                (&mut (*raw).versioned as *mut DLManagedTensorVersioned as *mut c_void, NAME_V)
            } else {
                (&mut (*raw).legacy as *mut DLManagedTensor as *mut c_void, NAME)
            };
            let cap = ffi::PyCapsule_New(ptr, name.as_ptr(), Some(capsule_destructor));
            if cap.is_null() {
                drop(Box::from_raw(raw));
                return Err(PyErr::fetch(py));
            }
            Ok(Bound::from_owned_ptr(py, cap))
        }
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        (DL_CPU, 0)
    }

    /// The address of the values (to check that numpy / torch share them).
    #[getter]
    fn data_ptr(&self) -> usize {
        self.data.as_ptr() as usize
    }

    #[getter]
    fn shape(&self) -> Vec<i64> {
        self.shape.clone()
    }
}
