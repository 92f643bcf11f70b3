//! Users' own images: `folder:` (PNG/JPEG, a subfolder per class, optional resize) and
//! `cifar10:` (the binary batches), with clear errors for bad files, and a colour U-Net run end
//! to end on them.

mod common;

use std::path::Path;

use common::{elbo, ok};
use elbo::data::{self, DataKind, Split};

/// A w×h image whose pixel (x, y) is (x·10 + k, y·10, 200) in RGB, or x·10 + k in grey.
fn write_png(path: &Path, w: u32, h: u32, k: u8, rgb: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rgb {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([x as u8 * 10 + k, y as u8 * 10, 200])
        })
        .save(path)
        .unwrap();
    } else {
        image::GrayImage::from_fn(w, h, |x, _| image::Luma([x as u8 * 10 + k]))
            .save(path)
            .unwrap();
    }
}

#[test]
fn folder_reads_classes_shapes_and_values_and_resizes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    // Two classes, 10 grey images each: 9 train + 1 test per class.
    for (c, name) in ["cat", "dog"].iter().enumerate() {
        for i in 0..10 {
            write_png(
                &root.join(name).join(format!("{i:02}.png")),
                6,
                4,
                (c * 3 + i) as u8,
                false,
            );
        }
    }
    let spec = format!("folder:{}", root.display());
    let tr = data::load(&spec, Split::Train).unwrap();
    let te = data::load(&spec, Split::Test).unwrap();
    assert_eq!((tr.n, te.n), (18, 2));
    assert_eq!(tr.shape, vec![1, 4, 6]);
    assert_eq!(tr.kind, DataKind::Image8);
    // Classes in name order; the tenth of each class is the test image.
    assert_eq!(te.labels.as_ref().unwrap(), &vec![0, 1]);
    assert_eq!(tr.labels.as_ref().unwrap()[8..10], [0, 1]);
    // Pixel (x = 2, y = 1) of cat/00 is 20, of dog/09 (the dog test image) 2·10 + 3 + 9.
    assert_eq!(tr.x[6 + 2], 20.0);
    assert_eq!(te.x[24 + 6 + 2], 32.0);
    // One colour image makes the set RGB, channels first.
    write_png(&root.join("dog").join("10.png"), 6, 4, 0, true);
    let all = data::load(&spec, Split::All).unwrap();
    assert_eq!(all.shape, vec![3, 4, 6]);
    let last = &all.x[(all.n - 1) * 72..];
    // red of (x = 1, y = 2) = 10, green = 20, blue = 200
    assert_eq!(
        (last[2 * 6 + 1], last[24 + 2 * 6 + 1], last[48 + 2 * 6 + 1]),
        (10.0, 20.0, 200.0)
    );
    // Resize: the shorter side to 2, the centre 2×2.
    let small = data::load(&format!("{spec}?size=2"), Split::All).unwrap();
    assert_eq!(small.shape, vec![3, 2, 2]);
    // JPEG files are read too.
    image::RgbImage::from_pixel(6, 4, image::Rgb([90, 90, 90]))
        .save(root.join("dog").join("11.jpg"))
        .unwrap();
    assert_eq!(data::load(&spec, Split::All).unwrap().n, 22);
}

#[test]
fn bad_image_folders_get_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a str, Box<dyn Fn(&Path)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "corrupt",
            Box::new(|d: &Path| {
                std::fs::write(d.join("a").join("bad.png"), b"\x89PNG\r\n\x1a\nnonsense").unwrap()
            }),
            "bad.png",
        ),
        (
            "truncated",
            Box::new(|d: &Path| {
                let p = d.join("a").join("cut.png");
                write_png(&p, 20, 20, 1, true);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            "cut.png",
        ),
        (
            "not an image",
            Box::new(|d: &Path| std::fs::write(d.join("a").join("notes.txt"), b"hello").unwrap()),
            "notes.txt",
        ),
        (
            "a text file named .png",
            Box::new(|d: &Path| std::fs::write(d.join("a").join("fake.png"), b"hello").unwrap()),
            "fake.png",
        ),
        (
            "sizes differ",
            Box::new(|d: &Path| write_png(&d.join("a").join("big.png"), 9, 9, 0, false)),
            "data.size",
        ),
        (
            "absurd header",
            Box::new(|d: &Path| {
                // A PNG signature and an IHDR chunk claiming 100,000 × 100,000 pixels.
                let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
                b.extend_from_slice(&100_000u32.to_be_bytes());
                b.extend_from_slice(&100_000u32.to_be_bytes());
                b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 0]);
                std::fs::write(d.join("a").join("huge.png"), b).unwrap();
            }),
            "huge.png",
        ),
    ];
    for (what, make, want) in cases {
        let d = tmp.path().join(what.replace(' ', "_"));
        for i in 0..3 {
            write_png(&d.join("a").join(format!("{i}.png")), 4, 4, i, false);
        }
        make(&d);
        let err = data::load(&format!("folder:{}", d.display()), Split::All)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{what}: {err}");
        // and through the command line: exit 1 with the message, no panic
        let o = elbo(&["data", &format!("folder:{}", d.display())]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(want), "{what}");
    }
    let e = data::load(
        &format!("folder:{}", tmp.path().join("nowhere").display()),
        Split::All,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a directory"), "{e}");
    let e = data::load("folder:/tmp?size=0", Split::All)
        .unwrap_err()
        .to_string();
    assert!(e.contains("size"), "{e}");
}

/// CIFAR-10 records: label byte, then 1,024 red, 1,024 green, 1,024 blue.
fn cifar_bytes(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        b.push(l);
        for ch in 0..3u8 {
            b.extend(std::iter::repeat_n(ch * 50 + i as u8, 1024));
        }
    }
    b
}

#[test]
fn cifar10_reads_the_binary_batches_and_refuses_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 1..=5 {
        std::fs::write(
            d.join(format!("data_batch_{i}.bin")),
            cifar_bytes(&[i, 9 - i]),
        )
        .unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), cifar_bytes(&[3])).unwrap();
    let spec = format!("cifar10:{}", d.display());
    let tr = data::load(&spec, Split::Train).unwrap();
    let te = data::load(&spec, Split::Test).unwrap();
    assert_eq!((tr.n, te.n), (10, 1));
    assert_eq!(tr.shape, vec![3, 32, 32]);
    assert_eq!(tr.labels.as_ref().unwrap()[..4], [1, 8, 2, 7]);
    // Second record of batch 1: red 1, green 51, blue 101.
    let r = &tr.x[3072..6144];
    assert_eq!((r[0], r[1024], r[2048]), (1.0, 51.0, 101.0));
    // Truncated, a label out of range, a missing batch: clear errors naming the file.
    let b = cifar_bytes(&[1, 2]);
    std::fs::write(d.join("test_batch.bin"), &b[..b.len() - 5]).unwrap();
    let e = data::load(&spec, Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(d.join("test_batch.bin"), cifar_bytes(&[12])).unwrap();
    let e = data::load(&spec, Split::Test).unwrap_err().to_string();
    assert!(e.contains("label 12"), "{e}");
    std::fs::remove_file(d.join("data_batch_3.bin")).unwrap();
    let e = data::load(&spec, Split::Train).unwrap_err().to_string();
    assert!(e.contains("data_batch_3.bin"), "{e}");
}

#[test]
fn a_colour_folder_trains_a_unet_vdm_in_bits_per_dim_over_three_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("colour");
    for c in 0..2 {
        for i in 0..10 {
            write_png(
                &root.join(format!("c{c}")).join(format!("{i}.png")),
                10,
                12,
                (c * 40 + i) as u8,
                true,
            );
        }
    }
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    ok(&[
        "-q",
        "train",
        "--data",
        &format!("folder:{}", root.display()),
        "--set",
        "data.size=8",
        "--out",
        r,
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--set",
        "vdm.unet.channels=[8,16]",
        "--set",
        "vdm.unet.embed=16",
        "--set",
        "eval_examples=2",
        "--set",
        "vdm.sample_steps=3",
        "--set",
        "grid=4",
    ]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert!(cfg["data"].as_str().unwrap().ends_with("?size=8"));
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", r, "--json", "--t-samples", "2"])).unwrap();
    // bits/dim over the 3·8·8 = 192 values of each image
    let bpd = j["bits_per_dim"].as_f64().unwrap();
    let nats = j["nll_nats"].as_f64().unwrap();
    assert!(
        (bpd - nats / (192.0 * std::f64::consts::LN_2)).abs() < 1e-9,
        "{bpd} {nats}"
    );
    let img = image::open(run.join("samples.png")).unwrap();
    assert!(
        img.color().has_color(),
        "the sample grid of colour data is in colour"
    );
    // --set data.size is refused for other data.
    let o = elbo(&[
        "train",
        "--set",
        "data.size=8",
        "--steps",
        "1",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("folder:"));
}

/// The folder reader's own decoding, crop and resize (src/raster.rs) against an independent image
/// library's: PNG (grey, RGB, RGBA, 16-bit grey) and JPEG decode to the same values, and the
/// centre crop resized by the triangle filter agrees to within one level of 255 (the two sum the
/// same weights in f32, so any difference is a rounding tie).
#[test]
fn folder_decoding_and_resize_match_an_independent_codec() {
    use image::imageops::FilterType;
    let tmp = tempfile::tempdir().unwrap();
    // A pattern with edges and gradients, 37×23 (odd sizes, a non-square crop).
    let (w, h) = (37u32, 23u32);
    let val = |x: u32, y: u32, ch: u32| ((x * 7 + y * 13 + ch * 50 + (x * y) % 17) % 256) as u8;
    let cases: Vec<(&str, image::DynamicImage)> = vec![
        (
            "grey.png",
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([val(x, y, 0)])).into(),
        ),
        (
            "rgb.png",
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([val(x, y, 0), val(x, y, 1), val(x, y, 2)])
            })
            .into(),
        ),
        (
            "rgba.png",
            image::RgbaImage::from_fn(w, h, |x, y| {
                image::Rgba([val(x, y, 0), val(x, y, 1), val(x, y, 2), val(x, y, 3)])
            })
            .into(),
        ),
        (
            "grey16.png",
            image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
                image::Luma([val(x, y, 0) as u16 * 257 + (x as u16 % 200)])
            })
            .into(),
        ),
        (
            "rgb.jpg",
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([val(x, y, 0), val(x, y, 1), val(x, y, 2)])
            })
            .into(),
        ),
        (
            "grey.jpg",
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([val(x, y, 0)])).into(),
        ),
    ];
    for (name, img) in cases {
        let dir = tmp.path().join(name.replace('.', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        img.save(&path).unwrap();
        let theirs = image::open(&path).unwrap();
        let grey = !theirs.color().has_color();
        let flat = |i: &image::DynamicImage| -> Vec<f32> {
            if grey {
                i.to_luma8().as_raw().iter().map(|&v| v as f32).collect()
            } else {
                // HWC → CHW, as the data set holds it.
                let rgb = i.to_rgb8();
                let (n, raw) = ((i.width() * i.height()) as usize, rgb.as_raw());
                (0..3)
                    .flat_map(|c| (0..n).map(move |p| raw[p * 3 + c] as f32))
                    .collect()
            }
        };
        let spec = format!("folder:{}", dir.display());
        let ours = data::load(&spec, Split::All).unwrap();
        assert_eq!(ours.shape[0], if grey { 1 } else { 3 }, "{name}");
        assert_eq!(ours.x, flat(&theirs), "{name}: decoded values");
        for n in [8u32, 16, 23] {
            let ours = data::load(&format!("{spec}?size={n}"), Split::All).unwrap();
            let s = w.min(h);
            let want = theirs
                .crop_imm((w - s) / 2, (h - s) / 2, s, s)
                .resize_exact(n, n, FilterType::Triangle);
            let want = flat(&want);
            assert_eq!(ours.x.len(), want.len(), "{name} size {n}");
            let worst = ours
                .x
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1.0, "{name} size {n}: differs by {worst} levels");
        }
    }
}
