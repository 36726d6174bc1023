//! Tables from text files: the numeric columns of tabular regression, and the file and label
//! columns of label files. Comma-, semicolon- or tab-separated (the header decides; a header
//! with none of them is split on whitespace), quoted as spreadsheets write it. Every cell is
//! checked where it is used: a bad one fails with its line and column. A first column without
//! a name (pandas' `to_csv`, R's `write.csv`) or a header one cell shorter than the rows (R's
//! `write.table`) holds row names, which are left out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What a regression run does with the rows of a table that have a missing value (an empty
/// cell, `NA`, `NaN`, `null`, … in a column it uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Refuse the table, naming the first missing cell and how many rows have one.
    #[default]
    Error,
    /// Leave those rows out (the run's description says how many).
    Drop,
}

impl Missing {
    /// The name on the command line and in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Error => "error",
            Missing::Drop => "drop",
        }
    }
}

/// How a regression table is read: the columns left out of the features and what happens to
/// rows with missing values. Recorded in the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableReading {
    /// Columns that are not features (identifiers, text, other targets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Rows with a missing value in a used column.
    #[serde(default, skip_serializing_if = "is_error")]
    pub missing: Missing,
}

fn is_error(missing: &Missing) -> bool {
    *missing == Missing::Error
}

/// The cell texts read as a missing value: pandas' `read_csv` defaults, and `?` (UCI files).
const MISSING_CELLS: [&str; 20] = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "?",
];

/// Whether a cell holds a missing value.
pub fn is_missing(cell: &str) -> bool {
    MISSING_CELLS.contains(&cell)
}

/// A table as text: the header and the cells of each row.
#[derive(Debug, Clone)]
pub struct Table {
    /// Where it was read from.
    pub path: PathBuf,
    /// Column names, in file order.
    pub columns: Vec<String>,
    /// The cells of each row, one per column.
    pub rows: Vec<Vec<String>>,
    /// The line in the file of each row (the header is line 1).
    lines: Vec<u64>,
    /// Whether the file's first column held row names (left out of `columns` and `rows`).
    pub row_names: bool,
    /// Whether numbers may use a decimal comma (`2,5`): tables separated by semicolons, as
    /// spreadsheets write them where the comma is the decimal mark.
    decimal_comma: bool,
}

/// Reads a table: a header naming the columns, then one row per sample.
pub fn read_table(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let Some(header) = text.lines().find(|l| !l.trim().is_empty()) else {
        bail!(
            "{}: the file is empty; expected a header line naming the columns, then one row per sample",
            path.display()
        );
    };
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| header.bytes().filter(|b| b == d).count())
        .filter(|d| header.as_bytes().contains(d));
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    match delimiter {
        Some(delimiter) => {
            // Records split here (a newline inside quotes belongs to its cell), so each keeps
            // the line it starts on; csv parses each one's cells and quotes.
            for (line, record) in logical_lines(text) {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(record.as_bytes());
                let Some(parsed) = reader.records().next() else {
                    continue;
                };
                let parsed =
                    parsed.map_err(|e| anyhow::anyhow!("{}: line {line}: {e}", path.display()))?;
                let cells: Vec<String> = parsed.iter().map(|c| c.trim().to_string()).collect();
                if cells.iter().all(String::is_empty) {
                    continue;
                }
                if columns.is_empty() {
                    columns = cells;
                } else {
                    rows.push(cells);
                    lines.push(line);
                }
            }
        }
        None => {
            for (i, line) in text.lines().enumerate() {
                // R's write.table quotes names and text: "age" "sex".
                let cells: Vec<String> = line
                    .split_whitespace()
                    .map(|cell| {
                        let unquoted = cell.strip_prefix('"').and_then(|c| c.strip_suffix('"'));
                        unquoted.unwrap_or(cell).to_string()
                    })
                    .collect();
                if cells.is_empty() {
                    continue;
                }
                if columns.is_empty() {
                    columns = cells;
                } else {
                    rows.push(cells);
                    lines.push(i as u64 + 1);
                }
            }
        }
    }
    // Row names: a first column without a name, or one cell more in every row than the header.
    let mut row_names = false;
    if columns.first().is_some_and(String::is_empty)
        && !columns.iter().skip(1).any(String::is_empty)
        && !rows.is_empty()
        && rows.iter().all(|cells| cells.len() == columns.len())
    {
        columns.remove(0);
        row_names = true;
    } else if !rows.is_empty() && rows.iter().all(|cells| cells.len() == columns.len() + 1) {
        row_names = true;
    }
    if row_names {
        for cells in &mut rows {
            cells.remove(0);
        }
    }
    if let Some(i) = columns.iter().position(String::is_empty) {
        bail!(
            "{}: column {} of the header has no name; every column needs one",
            path.display(),
            i + 1
        );
    }
    for (i, name) in columns.iter().enumerate() {
        if columns[..i].contains(name) {
            bail!("{}: the header names column `{name}` twice", path.display());
        }
    }
    if rows.is_empty() {
        bail!(
            "{}: the header names {} columns but no row follows; expected one row per sample",
            path.display(),
            columns.len()
        );
    }
    for (cells, line) in rows.iter().zip(&lines) {
        if cells.len() != columns.len() {
            bail!(
                "{}: line {line} has {} cells, the header names {} columns",
                path.display(),
                cells.len(),
                columns.len()
            );
        }
    }
    Ok(Table {
        path: path.to_path_buf(),
        columns,
        rows,
        lines,
        row_names,
        decimal_comma: delimiter == Some(b';'),
    })
}

/// The records of CSV text with the line each starts on: split at newlines outside double
/// quotes, line endings (`\n` or `\r\n`) dropped.
fn logical_lines(text: &str) -> Vec<(u64, &str)> {
    let mut records = Vec::new();
    let (mut start, mut line, mut start_line, mut quoted) = (0, 1u64, 1u64, false);
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' => {
                if !quoted {
                    records.push((start_line, text[start..i].trim_end_matches('\r')));
                    start = i + 1;
                    start_line = line + 1;
                }
                line += 1;
            }
            _ => {}
        }
    }
    if start < text.len() {
        records.push((start_line, &text[start..]));
    }
    records
}

impl Table {
    /// The index of column `name`, or an error listing the columns.
    pub fn column(&self, name: &str, role: &str) -> Result<usize> {
        if let Some(i) = self.columns.iter().position(|c| c == name) {
            return Ok(i);
        }
        let close = losskit_core::error::closest(name, self.columns.iter().map(String::as_str));
        let hint = close
            .first()
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        bail!(
            "{}: no column `{name}` for {role}; the columns are {}{hint}",
            self.path.display(),
            self.columns.join(", ")
        )
    }

    /// The values of a numeric column, every cell a finite number.
    pub fn numbers(&self, column: usize) -> Result<Vec<f64>> {
        let name = &self.columns[column];
        self.rows
            .iter()
            .zip(&self.lines)
            .map(|(cells, line)| {
                let cell = &cells[column];
                if is_missing(cell) {
                    let what = if cell.is_empty() {
                        "the cell is empty".to_string()
                    } else {
                        format!("`{cell}` is a missing value")
                    };
                    bail!(
                        "{}: line {line}, column `{name}`: {what}; fill it in, or leave out the rows with a missing value (regression: --missing drop)",
                        self.path.display()
                    );
                }
                match self.number(cell) {
                    Some(value) if value.is_finite() => Ok(value),
                    _ if self.is_text(column) => bail!(
                        "{}: line {line}, column `{name}` holds text (`{cell}`), not numbers; every feature and target must be numeric: encode it as numbers, or leave the column out (regression: --exclude {name})",
                        self.path.display()
                    ),
                    _ => bail!(
                        "{}: line {line}, column `{name}`: `{cell}` is not a finite number (every feature and target cell must be numeric)",
                        self.path.display()
                    ),
                }
            })
            .collect()
    }

    /// The number in `cell` (with a decimal comma in semicolon-separated tables).
    fn number(&self, cell: &str) -> Option<f64> {
        match cell.parse::<f64>() {
            Ok(value) => Some(value),
            Err(_) if self.decimal_comma && !cell.contains('.') => {
                cell.replacen(',', ".", 1).parse().ok()
            }
            Err(_) => None,
        }
    }

    /// Whether no cell of `column` is a number (a column of names or categories, rather than a
    /// number column with a stray cell).
    fn is_text(&self, column: usize) -> bool {
        self.rows
            .iter()
            .map(|cells| &cells[column])
            .filter(|cell| !is_missing(cell))
            .all(|cell| self.number(cell).is_none())
    }

    /// The line in the file of row `row`.
    pub fn line(&self, row: usize) -> u64 {
        self.lines[row]
    }

    /// The rows with a missing value in one of `columns`: `(row, column)` of each row's first.
    pub fn missing_cells(&self, columns: &[usize]) -> Vec<(usize, usize)> {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(row, cells)| {
                columns
                    .iter()
                    .find(|&&c| is_missing(&cells[c]))
                    .map(|&c| (row, c))
            })
            .collect()
    }

    /// Leaves out the rows `rows`.
    pub fn drop_rows(&mut self, rows: &[usize]) {
        let mut kept = vec![true; self.rows.len()];
        for &row in rows {
            kept[row] = false;
        }
        let mut flags = kept.iter();
        self.rows.retain(|_| *flags.next().unwrap_or(&true));
        let mut flags = kept.iter();
        self.lines.retain(|_| *flags.next().unwrap_or(&true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<Table> {
        // Tests run in parallel: each call needs a folder no other call shares.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("losskit-table-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv");
        std::fs::write(&path, text).unwrap();
        let table = read_table(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        table
    }

    #[test]
    fn reads_delimiters_quotes_and_whitespace() {
        let t = table("\u{feff}a,b\r\n1,\"2\"\r\n\r\n3,4\r\n").unwrap();
        assert_eq!(t.columns, ["a", "b"]);
        assert_eq!(t.numbers(1).unwrap(), [2.0, 4.0]);
        assert_eq!((t.line(0), t.line(1)), (2, 4), "{:?}", t.rows);
        let t = table("a,b\n\"x\ny\",2\n3,4\n").unwrap();
        assert_eq!(t.rows[0][0], "x\ny");
        assert_eq!(t.line(1), 4, "a quoted newline is part of its cell");
        let t = table("a;b\n1;2\n").unwrap();
        assert_eq!(t.numbers(0).unwrap(), [1.0]);
        // Semicolons and decimal commas, as spreadsheets write them in much of Europe.
        let t = table("a;b\n1,5;-2,25\n3;1e3\n").unwrap();
        assert_eq!(t.numbers(0).unwrap(), [1.5, 3.0]);
        assert_eq!(t.numbers(1).unwrap(), [-2.25, 1000.0]);
        // A comma is no decimal mark where commas separate the cells.
        let t = table("a,b\n\"1,5\",2\n").unwrap();
        assert!(t.numbers(0).is_err());
        // scikit-learn's linnerud files: whitespace-separated.
        let t = table("Chins Situps Jumps\n5 162 60\n2 110 60\n").unwrap();
        assert_eq!(t.columns, ["Chins", "Situps", "Jumps"]);
        assert_eq!(t.numbers(2).unwrap(), [60.0, 60.0]);
    }

    #[test]
    fn row_names_are_left_out() {
        // pandas' to_csv and R's write.csv: a first column without a name.
        for text in [
            ",a,b\n0,1,2\n1,3,4\n",
            "\"\",\"a\",\"b\"\n\"r1\",1,2\n\"r2\",3,4\n",
            // R's write.table: the header has one cell fewer than the rows, names quoted.
            "\"a\" \"b\"\n\"r1\" 1 2\n\"r2\" 3 4\n",
        ] {
            let t = table(text).unwrap();
            assert!(t.row_names, "{text}");
            assert_eq!(t.columns, ["a", "b"], "{text}");
            assert_eq!(t.numbers(0).unwrap(), [1.0, 3.0], "{text}");
            assert_eq!(t.numbers(1).unwrap(), [2.0, 4.0], "{text}");
        }
        let t = table("a,b\n1,2\n").unwrap();
        assert!(!t.row_names);
        // An unnamed column that is not the first is still an error.
        let e = table("a,,b\n1,2,3\n").unwrap_err().to_string();
        assert!(e.contains("column 2 of the header has no name"), "{e}");
    }

    #[test]
    fn missing_values_are_found_and_dropped() {
        let mut t = table("a,b,c\n1,2,3\n4,NA,6\n7,8,\n?,1,1\n5,5,nan\n").unwrap();
        assert!(
            ["", "NA", "NaN", "nan", "null", "N/A", "?"]
                .iter()
                .all(|c| is_missing(c))
        );
        assert!(!is_missing("0") && !is_missing("na-1"));
        // Each row's first missing cell, among the columns asked about.
        assert_eq!(
            t.missing_cells(&[0, 1, 2]),
            [(1, 1), (2, 2), (3, 0), (4, 2)]
        );
        assert_eq!(t.missing_cells(&[1]), [(1, 1)]);
        let e = t.numbers(1).unwrap_err().to_string();
        assert!(
            e.contains("line 3, column `b`: `NA` is a missing value"),
            "{e}"
        );
        let e = t.numbers(2).unwrap_err().to_string();
        assert!(e.contains("line 4, column `c`: the cell is empty"), "{e}");
        t.drop_rows(&[1, 2, 3, 4]);
        assert_eq!(t.numbers(2).unwrap(), [3.0]);
        assert_eq!(t.line(0), 2);
    }

    #[test]
    fn a_text_column_is_told_apart_from_a_stray_text_cell() {
        let t = table("name,a\nann,1\nbob,x\nNA,3\n").unwrap();
        let e = t.numbers(0).unwrap_err().to_string();
        assert!(
            e.contains("line 2, column `name` holds text (`ann`), not numbers"),
            "{e}"
        );
        assert!(e.contains("--exclude name"), "{e}");
        let e = t.numbers(1).unwrap_err().to_string();
        assert!(
            e.contains("line 3, column `a`: `x` is not a finite number"),
            "{e}"
        );
    }

    #[test]
    fn bad_tables_name_line_and_column() {
        let e = table("").unwrap_err().to_string();
        assert!(e.contains("the file is empty"), "{e}");
        let e = table("a,b\n").unwrap_err().to_string();
        assert!(e.contains("no row follows"), "{e}");
        let e = table("a,b\n1,2\n3\n").unwrap_err().to_string();
        assert!(e.contains("line 3 has 1 cells"), "{e}");
        let t = table("a,b\n1,2\n3,x7\n").unwrap();
        let e = t.numbers(1).unwrap_err().to_string();
        assert!(
            e.contains("line 3, column `b`: `x7` is not a finite number"),
            "{e}"
        );
        let e = table("a,b\n1,\n")
            .unwrap()
            .numbers(1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column `b`: the cell is empty"), "{e}");
        assert!(e.contains("--missing drop"), "{e}");
        let e = table("a,a\n1,2\n").unwrap_err().to_string();
        assert!(e.contains("names column `a` twice"), "{e}");
        let t = table("age,progression\n1,2\n").unwrap();
        let e = t
            .column("progresion", "the target")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column `progresion`") && e.contains("did you mean `progression`"),
            "{e}"
        );
    }
}
