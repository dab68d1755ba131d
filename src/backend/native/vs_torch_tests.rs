//! Every gallery spec on the native backend against the torch backend (seeded).

use super::backend::Native;
use crate::backend::plan::Plan as NPlan;
use crate::backend::torch::{exec, inputs, lower, params};
use crate::backend::{Backend, Options};
use crate::ir::{Init, ParamSource};
use crate::pipeline::Mode;
use crate::tensor::HostTensor;
use tch::{Kind, Tensor};

fn host(t: &Tensor) -> HostTensor {
    let shape = t.size();
    if t.kind() == Kind::Float || t.kind() == Kind::Double || t.kind() == Kind::Half || t.kind() == Kind::BFloat16 {
        let v: Vec<f32> = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
        HostTensor::from_f32(&shape, &v).unwrap()
    } else {
        let v: Vec<i64> = Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).unwrap();
        HostTensor::from_i64(&shape, &v).unwrap()
    }
}

pub fn compare(path: &str, mode: Mode, batch: i64, drop: &[&str]) -> f64 {
    let c = crate::api::compile_file(std::path::Path::new(path), mode).unwrap_or_else(|_| panic!("{path} compiles"));
    let tplan = lower::lower(&c.graph).unwrap();
    let nplan = NPlan::new(&c.graph);
    let values: Vec<Tensor> = tplan
        .params
        .iter()
        .map(|p| {
            let init = match &p.source {
                ParamSource::Init { init } => init.clone(),
                _ => params::fallback_init(p),
            };
            let init = if matches!(init, Init::Zeros) { Init::Normal { std: 0.02 } } else { init };
            params::init_tensor(&init, &p.shape, Kind::Float, 0, &p.path).unwrap()
        })
        .collect();
    let given = inputs::random(&tplan, batch, 1).unwrap();
    let given: Vec<(String, Tensor)> = given.into_iter().filter(|(n, _)| !drop.contains(&n.as_str())).collect();
    let (bound, _) = inputs::bind(&tplan, given, Kind::Float, tch::Device::Cpu).unwrap();
    let ins: Vec<Option<HostTensor>> = bound.iter().map(|t| t.as_ref().map(host)).collect();
    let want = exec::run(&tplan, &values, bound).unwrap();
    let hp: Vec<HostTensor> = values.iter().map(host).collect();
    let mut exe = Native { threads: 2, ..Default::default() }.prepare(&nplan, hp, &Options::default()).unwrap();
    let got = exe.run(&ins).unwrap();
    let mut worst = 0f64;
    for ((n1, a), (n2, b)) in got.iter().zip(&want) {
        assert_eq!(n1, n2);
        let b = host(b);
        assert_eq!(a.shape, b.shape, "{n1}");
        let (a, b) = (a.to_f64(), b.to_f64());
        let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-30);
        worst = worst.max(num / den);
    }
    worst
}

#[test]
fn gallery_specs_agree_with_torch() {
    let mut specs: Vec<String> = std::fs::read_dir("specs")
        .unwrap()
        .chain(std::fs::read_dir("specs/demo").unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "graft"))
        .map(|p| p.display().to_string())
        .collect();
    specs.sort();
    let only = std::env::var("GRAFT_SPEC").unwrap_or_default();
    for s in specs.iter().filter(|s| s.contains(&only)) {
        for mode in [Mode::Infer, Mode::Train] {
            let e = compare(s, mode, 2, &[]);
            eprintln!("{s} {mode:?}: {e:.2e}");
            assert!(e <= 1e-5, "{s} {mode:?}: {e}");
        }
    }
}
