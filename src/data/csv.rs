//! CSV files of numbers: one example per row, the same number of columns in every row, separated
//! by commas (or semicolons, tabs or spaces); a first line none of whose fields is a number is taken
//! as a header (a first line with some numbers and a typo is an error, not a header), and a UTF-8
//! byte-order mark is skipped.

use std::path::Path;

use crate::{Error, Result};

/// A table of numbers read from CSV.
#[derive(Debug, Clone)]
pub struct CsvTable {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
    pub header: Option<Vec<String>>,
}

/// Read a numeric CSV file.
pub fn read_csv(path: &Path) -> Result<CsvTable> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(text).map_err(|e| {
        Error::format(
            path,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    parse_csv(&text, path)
}

fn split(line: &str) -> Vec<&str> {
    let sep: &[char] = if line.contains(',') {
        &[',']
    } else if line.contains(';') {
        &[';']
    } else {
        &['\t', ' ']
    };
    line.split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty() || sep == [','])
        .collect()
}

/// Parse CSV text. `path` is only used in messages.
pub fn parse_csv(text: &str, path: &Path) -> Result<CsvTable> {
    let mut values = Vec::new();
    let mut cols = None;
    let mut header = None;
    let mut rows = 0;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split(line);
        let parsed: std::result::Result<Vec<f32>, _> =
            fields.iter().map(|f| f.parse::<f32>()).collect();
        let nums = match parsed {
            Ok(n) => n,
            Err(_)
                if rows == 0
                    && header.is_none()
                    && fields.iter().all(|f| f.parse::<f32>().is_err()) =>
            {
                header = Some(fields.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                cols = Some(fields.len());
                continue;
            }
            Err(_) => {
                let bad = fields
                    .iter()
                    .find(|f| f.parse::<f32>().is_err())
                    .copied()
                    .unwrap_or("");
                return Err(Error::format(
                    path,
                    format!("line {}: '{bad}' is not a number", lineno + 1),
                ));
            }
        };
        match cols {
            None => cols = Some(nums.len()),
            Some(c) if c != nums.len() => {
                return Err(Error::format(
                    path,
                    format!("line {}: {} columns, expected {c}", lineno + 1, nums.len()),
                ))
            }
            _ => {}
        }
        if let Some(j) = nums.iter().position(|v| !v.is_finite()) {
            return Err(Error::format(
                path,
                format!(
                    "line {}, column {}: value is not finite ({})",
                    lineno + 1,
                    j + 1,
                    nums[j]
                ),
            ));
        }
        values.extend(nums);
        rows += 1;
    }
    let cols = cols.unwrap_or(0);
    if rows == 0 || cols == 0 {
        return Err(Error::format(path, "no rows of numbers in the file"));
    }
    Ok(CsvTable {
        rows,
        cols,
        values,
        header,
    })
}

/// `csv:FILE` as a data set of continuous rows (all of them; the caller splits).
pub(super) fn load_csv(spec: &str, path: &std::path::Path) -> Result<super::Dataset> {
    let t = read_csv(path)?;
    Ok(super::Dataset {
        spec: spec.to_string(),
        split: super::Split::All,
        n: t.rows,
        shape: vec![t.cols],
        kind: super::DataKind::Continuous,
        x: t.values,
        labels: None,
        mixture: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.csv")
    }

    #[test]
    fn reads_with_and_without_header() {
        let t = parse_csv("x,y\n1,2\n3.5,-4\n", p()).unwrap();
        assert_eq!((t.rows, t.cols), (2, 2));
        assert_eq!(t.values, vec![1., 2., 3.5, -4.]);
        assert_eq!(t.header.unwrap(), vec!["x", "y"]);
        let t = parse_csv("1 2 3\n4 5 6\n", p()).unwrap();
        assert_eq!((t.rows, t.cols), (2, 3));
    }

    #[test]
    fn rejects_bad_rows() {
        let err = |s: &str| parse_csv(s, p()).unwrap_err().to_string();
        assert!(err("").contains("no rows"));
        assert!(err("a,b\n").contains("no rows"));
        assert!(err("1,2\n3\n").contains("line 2: 1 columns, expected 2"));
        assert!(err("1,2\nnan,3\n").contains("line 2, column 1"));
        assert!(err("1,2\n3,x\n").contains("'x' is not a number"));
        assert!(err("1,2\n3,\n").contains("line 2"));
        // A first data row with a typo is an error, not a header that silently drops it.
        assert!(err("1,2x\n3,4\n").contains("line 1: '2x' is not a number"));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_number() {
        let t = parse_csv("\u{feff}1,2\n3,4\n", p()).unwrap();
        assert_eq!((t.rows, t.values[0]), (2, 1.0));
        let t = parse_csv("\u{feff}x,y\n3,4\n", p()).unwrap();
        assert_eq!(t.header.unwrap(), vec!["x", "y"]);
    }
}
