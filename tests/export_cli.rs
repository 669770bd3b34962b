//! `tpri export`: a run's checkpoint under PyTorch's names, and back to tpri's, unchanged.

mod cli_support;

use cli_support::{scratch, tpri};
use tpri::run_dir::RunDir;
use tpri::tensor_file::{load_params, read_tensors, ParamNames};

#[test]
fn export_round_trips_a_runs_checkpoint() {
    let dir = scratch("export");
    let run = dir.join("run");
    let (r, t, back) = (
        run.to_str().unwrap(),
        dir.join("torch.safetensors"),
        dir.join("back.safetensors"),
    );
    let out = tpri(&[
        "train",
        "--preset",
        "adding-30-tp-quick",
        "--iterations",
        "3",
        "--hidden",
        "6",
        "--backend",
        "cpu",
        "--run-dir",
        r,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tpri(&["export", r, "--out", t.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("torch names"));
    let tensors = read_tensors(&t).unwrap();
    assert_eq!(ParamNames::detect(&tensors), ParamNames::Torch);
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "head.bias",
            "head.weight",
            "rnn.bias_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.weight_ih_l0"
        ]
    );

    let out = tpri(&[
        "export",
        t.to_str().unwrap(),
        "--to",
        "tpri",
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, state) = RunDir::open(&run).unwrap();
    let checkpoint = state.expect("the run wrote a checkpoint").params;
    assert_eq!(load_params(&back).unwrap(), checkpoint);
    assert_eq!(load_params(&t).unwrap(), checkpoint);

    // A directory without a checkpoint says so.
    let out = tpri(&["export", dir.to_str().unwrap(), "--out", "x.safetensors"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint.safetensors"));
    let _ = std::fs::remove_dir_all(&dir);
}
