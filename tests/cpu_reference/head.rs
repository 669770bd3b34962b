//! The head's loss and accuracy (docs/ALGORITHM.md §1) at chosen outputs: V = I and c = 0 make the
//! logits z equal to the last states, which may be any reals.

use nalgebra::DMatrix;

use tpri::config::Loss;
use tpri::cpu::head::head;
use tpri::model::{Dims, Params};
use tpri::tasks::Targets;

/// A head that passes h_T through: z = h_T.
fn identity_head(q: usize) -> Params {
    let mut p = Params::zeros(Dims {
        input: 1,
        hidden: q,
        output: q,
    })
    .unwrap();
    p.head_w = DMatrix::identity(q, q);
    p
}

/// Logits of ±1e4 overflow a naive softmax; the shifted log-sum-exp keeps ℓ and its
/// gradient exact.
#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let params = identity_head(3);
    let z = DMatrix::from_row_slice(
        4,
        3,
        &[
            1e4, 0.0, -1e4, //
            1e4, 0.0, -1e4, //
            -1e4, 1e4, -1e4, //
            1e4, 1e4, 1e4,
        ],
    );
    let y = Targets::Labels(vec![0, 1, 1, 2]);
    let out = head(&params, &z, &y, Loss::CrossEntropy).unwrap();
    // Per row: 0, 1e4, 0 and ln 3 (all logits equal).
    let want = (1e4 + 3f64.ln()) / 4.0;
    assert!(
        (out.loss - want).abs() <= 1e-12 * want,
        "{} vs {want}",
        out.loss
    );
    // ∂ℓ/∂z = (softmax − one-hot)/B, and z = h_T here.
    let third = 1.0 / 3.0;
    let dz = DMatrix::from_row_slice(
        4,
        3,
        &[
            0.0,
            0.0,
            0.0, //
            1.0,
            -1.0,
            0.0, //
            0.0,
            0.0,
            0.0, //
            third,
            third,
            third - 1.0,
        ],
    ) / 4.0;
    assert!((&out.grad_h - &dz).amax() <= 1e-15, "{}", out.grad_h);
    assert!((&out.grad_b - dz.row_sum().transpose()).amax() <= 1e-15);
    assert!(out.grad_w.iter().all(|g| g.is_finite()));
}

/// Accuracy is the share of sequences whose largest output is at the label.
#[test]
fn accuracy_counts_argmax_equal_to_label() {
    let params = identity_head(3);
    let z = DMatrix::from_row_slice(
        5,
        3,
        &[
            0.1, 0.5, 0.2, // argmax 1
            2.0, -1.0, 1.9, // argmax 0
            -3.0, -2.0, -1.0, // argmax 2
            0.0, 0.3, 0.31, // argmax 2
            7.0, 1.0, 0.0, // argmax 0
        ],
    );
    for (labels, want) in [
        (vec![1, 0, 2, 2, 0], 1.0),
        (vec![1, 0, 2, 1, 0], 0.8),
        (vec![0, 1, 1, 0, 2], 0.0),
        (vec![2, 0, 0, 2, 1], 0.4),
    ] {
        let y = Targets::Labels(labels.clone());
        let out = head(&params, &z, &y, Loss::CrossEntropy).unwrap();
        assert_eq!(out.accuracy, want, "labels {labels:?}");
    }
}

/// For regression, accuracy is the share of all B·q outputs within 0.04 of their target.
#[test]
fn regression_accuracy_and_loss() {
    let params = identity_head(2);
    let z = DMatrix::from_row_slice(2, 2, &[0.5, 0.0, 1.0, -1.0]);
    let y = DMatrix::from_row_slice(2, 2, &[0.53, 0.1, 1.0, -0.95]);
    let out = head(&params, &z, &Targets::Values(y), Loss::Mse).unwrap();
    assert_eq!(out.accuracy, 0.5);
    let want = (0.03f64.powi(2) + 0.1f64.powi(2) + 0.05f64.powi(2)) / 4.0;
    assert!((out.loss - want).abs() < 1e-15);
}

/// Targets that do not suit the loss or the head are refused with a message.
#[test]
fn mismatched_targets_are_refused() {
    let params = identity_head(3);
    let z = DMatrix::zeros(2, 3);
    let cases = [
        (Targets::Labels(vec![0, 3]), Loss::CrossEntropy, "label 3"),
        (Targets::Labels(vec![0]), Loss::CrossEntropy, "1 labels"),
        (
            Targets::Values(DMatrix::zeros(2, 3)),
            Loss::CrossEntropy,
            "integer labels",
        ),
        (Targets::Labels(vec![0, 1]), Loss::Mse, "real targets"),
        (Targets::Values(DMatrix::zeros(2, 2)), Loss::Mse, "shape"),
    ];
    for (y, loss, needle) in cases {
        let msg = head(&params, &z, &y, loss).unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg}");
    }
}
