//! `gyrofs ls`: list the tensors of a checkpoint without mounting it.
//!
//! Names are printed with control characters escaped (`%1B`, as in file
//! names), so that a hostile checkpoint cannot drive the terminal; `--json`
//! prints them exactly (JSON escapes control characters itself).

use std::io::Write;

use indicatif::HumanBytes;

use crate::catalog::{Catalog, FileRole};
use crate::error::ShapeDisplay;
use crate::view::manifest;
use crate::view::names::printable;
use crate::volume::Volume;

/// Print the manifest of `volume` (what `manifest.json` holds).
pub fn print_json(volume: &Volume, out: &mut impl Write) -> std::io::Result<()> {
    let renamed = volume
        .views
        .raw_tensors()
        .map(|l| volume.tree.renamed(l))
        .unwrap_or_default();
    manifest::write(&volume.catalog, volume.notes(), renamed, out)
}

/// Print the tensors of `catalog` as a table, then which GGUF files a
/// mount's `gguf/` holds (or why it has none). Only the views that line
/// needs are decided: no tree is laid out, so this costs little more than
/// the table.
pub fn print_with_gguf(catalog: &Catalog, out: &mut impl Write) -> std::io::Result<()> {
    print(catalog, out)?;
    match crate::view::gguf::offer(catalog) {
        Some(line) => writeln!(out, "{line}"),
        None => Ok(()),
    }
}

/// Print `catalog` as a table.
pub fn print(catalog: &Catalog, out: &mut impl Write) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = catalog
        .tensors
        .iter()
        .map(|t| {
            [
                printable(&t.name).into_owned(),
                t.dtype.name().to_string(),
                t.logical.clone(),
                ShapeDisplay(t.logical_shape()).to_string(),
                t.len().to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "STORED", "LOGICAL", "SHAPE", "BYTES"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 5]| {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        )
    };
    line(out, header)?;
    for r in &rows {
        line(out, [&r[0], &r[1], &r[2], &r[3], &r[4]])?;
    }
    let files = catalog.files.with_role(FileRole::Tensors).count();
    writeln!(
        out,
        "{} tensors, {} bytes ({}) in {} file{} ({})",
        catalog.tensors.len(),
        catalog.tensor_bytes(),
        HumanBytes(catalog.tensor_bytes()),
        files,
        if files == 1 { "" } else { "s" },
        catalog.format.name()
    )
}
