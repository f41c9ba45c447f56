//! [`crate::models`]' resolution tests, on whole parsed configurations (kept here, beside
//! the parser, so that `models` does not depend on `config`).

use super::{Config, Origin};
use crate::models::{unused, uses};

fn config(text: &str) -> Result<Config, String> {
    Config::parse(text, Origin::File("test.toml".into())).map_err(|e| e.to_string())
}

const TWO: &str = r#"
    [models.leaves]
    path = "plant.onnx"
    labels = "plant.labels.txt"
    [models.spare]
    path = "plant.onnx"
    [[sources]]
    name = "belt"
    type = "synthetic"
    [[sources]]
    name = "field"
    type = "synthetic"
    model = "leaves"
    [[sources.regions]]
    name = "left"
    rect = [0, 0, 0.5, 1]
    [[sources.regions]]
    name = "right"
    rect = [0.5, 0, 0.5, 1]
    model = "default"
    [[sources]]
    name = "tiles"
    type = "synthetic"
    model = "leaves"
    grid = [2, 1]
"#;

#[test]
fn sources_and_regions_resolve_to_their_models_and_unused_ones_are_left_out() {
    let c = config(TWO).expect("valid");
    let got: Vec<(String, String, Vec<String>)> = uses(&c.model, &c.models, &c.sources())
        .into_iter()
        .map(|u| (u.name, u.key, u.used_by))
        .collect();
    let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            (
                "default".into(),
                "model".into(),
                own(&["belt", "field.right"])
            ),
            (
                "leaves".into(),
                "models.leaves".into(),
                own(&["field.left", "tiles.r0c0", "tiles.r0c1"])
            ),
        ]
    );
    assert_eq!(unused(&c.models, &c.sources()), ["spare"]);
    let used = uses(&c.model, &c.models, &c.sources());
    assert_eq!(used[1].config.path.as_deref(), Some("plant.onnx".as_ref()));
}

#[test]
fn a_config_without_named_models_uses_the_default_for_everything() {
    let c = config("").expect("valid");
    let got = uses(&c.model, &c.models, &c.sources());
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].name.as_str(), got[0].key.as_str()),
        ("default", "model")
    );
    assert_eq!(got[0].used_by, ["synthetic"]);
}

#[test]
fn bad_model_names_and_references_are_refused_with_their_key_paths() {
    // (toml, fragments the message must contain)
    let cases: &[(&str, &[&str])] = &[
        (
            "[models.\"leaf cam\"]\npath = \"x.onnx\"\n",
            &["models.leaf cam", "contains ' '"],
        ),
        (
            "[models.default]\npath = \"x.onnx\"\n",
            &["models.default", "name of `[model]`"],
        ),
        (
            "[models.leaves]\npath = \"x.onnx\"\n[models.leaves.preprocess]\nresize = \"squash\"\n",
            &["models.leaves.preprocess.resize", "stretch"],
        ),
        (
            "[models.leaves]\npaht = \"x.onnx\"\n",
            &["models.leaves", "unknown field `paht`"],
        ),
        (
            "[models.leaves]\npath = \"x.onnx\"\n[[sources]]\nname = \"a\"\ntype = \"synthetic\"\nmodel = \"leafs\"\n",
            &["sources[0].model", "no model named \"leafs\"", "default, leaves"],
        ),
        (
            "[[sources]]\nname = \"a\"\ntype = \"synthetic\"\n[[sources.regions]]\nname = \"r\"\nrect = [0, 0, 1, 1]\nmodel = \"x\"\n",
            &["sources[0].regions[0].model", "no model named \"x\"", "the models are: default"],
        ),
    ];
    for (text, fragments) in cases {
        let msg = config(text).expect_err("refused");
        for f in *fragments {
            assert!(
                msg.contains(f),
                "error for {text:?} should contain {f:?}, got:\n{msg}"
            );
        }
    }
}
