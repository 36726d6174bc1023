//! Regression data: one real target per sample, with image inputs (generated cell counts, or
//! images a table names in its `file` column) or the numeric columns of a table; and the
//! linear least-squares baseline a table run is reported against.

use std::path::Path;

use anyhow::{Result, bail};

use super::{
    ImageSet,
    image_file::{decode_all, listed_file, median_side},
    split_indices,
    table::{Missing, Table, TableReading, read_table},
};

/// The column of a table that names image files (relative to the table's folder).
pub const FILE_COLUMN: &str = "file";

/// What a regression model reads.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Images, for the CNN.
    Images(ImageSet),
    /// Table rows, for the MLP: `values[row * columns + column]`, as read (unscaled).
    Rows {
        /// Feature columns.
        columns: usize,
        /// The values.
        values: Vec<f64>,
    },
}

impl Inputs {
    /// The number of samples.
    pub fn len(&self) -> usize {
        match self {
            Inputs::Images(set) => set.len(),
            Inputs::Rows { columns, values } => values.len().checked_div(*columns).unwrap_or(0),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The samples of one split.
#[derive(Debug, Clone)]
pub struct RegressionSet {
    /// The inputs.
    pub inputs: Inputs,
    /// One target per sample, in its own units.
    pub targets: Vec<f64>,
}

impl RegressionSet {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The samples `indices`.
    pub(crate) fn select(inputs: &Inputs, targets: &[f64], indices: &[usize]) -> Self {
        let inputs = match inputs {
            Inputs::Images(set) => {
                let per = set.image_len();
                let mut out = set.clone_empty();
                for &i in indices {
                    out.images
                        .extend_from_slice(&set.images[i * per..(i + 1) * per]);
                }
                Inputs::Images(out)
            }
            Inputs::Rows { columns, values } => Inputs::Rows {
                columns: *columns,
                values: indices
                    .iter()
                    .flat_map(|&i| values[i * columns..(i + 1) * columns].iter().copied())
                    .collect(),
            },
        };
        Self {
            inputs,
            targets: indices.iter().map(|&i| targets[i]).collect(),
        }
    }
}

/// Regression data: a training and a validation split.
#[derive(Debug, Clone)]
pub struct RegressionData {
    /// The target's name (the table column, or `cells` for the generated counts).
    pub target: String,
    /// The feature columns of a table (empty for images).
    pub features: Vec<String>,
    /// The training split.
    pub train: RegressionSet,
    /// The validation split.
    pub valid: RegressionSet,
    /// Where the data came from, in words.
    pub description: String,
}

impl RegressionData {
    /// The input channels of image inputs (0 for table rows).
    pub fn channels(&self) -> usize {
        match &self.train.inputs {
            Inputs::Images(set) => set.channels,
            Inputs::Rows { .. } => 0,
        }
    }
}

/// The table a `--data` path names: the file itself, or `labels.csv` / `targets.csv` in a
/// folder.
pub fn table_path(path: &Path, names: &[&str]) -> Result<std::path::PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        if let Some(found) = names.iter().map(|n| path.join(n)).find(|p| p.is_file()) {
            return Ok(found);
        }
        bail!(
            "--data {}: a folder without {}; pass the table file itself or put it there",
            path.display(),
            names.join(" or ")
        );
    }
    bail!("--data {}: no such file or folder", path.display())
}

/// Regression data from a table: the `target` column, and as inputs either the images its
/// `file` column names (resized to `size`, by default the median shorter side) or every other
/// column not in `reading.exclude` (each numeric). Rows with a missing value in a used column
/// are refused or left out, as `reading.missing` says. 20 % of the rows, drawn from `seed`, are
/// held out for validation.
pub fn load_table_regression(
    path: &Path,
    target: &str,
    reading: &TableReading,
    seed: u64,
    size: Option<usize>,
) -> Result<(RegressionData, Option<usize>)> {
    let mut table = read_table(path)?;
    let target_column = table.column(target, "the target (--target)")?;
    let mut excluded = Vec::new();
    for name in &reading.exclude {
        let column = table.column(name, "--exclude")?;
        if column == target_column {
            bail!(
                "--exclude {name}: that is the target column (--target); the target is never a feature"
            );
        }
        excluded.push(column);
    }
    let file_column = (table.columns.iter())
        .position(|c| c == FILE_COLUMN)
        .filter(|c| !excluded.contains(c));
    let used: Vec<usize> = match file_column {
        Some(column) => vec![target_column, column],
        None => (0..table.columns.len())
            .filter(|c| !excluded.contains(c))
            .collect(),
    };
    let missing = table.missing_cells(&used);
    if let Some(&(row, column)) = missing.first() {
        match reading.missing {
            Missing::Error => {
                let cell = &table.rows[row][column];
                let what = if cell.is_empty() {
                    "the cell is empty".to_string()
                } else {
                    format!("`{cell}` is a missing value")
                };
                bail!(
                    "{}: line {}, column `{}`: {what}; {} of {} rows have a missing value in the columns used. Pass --missing drop to train on the other rows, or --exclude a column that is mostly missing",
                    path.display(),
                    table.line(row),
                    table.columns[column],
                    missing.len(),
                    table.rows.len()
                )
            }
            Missing::Drop => {
                let rows: Vec<usize> = missing.iter().map(|&(row, _)| row).collect();
                table.drop_rows(&rows);
            }
        }
    }
    let targets = table.numbers(target_column)?;
    if let Some(first) = targets.first()
        && targets.iter().all(|t| t == first)
    {
        bail!(
            "{}: target column `{target}` is constant ({first} in every row); there is nothing to learn",
            path.display()
        );
    }
    if table.rows.len() < 5 {
        let dropped = if missing.is_empty() {
            String::new()
        } else {
            format!(
                " (after leaving out {} with a missing value)",
                missing.len()
            )
        };
        bail!(
            "{}: {} rows{dropped} are too few to train and validate on (at least 5)",
            path.display(),
            table.rows.len()
        );
    }
    let (inputs, features, size, what) = match file_column {
        Some(column) => {
            let (inputs, size) = listed_images(&table, column, size)?;
            let what = format!("images {}x{size}x{size}", image_channels(&inputs));
            (inputs, Vec::new(), Some(size), what)
        }
        None => {
            if size.is_some() {
                bail!(
                    "--size applies to images; {} has no `{FILE_COLUMN}` column naming any",
                    path.display()
                );
            }
            let features: Vec<usize> = used
                .iter()
                .copied()
                .filter(|&c| c != target_column)
                .collect();
            if features.is_empty() {
                bail!(
                    "{}: the table has only the target column; expected feature columns beside it",
                    path.display()
                );
            }
            let columns = features
                .iter()
                .map(|&c| table.numbers(c))
                .collect::<Result<Vec<_>>>()?;
            let values = (0..table.rows.len())
                .flat_map(|row| columns.iter().map(move |column| column[row]))
                .collect();
            let names: Vec<String> = features.iter().map(|&c| table.columns[c].clone()).collect();
            let what = format!("{} numeric features", names.len());
            (
                Inputs::Rows {
                    columns: names.len(),
                    values,
                },
                names,
                None,
                what,
            )
        }
    };
    let (train, valid) = split_indices(table.rows.len(), seed);
    let mut notes = Vec::new();
    if table.row_names {
        notes.push("row names left out".to_string());
    }
    if !reading.exclude.is_empty() {
        notes.push(format!("excluded: {}", reading.exclude.join(", ")));
    }
    if !missing.is_empty() {
        notes.push(format!(
            "{} rows with a missing value left out",
            missing.len()
        ));
    }
    let notes: String = notes.iter().map(|n| format!("; {n}")).collect();
    let data = RegressionData {
        target: target.to_string(),
        features,
        train: RegressionSet::select(&inputs, &targets, &train),
        valid: RegressionSet::select(&inputs, &targets, &valid),
        description: format!(
            "table {} ({what}, target `{target}`{notes}), train: {}, validation: {} (held out by the seed)",
            path.display(),
            train.len(),
            valid.len()
        ),
    };
    Ok((data, size))
}

fn image_channels(inputs: &Inputs) -> usize {
    match inputs {
        Inputs::Images(set) => set.channels,
        Inputs::Rows { .. } => 0,
    }
}

/// The images a table's `column` names, decoded at `size` (default: the median shorter side).
pub(super) fn listed_images(
    table: &Table,
    column: usize,
    size: Option<usize>,
) -> Result<(Inputs, usize)> {
    let base = table.path.parent().unwrap_or(Path::new("."));
    let files = table
        .rows
        .iter()
        .enumerate()
        .map(|(row, cells)| listed_file(base, &cells[column], &table.path, table.line(row)))
        .collect::<Result<Vec<_>>>()?;
    let size = match size {
        Some(size) => size,
        None => median_side(&files)?,
    };
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let (channels, pixels) = decode_all(&paths, size)?;
    let mut set = ImageSet::new(channels, size, size);
    for image in pixels {
        set.images.extend(image);
    }
    Ok((Inputs::Images(set), size))
}

/// Per-column mean and standard deviation of table rows (a constant column gets 1, so it
/// scales to 0 rather than dividing by zero).
pub fn column_statistics(columns: usize, values: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let rows = values.len().checked_div(columns).unwrap_or(0).max(1) as f64;
    let mean: Vec<f64> = (0..columns)
        .map(|c| values.iter().skip(c).step_by(columns).sum::<f64>() / rows)
        .collect();
    let std = (0..columns)
        .map(|c| {
            let var = values
                .iter()
                .skip(c)
                .step_by(columns)
                .map(|v| (v - mean[c]).powi(2))
                .sum::<f64>()
                / rows;
            if var > 0.0 { var.sqrt() } else { 1.0 }
        })
        .collect();
    (mean, std)
}

/// Validation R² of ordinary least squares with an intercept, fitted on the training rows: the
/// baseline a tabular model should beat. `None` when the inputs are images or the system is
/// singular.
pub fn least_squares_r2(data: &RegressionData) -> Option<f64> {
    let (
        Inputs::Rows {
            columns,
            values: train,
        },
        Inputs::Rows { values: valid, .. },
    ) = (&data.train.inputs, &data.valid.inputs)
    else {
        return None;
    };
    let columns = *columns;
    let (mean, std) = column_statistics(columns, train);
    let row = |values: &[f64], r: usize| -> Vec<f64> {
        let mut x = vec![1.0];
        x.extend((0..columns).map(|c| (values[r * columns + c] - mean[c]) / std[c]));
        x
    };
    let k = columns + 1;
    // Normal equations XᵀX β = Xᵀy on standardised columns, by Gaussian elimination with
    // partial pivoting (k is the number of columns: small). A ridge of 1e-9 per row on the
    // features keeps a constant column (standardised to 0) from making the system singular;
    // its coefficient comes out 0.
    let mut a = vec![vec![0.0; k + 1]; k];
    let ridge = 1e-9 * data.train.len() as f64;
    for (i, row) in a.iter_mut().enumerate().skip(1) {
        row[i] = ridge;
    }
    for (r, &y) in data.train.targets.iter().enumerate() {
        let x = row(train, r);
        for i in 0..k {
            for j in 0..k {
                a[i][j] += x[i] * x[j];
            }
            a[i][k] += x[i] * y;
        }
    }
    for i in 0..k {
        let pivot = (i..k).max_by(|&p, &q| a[p][i].abs().total_cmp(&a[q][i].abs()))?;
        if a[pivot][i].abs() < 1e-12 * data.train.len() as f64 {
            return None;
        }
        a.swap(i, pivot);
        for r in 0..k {
            if r != i {
                let factor = a[r][i] / a[i][i];
                for c in i..=k {
                    a[r][c] -= factor * a[i][c];
                }
            }
        }
    }
    let beta: Vec<f64> = (0..k).map(|i| a[i][k] / a[i][i]).collect();
    let targets = &data.valid.targets;
    let n = targets.len() as f64;
    let target_mean = targets.iter().sum::<f64>() / n;
    let (mut sse, mut sst) = (0.0, 0.0);
    for (r, &y) in targets.iter().enumerate() {
        let predicted: f64 = row(valid, r).iter().zip(&beta).map(|(x, b)| x * b).sum();
        sse += (y - predicted).powi(2);
        sst += (y - target_mean).powi(2);
    }
    (sst > 0.0).then(|| 1.0 - sse / sst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: usize, values: Vec<f64>) -> Inputs {
        Inputs::Rows { columns, values }
    }

    #[test]
    fn least_squares_recovers_a_linear_target() {
        // y = 3 + 2 a - b exactly: R² 1 on any validation rows.
        let f = |a: f64, b: f64| 3.0 + 2.0 * a - b;
        let train = [(0.0, 1.0), (1.0, 0.0), (2.0, 5.0), (4.0, 1.0), (3.0, 3.0)];
        let valid = [(5.0, 2.0), (-1.0, 0.5)];
        let data = RegressionData {
            target: "y".into(),
            features: vec!["a".into(), "b".into()],
            train: RegressionSet {
                inputs: rows(2, train.iter().flat_map(|&(a, b)| [a, b]).collect()),
                targets: train.iter().map(|&(a, b)| f(a, b)).collect(),
            },
            valid: RegressionSet {
                inputs: rows(2, valid.iter().flat_map(|&(a, b)| [a, b]).collect()),
                targets: valid.iter().map(|&(a, b)| f(a, b)).collect(),
            },
            description: String::new(),
        };
        let r2 = least_squares_r2(&data).unwrap();
        assert!((r2 - 1.0).abs() < 1e-9, "{r2}");
    }

    #[test]
    fn least_squares_ignores_a_constant_column() {
        // y = 2a ± 1, alternating: the fit is 2a, the constant column adds nothing.
        let train: Vec<(f64, f64)> = (0..8)
            .map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        let data = RegressionData {
            target: "y".into(),
            features: vec!["a".into(), "one".into()],
            train: RegressionSet {
                inputs: rows(2, train.iter().flat_map(|&(a, _)| [a, 1.0]).collect()),
                targets: train.iter().map(|&(a, e)| 2.0 * a + e).collect(),
            },
            valid: RegressionSet {
                inputs: rows(2, vec![3.0, 1.0, 9.0, 1.0]),
                targets: vec![6.0, 18.0],
            },
            description: String::new(),
        };
        let r2 = least_squares_r2(&data).expect("a constant column is not singular");
        assert!(r2 > 0.99, "{r2}");
    }

    #[test]
    fn column_statistics_keep_constant_columns_finite() {
        let (mean, std) = column_statistics(2, &[1.0, 5.0, 3.0, 5.0]);
        assert_eq!(mean, [2.0, 5.0]);
        assert_eq!(std, [1.0, 1.0]);
    }
}
