#!/usr/bin/env python3
"""Write real regression tables bundled in scikit-learn's wheel as CSV, for
`losskit train --task regression --data TABLE.csv --target COLUMN`.

Usage:  python3 sklearn_tables.py OUT_DIR
Needs:  pip install scikit-learn==1.9.1   (reads only files inside the wheel: no network)

OUT_DIR/diabetes.csv   load_diabetes(scaled=False): 442 patients, 10 raw baseline
                       features (age, sex, bmi, bp, s1..s6) and `progression`, a measure
                       of disease progression one year later (Efron et al. 2004).
OUT_DIR/linnerud.csv   load_linnerud(): 20 men, 3 exercises (Chins, Situps, Jumps) and
                       3 physiological measurements (Weight, Waist, Pulse); predict one of
                       the latter from the exercises (drop the other two columns first, or
                       pass them as features).

Output is deterministic (same bytes on every run).
"""

import csv
import sys
from pathlib import Path

from sklearn.datasets import load_diabetes, load_linnerud


def number(value):
    value = float(value)
    return int(value) if value == int(value) else repr(value)


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([number(v) for v in row])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    diabetes = load_diabetes(scaled=False)
    write(
        out / "diabetes.csv",
        list(diabetes.feature_names) + ["progression"],
        (list(x) + [y] for x, y in zip(diabetes.data, diabetes.target)),
    )
    linnerud = load_linnerud()
    write(
        out / "linnerud.csv",
        list(linnerud.feature_names) + list(linnerud.target_names),
        (list(x) + list(y) for x, y in zip(linnerud.data, linnerud.target)),
    )
    print(f"wrote {out}/diabetes.csv (442 rows), {out}/linnerud.csv (20 rows)")


if __name__ == "__main__":
    main()
