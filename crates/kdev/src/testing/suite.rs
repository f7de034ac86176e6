//! Finding tests: the directories given, their kuttl suites and chainsaw
//! tests. Everything is read and checked before anything runs, so a bad
//! file fails the run (exit 2) with nothing applied.
//!
//! - A directory with a `kuttl-test.yaml`: its `testDirs` (default: the
//!   directory), each subdirectory a test.
//! - A directory with a `chainsaw-test.yaml`: the tests in it.
//! - A directory with numbered step files (`00-*.yaml`): one kuttl test.
//! - Any other directory: searched below.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::chainsaw;
use super::kuttl::{self, SuiteFile};
use super::model::{LoadError, Object, Op, Test};
use super::yaml;

/// Everything a run needs from the files.
#[derive(Debug, Default)]
pub struct Suite {
    pub tests: Vec<Test>,
    /// kuttl TestSuite `commands`, run once before the tests.
    pub commands: Vec<Op>,
    /// kuttl `crdDir` and `manifestDirs` objects, applied before the tests.
    pub manifests: Vec<Object>,
    /// kuttl's `parallel`, if a suite file sets it.
    pub parallel: Option<usize>,
    /// The longest suite timeout (for setup commands).
    pub timeout: Option<Duration>,
}

/// Reads every test under `dirs`.
pub fn discover(dirs: &[PathBuf]) -> Result<Suite, LoadError> {
    let mut suite = Suite::default();
    for dir in dirs {
        let before = suite.tests.len();
        if dir.is_file() {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if chainsaw::TEST_FILES.contains(&name) {
                read_chainsaw(dir, &mut suite)?;
            } else if name == "kuttl-test.yaml" {
                read_kuttl_suite(dir, &mut suite)?;
            } else {
                return Err(LoadError::new(
                    dir,
                    1,
                    "name a directory, a kuttl-test.yaml or a chainsaw-test.yaml",
                ));
            }
        } else if !dir.is_dir() {
            return Err(LoadError::new(dir, 0, "no such directory"));
        } else if dir.join("kuttl-test.yaml").is_file() {
            read_kuttl_suite(&dir.join("kuttl-test.yaml"), &mut suite)?;
        } else {
            search(dir, &SuiteFile::default_for(dir), &mut suite)?;
        }
        if suite.tests.len() == before {
            return Err(LoadError::new(
                dir,
                0,
                "no kuttl or chainsaw test here (a chainsaw-test.yaml, or a directory of numbered step files like 00-install.yaml)",
            ));
        }
    }
    Ok(suite)
}

fn read_kuttl_suite(file: &Path, suite: &mut Suite) -> Result<(), LoadError> {
    let text = read(file)?;
    let settings = kuttl::read_suite(file, &text)?;
    suite.commands.extend(settings.commands.iter().cloned());
    for dir in &settings.manifest_dirs {
        for path in yaml_files(dir)? {
            let text = read(&path)?;
            let docs = yaml::load(&text).map_err(|e| LoadError::new(&path, e.line, e.message))?;
            for doc in &docs {
                suite.manifests.extend(kuttl::objects(&path, doc, false)?);
            }
        }
    }
    if settings.parallel.is_some() {
        suite.parallel = settings.parallel;
    }
    suite.timeout = suite.timeout.max(Some(settings.timeout));
    for dir in &settings.test_dirs {
        if !dir.is_dir() {
            return Err(LoadError::new(
                file,
                1,
                format!("testDirs: {} is not a directory", dir.display()),
            ));
        }
        for sub in subdirs(dir)? {
            read_test_dir(&sub, &settings, suite)?;
        }
    }
    Ok(())
}

/// A test directory of a kuttl suite: chainsaw wins if both are there.
fn read_test_dir(dir: &Path, settings: &SuiteFile, suite: &mut Suite) -> Result<(), LoadError> {
    if let Some(file) = chainsaw_file(dir) {
        return read_chainsaw(&file, suite);
    }
    let files = files_of(dir)?;
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    if kuttl::is_test_dir(&names) {
        suite.tests.push(kuttl::read_test(dir, &files, settings)?);
    }
    Ok(())
}

fn search(dir: &Path, settings: &SuiteFile, suite: &mut Suite) -> Result<(), LoadError> {
    if let Some(file) = chainsaw_file(dir) {
        return read_chainsaw(&file, suite);
    }
    let names = names_of(dir)?;
    if kuttl::is_test_dir(&names) {
        let files = files_of(dir)?;
        suite.tests.push(kuttl::read_test(dir, &files, settings)?);
        return Ok(());
    }
    for sub in subdirs(dir)? {
        if sub.join("kuttl-test.yaml").is_file() {
            read_kuttl_suite(&sub.join("kuttl-test.yaml"), suite)?;
        } else {
            search(&sub, settings, suite)?;
        }
    }
    Ok(())
}

fn read_chainsaw(file: &Path, suite: &mut Suite) -> Result<(), LoadError> {
    let text = read(file)?;
    let tests = chainsaw::read_tests(file, &text, &|p: &Path| std::fs::read_to_string(p))?;
    suite.tests.extend(tests);
    Ok(())
}

fn chainsaw_file(dir: &Path) -> Option<PathBuf> {
    chainsaw::TEST_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path)
        .map_err(|e| LoadError::new(path, 0, format!("cannot read it: {e}")))
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LoadError::new(dir, 0, format!("cannot list it: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect())
}

fn names_of(dir: &Path) -> Result<Vec<String>, LoadError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect())
}

/// The YAML files of a directory with their texts.
fn files_of(dir: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let mut out = Vec::new();
    for name in names_of(dir)? {
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            let text = read(&dir.join(&name))?;
            out.push((name, text));
        }
    }
    Ok(out)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";

    #[test]
    fn both_formats_are_found() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "kuttl/kuttl-test.yaml",
            "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\ntestDirs: [./tests]\nparallel: 2\n",
        );
        write(r, "kuttl/tests/one/00-install.yaml", CM);
        write(r, "kuttl/tests/one/00-assert.yaml", CM);
        write(r, "kuttl/tests/two/00-install.yaml", CM);
        write(
            r,
            "chainsaw/basic/chainsaw-test.yaml",
            "apiVersion: chainsaw.kyverno.io/v1alpha1\nkind: Test\nmetadata:\n  name: basic\nspec:\n  steps:\n  - try:\n    - apply:\n        file: cm.yaml\n",
        );
        write(r, "chainsaw/basic/cm.yaml", CM);
        write(r, "loose/three/01-x.yaml", CM);
        let suite = discover(&[r.join("kuttl"), r.join("chainsaw"), r.join("loose")]).unwrap();
        let names: Vec<_> = suite.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["one", "two", "basic", "three"]);
        assert_eq!(suite.parallel, Some(2));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "empty/README.md", "hi");
        let err = discover(&[root.path().join("empty")]).unwrap_err();
        assert!(err.message.contains("no kuttl or chainsaw test"), "{err}");
        let err = discover(&[root.path().join("missing")]).unwrap_err();
        assert!(err.message.contains("no such directory"), "{err}");
    }
}
