//! Tests of the dataset folder: bounds, relabelling, deleting, the manifest read back.

use super::*;

fn item(label: &str, score: f32, time: &str) -> Item {
    Item {
        file: String::new(),
        label: label.into(),
        predicted: Some(label.into()),
        top: vec![(label.into(), score), ("other".into(), 1.0 - score)],
        time: time.into(),
        source: Some("cam".into()),
        region: None,
        model: Some("default".into()),
        model_sha256: Some("ab".into()),
        why: Why::LowScore,
        bytes: 0,
        reviewed: false,
    }
}

#[test]
fn bounds_delete_the_oldest_unreviewed_and_never_a_labelled_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dataset::open(dir.path()).unwrap();
    let b = Some(Bounds {
        max_files: 2,
        max_bytes: 1_000_000,
    });
    let a = d
        .add(item("leaf", 0.4, "t1"), "001.jpg", b"aaaa", b)
        .unwrap();
    let second = d
        .add(item("leaf", 0.5, "t2"), "002.jpg", b"bbbb", b)
        .unwrap();
    // The person labels the oldest: it is theirs now, and the bounds skip it.
    let labelled = d.relabel(&a.file, "blight").unwrap();
    assert_eq!(labelled.file, "blight/001.jpg");
    assert!(dir.path().join("blight/001.jpg").is_file());
    assert!(!dir.path().join("leaf/001.jpg").exists());
    d.add(item("leaf", 0.3, "t3"), "003.jpg", b"cccc", b)
        .unwrap();
    d.add(item("leaf", 0.3, "t4"), "004.jpg", b"dddd", b)
        .unwrap();
    // Two unreviewed at most: 002 went; the labelled 001 stays.
    assert!(!dir.path().join(&second.file).exists());
    assert!(dir.path().join("leaf/003.jpg").is_file());
    assert!(dir.path().join("blight/001.jpg").is_file());
    assert_eq!(d.stats.evicted.load(Relaxed), 1);
    assert_eq!(d.evictable(), (2, 8));

    // Byte bound: 10 bytes hold two of these.
    let small = Some(Bounds {
        max_files: 100,
        max_bytes: 10,
    });
    d.add(item("leaf", 0.3, "t5"), "005.jpg", b"eeeee", small)
        .unwrap();
    assert_eq!(d.evictable(), (2, 9));

    // The manifest brings it all back after a restart.
    drop(d);
    let d = Dataset::open(dir.path()).unwrap();
    let all = d.list(None, None, 100);
    let files: Vec<&str> = all.iter().map(|i| i.file.as_str()).collect();
    assert_eq!(files, ["leaf/004.jpg", "leaf/005.jpg", "blight/001.jpg"]);
    assert!(all[2].reviewed && all[2].label == "blight");
    assert_eq!(all[2].predicted.as_deref(), Some("leaf"));
    assert_eq!(d.evictable(), (2, 9));
    let manifest = fs::read_to_string(dir.path().join(MANIFEST)).unwrap();
    assert!(manifest.contains("\"op\":\"label\""), "{manifest}");
    assert_eq!(
        manifest.matches("\"op\":\"evict\"").count(),
        2,
        "{manifest}"
    );
}

#[test]
fn delete_list_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dataset::open(dir.path()).unwrap();
    let low = d.add(item("a/b", 0.2, "t1"), "x.jpg", b"1", None).unwrap();
    // A label that is no folder name is stored under a safe one.
    assert_eq!(low.file, "a_b/x.jpg");
    let high = d.add(item("c", 0.9, "t2"), "x.jpg", b"2", None).unwrap();
    let mid = d.add(item("c", 0.5, "t3"), "x.jpg", b"3", None).unwrap();
    assert_eq!(mid.file, "c/x-2.jpg");
    let order: Vec<String> = d.list(None, None, 10).into_iter().map(|i| i.file).collect();
    assert_eq!(
        order,
        [low.file.clone(), mid.file.clone(), high.file.clone()]
    );
    assert_eq!(d.list(Some("c"), None, 1)[0].file, mid.file);

    for bad in ["", ".hidden", "a/b", "x\ny"] {
        assert!(
            matches!(d.relabel(&high.file, bad), Err(DatasetError::BadLabel(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        d.relabel("c/nope.jpg", "c"),
        Err(DatasetError::Unknown(_))
    ));
    // Confirming a label keeps the file where it is.
    let same = d.relabel(&high.file, "c").unwrap();
    assert_eq!(same.file, high.file);
    assert!(same.reviewed);
    assert_eq!(d.list(None, Some(true), 10).len(), 1);

    d.delete(&mid.file).unwrap();
    assert!(!dir.path().join(&mid.file).exists());
    assert!(matches!(d.delete(&mid.file), Err(DatasetError::Unknown(_))));
    assert!(d.path_of(&mid.file).is_none());
    assert!(d.path_of("../etc/passwd").is_none());
    assert_eq!(d.summary().files, 2);
}

#[test]
fn a_bad_manifest_line_is_skipped_and_a_long_history_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dataset::open(dir.path()).unwrap();
    let b = Some(Bounds {
        max_files: 1,
        max_bytes: 1_000_000,
    });
    for n in 0..200 {
        d.add(item("leaf", 0.1, "t"), &format!("{n:04}.jpg"), b"z", b)
            .unwrap();
    }
    drop(d);
    let path = dir.path().join(MANIFEST);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{not json\n");
    fs::write(&path, text).unwrap();
    let d = Dataset::open(dir.path()).unwrap();
    assert_eq!(d.stats.bad_lines.load(Relaxed), 1);
    assert_eq!(d.list(None, None, 10).len(), 1);
    let compacted = fs::read_to_string(&path).unwrap();
    assert_eq!(compacted.lines().count(), 1, "{compacted}");
    assert!(compacted.contains("0199.jpg"));
}
