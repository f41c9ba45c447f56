//! Input tensors written as NumPy `.npy` files (`lookout classify --dump-input`), so that a
//! user can load exactly what the model was fed (`numpy.load`) and compare it with their
//! training pipeline's tensor.
//!
//! Format 1.0 (numpy's `lib/format.py`): the magic `\x93NUMPY`, version 1.0, a little-endian
//! u16 header length, a Python dict literal (`descr`, `fortran_order`, `shape`) padded with
//! spaces to a multiple of 64 bytes and ended by a newline, then the C-order data. Written by
//! hand: a dozen lines, where the crates for it (ndarray-npy, npyz) would bring a second ndarray
//! and a zip writer for a format this simple.

use std::io::{self, Write};

use tract_onnx::prelude::{DatumType, Tensor};

/// The tensor as a `.npy` file: f32, u8 or i8 elements (what lookout feeds models).
pub fn write(tensor: &Tensor, out: &mut dyn Write) -> io::Result<()> {
    let (descr, bytes): (&str, Vec<u8>) = match tensor.datum_type() {
        DatumType::F32 => (
            "<f4",
            elements::<f32>(tensor)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DatumType::U8 => ("|u1", elements::<u8>(tensor)?),
        DatumType::I8 => (
            "|i1",
            elements::<i8>(tensor)?.iter().map(|&v| v as u8).collect(),
        ),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tensors of {other:?} are not written as .npy"),
            ))
        }
    };
    let shape = tensor.shape();
    let dims = match shape {
        [one] => format!("{one},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    let len = u16::try_from(header.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "tensor shape too long for .npy",
        )
    })?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    out.write_all(&bytes)
}

fn elements<T: tract_onnx::prelude::Datum + Copy>(tensor: &Tensor) -> io::Result<Vec<T>> {
    let view = tensor
        .to_plain_array_view::<T>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(view.iter().copied().collect())
}

/// `tensors` joined along their first axis (the batch axis; a tensor without one gets a new
/// first axis per tensor), for one file holding every image's input.
pub fn stack(tensors: &[Tensor], has_batch_axis: bool) -> Option<Tensor> {
    tensors.first()?;
    let parts: Vec<Tensor> = if has_batch_axis {
        tensors.to_vec()
    } else {
        tensors
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.insert_axis(0).ok().map(|_| t)
            })
            .collect::<Option<_>>()?
    };
    Tensor::stack_tensors(0, &parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array;

    #[test]
    fn header_is_padded_to_64_and_data_follows() {
        let t = Tensor::from(
            Array::from_shape_vec((1, 2, 3), vec![0f32, 1., 2., 3., 4., 5.]).expect("shape"),
        );
        let mut out = Vec::new();
        write(&t, &mut out).expect("written");
        assert_eq!(&out[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([out[8], out[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&out[10..10 + len]).expect("ascii");
        assert!(
            header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }"),
            "{header}"
        );
        assert!(header.ends_with('\n'));
        assert_eq!(out.len(), 10 + len + 6 * 4);
        assert_eq!(&out[10 + len + 4..10 + len + 8], &1f32.to_le_bytes());
    }

    #[test]
    fn tensors_stack_along_the_batch_axis() {
        let a = Tensor::from(Array::from_shape_vec((1, 2), vec![1u8, 2]).expect("shape"));
        let b = Tensor::from(Array::from_shape_vec((1, 2), vec![3u8, 4]).expect("shape"));
        let s = stack(&[a.clone(), b.clone()], true).expect("stacked");
        assert_eq!(s.shape(), &[2, 2]);
        let flat = Tensor::from(Array::from_shape_vec(2, vec![1u8, 2]).expect("shape"));
        assert_eq!(
            stack(&[flat.clone(), flat], false)
                .expect("stacked")
                .shape(),
            &[2, 2]
        );
    }
}
