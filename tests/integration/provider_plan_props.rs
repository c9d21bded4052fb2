//! Property tests of the plan path rules against a declarative model of the
//! upstream atomic writer's rules, with a tiny alphabet to force collisions.

use proptest::prelude::*;
use secretfs::provider::{FileMode, Plan, PlannedFile, validate_relative_path};

/// The rules as a user reads them, element by element.
fn model_accepts(path: &str) -> bool {
    let elements: Vec<&str> = path.split('/').collect();
    !path.is_empty()
        && path.len() <= 4096
        && !path.starts_with('/')
        && !path.starts_with("..")
        && !path.contains('\0')
        && path != "."
        && elements
            .iter()
            .all(|e| !e.is_empty() && *e != "." && *e != ".." && e.len() <= 255)
}

fn path_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just('.'), Just('/'), Just('\0')],
        0..10,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// Paths of 1 to 3 elements over {a, b}: many duplicates and prefixes.
fn plan_path_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 1..4).prop_map(|es| es.join("/"))
}

proptest! {
    #[test]
    fn validation_agrees_with_the_model(path in path_strategy()) {
        prop_assert_eq!(validate_relative_path(&path).is_ok(), model_accepts(&path), "{:?}", path);
    }

    #[test]
    fn long_names_and_paths(n in 250usize..260, parts in 15usize..18) {
        let name = "x".repeat(n);
        prop_assert_eq!(validate_relative_path(&name).is_ok(), n <= 255);
        let long = vec!["y".repeat(250); parts].join("/");
        prop_assert_eq!(validate_relative_path(&long).is_ok(), long.len() <= 4096);
    }

    #[test]
    fn plan_accepts_exactly_the_paths_without_clashes(paths in proptest::collection::vec(plan_path_strategy(), 1..6)) {
        let files: Vec<PlannedFile> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| PlannedFile {
                path: p.clone(),
                mode: FileMode::DEFAULT,
                object_id: format!("secret/o{i}"),
                required: true,
            })
            .collect();
        let clash = paths.iter().enumerate().any(|(i, p)| {
            paths.iter().enumerate().any(|(j, q)| i != j && (p == q || q.starts_with(&format!("{p}/"))))
        });
        let result = Plan::new(files);
        prop_assert_eq!(result.is_ok(), !clash, "{:?} → {:?}", paths, result);
        if let Ok(plan) = result {
            let planned: Vec<&str> = plan.files().iter().map(|f| f.path.as_str()).collect();
            prop_assert_eq!(planned, paths.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
