"""An independent reading of CIFAR-10's binary files, as the published code's data loading
turns them into sequences (torchvision's CIFAR10, then ToTensor, Normalize(mean, std) and
Vectorize(k), i.e. `tensor.view(-1, k)` of the 3×32×32 image), to check the batches that
`tpri batch` writes: the sequences `tpri train` feeds the model.

Usage: cifar_numpy.py DATA_DIR BATCH CHUNK STANDARDIZE ROWS

DATA_DIR holds data_batch_1.bin … data_batch_5.bin and test_batch.bin (records of a label
byte and 3072 pixel bytes, the red plane row by row, then green, then blue). BATCH is a
safetensors file with x [B, T, k] and y [B]. STANDARDIZE is 1 or 0. ROWS says which images
the rows of x must be: `test:S` for test images S, S+1, … in order (a held-out batch), or
`train` for some training image each, with its label (a training batch: its images are
drawn by tpri's seeded shuffle, which this script does not reproduce; each row is matched
to the training image it is closest to).

Prints the largest error relative to the largest |value| and exits 1 above 1e-9, or when
a shape or a label differs.
"""
import os
import sys

import numpy as np
from safetensors.numpy import load_file

MEAN = np.array([0.4914, 0.4822, 0.4465])
STD = np.array([0.247, 0.243, 0.261])
TOL = 1e-9


def read(paths):
    """Labels and 3×32×32 u8 images of the records of `paths`, in order."""
    records = np.concatenate([np.fromfile(p, dtype=np.uint8).reshape(-1, 3073) for p in paths])
    return records[:, 0].astype(np.int64), records[:, 1:].reshape(-1, 3, 32, 32)


def sequences(images, chunk, standardize):
    """Each image as the published code feeds it: [N, 3072 / k, k] in channel-major order."""
    x = images.astype(np.float64) / 255.0  # ToTensor
    if standardize:
        x = (x - MEAN[None, :, None, None]) / STD[None, :, None, None]  # Normalize
    return x.reshape(len(x), -1, chunk)  # Vectorize: view(-1, k) of each C×H×W image


def main():
    data_dir, batch_path, chunk, standardize, rows = sys.argv[1:]
    chunk, standardize = int(chunk), standardize == "1"
    batch = load_file(batch_path)
    x, y = batch["x"], batch["y"]
    if rows == "train":
        names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    else:
        names = ["test_batch.bin"]
    labels, images = read([os.path.join(data_dir, n) for n in names])
    want_all = sequences(images, chunk, standardize)
    if rows == "train":
        # The training image closest to each row; exact agreement is then checked below.
        dist = ((x[:, None] - want_all[None]) ** 2).sum(axis=(2, 3))
        index = dist.argmin(axis=1)
    else:
        start = int(rows.split(":")[1])
        index = np.arange(start, start + len(x))
    want, want_y = want_all[index], labels[index]
    if x.shape != want.shape or not np.array_equal(y, want_y):
        print(f"x {x.shape} against {want.shape}; y {y} against {want_y}")
        sys.exit(1)
    err = np.abs(x - want).max() / max(np.abs(want).max(), 1e-300)
    print(f"{len(x)} sequences of {x.shape[1]} steps × {x.shape[2]}: images {index.tolist()}, "
          f"max rel err {err:.2e}")
    sys.exit(0 if err <= TOL else 1)


if __name__ == "__main__":
    main()
