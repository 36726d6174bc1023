//! Multi-label data from a label table: a `file` column naming images (relative to the
//! table's folder) and either a `labels` column (label names separated by `;`, `|` or spaces;
//! empty for none) or one 0/1 column per label. 20 % of the rows, drawn from the seed, are held
//! out for validation.

use std::path::Path;

use anyhow::{Result, bail};

use super::{
    ClassificationData, ImageSet,
    regression::{FILE_COLUMN, Inputs, listed_images},
    split_indices,
    table::read_table,
};

/// The column holding each image's label names.
pub const LABELS_COLUMN: &str = "labels";

/// The file names a `--data` folder is searched for.
pub const LABEL_FILES: [&str; 2] = ["labels.csv", "labels.tsv"];

/// Reads a label table; images resized to `size` (default: their median shorter side).
/// Returns the data (labels as 0/1 per label and image) and the size used.
pub fn load_label_table(
    path: &Path,
    seed: u64,
    size: Option<usize>,
) -> Result<(ClassificationData, usize)> {
    let table = read_table(path)?;
    let file = table.column(FILE_COLUMN, "the image files")?;
    let (labels, marks): (Vec<String>, Vec<Vec<bool>>) = match table
        .columns
        .iter()
        .position(|c| c == LABELS_COLUMN)
    {
        Some(column) => {
            let named: Vec<Vec<String>> = table
                .rows
                .iter()
                .map(|cells| {
                    cells[column]
                        .split([';', '|', ' '])
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .collect();
            let mut labels: Vec<String> = named.iter().flatten().cloned().collect();
            labels.sort();
            labels.dedup();
            let marks = named
                .iter()
                .map(|row| labels.iter().map(|l| row.contains(l)).collect())
                .collect();
            (labels, marks)
        }
        None => {
            let columns: Vec<usize> = (0..table.columns.len()).filter(|&c| c != file).collect();
            let mut marks = vec![Vec::with_capacity(columns.len()); table.rows.len()];
            for &c in &columns {
                for (row, value) in table.numbers(c)?.into_iter().enumerate() {
                    if value != 0.0 && value != 1.0 {
                        bail!(
                            "{}: line {}, column `{}`: {value} is not 0 or 1 (one 0/1 column per label, or a `{LABELS_COLUMN}` column of names)",
                            path.display(),
                            table.line(row),
                            table.columns[c]
                        );
                    }
                    marks[row].push(value == 1.0);
                }
            }
            let labels = columns.iter().map(|&c| table.columns[c].clone()).collect();
            (labels, marks)
        }
    };
    if labels.len() < 2 {
        bail!(
            "{}: {} label(s) found; multi-label classification needs at least two (a `{LABELS_COLUMN}` column of names, or one 0/1 column per label)",
            path.display(),
            labels.len()
        );
    }
    if table.rows.len() < 5 {
        bail!(
            "{}: {} rows are too few to train and validate on (at least 5)",
            path.display(),
            table.rows.len()
        );
    }
    let (Inputs::Images(images), size) = listed_images(&table, file, size)? else {
        unreachable!("listed_images gives images")
    };
    let (train, valid) = split_indices(table.rows.len(), seed);
    let select = |indices: &[usize]| {
        let per = images.image_len();
        let mut set = ImageSet::new(images.channels, size, size);
        for &i in indices {
            set.images
                .extend_from_slice(&images.images[i * per..(i + 1) * per]);
            set.labels.extend(marks[i].iter().map(|&m| i64::from(m)));
        }
        set
    };
    let data = ClassificationData {
        description: format!(
            "label table {} ({} labels, {}x{size}x{size}), train: {}, validation: {}",
            path.display(),
            labels.len(),
            images.channels,
            train.len(),
            valid.len()
        ),
        classes: labels,
        train: select(&train),
        valid: select(&valid),
    };
    Ok((data, size))
}
