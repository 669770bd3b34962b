//! Tasks of docs/ALGORITHM.md §6, the synthetic ones: generator formulas and ranges,
//! seeding, config files. IDX reading and pixel sequences are tests/pixel_tasks.rs.

use std::collections::BTreeSet;

use tpri::config::Loss;
use tpri::tasks::{build_task, Batch, PixelDataset, Targets, Task, TaskSpec};

mod task_support;

use task_support::{all_sequences, assert_shape, labels, sequence};

// ---------- helpers ----------

fn values(batch: &Batch) -> Vec<f64> {
    match &batch.y {
        Targets::Values(v) => v.column(0).iter().copied().collect(),
        Targets::Labels(_) | Targets::StepLabels(_) => panic!("expected values"),
    }
}

fn synthetic(spec: TaskSpec, seed: u64, eval_size: usize) -> Box<dyn Task> {
    build_task(&spec, seed, eval_size).unwrap()
}

const SEQ_LENS: [usize; 7] = [10, 11, 19, 30, 57, 60, 120];

// ---------- temporal order ----------

#[test]
fn temporal_order_follows_spec_for_every_sequence() {
    for t_len in SEQ_LENS {
        // docs/ALGORITHM.md §6 ranges, written the way the spec states them.
        let k = t_len / 10;
        let half = t_len / 2;
        let (mut seen_p0, mut seen_p1, mut seen_labels) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut seen_distractors = BTreeSet::new();
        for seed in 0..12 {
            let task = synthetic(TaskSpec::TemporalOrder { seq_len: t_len }, seed, 30);
            assert_eq!(
                (task.input_size(), task.output_size(), task.seq_len()),
                (6, 4, t_len)
            );
            assert_eq!(task.loss(), Loss::CrossEntropy);
            let mut batches: Vec<Batch> =
                (0..4).map(|i| task.train_batch(i, 20).unwrap()).collect();
            batches.extend(task.eval_batches(8).unwrap());
            for batch in &batches {
                assert_shape(batch, task.as_ref(), batch.batch_size());
                for b in 0..batch.batch_size() {
                    let symbols: Vec<usize> = batch
                        .x
                        .iter()
                        .map(|step| {
                            let row: Vec<f64> = step.row(b).iter().copied().collect();
                            assert_eq!(row.iter().filter(|&&v| v == 1.0).count(), 1, "one-hot");
                            assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), 5, "one-hot");
                            row.iter().position(|&v| v == 1.0).unwrap()
                        })
                        .collect();
                    let marked: Vec<usize> = (0..t_len).filter(|&t| symbols[t] < 2).collect();
                    assert_eq!(
                        marked.len(),
                        2,
                        "T={t_len}: exactly two bit steps, got {marked:?}"
                    );
                    let (p0, p1) = (marked[0], marked[1]);
                    assert!((k..2 * k).contains(&p0), "T={t_len}: p0={p0}");
                    assert!((half..half + k).contains(&p1), "T={t_len}: p1={p1}");
                    assert_eq!(labels(batch)[b], symbols[p0] + 2 * symbols[p1]);
                    seen_p0.insert(p0);
                    seen_p1.insert(p1);
                    seen_labels.insert(labels(batch)[b]);
                    seen_distractors.extend(symbols.iter().filter(|&&s| s >= 2));
                }
            }
        }
        assert_eq!(seen_p0, (k..2 * k).collect(), "T={t_len}: every p0 occurs");
        assert_eq!(
            seen_p1,
            (half..half + k).collect(),
            "T={t_len}: every p1 occurs"
        );
        assert_eq!(seen_labels, (0..4).collect());
        assert_eq!(seen_distractors, (2..6).collect());
    }
}

// ---------- adding ----------

#[test]
fn adding_follows_spec_for_every_sequence() {
    for t_len in SEQ_LENS {
        let first = t_len / 10;
        let second = 2 * t_len / 5; // ⌊0.4T⌋
        let (mut seen_p0, mut seen_p1) = (BTreeSet::new(), BTreeSet::new());
        for seed in 0..12 {
            let task = synthetic(TaskSpec::Adding { seq_len: t_len }, seed, 30);
            assert_eq!(
                (task.input_size(), task.output_size(), task.seq_len()),
                (2, 1, t_len)
            );
            assert_eq!(task.loss(), Loss::Mse);
            let mut batches: Vec<Batch> =
                (0..4).map(|i| task.train_batch(i, 20).unwrap()).collect();
            batches.extend(task.eval_batches(8).unwrap());
            for batch in &batches {
                assert_shape(batch, task.as_ref(), batch.batch_size());
                let targets = values(batch);
                for b in 0..batch.batch_size() {
                    let marks: Vec<f64> = batch.x.iter().map(|s| s[(b, 0)]).collect();
                    let vals: Vec<f64> = batch.x.iter().map(|s| s[(b, 1)]).collect();
                    assert!(marks.iter().all(|&m| m == 0.0 || m == 1.0));
                    assert!(vals.iter().all(|v| (0.0..1.0).contains(v)));
                    let marked: Vec<usize> = (0..t_len).filter(|&t| marks[t] == 1.0).collect();
                    assert_eq!(marked.len(), 2, "T={t_len}: exactly two marks");
                    let (p0, p1) = (marked[0], marked[1]);
                    assert!((0..first).contains(&p0), "T={t_len}: p0={p0}");
                    assert!((first..first + second).contains(&p1), "T={t_len}: p1={p1}");
                    assert_eq!(targets[b], (vals[p0] + vals[p1]) / 2.0);
                    seen_p0.insert(p0);
                    seen_p1.insert(p1);
                }
            }
        }
        assert_eq!(seen_p0, (0..first).collect(), "T={t_len}: every p0 occurs");
        assert_eq!(
            seen_p1,
            (first..first + second).collect(),
            "T={t_len}: every p1 occurs"
        );
    }
}

#[test]
fn adding_targets_have_the_variance_spec_quotes() {
    // Predicting the mean scores MSE 1/24 (docs/ALGORITHM.md §6): Var((U + V)/2) = (1/12)/2.
    let task = synthetic(TaskSpec::Adding { seq_len: 10 }, 3, 0);
    let targets: Vec<f64> = (0..200)
        .flat_map(|i| values(&task.train_batch(i, 100).unwrap()))
        .collect();
    let n = targets.len() as f64;
    let mean = targets.iter().sum::<f64>() / n;
    let var = targets.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n;
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    assert!((var - 1.0 / 24.0).abs() < 0.002, "variance {var}");
}

#[test]
fn too_short_sequences_are_rejected() {
    for t_len in 0..10 {
        for spec in [
            TaskSpec::TemporalOrder { seq_len: t_len },
            TaskSpec::Adding { seq_len: t_len },
        ] {
            let message = build_task(&spec, 0, 10)
                .err()
                .expect("too short")
                .to_string();
            assert!(message.contains(&format!("T = {t_len}")), "{message}");
        }
    }
}

// ---------- seeding ----------

#[test]
fn synthetic_data_is_a_pure_function_of_seed_and_index() {
    for spec in [
        TaskSpec::TemporalOrder { seq_len: 60 },
        TaskSpec::Adding { seq_len: 30 },
    ] {
        let a = synthetic(spec.clone(), 5, 40);
        let b = synthetic(spec.clone(), 5, 40);
        let other = synthetic(spec.clone(), 6, 40);
        // A resumed run asks for batch 7 first; an uninterrupted one after 0..7.
        let late = a.train_batch(7, 20).unwrap();
        let in_order: Vec<Batch> = (0..8).map(|i| b.train_batch(i, 20).unwrap()).collect();
        assert_eq!(late, in_order[7]);
        assert_ne!(in_order[0], in_order[1], "batches differ by index");
        assert_ne!(
            other.train_batch(7, 20).unwrap(),
            late,
            "batches differ by seed"
        );
        assert_eq!(a.eval_batches(16).unwrap(), b.eval_batches(16).unwrap());
        assert_ne!(a.eval_batches(16).unwrap(), other.eval_batches(16).unwrap());
        assert_eq!(a.train_batch(0, 0).unwrap().batch_size(), 0);
    }
}

#[test]
fn eval_set_is_fixed_and_independent_of_batch_size() {
    for spec in [
        TaskSpec::TemporalOrder { seq_len: 20 },
        TaskSpec::Adding { seq_len: 20 },
    ] {
        let task = synthetic(spec, 1, 50);
        let small = task.eval_batches(7).unwrap();
        let sizes: Vec<usize> = small.iter().map(Batch::batch_size).collect();
        assert_eq!(sizes, [7, 7, 7, 7, 7, 7, 7, 1]);
        let whole = task.eval_batches(100).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(all_sequences(&small), all_sequences(&whole));
        assert_eq!(
            task.eval_batches(7).unwrap(),
            small,
            "evaluation data is fixed"
        );
    }
    assert!(synthetic(TaskSpec::Adding { seq_len: 20 }, 1, 0)
        .eval_batches(4)
        .unwrap()
        .is_empty());
}

#[test]
fn eval_stream_is_disjoint_from_training_batches() {
    // Adding draws continuous values, so equal sequences would mean shared streams.
    let task = synthetic(TaskSpec::Adding { seq_len: 12 }, 9, 200);
    let eval: BTreeSet<Vec<u64>> = all_sequences(&task.eval_batches(50).unwrap())
        .into_iter()
        .map(|s| s.iter().map(|v| v.to_bits()).collect())
        .collect();
    assert_eq!(eval.len(), 200);
    let train: Vec<Batch> = (0..300).map(|i| task.train_batch(i, 20).unwrap()).collect();
    for seq in all_sequences(&train) {
        let bits: Vec<u64> = seq.iter().map(|v| v.to_bits()).collect();
        assert!(!eval.contains(&bits));
    }
    // Nor is the first eval sequence any batch's first sequence with another batch size.
    let first_eval = sequence(&task.eval_batches(1).unwrap()[0], 0);
    for i in 0..50 {
        assert_ne!(sequence(&task.train_batch(i, 1).unwrap(), 0), first_eval);
    }
}

// ---------- config ----------

#[test]
fn task_spec_reads_and_writes_config_files() {
    let cases = [
        ("name = \"temporal-order\"\nseq_len = 60\n", TaskSpec::TemporalOrder { seq_len: 60 }),
        ("name = \"adding\"\nseq_len = 30\n", TaskSpec::Adding { seq_len: 30 }),
        (
            "name = \"pixel\"\ndir = \"/data/mnist\"\nchunk = 4\nstandardize = true\npermuted = false\n",
            TaskSpec::Pixel { dir: "/data/mnist".into(), dataset: PixelDataset::Mnist, chunk: 4, standardize: true, permuted: false, mean_std: None },
        ),
        (
            "name = \"pixel\"\ndir = \"c\"\ndataset = \"cifar10\"\nchunk = 1\nstandardize = true\npermuted = true\n",
            TaskSpec::Pixel { dir: "c".into(), dataset: PixelDataset::Cifar10, chunk: 1, standardize: true, permuted: true, mean_std: None },
        ),
        (
            "name = \"pixel\"\ndir = \"/d\"\nchunk = 1\nstandardize = true\npermuted = false\nmean_std = [0.286, 0.3202]\n",
            TaskSpec::Pixel { dir: "/d".into(), dataset: PixelDataset::Mnist, chunk: 1, standardize: true, permuted: false, mean_std: Some([0.286, 0.3202]) },
        ),
    ];
    for (text, spec) in cases {
        assert_eq!(toml::from_str::<TaskSpec>(text).unwrap(), spec);
        let written = toml::to_string(&spec).unwrap();
        assert_eq!(toml::from_str::<TaskSpec>(&written).unwrap(), spec);
    }
    assert!(toml::from_str::<TaskSpec>("name = \"adding\"\nseq_len = 30\nextra = 1\n").is_err());
    assert!(toml::from_str::<TaskSpec>("name = \"copying\"\nseq_len = 30\n").is_err());
    assert!(toml::from_str::<TaskSpec>("name = \"adding\"\n").is_err());
}
