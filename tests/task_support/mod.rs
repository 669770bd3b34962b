//! What the task tests share: reading batches back (a sequence, the labels) and checking
//! their shape.

#![allow(dead_code)] // each test binary uses a different subset

use tpri::tasks::{Batch, Targets, Task};

/// Sequence `b` of a batch, flattened over steps then inputs.
pub fn sequence(batch: &Batch, b: usize) -> Vec<f64> {
    batch
        .x
        .iter()
        .flat_map(|step| step.row(b).iter().copied().collect::<Vec<_>>())
        .collect()
}

pub fn labels(batch: &Batch) -> &[usize] {
    match &batch.y {
        Targets::Labels(l) => l,
        Targets::Values(_) | Targets::StepLabels(_) => panic!("expected labels"),
    }
}

pub fn all_sequences(batches: &[Batch]) -> Vec<Vec<f64>> {
    batches
        .iter()
        .flat_map(|b| (0..b.batch_size()).map(move |i| sequence(b, i)))
        .collect()
}

pub fn assert_shape(batch: &Batch, task: &dyn Task, batch_size: usize) {
    assert_eq!(batch.seq_len(), task.seq_len());
    assert_eq!(batch.batch_size(), batch_size);
    for step in &batch.x {
        assert_eq!(
            (step.nrows(), step.ncols()),
            (batch_size, task.input_size())
        );
    }
}
