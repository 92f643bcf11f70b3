//! Parameters by name: read a module's float parameters into plain f32 vectors keyed by their
//! module path (`encoder.layers.0.weight`), and write such a map back into a module. The
//! optimiser, the EMA and checkpoints all work on this map, so that they are exact, simple to
//! save, and keyed by stable names rather than run-time ids.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};

use crate::{Error, Result};

/// One parameter: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamValue {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All float parameters of a module, by path, in a fixed (sorted) order.
pub type NamedParams = BTreeMap<String, ParamValue>;

fn tensor_values<const D: usize>(t: Tensor<D>) -> std::result::Result<Vec<f32>, String> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

/// A map applied to each gradient (flattened) before it is read: a sum across devices.
pub type GradMap<'a> = &'a dyn Fn(Tensor<1>) -> Tensor<1>;

struct Collect<'a> {
    path: Vec<String>,
    grads: Option<&'a Gradients>,
    map: Option<GradMap<'a>>,
    out: NamedParams,
    error: Option<String>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        let t = param.val();
        let shape = t.dims().to_vec();
        let t = match self.grads {
            None => Some(t),
            Some(g) => t.grad(g),
        };
        if let Some(t) = t {
            let values = match self.map {
                None => tensor_values(t),
                Some(f) => {
                    let n = shape.iter().product::<usize>();
                    tensor_values(f(t.reshape([n])))
                }
            };
            match values {
                Ok(data) => {
                    self.out.insert(path, ParamValue { shape, data });
                }
                Err(e) => self.error = Some(format!("{path}: {e}")),
            }
        }
    }
}

/// Every float parameter of `m`. Also forces lazily initialised parameters, in a fixed order.
pub fn collect<M: Module>(m: &M) -> Result<NamedParams> {
    let mut v = Collect {
        path: vec![],
        grads: None,
        map: None,
        out: NamedParams::new(),
        error: None,
    };
    m.visit(&mut v);
    match v.error {
        Some(e) => Err(Error::Invalid(format!("reading parameter {e}"))),
        None => Ok(v.out),
    }
}

/// The name and shape of every float parameter of `m`, read without initialising any: a model
/// built from a configuration (whose parameters are lazy) can be measured before a byte of its
/// size exists.
pub fn shapes<M: Module>(m: &M) -> BTreeMap<String, Vec<usize>> {
    struct Shapes {
        path: Vec<String>,
        out: BTreeMap<String, Vec<usize>>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.lazy_shape().dims::<D>().to_vec();
            self.out.insert(self.path.join("."), shape);
        }
    }
    let mut s = Shapes {
        path: vec![],
        out: BTreeMap::new(),
    };
    m.visit(&mut s);
    s.out
}

/// Scalar parameters of shapes from [`shapes`], as f64 (no overflow however absurd the sizes).
pub fn lazy_count<M: Module>(m: &M) -> f64 {
    shapes(m)
        .values()
        .map(|s| s.iter().map(|&d| d as f64).product::<f64>())
        .sum()
}

/// The gradient of every parameter that has one.
pub fn collect_grads<M: Module>(m: &M, grads: &Gradients) -> Result<NamedParams> {
    collect_grads_mapped(m, grads, None)
}

/// [`collect_grads`], each gradient passed through `map` first (in the modules' order, the same
/// on every thread: a collective sum across devices is matched call for call).
pub fn collect_grads_mapped<M: Module>(
    m: &M,
    grads: &Gradients,
    map: Option<GradMap<'_>>,
) -> Result<NamedParams> {
    let mut v = Collect {
        path: vec![],
        grads: Some(grads),
        map,
        out: NamedParams::new(),
        error: None,
    };
    m.visit(&mut v);
    match v.error {
        Some(e) => Err(Error::Invalid(format!("reading gradient {e}"))),
        None => Ok(v.out),
    }
}

struct Assign<'a> {
    path: Vec<String>,
    params: &'a NamedParams,
    missing: Vec<String>,
    used: usize,
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(v) = self.params.get(&path) else {
            self.missing.push(path);
            return param;
        };
        // The shape without initialising the parameter: a model built from a doctored spec
        // (say a data dimension of 10⁹) is refused here before anything of its size exists.
        let current = param.lazy_shape().dims::<D>().to_vec();
        if current != v.shape {
            self.missing.push(format!(
                "{path} (shape {:?}, stored {:?})",
                current, v.shape
            ));
            return param;
        }
        self.used += 1;
        let new = Tensor::<D>::from_data(
            TensorData::new(v.data.clone(), v.shape.clone()),
            &param.lazy_device(),
        );
        let id = param.id;
        param.transform_for_load(new, id)
    }
}

/// Write `params` into `m`: every parameter of `m` must be present with its shape.
pub fn assign<M: Module>(m: M, params: &NamedParams) -> Result<M> {
    let mut a = Assign {
        path: vec![],
        params,
        missing: vec![],
        used: 0,
    };
    let m = m.map(&mut a);
    if !a.missing.is_empty() {
        return Err(Error::Shape(format!(
            "parameters missing or of the wrong shape: {}",
            a.missing.join(", ")
        )));
    }
    if a.used != params.len() {
        let known = collect_paths(&m);
        let extra: Vec<_> = params
            .keys()
            .filter(|k| !known.contains(k))
            .cloned()
            .collect();
        return Err(Error::Shape(format!(
            "stored parameters the model does not have: {}",
            extra.join(", ")
        )));
    }
    Ok(m)
}

fn collect_paths<M: Module>(m: &M) -> Vec<String> {
    struct P {
        path: Vec<String>,
        out: Vec<String>,
    }
    impl ModuleVisitor for P {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
            self.out.push(self.path.join("."));
        }
    }
    let mut p = P {
        path: vec![],
        out: vec![],
    };
    m.visit(&mut p);
    p.out
}

/// Number of scalar parameters.
pub fn count(params: &NamedParams) -> usize {
    params.values().map(|p| p.data.len()).sum()
}
