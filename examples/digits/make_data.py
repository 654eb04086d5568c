"""Write scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download) in Keras' npz layout.

    python examples/digits/make_data.py OUT.npz

The 17 grey levels (0..16) become uint8 pixels 0..255 (x 16, 16 -> 255); a seeded, stratified split keeps
360 images (20 %) as the test set.  The result is what `task.name = "custom"` reads: x_train (1437, 8, 8)
uint8, y_train (1437,) int64, x_test (360, 8, 8), y_test (360,), labels 0..9.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(out: str) -> None:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("examples/digits needs scikit-learn: pip install -e '.[example]' (make example does it)")
    digits = load_digits()
    x = np.minimum(digits.images * 16, 255).astype(np.uint8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"{path}: x_train {x_train.shape}, x_test {x_test.shape}, {len(np.unique(y))} classes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/digits/make_data.py OUT.npz")
    main(sys.argv[1])
