//! The shared comparator (`tests/common/compare.rs`) fails where it must: NaN and ±∞
//! on either side, lists of different lengths or names, shapes and dtypes that
//! differ, errors past the tolerance (naming the tensor and the worst element); and
//! passes what is within it, reporting what it measured.

mod common;

use common::compare::{assert_close, compare, Tol, Values};
use graft::tensor::HostTensor;

fn one(name: &str, shape: &[i64], data: &[f64]) -> (String, Values) {
    (name.to_string(), Values::new(shape, data.to_vec()))
}

const NORM: Tol = Tol::Norm { rel: 1e-5 };

#[test]
fn equal_lists_pass_and_report_their_errors() {
    let want = vec![one("a", &[2, 2], &[1.0, 2.0, 3.0, 4.0]), one("b", &[1], &[0.0])];
    let got = vec![one("a", &[2, 2], &[1.0, 2.0, 3.0, 4.000001]), one("b", &[1], &[0.0])];
    let stats = compare(&got, &want, NORM).expect("within tolerance");
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].worst, vec![1, 1]);
    assert!(stats[0].rel > 0.0 && stats[0].rel < 1e-6, "{}", stats[0]);
    assert_eq!(stats[1].rel, 0.0);
}

#[test]
fn nan_fails() {
    let want = vec![one("y", &[3], &[1.0, 2.0, 3.0])];
    let got = vec![one("y", &[3], &[1.0, f64::NAN, 3.0])];
    let e = compare(&got, &want, NORM).expect_err("NaN must fail");
    assert!(e.contains("`y`") && e.contains("NaN") && e.contains("[1]"), "{e}");
    // Even where the norm-wise error would be NaN and `max` would drop it.
    let e = compare(&got, &want, Tol::Max { abs: 1.0, rel: 1.0 }).expect_err("NaN must fail");
    assert!(e.contains("NaN"), "{e}");
    // A NaN in the expected values is a broken reference, not a pass.
    assert!(compare(&want, &got, NORM).is_err());
    // NaN against NaN is not "bit-identical".
    assert!(compare(&got, &got, Tol::Exact).is_err());
}

#[test]
fn infinities_fail() {
    for inf in [f64::INFINITY, f64::NEG_INFINITY] {
        let want = vec![one("y", &[2, 2], &[0.0, 0.0, 0.0, inf])];
        let got = vec![one("y", &[2, 2], &[0.0, 0.0, 0.0, inf])];
        let e = compare(&got, &want, Tol::Exact).expect_err("∞ must fail");
        assert!(e.contains("inf") && e.contains("[1, 1]"), "{e}");
    }
}

#[test]
fn a_length_mismatch_fails() {
    let want = vec![one("a", &[1], &[1.0]), one("b", &[1], &[1.0])];
    let got = vec![one("a", &[1], &[1.0])];
    let e = compare(&got, &want, NORM).expect_err("a missing tensor must fail");
    assert!(e.contains("1 tensors") && e.contains("expected 2"), "{e}");
    let e = compare(&want, &got, NORM).expect_err("an extra tensor must fail");
    assert!(e.contains("2 tensors"), "{e}");
    assert!(compare(&[], &[], NORM).is_err(), "comparing nothing proves nothing");
}

#[test]
fn a_name_mismatch_fails() {
    let want = vec![one("logits", &[1], &[1.0]), one("emb", &[1], &[1.0])];
    let swapped = vec![one("emb", &[1], &[1.0]), one("logits", &[1], &[1.0])];
    let e = compare(&swapped, &want, NORM).expect_err("names differ in order");
    assert!(e.contains("logits") && e.contains("emb"), "{e}");
    let renamed = vec![one("logits", &[1], &[1.0]), one("pooled", &[1], &[1.0])];
    assert!(compare(&renamed, &want, NORM).is_err());
}

#[test]
fn shapes_and_dtypes_must_match() {
    let want = vec![one("y", &[2, 3], &[0.0; 6])];
    let got = vec![one("y", &[3, 2], &[0.0; 6])];
    let e = compare(&got, &want, Tol::Exact).expect_err("shapes differ");
    assert!(e.contains("shape [3, 2], expected [2, 3]"), "{e}");
    let f32 = HostTensor::from_f32(&[2], &[1.0, 2.0]).unwrap();
    let f64 = HostTensor::from_f64(&[2], &[1.0, 2.0]).unwrap();
    let e = compare(&[("t".into(), (&f32).into())], &[("t".into(), (&f64).into())], Tol::Exact).unwrap_err();
    assert!(e.contains("dtype F32, expected F64"), "{e}");
}

#[test]
fn past_the_tolerance_fails_naming_the_tensor_and_the_worst_element() {
    let want = vec![one("ok", &[2], &[1.0, 1.0]), one("bad", &[2, 3], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0])];
    let got = vec![one("ok", &[2], &[1.0, 1.0]), one("bad", &[2, 3], &[1.0, 1.0, 1.0, 1.0, 1.5, 1.0])];
    let e = compare(&got, &want, NORM).expect_err("0.5 off");
    assert!(e.contains("bad") && e.contains("[1, 1]") && !e.contains("ok:"), "{e}");
    let e = compare(&got, &want, Tol::Max { abs: 0.1, rel: 0.1 }).expect_err("0.5 > 0.1 + 0.1");
    assert!(e.contains("[1, 1]"), "{e}");
    compare(&got, &want, Tol::Max { abs: 0.0, rel: 0.5 }).expect("0.5 ≤ 0.5·max|want|");
    // One ulp of f32 is not exact.
    let x = 1.0f32;
    let next = f32::from_bits(x.to_bits() + 1);
    let a = vec![("t".to_string(), Values::f32(&[1], &[x]))];
    let b = vec![("t".to_string(), Values::f32(&[1], &[next]))];
    assert!(compare(&a, &b, Tol::Exact).is_err());
    compare(&a, &a, Tol::Exact).expect("equal bits");
}

#[test]
fn an_all_zero_reference_uses_the_absolute_norm() {
    let want = vec![one("z", &[2], &[0.0, 0.0])];
    compare(&[one("z", &[2], &[1e-7, 0.0])], &want, NORM).expect("1e-7 absolute");
    assert!(compare(&[one("z", &[2], &[1e-3, 0.0])], &want, NORM).is_err());
}

#[test]
#[should_panic(expected = "native vs torch")]
fn assert_close_panics_with_its_context() {
    assert_close("native vs torch", &[one("y", &[1], &[f64::NAN])], &[one("y", &[1], &[0.0])], NORM);
}
